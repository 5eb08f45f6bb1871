"""The audit trail (hash chain, torn lines, tampering of each kind) and log redaction."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from fakefhir import BASE, FakeFhir
from typer.testing import CliRunner

from fhir_lupus import load_trial
from fhir_lupus._logredact import RedactingFilter, redact, redact_url, register_secret
from fhir_lupus.audit import GENESIS, append_event, default_audit_path, read_entries, redact_server, verify
from fhir_lupus.cli import app
from fhir_lupus.client import BearerAuth, FatalHttpError, FhirClient, FhirHttpError, RetryPolicy
from fhir_lupus.journal import Journal
from fhir_lupus.pull import pull_study
from fhir_lupus.push import push_trial
from fhir_lupus.source import TrialSource

HASH = "ab" * 32


def write_log(path: Path, entries: int = 4) -> list[bytes]:
    for number in range(entries):
        append_event(path, "push", server="https://u:p@h.example/fhir?x=1", counts={"n": number}, content_hash=HASH)
    return path.read_bytes().splitlines(keepends=True)


def problems(path: Path) -> list[tuple[int, str]]:
    return [(p.line, p.kind) for p in verify(path).problems]


# -- the chain -------------------------------------------------------------------------------------------------


def test_appended_entries_chain_and_verify(tmp_path: Path) -> None:
    log = tmp_path / "a.audit.jsonl"
    write_log(log, 3)
    entries = read_entries(log)
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev"] == GENESIS and entries[1]["prev"] == entries[0]["hash"]
    assert entries[0]["server"] == "https://h.example/fhir"  # no credentials, no query
    assert entries[0]["kind"] == "push" and entries[0]["ts"].endswith("Z") and "@" in entries[0]["actor"]
    assert set(entries[0]) >= {"counts", "content_hash", "tool_version", "mapping_version", "outcome", "details"}
    report = verify(log)
    assert report.status == "ok" and report.entries == 3 and report.head_hash == entries[2]["hash"]
    assert (log.stat().st_mode & 0o777) == 0o600


def test_actor_from_argument_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "a.jsonl"
    monkeypatch.setenv("FHIR_LUPUS_ACTOR", "data-manager-7")
    append_event(log, "pull", server=BASE, counts={}, content_hash=HASH)
    append_event(log, "registry-submit", server=BASE, counts={}, content_hash=HASH, actor="registry-bot")
    assert [e["actor"] for e in read_entries(log)] == ["data-manager-7", "registry-bot"]
    with pytest.raises(ValueError, match="audit kind"):
        append_event(log, "delete", server=BASE, counts={}, content_hash=HASH)


def test_an_edited_byte_is_tampering_at_that_line(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    lines = write_log(log)
    lines[1] = lines[1].replace(b'"n":1', b'"n":9')
    log.write_bytes(b"".join(lines))
    report = verify(log)
    assert report.status == "tampered" and problems(log) == [(2, "edited")]
    assert "TAMPERED at line 2" in report.summary()


def test_an_edited_and_rehashed_entry_breaks_the_next_link(tmp_path: Path) -> None:
    from fhir_lupus.audit import entry_hash

    log = tmp_path / "a.jsonl"
    lines = write_log(log)
    entry = json.loads(lines[1])
    entry["counts"] = {"n": 9}
    entry["hash"] = entry_hash(entry)
    lines[1] = json.dumps(entry).encode() + b"\n"
    log.write_bytes(b"".join(lines))
    assert problems(log) == [(3, "replaced")]


def test_a_removed_line_is_tampering(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    lines = write_log(log)
    log.write_bytes(b"".join(lines[:1] + lines[2:]))
    assert problems(log) == [(2, "removed")]
    log.write_bytes(b"".join(lines[1:]))
    assert problems(log) == [(1, "removed")]  # the first entry removed


def test_a_removed_last_line_is_caught_by_the_anchor(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    lines = write_log(log)
    head = read_entries(log)[-1]
    log.write_bytes(b"".join(lines[:-1]))
    assert verify(log).status == "ok"  # a chain alone cannot see its tail cut off
    assert [p.kind for p in verify(log, anchor=(head["seq"], head["hash"])).problems] == ["removed"]
    assert verify(log, expect_head=head["hash"]).status == "tampered"


def test_swapped_lines_are_reordering(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    lines = write_log(log)
    log.write_bytes(b"".join([lines[0], lines[2], lines[1], lines[3]]))
    assert {kind for _, kind in problems(log)} == {"reordered"} and problems(log)[0][0] == 2
    log.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))
    assert problems(log)[0] == (1, "reordered")


def test_a_truncated_last_line_is_torn_not_tampering(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    lines = write_log(log, 3)
    log.write_bytes(b"".join(lines[:2]) + lines[2][:40])
    report = verify(log)
    assert report.status == "torn" and report.problems == [] and report.torn and report.torn.line == 3
    assert report.entries == 2


def test_a_complete_last_entry_without_its_newline_is_ok(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    lines = write_log(log, 2)
    log.write_bytes(lines[0] + lines[1].rstrip(b"\n"))
    assert verify(log).status == "ok"
    append_event(log, "pull", server=BASE, counts={}, content_hash=HASH)  # terminates the line, chains to it
    report = verify(log)
    assert report.status == "ok" and report.entries == 3 and not report.notes


def test_an_append_after_a_torn_line_acknowledges_it(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    lines = write_log(log, 3)
    fragment = lines[2][:50]
    log.write_bytes(b"".join(lines[:2]) + fragment)
    entry = append_event(log, "pull", server=BASE, counts={}, content_hash=HASH)
    assert entry["seq"] == 3 and entry["prev"] == json.loads(lines[1])["hash"]
    assert entry["torn"]["bytes"] == 50
    report = verify(log)
    assert report.status == "ok" and [n.line for n in report.notes] == [3] and report.entries == 3
    # the acknowledged fragment is now part of the chain: editing or removing it is tampering
    now = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join([*now[:2], b"garbage\n", now[3]]))
    assert problems(log) == [(3, "edited")]
    log.write_bytes(b"".join([*now[:2], now[3]]))
    assert problems(log) == [(3, "removed")]


def test_a_garbage_line_in_the_middle_is_tampering(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    lines = write_log(log, 2)
    log.write_bytes(lines[0] + b"{not json\n" + lines[1])
    assert problems(log) == [(2, "edited")]


def test_default_paths() -> None:
    assert default_audit_path(Path("x/journal.sqlite")) == Path("x/journal.audit.jsonl")
    assert redact_server("https://user:secret@fhir.example:8443/r4/?a=b#c") == "https://fhir.example:8443/r4/"


# -- the CLI ---------------------------------------------------------------------------------------------------


def test_cli_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    log = tmp_path / "a.jsonl"
    lines = write_log(log, 3)
    result = runner.invoke(app, ["audit", "verify", str(log), "--journal", str(tmp_path / "none.sqlite")])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(app, ["audit", "show", str(log), "--json", "-n", "2"])
    assert shown.exit_code == 0 and [json.loads(x)["seq"] for x in shown.stdout.splitlines()] == [2, 3]
    log.write_bytes(b"".join(lines[:2]) + lines[2][:30])
    result = runner.invoke(app, ["audit", "verify", str(log)])
    assert result.exit_code == 3 and "torn" in result.output and "not tampering" in result.output
    log.write_bytes(lines[1] + lines[0])
    result = runner.invoke(app, ["audit", "verify", str(log)])
    assert result.exit_code == 1 and "TAMPERED at line 1" in result.output
    result = runner.invoke(app, ["audit", "verify", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2


# -- redaction -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        (
            "HTTP Request: GET http://h/fhir/Patient?identifier=http://hosp.example/mrn|DT0000001&_count=50 200",
            ["DT0000001", "hosp.example/mrn"],
            ["Patient?identifier=[redacted]", "_count=50"],
        ),
        ("Patient?identifier=urn:oid:1.2.3%7CDT0000001", ["DT0000001"], ["identifier=[redacted]"]),
        ("If-None-Exist: identifier=http://hosp.example/mrn|DT0000001", ["DT0000001"], ["mrn|[redacted]"]),
        ("GET Observation?subject=Patient/abc&code=http://loinc.org|2160-0", ["abc"], ["code=http"]),
        ("Patient?family=Doe&birthdate=1980-05-01", ["Doe", "1980-05-01"], ["family=[redacted]"]),
        ("Authorization: Bearer s3cr3t-token.value", ["s3cr3t-token"], ["Bearer [redacted]"]),
        ("(b'Authorization', b'Basic dXNlcjpwYXNz')", ["dXNlcjpwYXNz"], ["Authorization"]),
        ("headers Basic dXNlcjpwYXNz", ["dXNlcjpwYXNz"], ["Basic [redacted]"]),
        ("assertion eyJhbGciOiJSUzM4NCJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl end", ["eyJpc3MiOiJ4In0"], ["end"]),
        ('{"access_token": "opaque-123456", "expires_in": 300}', ["opaque-123456"], ["expires_in"]),
        ("client_assertion=abc.def&grant_type=client_credentials", ["abc.def"], ["grant_type"]),
        (
            "key -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY----- done",
            ["MIIEvQIBADANBg"],
            ["done"],
        ),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEvQIBADANBg cut", ["MIIEvQIBADANBg"], ["[redacted private key]"]),
        (
            '{"name": [{"family": "Doe", "given": ["Jane"]}], "birthDate": "1980-05-01", "value": "DT0000001"}',
            ["Doe", "Jane", "1980-05-01", "DT0000001"],
            ["birthDate"],
        ),
        ("plain text about 12 resources", [], ["plain text about 12 resources"]),
    ],
)
def test_redact(text: str, gone: list[str], kept: list[str]) -> None:
    redacted = redact(text)
    for value in gone:
        assert value not in redacted, redacted
    for value in kept:
        assert value in redacted, redacted


def test_redact_url_keeps_paging_and_drops_credentials() -> None:
    url = "https://u:pw@h/fhir/Observation?_getpages=x1&_getpagesoffset=20&patient=Patient/9&_count=20"
    assert redact_url(url) == (
        "https://h/fhir/Observation?_getpages=x1&_getpagesoffset=20&patient=[redacted]&_count=20"
    )
    assert redact_url("Patient/123") == "Patient/123"


def test_registered_secrets_and_the_filter_on_args_and_exceptions() -> None:
    register_secret("a-very-private-opaque-token")
    record = logging.LogRecord("fhir_lupus.x", logging.DEBUG, __file__, 1, "token %s for %s", None, None)
    record.args = ("a-very-private-opaque-token", "Patient?identifier=sys|MRN77")
    try:
        raise ValueError("Patient?identifier=http://h/mrn|MRN77")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "a-very-private-opaque-token" not in text and "MRN77" not in text and "token [redacted]" in text


def test_http_errors_name_the_request_without_identifier_values() -> None:
    error = FatalHttpError("refused", status=412, method="PUT", url="http://h/Patient?identifier=http://m|DT01")
    assert "DT01" not in str(error) and error.url.endswith("DT01")


# -- push and pull: one entry each, and logs at DEBUG without personal data or tokens ---------------------------


def test_push_and_pull_append_entries_and_log_nothing_personal(
    fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = dataset()
    data, report = load_trial(directory)
    with (directory / "subjects.csv").open(newline="") as handle:
        subjects = list(csv.DictReader(handle))
    token = "static-bearer-token-for-the-log-test"
    caplog.set_level(logging.DEBUG)  # root: every logger, httpx and httpcore included
    journal_path = tmp_path / "j.sqlite"
    with (
        FhirClient(BASE, auth=BearerAuth(token), retry=RetryPolicy(attempts=1)) as fhir,
        Journal(journal_path) as journal,
    ):
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test")
        pull_study(fhir, journal, data.study, since=None)
        head = journal.audit_head(default_audit_path(journal_path))
    text = caplog.text + "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "HTTP Request" in text and "fhir_lupus.client" in caplog.text  # logging was on and captured
    for subject in subjects:
        for value in (subject["mrn"], subject["pseudonym"], subject["birth_date"]):
            if value and len(value) > 4:  # a birth year alone is not searched for: it is any number in a log
                assert value not in text, value
    assert token not in text
    log = default_audit_path(journal_path)
    entries = read_entries(log)
    assert [e["kind"] for e in entries] == ["push", "pull"] and verify(log).status == "ok"
    assert entries[0]["outcome"] == "complete" and entries[0]["counts"]["created"] > 0
    assert entries[1]["counts"]["rows"] > 0 and head == (2, entries[1]["hash"])
    runner = CliRunner()
    assert runner.invoke(app, ["audit", "verify", "--journal", str(journal_path)]).exit_code == 0


def test_audit_can_be_switched_off_and_a_failed_push_is_recorded(
    fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(dataset())
    with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as fhir, Journal(tmp_path / "j.sqlite") as journal:
        fake.fail_types = {"Observation"}  # the subjects' labs: a server failure after the study went through
        log = tmp_path / "elsewhere" / "audit.jsonl"
        with pytest.raises(FhirHttpError):
            push_trial(TrialSource.loaded(data, report), fhir, journal, source="test", audit_log=log)
        fake.fail_types = set()
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test", audit_log=False)
        assert not default_audit_path(journal.path).exists()
    (entry,) = read_entries(log)
    assert entry["outcome"].startswith("failed: ") and entry["counts"]["total"] > 0


def test_a_registered_key_does_not_hide_the_next_one_from_the_pem_rule() -> None:
    """Registering a PEM key once (SMART auth does) once made its BEGIN/END lines "secrets" that were replaced
    before the PEM rule ran, so the body of any other key logged later stayed readable."""
    register_secret("-----BEGIN PRIVATE KEY-----\nAAAAregisteredkeybody0123\n-----END PRIVATE KEY-----\n")
    other = "key -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgotherkey\n-----END PRIVATE KEY----- done"
    redacted = redact(other)
    assert "MIIEvQIBADANBgotherkey" not in redacted and "done" in redacted, redacted
