"""A fault-injecting HTTP/1.1 reverse proxy on loopback, for integration tests of the FHIR client.

Why it exists: the client promises that nothing is lost or duplicated when the network misbehaves. That can only
be shown by failing an exchange at exact points — before the server sees a request, after the server has
committed it but before the client hears the answer, or by answering more slowly than the client waits — and a
real FHIR server cannot be made to fail like that on demand. The proxy sits between the client (httpx, one pooled
keep-alive connection) and the real server, forwards everything faithfully, and applies the faults that the test
asked for, in order, a given number of times. It keeps a log of what it did so a test can check its own premises
("the reset really happened after the server had the request").

The same rule machinery serves as a gateway: ``intercept(fn)`` inspects every request and may answer it itself
(e.g. 401 without a valid token) or let it through.

Example::

    with FaultProxy("http://127.0.0.1:18080") as proxy:
        rule = proxy.reset_after_forward(method="POST", prefix="/fhir/Patient")
        with FhirClient(proxy.base + "/fhir") as client:
            ...  # the create reaches the server, the client sees a reset and must not create twice
        assert rule.fired == 1

Run as a script to forward without faults (manual runs)::

    python tests/faultproxy.py --upstream http://127.0.0.1:18080 --port 18081

Only the standard library is used, so the module also runs outside the project's virtual environment.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import http.server
import ipaddress
import json
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import traceback
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, ClassVar, TypedDict, Unpack
from urllib.parse import urlsplit

__all__ = [
    "Action",
    "Delay",
    "Event",
    "FaultProxy",
    "Intercept",
    "Match",
    "Request",
    "ResetAfterForward",
    "ResetBeforeForward",
    "Respond",
    "Response",
    "Rule",
    "main",
]

# Headers that describe one connection, not the message (RFC 9110 §7.6.1); never passed through a proxy.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Response headers that carry absolute URLs of the server, which must point at the proxy instead.
URL_HEADERS = frozenset({"location", "content-location", "link"})
# Content types whose bodies may hold absolute URLs as text; other bodies (FHIR Binary, PDF, ...) are not touched.
_TEXTUAL = ("json", "xml", "text/", "html", "javascript", "x-www-form-urlencoded")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_NO_BODY_STATUSES = frozenset({204, 304})


# --------------------------------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Request:
    """One client request as the proxy received it, fully read, given to matchers, predicates and hooks.

    Immutable so that a hook cannot change what is forwarded behind the other rules' backs.
    """

    method: str
    target: str  # path with query, exactly as sent ("/fhir/Patient?identifier=x")
    headers: tuple[tuple[str, str], ...]
    body: bytes
    client: tuple[str, int] = ("127.0.0.1", 0)

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The raw query string without the ``?`` (empty when absent)."""
        return self.target.partition("?")[2]

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header, looked up case-insensitively (HTTP header names are)."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), default)

    def json(self) -> Any:
        """The body parsed as JSON, for predicates on FHIR payloads."""
        return json.loads(self.body)


class Response:
    """An answer to send to the client: from the upstream, from a ``respond`` rule or from an intercept hook.

    Headers keep their order and may repeat (a list of pairs), because upstream answers may do both.
    Content-Length is always computed by the proxy from the body, so callers never have to get it right.
    """

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | str = b"",
        reason: str = "",
    ) -> None:
        if not 200 <= status <= 999:  # a final answer; 1xx are interim and handled by the HTTP layers
            raise ValueError(f"not a final HTTP status: {status}")
        items: Iterable[tuple[str, str]] = headers.items() if isinstance(headers, Mapping) else (headers or ())
        self.status = status
        self.headers: list[tuple[str, str]] = [(str(key), str(value)) for key, value in items]
        self.body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        self.reason = reason

    @classmethod
    def json(
        cls,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/fhir+json",
    ) -> Response:
        """A JSON answer, e.g. an OperationOutcome from a token-checking hook."""
        return cls(status, {"Content-Type": content_type, **(headers or {})}, json.dumps(payload))

    @classmethod
    def text(cls, status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
        """A short plain-text answer (the proxy's own errors use this, so they are never mistaken for FHIR)."""
        return cls(status, {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}, text)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header, looked up case-insensitively."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), default)

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.headers!r}, <{len(self.body)} bytes>)"


# --------------------------------------------------------------------------------------------------- rules


class MatchWhere(TypedDict, total=False):
    """The keywords every rule helper takes to say which requests it applies to (see :class:`Match`)."""

    method: str | None
    path: str | None
    prefix: str | None
    regex: str | re.Pattern[str] | None
    where: Callable[[Request], bool] | None


@dataclass(frozen=True)
class Match:
    """Which requests a rule applies to; every given criterion must hold (an empty Match takes everything).

    ``path`` is exact, ``prefix`` a leading part and ``regex`` searched (``re.search``) in the path without
    query; ``where`` is a predicate on the whole request (query, headers, body) for anything else.
    """

    method: str | None = None
    path: str | None = None
    prefix: str | None = None
    regex: re.Pattern[str] | None = None
    where: Callable[[Request], bool] | None = None

    @classmethod
    def of(
        cls,
        method: str | None = None,
        path: str | None = None,
        prefix: str | None = None,
        regex: str | re.Pattern[str] | None = None,
        where: Callable[[Request], bool] | None = None,
    ) -> Match:
        """A Match with the method upper-cased and the regex compiled, as the rule helpers build it."""
        pattern = re.compile(regex) if isinstance(regex, str) else regex
        return cls(method.upper() if method else None, path, prefix, pattern, where)

    def __call__(self, request: Request) -> bool:
        path = request.path
        if self.method is not None and request.method.upper() != self.method.upper():
            return False
        if self.path is not None and path != self.path:
            return False
        if self.prefix is not None and not path.startswith(self.prefix):
            return False
        if self.regex is not None and not self.regex.search(path):
            return False
        return self.where is None or bool(self.where(request))


@dataclass(frozen=True)
class Respond:
    """Answer with a fixed response without forwarding: the server never sees the request."""

    response: Response
    kind: ClassVar[str] = "respond"


@dataclass(frozen=True)
class Delay:
    """Hold the exchange for ``seconds``.

    After forwarding (default) the server does the work at once and the answer comes late: a response slower than
    the client's timeout, whose effect is nevertheless committed. Before forwarding the request reaches the server
    late — possibly after the client gave up and retried — which is how late duplicates arise.
    """

    seconds: float
    after_forward: bool = True
    kind: ClassVar[str] = "delay"


@dataclass(frozen=True)
class ResetAfterForward:
    """Forward, read the whole upstream answer (the server has committed), then reset the client connection.

    The client gets a transport error and cannot know whether its request took effect: the hardest case for
    retries of non-idempotent writes.
    """

    kind: ClassVar[str] = "reset_after_forward"


@dataclass(frozen=True)
class ResetBeforeForward:
    """Reset the client connection without forwarding: the request is lost before the server sees it."""

    kind: ClassVar[str] = "reset_before_forward"


@dataclass(frozen=True)
class Intercept:
    """Call ``hook(request)``; a Response answers the request, None lets the next rules (then forwarding) decide.

    Made for a gateway in front of the server, e.g. answering 401 when the bearer token is missing or invalid.
    """

    hook: Callable[[Request], Response | None]
    kind: ClassVar[str] = "intercept"


Action = Respond | Delay | ResetAfterForward | ResetBeforeForward | Intercept


class Rule:
    """An action applied to matching requests a limited number of times (``times=None``: every time).

    A rule *fires* when it decides a request; an intercept rule fires only when its hook answers. ``fired``
    lets a test check that the fault it planned actually happened.
    """

    def __init__(self, action: Action, match: Match | None = None, times: int | None = 1) -> None:
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 or None (forever), not {times}")
        self.action = action
        self.match = match or Match()
        self._remaining = times
        self._fired = 0
        self._lock = threading.Lock()

    @property
    def kind(self) -> str:
        """The action's name as it appears in the event log."""
        return self.action.kind

    @property
    def fired(self) -> int:
        """How many requests this rule has decided."""
        with self._lock:
            return self._fired

    @property
    def remaining(self) -> int | None:
        """How many more times it will fire (None: unlimited)."""
        with self._lock:
            return self._remaining

    @property
    def exhausted(self) -> bool:
        """Whether the rule has used up its ``times``."""
        return self.remaining == 0

    def claim(self) -> bool:
        """Take one firing atomically; False when another request took the last one first."""
        with self._lock:
            if self._remaining == 0:
                return False
            if self._remaining is not None:
                self._remaining -= 1
            self._fired += 1
            return True

    def __repr__(self) -> str:
        return f"Rule({self.action!r}, {self.match!r}, remaining={self.remaining}, fired={self.fired})"


@dataclass
class Event:
    """What happened to one request, in arrival order.

    ``action`` is the firing rule's kind or ``"forwarded"`` (also when forwarding failed: see ``error``);
    ``status`` is what was sent to the client (None when the connection was reset or the client had gone),
    ``upstream_status`` what the server answered (None when it was not asked or did not answer).
    """

    method: str
    target: str
    action: str
    rule: Rule | None = None
    upstream_status: int | None = None
    status: int | None = None
    error: str | None = None

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.partition("?")[0]


# --------------------------------------------------------------------------------------------------- proxy


class FaultProxy:
    """The proxy: listens on a loopback port, forwards to ``upstream`` and applies rules in the order added.

    ``upstream`` is an origin (``http://127.0.0.1:18080``); paths go through unchanged, so a client uses
    ``proxy.base + "/fhir"`` for a server at ``http://127.0.0.1:18080/fhir``. Each forwarded request uses a
    fresh upstream connection: a pooled one that the server closed while idle would fail ambiguously, and
    retrying it could duplicate a write — the very thing the tests look for.
    """

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_timeout: float = 300.0,
        verbose: bool = False,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"upstream must be an http origin such as http://127.0.0.1:18080, not {upstream!r}")
        try:
            loopback = ipaddress.IPv4Address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:  # a fault injector must never be reachable from elsewhere
            raise ValueError(f"the proxy listens on an IPv4 loopback address only, not {host!r}")
        self.upstream = f"http://{parts.netloc}"
        self.upstream_timeout = upstream_timeout
        self.verbose = verbose
        self._upstream_netloc = parts.netloc
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self._host = host
        self._port = port
        self._rules: list[Rule] = []
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._connections: set[socket.socket] = set()
        self._accepted = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._to_proxy: Callable[[bytes], bytes] = _identity
        self._to_upstream: Callable[[bytes], bytes] = _identity

    # ---- lifecycle

    def start(self) -> FaultProxy:
        """Bind and serve in a daemon thread; returns self so ``FaultProxy(...).start()`` reads naturally."""
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("a FaultProxy starts once")
        server = _Server((self._host, self._port), self)
        self._server = server
        self._port = server.server_address[1]
        self._to_proxy = _origin_rewriter(self._upstream_host, self._upstream_port, self.base)
        self._to_upstream = _origin_rewriter(self._host, self._port, self.upstream)
        # A short poll interval makes stop() quick, which keeps the test suite fast.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"faultproxy:{self._port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake held (delayed) exchanges and close every client connection; idempotent."""
        server = self._server
        if server is None or self._stopping.is_set():
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # keep-alive handlers block reading; this wakes them
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self if self._server is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (known once started)."""
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``, the origin the client talks to."""
        return f"http://{self._host}:{self.port}"

    @property
    def connections(self) -> int:
        """How many client connections were accepted (a keep-alive client should need one)."""
        with self._lock:
            return self._accepted

    # ---- rules

    def add_rule(self, action: Action, match: Match | None = None, *, times: int | None = 1) -> Rule:
        """Append a rule; rules are consulted in the order added and the first that fires decides."""
        rule = Rule(action, match, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def respond(
        self,
        status: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | str = b"",
        *,
        times: int | None = 1,
        **match: Unpack[MatchWhere],
    ) -> Rule:
        """Answer matching requests without forwarding (e.g. 503, or 429 with ``Retry-After: 1``)."""
        return self.add_rule(Respond(Response(status, headers, body)), Match.of(**match), times=times)

    def delay(
        self,
        seconds: float,
        *,
        after_forward: bool = True,
        times: int | None = 1,
        **match: Unpack[MatchWhere],
    ) -> Rule:
        """Hold the answer (or, with ``after_forward=False``, the request) for ``seconds``; see :class:`Delay`."""
        return self.add_rule(Delay(seconds, after_forward), Match.of(**match), times=times)

    def reset_after_forward(
        self,
        *,
        times: int | None = 1,
        **match: Unpack[MatchWhere],
    ) -> Rule:
        """Let the server commit, then reset the client connection; see :class:`ResetAfterForward`."""
        return self.add_rule(ResetAfterForward(), Match.of(**match), times=times)

    def reset_before_forward(
        self,
        *,
        times: int | None = 1,
        **match: Unpack[MatchWhere],
    ) -> Rule:
        """Reset the client connection without forwarding; see :class:`ResetBeforeForward`."""
        return self.add_rule(ResetBeforeForward(), Match.of(**match), times=times)

    def intercept(
        self,
        hook: Callable[[Request], Response | None],
        *,
        times: int | None = None,
        **match: Unpack[MatchWhere],
    ) -> Rule:
        """Consult ``hook`` for matching requests; see :class:`Intercept`.

        Unlike the fault rules, ``times`` defaults to None (forever): a hook already decides per request, and a
        gateway that silently stopped checking after its first 401 would make tests pass for the wrong reason.
        ``times`` counts answers only; requests the hook lets through do not use it up.
        """
        return self.add_rule(Intercept(hook), Match.of(**match), times=times)

    def remove_rule(self, rule: Rule) -> None:
        """Withdraw one rule (no error when it is already gone)."""
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear_rules(self) -> None:
        """Withdraw every rule: plain forwarding from now on."""
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[Rule]:
        """A snapshot of the rules, in order."""
        with self._lock:
            return list(self._rules)

    # ---- log

    @property
    def events(self) -> list[Event]:
        """A consistent snapshot (copies) of the event log, in arrival order."""
        with self._lock:
            return [replace(event) for event in self._events]

    def count(self, action: str | None = None, method: str | None = None, prefix: str | None = None) -> int:
        """How many logged requests had this action (``"forwarded"``, ``"respond"``, ...), method and path prefix."""
        return sum(
            1
            for event in self.events
            if (action is None or event.action == action)
            and (method is None or event.method == method.upper())
            and (prefix is None or event.path.startswith(prefix))
        )

    def clear_log(self) -> None:
        """Forget the events so far (requests in flight still update their own, now unlisted, events)."""
        with self._lock:
            self._events.clear()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being handled (e.g. a held answer has been sent); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    # ---- used by the handler

    def _decide(self, request: Request) -> tuple[Rule | None, Response | None]:
        """The first rule that fires for the request and, for an intercept, the hook's answer."""
        for rule in self.rules:  # a snapshot: user code (predicates, hooks) runs without the lock
            if rule.exhausted or not rule.match(request):
                continue
            if isinstance(rule.action, Intercept):
                answer = rule.action.hook(request)
                if answer is None:
                    continue
                if not isinstance(answer, Response):
                    raise TypeError(f"intercept hook returned {answer!r}, not a Response or None")
                if rule.claim():
                    return rule, answer
                continue
            if rule.claim():
                return rule, None
        return None, None

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)
            self._accepted += 1

    def _begin(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _end(self, event: Event | None) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()
        if self.verbose and event is not None:
            print(
                f"faultproxy {event.method} {event.target} -> {event.action}"
                f" upstream={event.upstream_status} sent={event.status}" + (f" ({event.error})" if event.error else ""),
                file=sys.stderr,
                flush=True,
            )

    def _forget(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _record(self, request: Request, rule: Rule | None, action: str | None = None) -> Event:
        event = Event(request.method, request.target, action or (rule.kind if rule else "forwarded"), rule)
        with self._lock:
            self._events.append(event)
        return event

    def _note(self, event: Event, **changes: Any) -> None:
        """Update an event's status, upstream_status or error under the lock (readers get consistent copies)."""
        with self._lock:
            for name, value in changes.items():
                setattr(event, name, value)

    def _hold(self, seconds: float) -> bool:
        """Sleep, but wake at stop(); True when the full time passed."""
        return not self._stopping.wait(seconds)

    def _forward(self, request: Request, event: Event) -> Response:
        """Send the request to the upstream on a fresh connection and return its answer, rewritten for the client."""
        listed = {name.strip().lower() for name in (request.header("connection") or "").split(",")}
        skip = HOP_BY_HOP | listed | {"host", "content-length", "expect", "accept-encoding"}
        content_type = request.header("content-type")
        body = self._to_upstream(request.body) if _textual(content_type) else request.body
        connection = http.client.HTTPConnection(self._upstream_host, self._upstream_port, timeout=self.upstream_timeout)
        try:
            connection.putrequest(request.method, request.target, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", self._upstream_netloc)
            # Identity bodies can be rewritten; the client's own Accept-Encoding is a matter between it and us.
            connection.putheader("Accept-Encoding", "identity")
            for name, value in request.headers:
                if name.lower() not in skip:
                    connection.putheader(name, value)
            if body or request.method in _BODY_METHODS:
                connection.putheader("Content-Length", str(len(body)))
            connection.putheader("Connection", "close")
            connection.endheaders(body or None)
            answer = connection.getresponse()
            data = answer.read()
            status, reason, headers = answer.status, answer.reason, answer.getheaders()
        except TimeoutError as exc:
            self._note(event, error=f"upstream timeout: {exc}")
            return Response.text(504, f"faultproxy: upstream {self.upstream} did not answer in time\n")
        except (OSError, http.client.HTTPException) as exc:
            self._note(event, error=f"upstream: {exc.__class__.__name__}: {exc}")
            return Response.text(502, f"faultproxy: upstream {self.upstream} failed: {exc.__class__.__name__}\n")
        finally:
            connection.close()
        self._note(event, upstream_status=status)
        return self._from_upstream(request.method, status, reason, headers, data)

    def _from_upstream(
        self, method: str, status: int, reason: str, headers: Sequence[tuple[str, str]], data: bytes
    ) -> Response:
        """The upstream answer with the server's origin replaced by the proxy's, in the body and URL headers."""
        listed = {
            name.strip().lower() for key, value in headers if key.lower() == "connection" for name in value.split(",")
        }
        encoding = next((value.strip().lower() for key, value in headers if key.lower() == "content-encoding"), "")
        decoded = _decode(encoding, data)
        if decoded is not None:
            data = decoded
        content_type = next((value for key, value in headers if key.lower() == "content-type"), None)
        if decoded is not None and _textual(content_type):
            data = self._to_proxy(data)
        kept: list[tuple[str, str]] = []
        for key, value in headers:
            lower = key.lower()
            if lower in HOP_BY_HOP or lower in listed:
                continue
            if lower == "content-length" and method != "HEAD":  # recomputed from the (rewritten) body
                continue
            if lower == "content-encoding" and decoded is not None and encoding:
                continue
            if lower in URL_HEADERS:
                value = self._to_proxy(value.encode("latin-1")).decode("latin-1")
            kept.append((key, value))
        return Response(status, kept, data, reason)


# --------------------------------------------------------------------------------------------------- server


class _ClientGone(ConnectionError):
    """The client closed the connection in the middle of its request."""


class _BadRequest(ValueError):
    """The request's body framing cannot be read."""


class _Server(http.server.ThreadingHTTPServer):
    """A threading HTTP server that knows its proxy and keeps expected connection aborts off stderr."""

    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops SYNs under many concurrent clients (1 s retries)

    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves a FQDN for the address, a DNS lookup a loopback proxy does not need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return  # clients disconnecting and resets we caused are the point of this proxy, not errors
        if self.proxy._stopping.is_set() and isinstance(error, OSError | ValueError):
            return  # sockets closed under a handler by stop()
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Handles one client connection: reads each request, lets the rules decide, forwards or injects the fault."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would add delayed-ACK stalls
    timeout = None  # no idle timeout: the proxy must not add connection closes the test did not ask for
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._forget(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the proxy's log is its event list, and aborts are expected."""

    def _handle(self) -> None:
        proxy = self.server.proxy
        try:
            body = self._read_body()
        except _ClientGone:
            self.close_connection = True
            return
        except _BadRequest as exc:
            self.close_connection = True
            self._send(None, Response.text(400, f"faultproxy: {exc}\n"))
            return
        request = Request(self.command, _origin_form(self.path), tuple(self.headers.items()), body, self._peer())
        proxy._begin()
        event: Event | None = None
        try:
            try:
                rule, answer = proxy._decide(request)
            except Exception as exc:  # a bug in a test's predicate or hook: loud, and the client still gets an answer
                traceback.print_exc()
                event = proxy._record(request, None, "error")
                proxy._note(event, error=repr(exc))
                self._send(event, Response.text(500, f"faultproxy: a rule raised {exc!r}\n"))
                return
            event = proxy._record(request, rule)
            self._apply(request, event, rule.action if rule else None, answer)
        finally:
            proxy._end(event)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def _apply(self, request: Request, event: Event, action: Action | None, answer: Response | None) -> None:
        proxy = self.server.proxy
        if isinstance(action, Respond):
            self._send(event, action.response)
        elif isinstance(action, Intercept):
            assert answer is not None
            self._send(event, answer)
        elif isinstance(action, ResetBeforeForward):
            self._reset(event)
        elif isinstance(action, ResetAfterForward):
            proxy._forward(request, event)
            self._reset(event)
        elif isinstance(action, Delay):
            if not action.after_forward and not proxy._hold(action.seconds):
                self._reset(event, "proxy stopped")  # do not forward a held request after the test has ended
                return
            response = proxy._forward(request, event)
            if action.after_forward:
                proxy._hold(action.seconds)
            self._send(event, response)
        else:
            self._send(event, proxy._forward(request, event))

    def _peer(self) -> tuple[str, int]:
        host, port = self.client_address[:2]
        return str(host), int(port)

    def _read_body(self) -> bytes:
        coding = self.headers.get("Transfer-Encoding")
        if coding:
            if coding.strip().lower() != "chunked":
                raise _BadRequest(f"unsupported Transfer-Encoding {coding!r}")
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise _BadRequest(f"bad Content-Length {length!r}") from None
        if size < 0:
            raise _BadRequest(f"bad Content-Length {length!r}")
        body = self.rfile.read(size)
        if len(body) < size:  # never forward a truncated request
            raise _ClientGone
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            line = self.rfile.readline(65537)
            if not line.endswith(b"\n"):
                raise _ClientGone if not line else _BadRequest("chunk size line too long")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                break
            data = self.rfile.read(size)
            if len(data) < size:
                raise _ClientGone
            chunks.append(data)
            if self.rfile.readline(3).strip():
                raise _BadRequest("chunk not followed by CRLF")
        while True:  # trailer fields, dropped (hop-by-hop for this purpose)
            line = self.rfile.readline(65537)
            if not line:
                raise _ClientGone
            if not line.strip():
                return b"".join(chunks)

    def _send(self, event: Event | None, response: Response) -> None:
        """Write a response with a correct Content-Length; a vanished client is noted, not raised."""
        status = response.status
        head = self.command == "HEAD"
        try:
            self.send_response_only(status, response.reason or None)
            has_length = False
            for key, value in response.headers:
                lower = key.lower()
                if lower in HOP_BY_HOP or (lower == "content-length" and not head):
                    continue
                has_length = has_length or lower == "content-length"
                self.send_header(key, value)
            if status not in _NO_BODY_STATUSES and not has_length:
                self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            if event is not None:  # noted before the client can read it, so a test never sees a stale event
                self.server.proxy._note(event, status=status)
            self.end_headers()
            if response.body and not head and status not in _NO_BODY_STATUSES:
                self.wfile.write(response.body)
        except OSError as exc:
            self.close_connection = True
            if event is not None:
                self.server.proxy._note(event, status=None, error=f"client: {exc.__class__.__name__}")

    def _reset(self, event: Event, why: str = "reset") -> None:
        """Abort the client connection with a TCP RST (SO_LINGER on, 0 s), sending nothing."""
        self.close_connection = True
        error = why if event.error is None else f"{event.error}; {why}"
        self.server.proxy._note(event, error=error)  # before the reset, so the client never outruns the log
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drops the makefile reference, so close() below releases the socket now
        self.connection.close()


# --------------------------------------------------------------------------------------------------- helpers


def _identity(data: bytes) -> bytes:
    return data


def _origin_form(target: str) -> str:
    """``/path?query`` also when a client sent the absolute form (``http://host/path``)."""
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return target


def _textual(content_type: str | None) -> bool:
    return content_type is None or any(marker in content_type.lower() for marker in _TEXTUAL)


def _decode(encoding: str, data: bytes) -> bytes | None:
    """The identity body for the encodings Python can undo; None when it cannot (then the body passes as is)."""
    try:
        if encoding in ("", "identity"):
            return data
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(data)
        if encoding == "deflate":
            try:
                return zlib.decompress(data)
            except zlib.error:
                return zlib.decompress(data, -zlib.MAX_WBITS)  # raw deflate, as some servers send
    except (OSError, EOFError, zlib.error):
        return None
    return None


def _origin_rewriter(host: str, port: int, target: str) -> Callable[[bytes], bytes]:
    """Replace ``http://HOST:PORT`` (and its loopback alias) by ``target`` wherever it stands as a whole origin.

    127.0.0.1 and localhost are treated as one because servers often build URLs from a configured name rather
    than from the address the client used. The lookahead stops ``:1808`` from matching inside ``:18080``.
    """
    hosts = {host}
    if host in ("127.0.0.1", "localhost"):
        hosts |= {"127.0.0.1", "localhost"}
    alternatives = b"|".join(re.escape(name.encode("ascii")) for name in sorted(hosts))
    port_part = rb"(?::80)?" if port == 80 else b":" + str(port).encode("ascii")
    pattern = re.compile(rb"http://(?:" + alternatives + rb")" + port_part + rb"(?![\w.:-])")
    replacement = target.encode("ascii")
    return lambda data: pattern.sub(lambda _: replacement, data)


def main(argv: Sequence[str] | None = None) -> int:
    """Forward without faults until interrupted: ``python tests/faultproxy.py --upstream URL [--port N]``."""
    parser = argparse.ArgumentParser(description="Loopback HTTP/1.1 reverse proxy (the test suite's fault proxy).")
    parser.add_argument("--upstream", required=True, help="server origin, e.g. http://127.0.0.1:18080")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--verbose", action="store_true", help="one line per request on stderr")
    args = parser.parse_args(argv)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # explicit: a background job may inherit SIGINT ignored
        signal.signal(signum, lambda *_: stopping.set())
    proxy = FaultProxy(args.upstream, host=args.host, port=args.port, verbose=args.verbose).start()
    print(f"faultproxy {proxy.base} -> {proxy.upstream}", flush=True)
    try:
        stopping.wait()
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
