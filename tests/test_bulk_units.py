"""``pull --bulk`` against the fake server with an export endpoint in front of it (respx): waits, resume, files.

The export endpoint (``Exporter``) answers as the Bulk Data IG says a server does: 202 with Content-Location,
202 with Retry-After and X-Progress while it works, a manifest, NDJSON files, DELETE of the job. It serves what
the fake server holds, of the requested types and patients, and ignores ``_typeFilter`` (a server may), so the
rows prove the selection is ours. The integration tests (tests/integration/test_bulk_pull.py) run on HAPI.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
import respx
from fakefhir import BASE, FakeFhir

from fhir_lupus import load_trial
from fhir_lupus.client import (
    BearerAuth,
    ExportRequest,
    ExportStatus,
    FatalHttpError,
    FhirClient,
    RetryPolicy,
    TransientHttpError,
)
from fhir_lupus.journal import Journal
from fhir_lupus.model import TrialData
from fhir_lupus.pull import BulkOptions, pull_study
from fhir_lupus.pull._bulk import BulkExportError, poll_wait
from fhir_lupus.pull._local import NdjsonError, labs_from_ndjson
from fhir_lupus.push import push_trial
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import LabCatalogue, load_pack

STORAGE = "https://storage.test/exports"
UCUM = "http://unitsofmeasure.org"


@dataclass
class Exporter:
    """The $export endpoints of the fake server; everything else goes to ``fake``."""

    fake: FakeFhir
    waits: list[dict[str, str]] = field(default_factory=list)  # one 202 answer's headers per poll before done
    kick_offs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    failing_files: set[str] = field(default_factory=set)  # file types answering 503
    gone: bool = False  # the status URL answers 404 (the job expired)
    requires_token: bool = True
    on_storage: bool = False  # files elsewhere (object storage), not on the FHIR server
    errors: list[str] = field(default_factory=list)  # OperationOutcome diagnostics in the manifest's error
    broken_line: bool = False  # an Observation file whose second line is not JSON
    auth_seen: list[str | None] = field(default_factory=list)
    removed: list[str] | None = None  # Observation ids in the manifest's ``deleted`` part (None: no such part)
    _polls: int = 0
    _files: dict[str, bytes] = field(default_factory=dict)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = urlsplit(str(request.url))
        if url.netloc == "storage.test" or url.path.startswith("/fhir/Binary/"):
            return self._file(request)
        if "$export-poll-status" in url.path:
            return self._status(request)
        if url.path.endswith("$export"):
            return self._kick_off(request)
        return self.fake(request)

    def _kick_off(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            parameters = orjson.loads(request.content)["parameter"]
        else:
            parameters = [
                {"name": k, "valueString": v} for k, vs in parse_qs(request.url.query.decode()).items() for v in vs
            ]
        self.kick_offs.append((request.url.path, {"parameter": parameters}))
        return httpx.Response(
            202, headers={"Content-Location": f"{BASE}/$export-poll-status?_jobId={len(self.kick_offs)}"}
        )

    def _status(self, request: httpx.Request) -> httpx.Response:
        if self.gone:
            return httpx.Response(404, json={"resourceType": "OperationOutcome", "issue": []})
        if request.method == "DELETE":
            self.deleted.append(str(request.url))
            return httpx.Response(202)
        self._polls += 1
        if self._polls <= len(self.waits):
            return httpx.Response(202, headers=self.waits[self._polls - 1])
        return httpx.Response(200, json=self._manifest())

    def _manifest(self) -> dict[str, Any]:
        _, params = self.kick_offs[-1]
        types = next(p["valueString"] for p in params["parameter"] if p["name"] == "_type").split(",")
        patients = {p["valueReference"]["reference"] for p in params["parameter"] if p["name"] == "patient"}
        base = STORAGE if self.on_storage else f"{BASE}/Binary"
        output = []
        for kind in types:
            found = [r for r in self.fake.all(kind) if not patients or _patient(r) in patients]
            lines = [orjson.dumps(r) for r in found]
            if kind == "Observation" and self.broken_line:
                lines.insert(1, b"{not json")
            self._files[f"{base}/{kind}"] = b"\n".join(lines) + b"\n"
            output.append({"type": kind, "url": f"{base}/{kind}"})
        error = []
        if self.errors:
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "warning", "diagnostics": text} for text in self.errors],
            }
            self._files[f"{base}/errors"] = orjson.dumps(outcome) + b"\n"
            error.append({"type": "OperationOutcome", "url": f"{base}/errors"})
        manifest = {
            "transactionTime": "2026-11-30T00:00:01Z",
            "request": f"{BASE}/Patient/$export",
            "requiresAccessToken": self.requires_token,
            "output": output,
            "error": error,
        }
        if self.removed is not None:  # Bulk Data 2.0: Bundles whose entries carry the DELETE of each resource
            entries = [{"request": {"method": "DELETE", "url": f"Observation/{rid}"}} for rid in self.removed]
            bundles = [{"resourceType": "Bundle", "type": "transaction", "entry": entries[:1]}]
            bundles += [{"resourceType": "Bundle", "type": "transaction", "entry": entries[1:]}]
            self._files[f"{base}/deleted"] = b"\n".join(orjson.dumps(b) for b in bundles) + b"\n"
            manifest["deleted"] = [{"type": "Bundle", "url": f"{base}/deleted"}]
        return manifest

    def _file(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.downloads.append(url)
        self.auth_seen.append(request.headers.get("Authorization"))
        if url.rsplit("/", 1)[-1] in self.failing_files:
            return httpx.Response(503, text="busy")
        return httpx.Response(200, content=self._files[url], headers={"Content-Type": "application/fhir+ndjson"})


def _patient(resource: dict[str, Any]) -> str:
    reference = (resource.get("subject") or resource.get("individual") or resource.get("patient") or {}).get(
        "reference", ""
    )
    return str(reference)


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    server = Exporter(FakeFhir())
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1", port=9).mock(side_effect=server)
        mock.route(host="storage.test").mock(side_effect=server)
        yield server


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(**kwargs: Any) -> FhirClient:
    return FhirClient(BASE, retry=RetryPolicy(attempts=1), **kwargs)


def options(tmp_path: Path, **kwargs: Any) -> BulkOptions:
    defaults: dict[str, Any] = {
        "max_poll_wait": 5.0,
        "first_poll_wait": 0.5,
        "sleep": Sleeps(),
        "work_dir": tmp_path / "bulk",
    }
    return BulkOptions(**{**defaults, **kwargs})


@pytest.fixture
def pushed(exporter: Exporter, dataset: Callable[..., Path], tmp_path: Path) -> TrialData:
    """The small trial pushed to the fake server, and a result a hospital wrote (mg/dL, its own identifier)."""
    data, report = load_trial(dataset())
    with client() as fhir, Journal(tmp_path / "push.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test")
    patient = exporter.fake.all("Patient")[0]["id"]
    exporter.fake.add(
        {
            "resourceType": "Observation",
            "identifier": [{"system": "urn:oid:1.2.3", "value": "ACC-9"}],
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": "2008-01-08T09:00:00+08:00",
            "valueQuantity": {"value": 1.2, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
        }
    )
    return data


def table(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_bulk_pull_gives_the_rows_of_the_search_pull_and_honours_retry_after(
    exporter: Exporter, pushed: TrialData, tmp_path: Path
) -> None:
    with client() as fhir, Journal(tmp_path / "search.sqlite") as journal:
        searched = pull_study(fhir, journal, pushed.study, since=None, output=tmp_path / "search.csv")
    exporter.waits = [
        {"Retry-After": "3", "X-Progress": "10% done"},
        {"Retry-After": "600", "X-Progress": "60% done"},  # more than we wait: capped at max_poll_wait
        {},  # no hint: the doubling delay, 0.5 s after the first poll, so 2 s at the third
    ]
    seen: list[ExportStatus] = []
    bulk = options(tmp_path, on_poll=seen.append, lab_filters=True)
    with client() as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        pulled = pull_study(fhir, journal, pushed.study, since=None, output=tmp_path / "bulk.csv", bulk=bulk)
        assert journal.bulk_export(fhir.base_url, pushed.study.nct_id) is None  # finished: forgotten
    assert table(tmp_path / "bulk.csv") == table(tmp_path / "search.csv")
    assert table(tmp_path / "bulk.unmapped.csv") == table(tmp_path / "search.unmapped.csv")
    assert pulled.total_rows == searched.total_rows == len(pushed.labs) + len(pushed.treg) + 1
    assert pulled.high_water == searched.high_water and pulled.subjects == searched.subjects == 2
    assert bulk.sleep == [3.0, 5.0, 2.0]
    assert [s.progress for s in seen] == ["10% done", "60% done", None]
    assert pulled.bulk is not None and pulled.bulk.polls == 4 and pulled.bulk.waited == 10.0
    path, parameters = exporter.kick_offs[0]
    assert path == "/fhir/Patient/$export" and len(exporter.kick_offs) == 1
    patients = [p["valueReference"]["reference"] for p in parameters["parameter"] if p["name"] == "patient"]
    assert sorted(patients) == sorted(f"Patient/{p['id']}" for p in exporter.fake.all("Patient"))
    filters = [p["valueString"] for p in parameters["parameter"] if p["name"] == "_typeFilter"]
    assert any(f.startswith("Observation?category=") for f in filters)
    assert any(f.startswith("Observation?code=") and "http://loinc.org|2160-0" in f for f in filters)
    assert exporter.deleted == [pulled.bulk.status_url]  # the server may drop the files
    assert not (tmp_path / "bulk").exists() or not any((tmp_path / "bulk").iterdir())


def test_an_interrupted_export_is_resumed_from_the_journal_not_asked_again(
    exporter: Exporter, pushed: TrialData, tmp_path: Path
) -> None:
    exporter.waits = [{"Retry-After": "1"}]

    def interrupt(_: ExportStatus) -> None:
        raise KeyboardInterrupt

    with client() as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        with pytest.raises(KeyboardInterrupt):
            pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path, on_poll=interrupt))
        job = journal.bulk_export(fhir.base_url, pushed.study.nct_id)
        assert job is not None and job.status_url.endswith("_jobId=1")
        resumed = pull_study(
            fhir, journal, pushed.study, since=None, output=tmp_path / "bulk.csv", bulk=options(tmp_path)
        )
    assert len(exporter.kick_offs) == 1
    assert resumed.bulk is not None and resumed.bulk.resumed and resumed.bulk.status_url == job.status_url
    assert resumed.total_rows == len(pushed.labs) + len(pushed.treg) + 1


def test_files_downloaded_before_an_interruption_are_not_fetched_again(
    exporter: Exporter, pushed: TrialData, tmp_path: Path
) -> None:
    exporter.failing_files = {"Observation"}
    with client() as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        with pytest.raises(TransientHttpError):
            pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path, downloads=1))
        kept = [path for path in (tmp_path / "bulk").rglob("*") if path.is_file()]  # patient data, kept to resume
        assert kept and {stat.S_IMODE(path.stat().st_mode) for path in kept} == {0o600}
        assert stat.S_IMODE((tmp_path / "bulk").stat().st_mode) == 0o700
        exporter.failing_files = set()
        pulled = pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path))
    assert pulled.bulk is not None and pulled.bulk.resumed and pulled.bulk.reused_files == 1
    assert sum(url.endswith("/Encounter") for url in exporter.downloads) == 1
    assert sum(url.endswith("/Observation") for url in exporter.downloads) == 1 + 3  # three attempts, then one
    assert pulled.total_rows == len(pushed.labs) + len(pushed.treg) + 1


def test_a_job_gone_from_the_server_is_asked_again_and_said(
    exporter: Exporter, pushed: TrialData, tmp_path: Path
) -> None:
    def interrupt(_: ExportStatus) -> None:
        raise KeyboardInterrupt

    exporter.waits = [{}]
    with client() as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        with pytest.raises(KeyboardInterrupt):
            pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path, on_poll=interrupt))
        exporter.gone = True
        with pytest.raises(FatalHttpError):  # the new job's status is gone too: the error is the server's
            pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path))
        assert len(exporter.kick_offs) == 2  # the expired job was asked again once
        exporter.gone = False
        pulled = pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path))
    assert pulled.bulk is not None and pulled.bulk.resumed and len(exporter.kick_offs) == 2


def test_an_export_not_done_in_time_stops_and_keeps_the_job(
    exporter: Exporter, pushed: TrialData, tmp_path: Path
) -> None:
    exporter.waits = [{"Retry-After": "60"}] * 10
    ticks = iter(range(0, 10_000, 60))
    with client() as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        slow = options(tmp_path, max_poll_wait=60.0, poll_timeout=150.0, clock=lambda: float(next(ticks)))
        with pytest.raises(BulkExportError, match="resume"):
            pull_study(fhir, journal, pushed.study, since=None, bulk=slow)
        assert journal.bulk_export(fhir.base_url, pushed.study.nct_id) is not None
        assert journal.high_water(fhir.base_url, pushed.study.nct_id) is None  # nothing merged, the mark stays


def test_files_kept_elsewhere_get_no_credentials_unless_the_manifest_asks(
    exporter: Exporter, pushed: TrialData, tmp_path: Path
) -> None:
    exporter.on_storage, exporter.requires_token = True, False
    with client(auth=BearerAuth("secret")) as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        pulled = pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path))
    assert pulled.total_rows == len(pushed.labs) + len(pushed.treg) + 1
    assert exporter.auth_seen and all(seen is None for seen in exporter.auth_seen)

    exporter.requires_token = True  # a token asked for on another host: never sent there
    with (
        client(auth=BearerAuth("secret")) as fhir,
        Journal(tmp_path / "again.sqlite") as journal,
        pytest.raises(FatalHttpError, match="credentials off the server"),
    ):
        pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path, restart=True))


def test_what_the_server_could_not_export_is_said(exporter: Exporter, pushed: TrialData, tmp_path: Path) -> None:
    exporter.errors = ["Observation/xyz could not be read"]
    with client() as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        pulled = pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path))
    assert pulled.bulk is not None and pulled.bulk.server_errors == [
        "the export reported (warning): Observation/xyz could not be read"
    ]
    assert pulled.bulk.server_errors[0] in pulled.fallbacks


def test_a_broken_ndjson_line_is_named_by_file_and_line(exporter: Exporter, pushed: TrialData, tmp_path: Path) -> None:
    exporter.broken_line = True
    with client() as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        with pytest.raises(NdjsonError, match=r"/fhir/Binary/Observation, line 2: not JSON"):
            pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path))
        assert journal.high_water(fhir.base_url, pushed.study.nct_id) is None


def test_an_incremental_bulk_pull_asks_since_and_finds_day_0_by_search(
    exporter: Exporter, pushed: TrialData, tmp_path: Path
) -> None:
    with client() as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path))
        exporter.fake.requests.clear()
        pull_study(fhir, journal, pushed.study, bulk=options(tmp_path))  # since auto: the mark minus the overlap
    _, parameters = exporter.kick_offs[-1]
    named = {p["name"]: p.get("valueString") or p.get("valueInstant") for p in parameters["parameter"]}
    assert named["_since"] and named["_type"] == "Observation"  # day 0 is not exported: it would be only changes
    assert "_typeFilter" not in named  # the labs are selected here unless lab_filters asks the server
    assert any(path.startswith("Encounter?identifier=") for _, path in exporter.fake.requests)


def test_an_incremental_bulk_pull_removes_what_the_manifest_says_was_deleted(
    exporter: Exporter, pushed: TrialData, tmp_path: Path
) -> None:
    with client() as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        full = pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path))
        gone, other = sorted(full.rows, key=lambda r: r.observation_id)[:2]
        exporter.fake.store["Observation"].pop(gone.observation_id)
        exporter.removed = [gone.observation_id, "not-ours"]
        exporter.fake.requests.clear()
        again = pull_study(fhir, journal, pushed.study, bulk=options(tmp_path), output=tmp_path / "labs.csv")
    assert [(r.observation_id, r.reason) for r in again.removed] == [(gone.observation_id, "deleted on the server")]
    assert again.total_rows == full.total_rows - 1 and gone.observation_id not in table(tmp_path / "labs.csv")
    assert other.observation_id in table(tmp_path / "labs.csv")
    # the manifest said it: neither the history nor a listing was asked
    assert not any("_history" in path or "_elements" in path for _, path in exporter.fake.requests)
    assert again.fallbacks == []


def test_a_result_after_the_end_of_participation_is_no_visits_on_every_pass(
    exporter: Exporter, pushed: TrialData, tmp_path: Path
) -> None:
    # one Subjects for every pass: ResearchSubject.period.end ends the visits on the search pass too
    leaver = next(
        rs
        for rs in exporter.fake.all("ResearchSubject")
        if any(i.get("value") == "MSC-001" for i in rs.get("identifier", []))
    )
    leaver["period"] = {**(leaver.get("period") or {}), "end": "2008-01-20"}  # after BL, before M01
    with client() as fhir, Journal(tmp_path / "search.sqlite") as journal:
        searched = pull_study(fhir, journal, pushed.study, since=None, output=tmp_path / "search.csv")
    with client() as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        pull_study(fhir, journal, pushed.study, since=None, output=tmp_path / "bulk.csv", bulk=options(tmp_path))
    assert table(tmp_path / "bulk.csv") == table(tmp_path / "search.csv")
    late = [r for r in searched.rows if r.subject_id == "MSC-001" and r.collected_at[:10] > "2008-01-20"]
    assert late and {(r.visit_code, r.window) for r in late} == {("", "after-end")}
    kept = [r for r in searched.rows if r.subject_id == "MSC-002" or r.collected_at[:10] <= "2008-01-20"]
    assert kept and all(r.window != "after-end" for r in kept)


def test_the_wait_between_polls() -> None:
    bulk = BulkOptions(max_poll_wait=30.0, first_poll_wait=1.0)
    assert [poll_wait(None, polls, bulk) for polls in (1, 2, 3, 6, 9)] == [1.0, 2.0, 4.0, 30.0, 30.0]
    assert poll_wait(12.0, 1, bulk) == 12.0 and poll_wait(120.0, 1, bulk) == 30.0 and poll_wait(-5.0, 1, bulk) == 0.0
    with pytest.raises(ValueError, match="--group"):
        BulkOptions(level="group")


def test_the_kick_off_as_get_and_as_post() -> None:
    request = ExportRequest(
        "$export", types=("Observation",), type_filters=("Observation?code=a|1,a|2",), since="2026-01-01T00:00:00Z"
    )
    assert request.query() == {
        "_outputFormat": ["application/fhir+ndjson"],
        "_type": ["Observation"],
        "_typeFilter": ["Observation?code=a|1,a|2"],
        "_since": ["2026-01-01T00:00:00Z"],
    }
    posted = ExportRequest("Patient/$export", types=("Observation",), patients=("Patient/2", "Patient/1")).parameters()
    assert [p["valueReference"]["reference"] for p in posted["parameter"] if p["name"] == "patient"] == [
        "Patient/2",
        "Patient/1",
    ]
    since = ExportRequest("Patient/$export", since="2026-01-01T00:00:00Z", patients=("Patient/1",)).parameters()
    assert {"name": "_since", "valueInstant": "2026-01-01T00:00:00Z"} in since["parameter"]  # HAPI refuses a string
    assert (
        ExportRequest("Patient/$export", patients=("Patient/2", "Patient/1"))
        .describe()
        .endswith("patient=Patient/1,Patient/2")
    )


def test_the_lab_table_from_map_ndjson_equals_the_trial(dataset: Callable[..., Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fhir_lupus.cli import app

    data, _ = load_trial(dataset())
    result = CliRunner().invoke(app, ["map", str(dataset()), "--format", "ndjson", "-o", str(tmp_path / "nd")])
    assert result.exit_code == 0, result.output
    subjects, labs = labs_from_ndjson((tmp_path / "nd").glob("*.ndjson"), data.study, LabCatalogue(load_pack()))
    rows = list(labs)
    assert len(subjects) == 2 and subjects.others == 0
    by_id = {row.result_id: row for row in rows}
    assert len(rows) == len(by_id) == len(data.labs) + len(data.treg)
    for checked in data.labs:
        lab = checked.record.lab
        row = by_id[lab.result_id]
        assert (row.subject_id, row.visit_code, row.window) == (lab.subject_id, lab.visit_code, "in-window")

    broken = tmp_path / "nd" / "Observation.ndjson"
    lines = broken.read_bytes().count(b"\n")
    broken.write_bytes(broken.read_bytes() + b'["an array"]\n')
    with pytest.raises(NdjsonError, match=rf"Observation.ndjson, line {lines + 1}: not a FHIR"):
        list(
            labs_from_ndjson([broken, tmp_path / "nd" / "ResearchStudy.ndjson"], data.study, LabCatalogue(load_pack()))[
                1
            ]
        )


def test_a_server_that_refuses_type_filters_gets_an_export_without_them(
    exporter: Exporter, pushed: TrialData, tmp_path: Path
) -> None:
    refused: list[str] = []

    def refuse_filters(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("$export") and b"_typeFilter" in request.content:
            refused.append(request.url.path)
            return httpx.Response(
                400,
                json={
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {"severity": "error", "code": "not-supported", "diagnostics": "_typeFilter is not supported"}
                    ],
                },
            )
        return None

    original = exporter._kick_off
    exporter._kick_off = lambda request: refuse_filters(request) or original(request)  # type: ignore[method-assign]
    with client() as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        pulled = pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path, lab_filters=True))
    assert refused == ["/fhir/Patient/$export"] and len(exporter.kick_offs) == 1
    assert all(p["name"] != "_typeFilter" for p in exporter.kick_offs[0][1]["parameter"])
    assert pulled.total_rows == len(pushed.labs) + len(pushed.treg) + 1
    assert any("refused _typeFilter (400)" in note for note in pulled.fallbacks)


def test_the_cli_pulls_through_an_export_and_asks_the_lab_filters_when_told(
    exporter: Exporter, pushed: TrialData, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from fhir_lupus.cli import app

    exporter.waits = [{"Retry-After": "0", "X-Progress": "half way"}]
    command = ["pull", "--server", BASE, "-o", str(tmp_path / "labs.csv"), "--journal", str(tmp_path / "j.sqlite")]
    result = CliRunner().invoke(app, [*command, "--bulk", "--bulk-lab-filters", "--downloads", "2"])
    assert result.exit_code == 0, result.output
    assert "export in progress: half way (Retry-After 0 s)" in result.output
    assert "bulk export (patient level, kicked off): 2 status request(s)" in result.output
    filters = [p["valueString"] for p in exporter.kick_offs[0][1]["parameter"] if p["name"] == "_typeFilter"]
    assert any(f.startswith("Observation?category=") for f in filters)
    assert (
        len((tmp_path / "labs.csv").read_text(encoding="utf-8").splitlines()) == len(pushed.labs) + len(pushed.treg) + 2
    )

    group = CliRunner().invoke(app, [*command, "--bulk", "--bulk-level", "group"])
    assert group.exit_code == 2 and "--group ID" in group.output
    level = CliRunner().invoke(app, [*command, "--bulk", "--bulk-level", "ward"])
    assert level.exit_code == 2 and "--bulk-level must be one of patient, group, system" in level.output


def test_the_cli_exits_6_with_the_server_s_words_when_the_server_fails_the_export(
    exporter: Exporter, pushed: TrialData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export the server failed (its status answers 500 with an OperationOutcome, after retries) is a server
    failure, exit 6 (issue 22: it was 2, our own error), one message, no traceback."""
    from typer.testing import CliRunner

    from fhir_lupus.cli import app

    failed = {"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "diagnostics": "export job failed"}]}
    exporter._status = lambda request: httpx.Response(500, json=failed)  # type: ignore[method-assign]
    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt: 0.0)  # the retries, without their waits
    command = ["pull", "--server", BASE, "-o", str(tmp_path / "labs.csv"), "--journal", str(tmp_path / "j.sqlite")]
    result = CliRunner().invoke(app, [*command, "--bulk"])
    assert result.exit_code == 6, result.output
    assert "export job failed" in result.output and "Traceback" not in result.output


def test_a_study_without_enrolled_subjects_asks_no_export(
    exporter: Exporter, pushed: TrialData, tmp_path: Path
) -> None:
    for research_subject in exporter.fake.all("ResearchSubject"):
        research_subject["status"] = "candidate"
    with client() as fhir, Journal(tmp_path / "bulk.sqlite") as journal:
        pulled = pull_study(fhir, journal, pushed.study, since=None, bulk=options(tmp_path))
    assert pulled.subjects == 0 and pulled.total_rows == 0 and pulled.skipped_subjects == {"candidate": 2}
    assert exporter.kick_offs == [] and exporter.deleted == []
    assert not [request for request in exporter.fake.requests if request[0] == "DELETE"]
