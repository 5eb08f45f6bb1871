"""The fault proxy forwards faithfully and injects exactly the faults asked for, against a tiny local upstream.

The integration tests trust the proxy to tell them where a fault happened (before or after the server saw the
request); these tests pin that down with an upstream that counts what it received, so a proxy bug cannot show
up later as a spurious "lost" or "duplicated" write in the client's tests.
"""

from __future__ import annotations

import gzip
import http.server
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from faultproxy import FaultProxy, Match, Request, Response

FAULTPROXY = Path(__file__).resolve().parent / "faultproxy.py"


@dataclass(frozen=True)
class Seen:
    """One request as the upstream received it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class Upstream:
    """A stdlib stand-in for a FHIR server: echoes requests as JSON with absolute URLs of itself, counts them.

    Special paths: ``/binary`` (octet-stream holding its own URL), ``/gzip`` (gzip body whatever was asked),
    ``/chunked`` (chunked answer), ``/status/NNN``. ``delay`` slows every answer.
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.delay = 0.0
        self.lock = threading.Lock()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle_any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with upstream.lock:
                    upstream.seen.append(
                        Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                if upstream.delay:
                    time.sleep(upstream.delay)
                base = upstream.base
                if self.path == "/binary":
                    self.reply(200, base.encode(), "application/octet-stream")
                    return
                if self.path.startswith("/status/"):
                    self.reply(int(self.path.rsplit("/", 1)[1]), b"", "text/plain")
                    return
                payload = {
                    "method": self.command,
                    "target": self.path,
                    "body": body.decode("utf-8", "replace"),
                    "self": f"{base}{self.path}",
                    "next": f"{base}/fhir/Patient?_page=2",
                    "alias": base.replace("127.0.0.1", "localhost") + "/fhir/Patient/9",
                }
                data = json.dumps(payload).encode()
                status = 201 if self.command == "POST" else 200
                location = f"{base}/fhir/Patient/1/_history/1"
                if self.path == "/gzip":
                    self.reply(status, gzip.compress(data), "application/fhir+json", {"Content-Encoding": "gzip"})
                elif self.path == "/chunked":
                    self.send_response(status)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for piece in (data[:10], data[10:]):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.reply(
                        status, data, "application/fhir+json", {"Location": location, "Content-Location": location}
                    )

            def reply(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # like a real server; the default 5 drops SYNs under concurrency

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def count(self, method: str | None = None) -> int:
        with self.lock:
            return sum(1 for seen in self.seen if method is None or seen.method == method)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.base) as running:
        yield running


@pytest.fixture
def client(proxy: FaultProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.base, timeout=5) as http:
        yield http


TRANSPORT_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


# ----------------------------------------------------------------------------------------------- forwarding


def test_forwards_methods_paths_queries_bodies_and_headers(
    upstream: Upstream, proxy: FaultProxy, client: httpx.Client
) -> None:
    got = client.get("/fhir/Patient", params={"identifier": "sys|1"}, headers={"X-Trace": "t1"})
    created = client.post("/fhir/Patient", content=b'{"resourceType":"Patient"}', headers={"Content-Type": "x/y"})
    updated = client.put("/fhir/Patient/1", json={"resourceType": "Patient", "id": "1"})
    deleted = client.delete("/fhir/Patient/1")

    assert [r.status_code for r in (got, created, updated, deleted)] == [200, 201, 200, 200]
    first, second, third, _ = upstream.seen
    assert (first.method, first.target) == ("GET", "/fhir/Patient?identifier=sys%7C1")
    assert first.headers["x-trace"] == "t1"
    assert first.headers["host"] == upstream.base.removeprefix("http://")
    assert (second.method, second.body, second.headers["content-type"]) == (
        "POST",
        b'{"resourceType":"Patient"}',
        "x/y",
    )
    assert json.loads(third.body) == {"resourceType": "Patient", "id": "1"}
    assert [e.action for e in proxy.events] == ["forwarded"] * 4
    assert [e.upstream_status for e in proxy.events] == [200, 201, 200, 200]


def test_drops_hop_by_hop_headers(upstream: Upstream, client: httpx.Client) -> None:
    client.get("/x", headers={"Connection": "keep-alive, X-Hop", "X-Hop": "1", "Keep-Alive": "5", "X-End": "2"})
    headers = upstream.seen[0].headers
    assert "x-hop" not in headers and "keep-alive" not in headers
    assert headers["x-end"] == "2"
    assert headers["accept-encoding"] == "identity"


def test_chunked_request_body_is_forwarded_with_a_length(upstream: Upstream, client: httpx.Client) -> None:
    response = client.post("/fhir/Binary", content=iter([b"ab", b"", b"cd", b"ef"]))
    assert response.status_code == 201
    seen = upstream.seen[0]
    assert seen.body == b"abcdef"
    assert seen.headers["content-length"] == "6" and "transfer-encoding" not in seen.headers


def test_rewrites_upstream_origin_in_body_and_location(
    upstream: Upstream, proxy: FaultProxy, client: httpx.Client
) -> None:
    response = client.get("/fhir/Patient")
    body = response.json()
    assert body["self"] == f"{proxy.base}/fhir/Patient"
    assert body["next"] == f"{proxy.base}/fhir/Patient?_page=2"
    assert body["alias"] == f"{proxy.base}/fhir/Patient/9"  # localhost:PORT is the same server
    assert response.headers["Location"] == f"{proxy.base}/fhir/Patient/1/_history/1"
    assert response.headers["Content-Location"] == f"{proxy.base}/fhir/Patient/1/_history/1"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert upstream.base not in response.text


def test_rewrites_decoded_gzip_and_chunked_answers_but_not_binary(
    upstream: Upstream, proxy: FaultProxy, client: httpx.Client
) -> None:
    zipped = client.get("/gzip")
    assert "content-encoding" not in zipped.headers
    assert zipped.json()["self"] == f"{proxy.base}/gzip"
    chunked = client.get("/chunked")
    assert chunked.json()["self"] == f"{proxy.base}/chunked"
    assert int(chunked.headers["Content-Length"]) == len(chunked.content)
    assert client.get("/binary").content == upstream.base.encode()


def test_proxy_origin_in_request_bodies_goes_upstream_as_the_servers_own(
    upstream: Upstream, proxy: FaultProxy, client: httpx.Client
) -> None:
    client.post("/fhir/Observation", json={"subject": {"reference": f"{proxy.base}/fhir/Patient/1"}})
    assert json.loads(upstream.seen[0].body) == {"subject": {"reference": f"{upstream.base}/fhir/Patient/1"}}


def test_head_and_no_content(upstream: Upstream, client: httpx.Client) -> None:
    head = client.head("/fhir/Patient/1")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["Content-Length"]) > 0
    assert client.get("/status/204").status_code == 204
    assert client.get("/fhir/Patient/1").status_code == 200  # the connection is still in step


def test_keep_alive_uses_one_client_connection(upstream: Upstream, proxy: FaultProxy, client: httpx.Client) -> None:
    for number in range(5):
        assert client.put(f"/fhir/Patient/{number}", json={"n": number}).status_code == 200
    assert proxy.connections == 1
    assert upstream.count("PUT") == 5


def test_many_concurrent_clients(upstream: Upstream, proxy: FaultProxy) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        with httpx.Client(base_url=proxy.base, timeout=5) as http:
            for number in range(5):
                status = http.post("/fhir/Patient", json={"w": worker, "n": number}).status_code
                with lock:
                    statuses.append(status)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert statuses == [201] * 100
    assert upstream.count("POST") == 100
    assert proxy.count("forwarded", "POST") == 100


def test_upstream_down_gives_502(upstream: Upstream) -> None:
    upstream.stop()
    with FaultProxy(upstream.base) as proxy, httpx.Client(base_url=proxy.base, timeout=5) as http:
        response = http.get("/fhir/metadata")
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "upstream" in response.text and len(response.text) < 200
    (event,) = proxy.events
    assert event.upstream_status is None and event.error and "ConnectionRefused" in event.error


def test_slow_upstream_past_the_upstream_timeout_gives_504(upstream: Upstream) -> None:
    upstream.delay = 0.5
    with FaultProxy(upstream.base, upstream_timeout=0.1) as proxy, httpx.Client(base_url=proxy.base) as http:
        assert http.get("/slow").status_code == 504


# ----------------------------------------------------------------------------------------------- faults


def test_respond_503_and_429_without_reaching_upstream(
    upstream: Upstream, proxy: FaultProxy, client: httpx.Client
) -> None:
    unavailable = proxy.respond(503, method="POST")
    throttled = proxy.respond(429, {"Retry-After": "1"}, b"slow down", method="GET")

    assert client.post("/fhir/Patient", json={}).status_code == 503
    limited = client.get("/fhir/Patient")
    assert (limited.status_code, limited.headers["Retry-After"], limited.content) == (429, "1", b"slow down")
    assert upstream.count() == 0
    assert (unavailable.fired, throttled.fired) == (1, 1)
    assert proxy.count("respond") == 2

    assert client.post("/fhir/Patient", json={}).status_code == 201  # times=1: the next one passes
    assert upstream.count() == 1


def test_times_is_honoured(upstream: Upstream, proxy: FaultProxy, client: httpx.Client) -> None:
    twice = proxy.respond(503, times=2)
    assert [client.get("/a").status_code for _ in range(3)] == [503, 503, 200]
    assert (twice.fired, twice.remaining, twice.exhausted) == (2, 0, True)

    forever = proxy.respond(500, times=None)
    assert [client.get("/a").status_code for _ in range(3)] == [500, 500, 500]
    assert (forever.fired, forever.remaining) == (3, None)
    proxy.remove_rule(forever)
    assert client.get("/a").status_code == 200


def test_first_matching_rule_decides_and_matchers_select(
    upstream: Upstream, proxy: FaultProxy, client: httpx.Client
) -> None:
    proxy.respond(418, path="/fhir/Patient", method="GET", times=None)
    proxy.respond(409, prefix="/fhir/Observation", times=None)
    proxy.respond(410, regex=r"/_history/\d+$", times=None)
    proxy.respond(411, where=lambda request: b"poison" in request.body, times=None)
    proxy.respond(412, where=lambda request: "code=x" in request.query, times=None)
    proxy.respond(500, prefix="/fhir/Observation", times=None)  # shadowed by the 409 rule

    assert client.get("/fhir/Patient").status_code == 418
    assert client.get("/fhir/Patient/1").status_code == 200
    assert client.post("/fhir/Patient", json={}).status_code == 201
    assert client.get("/fhir/Observation?subject=1").status_code == 409
    assert client.get("/fhir/Patient/1/_history/2").status_code == 410
    assert client.post("/fhir/Condition", content=b"a poison pill").status_code == 411
    assert client.get("/fhir/Condition?code=x").status_code == 412
    assert proxy.rules[-1].fired == 0


def test_match_alone() -> None:
    request = Request("PUT", "/fhir/Patient/7?x=1", (("Authorization", "Bearer t"),), b'{"id": "7"}')
    assert Match()(request)
    assert Match.of(method="put", regex="Patient/[0-9]+$", prefix="/fhir")(request)
    assert not Match.of(method="POST")(request)
    assert not Match.of(path="/fhir/Patient")(request)
    assert Match.of(where=lambda r: r.json()["id"] == "7" and r.header("authorization") == "Bearer t")(request)
    assert (request.path, request.query) == ("/fhir/Patient/7", "x=1")


def test_delay_after_forward_times_out_the_client_but_the_server_did_the_work(
    upstream: Upstream, proxy: FaultProxy
) -> None:
    rule = proxy.delay(0.6, method="POST")
    with httpx.Client(base_url=proxy.base, timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/fhir/Patient", json={"resourceType": "Patient"})
        assert upstream.count("POST") == 1  # forwarded before the hold
        assert rule.fired == 1 and proxy.count("delay") == 1
        assert http.get("/fhir/Patient").status_code == 200  # a new connection works at once
    assert proxy.wait_idle(2)
    (delayed, _) = proxy.events
    assert (delayed.action, delayed.upstream_status) == ("delay", 201)


def test_delay_shorter_than_the_timeout_only_slows(upstream: Upstream, proxy: FaultProxy, client: httpx.Client) -> None:
    proxy.delay(0.2)
    started = time.monotonic()
    assert client.get("/fhir/Patient").status_code == 200
    assert time.monotonic() - started >= 0.2


def test_delay_before_forward_reaches_the_server_late(upstream: Upstream, proxy: FaultProxy) -> None:
    proxy.delay(0.5, after_forward=False, method="POST")
    with httpx.Client(base_url=proxy.base, timeout=0.15) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/fhir/Patient", json={})
    assert upstream.count() == 0  # the client gave up before the server saw anything
    assert proxy.wait_idle(2)
    assert upstream.count("POST") == 1  # ... and then the request arrived after all


def test_reset_after_forward_server_committed_client_sees_transport_error(
    upstream: Upstream, proxy: FaultProxy, client: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    rule = proxy.reset_after_forward(method="POST")
    with pytest.raises(TRANSPORT_ERRORS):
        client.post("/fhir/Patient", json={"resourceType": "Patient"})
    assert upstream.count("POST") == 1
    assert rule.fired == 1
    (event,) = proxy.events
    assert (event.action, event.upstream_status, event.status, event.error) == (
        "reset_after_forward",
        201,
        None,
        "reset",
    )
    assert client.post("/fhir/Patient", json={}).status_code == 201  # the pool reconnects
    assert capfd.readouterr().err == ""


def test_reset_before_forward_server_never_saw_it(
    upstream: Upstream, proxy: FaultProxy, client: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    assert client.get("/warm-up").status_code == 200  # the reset hits a pooled keep-alive connection
    proxy.reset_before_forward(method="PUT")
    with pytest.raises(TRANSPORT_ERRORS):
        client.put("/fhir/Patient/1", json={"id": "1"})
    assert upstream.count("PUT") == 0
    assert proxy.count("reset_before_forward") == 1
    assert client.put("/fhir/Patient/1", json={"id": "1"}).status_code == 200
    assert upstream.count("PUT") == 1
    assert capfd.readouterr().err == ""


def test_intercept_as_a_token_gateway(upstream: Upstream, proxy: FaultProxy, client: httpx.Client) -> None:
    def gateway(request: Request) -> Response | None:
        if request.header("Authorization") == "Bearer good":
            return None
        outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]}
        return Response.json(401, outcome, {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    rule = proxy.intercept(gateway, prefix="/fhir")
    after = proxy.respond(503, method="DELETE")  # the hook let it through, so later rules still apply

    denied = client.get("/fhir/Patient")
    assert denied.status_code == 401 and denied.json()["resourceType"] == "OperationOutcome"
    assert denied.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/fhir/Patient", headers={"Authorization": "Bearer bad"}).status_code == 401
    assert client.get("/fhir/Patient", headers={"Authorization": "Bearer good"}).status_code == 200
    assert client.delete("/fhir/Patient/1", headers={"Authorization": "Bearer good"}).status_code == 503
    assert client.get("/open").status_code == 200  # outside the gateway's prefix
    assert (rule.fired, rule.remaining, after.fired) == (2, None, 1)
    assert upstream.count() == 2
    assert [e.action for e in proxy.events] == ["intercept", "intercept", "forwarded", "respond", "forwarded"]


def test_a_failing_hook_answers_500_and_is_reported(
    proxy: FaultProxy, client: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    proxy.intercept(lambda request: 1 / 0)  # type: ignore[arg-type,return-value]
    assert client.get("/x").status_code == 500
    assert "ZeroDivisionError" in capfd.readouterr().err
    assert proxy.count("error") == 1


def test_event_log_count_and_clear(proxy: FaultProxy, client: httpx.Client) -> None:
    proxy.respond(503, method="GET")
    client.get("/a")
    client.get("/b?q=1")
    client.post("/c", json={})
    assert proxy.count() == 3
    assert proxy.count(method="get") == 2
    assert proxy.count("forwarded") == 2
    assert proxy.count("forwarded", "GET") == 1
    assert [(e.method, e.target, e.status) for e in proxy.events] == [
        ("GET", "/a", 503),
        ("GET", "/b?q=1", 200),
        ("POST", "/c", 201),
    ]
    proxy.clear_log()
    assert proxy.count() == 0 and proxy.events == []


def test_client_leaving_during_a_hold_is_quiet_and_stop_is_prompt(
    upstream: Upstream, capfd: pytest.CaptureFixture[str]
) -> None:
    proxy = FaultProxy(upstream.base).start()
    proxy.delay(30)
    with httpx.Client(base_url=proxy.base, timeout=0.2) as http, pytest.raises(httpx.ReadTimeout):
        http.get("/held")
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 2
    assert proxy.wait_idle(2)
    assert capfd.readouterr().err == ""


def test_construction_is_checked() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("http://127.0.0.1:1", host="0.0.0.0")
    with pytest.raises(ValueError, match="origin"):
        FaultProxy("http://127.0.0.1:1/fhir")
    with pytest.raises(ValueError, match="times"):
        FaultProxy("http://127.0.0.1:1").respond(503, times=0)
    with pytest.raises(RuntimeError):
        _ = FaultProxy("http://127.0.0.1:1").base


def test_runs_as_a_script(upstream: Upstream) -> None:
    command = [sys.executable, str(FAULTPROXY), "--upstream", upstream.base]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            banner = process.stdout.readline()
            found = re.search(r"http://127\.0\.0\.1:\d+", banner)
            assert found, banner
            response = httpx.get(found.group(0) + "/fhir/Patient", timeout=5)
            assert response.json()["self"] == found.group(0) + "/fhir/Patient"
        finally:
            process.send_signal(signal.SIGINT)
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()  # never leave the test hanging on a proxy that would not stop
                raise
    assert code == 0
