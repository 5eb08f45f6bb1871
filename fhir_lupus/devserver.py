"""Start and stop the real servers kept in servers/ on loopback: HAPI FHIR JPA and Medplum's engine (FHIR), and
oidc-provider (an OAuth authorization server for the SMART Backend Services tests; it answers discovery, not
``/fhir/metadata``, and its URL is its issuer). ``hapi-subscriptions`` is the same HAPI jar with HAPI's REST-hook
subscriptions switched on, a server of its own because matching every write would slow every other test.

Used by ``fhir-lupus demo``, the integration tests and ``scripts/fhir-server``. Each server directory has a
``run.sh PORT`` that builds what it needs and runs the server in the foreground; here it is started in its
own process group, and we wait until ``/fhir/metadata`` answers (or the process dies, or time runs out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fhir_lupus.client import FhirClient, RetryPolicy, serves
from fhir_lupus.errors import CheckoutMissing, FhirLupusError

__all__ = [
    "SERVERS",
    "VARIANTS",
    "CheckoutMissing",
    "ServerHandle",
    "checkout_missing",
    "launch",
    "repo_root",
    "start",
    "stop",
]

SERVERS = {"hapi": 18080, "hapi-subscriptions": 18083, "medplum": 18103, "oidc": 18090}  # name -> default port
AUTH_SERVERS = frozenset({"oidc"})  # not FHIR servers: base URL without /fhir, ready when discovery answers
# Servers that run another server's directory with settings of their own: name -> (directory, environment).
# The subscriptions server holds only what its tests write, so a small heap keeps its JVM lean.
VARIANTS = {"hapi-subscriptions": ("hapi", {"HAPI_SUBSCRIPTIONS": "rest-hook", "HAPI_HEAP": "512m"})}


def repo_root() -> Path:
    return Path(os.environ.get("FHIR_LUPUS_ROOT", Path(__file__).resolve().parents[1]))


def checkout_missing(*relative: str) -> CheckoutMissing | None:
    """None when every path exists under the checkout, else the error that names the missing ones."""
    missing = [path for path in relative if not (repo_root() / path).exists()]
    if not missing:
        return None
    return CheckoutMissing(
        f"this needs a checkout of the repository ({', '.join(missing)} not found under {repo_root()}, "
        "which is where the package is installed); run `make demo` in a checkout, or use "
        "`fhir-lupus demo --server URL --data DIR` against a running FHIR server"
    )


@dataclass
class ServerHandle:
    name: str
    url: str
    pid: int
    log: Path


def launch(name: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run server ``name`` on ``port`` (a variant runs its base's run.sh)."""
    directory, settings = VARIANTS.get(name, (name, {}))
    missing = checkout_missing(f"servers/{directory}/run.sh")
    if missing is not None:
        raise missing
    script = repo_root() / "servers" / directory / "run.sh"
    return ["bash", str(script), str(port)], {**os.environ, **settings}


def start(name: str, port: int | None = None, *, timeout: float = 900.0, state_dir: Path | None = None) -> ServerHandle:
    """Start a server and wait for its CapabilityStatement; RuntimeError with the log's tail on failure."""
    if name not in SERVERS:
        raise ValueError(f"unknown server {name!r}; known: {', '.join(SERVERS)}")
    port = port or SERVERS[name]
    command, environment = launch(name, port)
    state = state_dir or repo_root() / ".fhir-servers"
    state.mkdir(parents=True, exist_ok=True)
    log = state / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends the JVM / node child too
        )
    url = f"http://127.0.0.1:{port}" + ("" if name in AUTH_SERVERS else "/fhir")
    handle = ServerHandle(name, url, process.pid, log)
    (state / f"{name}.json").write_text(json.dumps({"url": url, "pid": process.pid, "log": str(log)}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} before answering; log {log}:\n{_tail(log)}")
        if _discovers(url) if name in AUTH_SERVERS else _answers(url):
            return handle
        time.sleep(0.5)
    stop(handle)
    raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f} s; log {log}:\n{_tail(log)}")


def _discovers(issuer: str) -> bool:
    """True once an authorization server serves its discovery document (one quick try)."""
    return serves(f"{issuer}/.well-known/openid-configuration")


def _answers(url: str) -> bool:
    """True once the server serves its CapabilityStatement (one quick try, no retries)."""
    try:
        with FhirClient(url, timeout=5.0, retry=RetryPolicy(attempts=1)) as client:
            client.capabilities()
        return True
    except FhirLupusError:
        return False


def stop(handle: ServerHandle, *, grace: float = 20.0) -> None:
    try:
        os.killpg(handle.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # reap our own child: a zombie would look alive to killpg
            os.waitpid(handle.pid, os.WNOHANG)
        try:
            os.killpg(handle.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(handle.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(handle.pid, os.WNOHANG)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: list[str] | None = None) -> int:
    """scripts/fhir-server: start NAME [--port N] | stop NAME | url NAME (NAME: hapi, hapi-subscriptions, ...)."""
    parser = argparse.ArgumentParser(prog="fhir-server", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "url"])
    parser.add_argument("name", choices=sorted(SERVERS))
    parser.add_argument("--port", type=int)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    state = repo_root() / ".fhir-servers" / f"{args.name}.json"
    if args.action == "start":
        try:
            handle = start(args.name, args.port, timeout=args.timeout)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2 if isinstance(exc, CheckoutMissing) else 1
        print(handle.url)
        return 0
    if not state.exists():
        print(f"{args.name} is not running (no {state})", file=sys.stderr)
        return 1 if args.action == "url" else 0
    info = json.loads(state.read_text())
    if args.action == "url":
        print(info["url"])
        return 0
    stop(ServerHandle(args.name, info["url"], info["pid"], Path(info["log"])))
    state.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
