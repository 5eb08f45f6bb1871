"""Every failure of a command is one message with what to do and a code of the one exit-code table, never a
traceback (issue 22, items 3 and 4), driven through the CLI in-process.

Servers are on loopback only: an unreachable server is a closed port, a non-FHIR answer and a TLS error come
from a tiny HTTP server of this module (plain HTTP, so https to it fails the handshake).
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fakefhir import BASE, FakeFhir
from support import REPO
from typer.testing import CliRunner, Result

from fhir_lupus.cli import app
from fhir_lupus.cli._exit import EXIT_CODES, MEANINGS, RESULT_CODES, exit_table_markdown
from fhir_lupus.client import FhirClient, TransientHttpError
from fhir_lupus.journal import Journal
from fhir_lupus.push import push_trial
from fhir_lupus.source import TrialSource

runner = CliRunner()


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def answering(status: int, content_type: str, body: bytes) -> Iterator[str]:
    """A plain-HTTP server on loopback answering every GET with ``status``, ``content_type`` and ``body``; its
    ``/fhir`` URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URL of every request that reached the network layer (each attempt of a retried one)."""
    sent: list[str] = []
    real = httpx.HTTPTransport.handle_request

    def counted(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return real(self, request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", counted)
    return sent


@pytest.fixture
def never_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each time a command reads and checks a trial (TrialSource.check)."""
    reads: list[str] = []
    real = TrialSource.check

    def check(self: TrialSource) -> None:
        reads.append(str(self.data_dir))
        real(self)

    monkeypatch.setattr(TrialSource, "check", check)
    return reads


def one_message(result: Result) -> str:
    """The error line of a failed command, after checking there is no traceback."""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # an exit, not an escaped error
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return " ".join(lines[0].split())


def audit_entries(journal: Path) -> list[dict[str, object]]:
    log = journal.with_suffix(".audit.jsonl")
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []


def push(data: Path, server: str, journal: Path, *extra: str) -> Result:
    return runner.invoke(app, ["push", str(data), "--server", server, "--journal", str(journal), *extra])


# -- item 3: the failures, each a message -------------------------------------------------------------------


class TestServerNotReachable:
    def test_a_push_fails_at_once_before_reading_the_trial_and_is_audited(
        self, dataset: Callable[..., Path], tmp_path: Path, sends: list[str], never_read: list[str]
    ) -> None:
        port = closed_port()
        journal = tmp_path / "j.sqlite"
        result = push(dataset(), f"http://127.0.0.1:{port}/fhir", journal)
        assert result.exit_code == 6, result.output
        message = one_message(result)
        assert f"connection refused by 127.0.0.1:{port}" in message and "check the server URL (--server)" in message
        assert sends == [f"http://127.0.0.1:{port}/fhir/metadata"]  # once: no retries on the first contact
        assert never_read == []  # the trial was not read
        (entry,) = audit_entries(journal)
        assert (entry["kind"], entry["outcome"]) == ("push", "failed: TransientHttpError")

    def test_a_dry_run_fails_the_same_and_is_not_audited(
        self, dataset: Callable[..., Path], tmp_path: Path, never_read: list[str]
    ) -> None:
        journal = tmp_path / "j.sqlite"
        result = push(dataset(), f"http://127.0.0.1:{closed_port()}/fhir", journal, "--dry-run")
        assert result.exit_code == 6 and "connection refused" in one_message(result)
        assert never_read == [] and audit_entries(journal) == []

    def test_a_pull_fails_at_once_and_is_audited(self, tmp_path: Path, sends: list[str]) -> None:
        journal = tmp_path / "j.sqlite"
        server = f"http://127.0.0.1:{closed_port()}/fhir"
        result = runner.invoke(
            app, ["pull", "--server", server, "-o", str(tmp_path / "l.csv"), "--journal", str(journal)]
        )
        assert result.exit_code == 6 and "connection refused" in one_message(result)
        assert len(sends) == 1
        (entry,) = audit_entries(journal)
        assert (entry["kind"], entry["outcome"]) == ("pull", "failed: TransientHttpError")

    def test_a_registry_submission_that_fails_on_its_first_request_is_audited(
        self, dataset: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FHIR_LUPUS_REGISTRY_KEY", "registry-test-key-0123456789")
        package = tmp_path / "package"
        made = runner.invoke(app, ["registry", "package", str(dataset()), "-o", str(package)])
        assert made.exit_code == 0, made.output
        journal = tmp_path / "j.sqlite"
        server = f"http://127.0.0.1:{closed_port()}/fhir"
        result = runner.invoke(app, ["registry", "submit", str(package), "--server", server, "--journal", str(journal)])
        assert result.exit_code == 6 and "connection refused" in one_message(result)
        (entry,) = audit_entries(journal)
        assert (entry["kind"], entry["outcome"]) == ("registry-submit", "failed: TransientHttpError")


def test_push_trial_called_by_a_program_audits_a_first_request_that_fails(
    dataset: Callable[..., Path], tmp_path: Path
) -> None:
    """The library path (the demo's, a script's) records the attempt as the CLI does (issue 22: it did not)."""
    journal_path = tmp_path / "j.sqlite"
    with (
        FhirClient(f"http://127.0.0.1:{closed_port()}/fhir") as client,
        Journal(journal_path) as journal,
        TrialSource.directory(dataset()) as trial,
        pytest.raises(TransientHttpError, match="connection refused"),
    ):
        push_trial(trial, client, journal, source="a script")
    (entry,) = audit_entries(journal_path)
    assert (entry["kind"], entry["outcome"]) == ("push", "failed: TransientHttpError")


class TestAnswersThatAreNotFhir:
    @pytest.mark.parametrize(
        ("status", "content_type", "body", "said"),
        [
            (200, "text/html", b"<html><body>Welcome to nginx</body></html>", "answered text/html: '<html>"),
            (200, "text/plain", b"it works", "answered text/plain: 'it works'"),
            (200, "application/json", b'{"status": "ok"}', "answered JSON that is no FHIR resource"),
            (404, "text/html", b"<html>Not Found</html>", "answered 404"),
        ],
    )
    def test_a_push_says_the_url_is_no_fhir_base_and_exits_6(
        self,
        dataset: Callable[..., Path],
        tmp_path: Path,
        never_read: list[str],
        status: int,
        content_type: str,
        body: bytes,
        said: str,
    ) -> None:
        with answering(status, content_type, body) as server:
            result = push(dataset(), server, tmp_path / "j.sqlite")
        assert result.exit_code == 6, result.output
        message = one_message(result)
        assert "not a FHIR server's base URL" in message and said in message and "check the server URL" in message
        assert never_read == []

    def test_https_to_a_plain_http_port_is_a_tls_error_saying_so(
        self, dataset: Callable[..., Path], tmp_path: Path, sends: list[str]
    ) -> None:
        with answering(200, "application/fhir+json", b"{}") as server:
            result = push(dataset(), server.replace("http://", "https://"), tmp_path / "j.sqlite")
        assert result.exit_code == 6, result.output
        message = one_message(result)
        assert "TLS failed with 127.0.0.1:" in message and "use http:// if it does not" in message
        assert len(sends) == 1


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


class TestSmartKeys:
    """A key that cannot sign is a configuration error (2), found before any request."""

    @pytest.fixture
    def keys(self, tmp_path: Path) -> dict[str, Path]:
        files = {
            "ec": _pem(ec.generate_private_key(ec.SECP384R1())),
            "ec256": _pem(ec.generate_private_key(ec.SECP256R1())),
            "rsa": _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "encrypted": _pem(ec.generate_private_key(ec.SECP384R1()), b"secret"),
            "not-pem": b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI a public key\n",
        }
        paths = {}
        for name, content in files.items():
            paths[name] = tmp_path / f"{name}.pem"
            paths[name].write_bytes(content)
        return paths

    @pytest.mark.parametrize(
        ("key", "alg", "said"),
        [
            ("ec", "RS384", "RS384 signs with an RSA key, this is an EC key on secp384r1: pass --smart-alg ES384"),
            ("rsa", "ES384", "ES384 signs with an EC key on P-384, this is an RSA key: pass --smart-alg RS384"),
            ("ec256", "ES384", "this is an EC key on secp256r1: give an EC key on P-384"),
            ("not-pem", "RS384", "not a PEM private key: give the private key in PEM form"),
            ("encrypted", "ES384", "the key is encrypted: give it without a passphrase"),
            ("absent", "RS384", "No such file or directory: give the path of the client's private key"),
        ],
    )
    def test_a_key_that_cannot_sign_exits_2_naming_the_fix(
        self,
        dataset: Callable[..., Path],
        tmp_path: Path,
        keys: dict[str, Path],
        sends: list[str],
        key: str,
        alg: str,
        said: str,
    ) -> None:
        path = keys.get(key, tmp_path / "absent.pem")
        smart = ["--smart-client-id", "lupus", "--smart-key", str(path), "--smart-alg", alg]
        result = push(dataset(), f"http://127.0.0.1:{closed_port()}/fhir", tmp_path / "j.sqlite", *smart)
        assert result.exit_code == 2, result.output
        message = one_message(result)
        assert f"--smart-key {path}: " in message and said in message
        assert sends == []  # no request made

    def test_a_key_without_read_permission_says_so(
        self, dataset: Callable[..., Path], tmp_path: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # the tests may run as root, whom no file mode stops: the read fails as it would for anyone else
        real = Path.read_bytes

        def read_bytes(self: Path) -> bytes:
            if self == keys["rsa"]:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
        smart = ["--smart-client-id", "lupus", "--smart-key", str(keys["rsa"])]
        result = push(dataset(), f"http://127.0.0.1:{closed_port()}/fhir", tmp_path / "j.sqlite", *smart)
        assert result.exit_code == 2
        assert "permission denied: make the key readable by the user running fhir-lupus" in one_message(result)


def test_an_unexpected_exception_is_one_message_exit_2(
    dataset: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("no such thing")

    monkeypatch.setattr("fhir_lupus.cli._mapping.track_queries", broken)
    result = runner.invoke(app, ["validate", str(dataset())])
    assert result.exit_code == 2
    assert "unexpected KeyError: 'no such thing' (run again with -vv for the traceback" in one_message(result)


# -- item 4: one exit-code table, documented and reachable ------------------------------------------------------


def test_the_readme_holds_the_table() -> None:
    assert exit_table_markdown() in (REPO / "README.md").read_text(encoding="utf-8")


def test_help_lists_every_code_with_its_meaning() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    text = re.sub(r"(?<=\w)- (?=\w)", "-", " ".join(result.output.split()))  # a word wrapped at its hyphen
    assert "Exit codes (every command):" in text
    for code, meaning in MEANINGS.items():
        assert f"{code} {' '.join(meaning.split())}" in text


def test_every_code_a_command_ends_with_is_documented() -> None:
    produced = {0} | set(EXIT_CODES.values()) | set(RESULT_CODES.values())
    assert produced == set(MEANINGS)


def _rejected(dataset: Callable[..., Path], tmp_path: Path) -> Result:
    def spoil(rows: dict[str, list[dict[str, str]]]) -> None:
        rows["labs.csv"][2]["unit"] = "furlongs"

    return runner.invoke(app, ["validate", str(dataset(spoil))])


def _usage(dataset: Callable[..., Path], tmp_path: Path) -> Result:
    return runner.invoke(app, ["validate", str(dataset()), "--no-such-option"])


def _torn(dataset: Callable[..., Path], tmp_path: Path) -> Result:
    log = tmp_path / "a.audit.jsonl"
    from fhir_lupus.audit import append_event

    for _ in range(2):
        append_event(log, "push", server="s", counts={}, content_hash="0" * 64, details={}, outcome="complete")
    log.write_bytes(log.read_bytes() + b'{"seq": 3, "pre')
    return runner.invoke(app, ["audit", "verify", str(log), "--journal", str(tmp_path / "none.sqlite")])


def _refused(dataset: Callable[..., Path], tmp_path: Path) -> Result:
    key = tmp_path / "client.pem"
    key.write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    smart = ["--smart-client-id", "lupus", "--smart-key", str(key), "--smart-token-url", "https://auth.test/token"]
    with respx.mock:
        respx.post("https://auth.test/token").mock(return_value=httpx.Response(401, json={"error": "invalid_client"}))
        return push(dataset(), "http://127.0.0.1:9/r4", tmp_path / "j.sqlite", *smart)  # loopback: the example site


def _incomplete(dataset: Callable[..., Path], tmp_path: Path) -> Result:
    server = FakeFhir(fail_types={"Provenance"})
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1", port=9).mock(side_effect=server)
        return push(dataset(), BASE, tmp_path / "j.sqlite")


def _unreachable(dataset: Callable[..., Path], tmp_path: Path) -> Result:
    return push(dataset(), f"http://127.0.0.1:{closed_port()}/fhir", tmp_path / "j.sqlite")


REACH: dict[int, Callable[[Callable[..., Path], Path], Result]] = {
    0: lambda dataset, tmp_path: runner.invoke(app, ["validate", str(dataset())]),
    1: _rejected,
    2: _usage,
    3: _torn,
    4: _refused,
    5: _incomplete,
    6: _unreachable,
}


@pytest.mark.parametrize("code", sorted(MEANINGS))
def test_a_real_command_ends_with_each_code(code: int, dataset: Callable[..., Path], tmp_path: Path) -> None:
    assert set(REACH) == set(MEANINGS)  # a code added to the table needs its command here
    result = REACH[code](dataset, tmp_path)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
