"""The local HTTP endpoint a FHIR server delivers rest-hook notifications to.

It answers at once and hands the work to the coalescer (``WorkQueue``): a server whose delivery waits on a slow
answer would back up, and a pull may take seconds. What it takes, and only that (the rest: 404 or 405):

- ``POST {path}``, R4's empty payload (HAPI posts it when the Subscription's payload is empty): something
  changed, nobody says whose: every enrolled subject is pulled;
- ``PUT`` or ``POST {path}/Observation/{id}`` with the Observation as body (HAPI sends a resource payload as an
  update of that resource under the endpoint): its subject's Patient is pulled, that subject only;
- ``DELETE {path}/Observation/{id}`` (HAPI's delivery of a deletion, when the server sends them): the body names
  no subject, so everyone is pulled.

Every request must carry the shared secret in ``SECRET_HEADER`` (compared in constant time): the Subscription
puts it in ``channel.header``, so only the server we registered with knows it; without it the answer is 401 and a
log line (whoever knocks learns nothing else). A body over ``max_body`` bytes is refused (413) from its declared
Content-Length, before a byte of it is read; a body without a length (chunked) is refused too (411).
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson

from fhir_lupus._logredact import get_logger
from fhir_lupus.client import location_id
from fhir_lupus.watch._coalesce import WorkQueue

__all__ = ["DEFAULT_PATH", "MAX_BODY", "SECRET_HEADER", "NotificationEndpoint", "parse_listen"]

SECRET_HEADER = "X-Fhir-Lupus-Secret"
MAX_BODY = 64 * 1024  # an Observation is a few KiB; anything larger is not a notification of ours
DEFAULT_PATH = "/fhir-lupus/watch"
logger = get_logger(__name__)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port); ValueError naming the expected form."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:8765), not {value!r}")
    return host, int(port)


@dataclass(frozen=True)
class _Route:
    """What a request asks for: everyone (``patient`` None and ``everyone``), one Patient, or nothing we serve."""

    everyone: bool = False
    patient: str | None = None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    _ALLOWED: ClassVar[dict[str, tuple[str, ...]]] = {"root": ("POST",), "observation": ("PUT", "POST", "DELETE")}

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _handle(self) -> None:
        endpoint = self.server.endpoint
        given = self.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), endpoint.secret.encode()):
            why = "without the secret header" if not given else "with a wrong secret"
            logger.warning("notification refused (401) from %s: %s %s %s", self.client_address[0], *self._said(why))
            return self._answer(HTTPStatus.UNAUTHORIZED)
        kind = self._kind(urlsplit(self.path).path)
        if kind is None:
            return self._answer(HTTPStatus.NOT_FOUND)
        if self.command not in self._ALLOWED[kind[0]]:
            return self._answer(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": ", ".join(self._ALLOWED[kind[0]])})
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._answer(HTTPStatus.LENGTH_REQUIRED)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._answer(HTTPStatus.BAD_REQUEST)
        if length > endpoint.max_body or length < 0:
            logger.warning("notification refused (413): a body of %d bytes (at most %d)", length, endpoint.max_body)
            return self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        body = self.rfile.read(length) if length else b""
        route = self._route(kind, body)
        if route is None:
            return self._answer(HTTPStatus.BAD_REQUEST)
        self._answer(HTTPStatus.OK)  # first the answer, then the work: the server's delivery never waits on a pull
        endpoint.received(route)

    def _said(self, why: str) -> tuple[str, str, str]:
        return self.command, urlsplit(self.path).path, why

    def _kind(self, path: str) -> tuple[str, str] | None:
        """("root", "") for the endpoint's path, ("observation", id) under it; None for any other path."""
        base = self.server.endpoint.path
        if path.rstrip("/") == base:
            return "root", ""
        rest = path.removeprefix(base + "/").split("/") if path.startswith(base + "/") else []
        if len(rest) == 2 and rest[0] == "Observation" and rest[1]:
            return "observation", rest[1]
        return None

    def _route(self, kind: tuple[str, str], body: bytes) -> _Route | None:
        """Whose pull the request asks for; None for a body that is not what the route takes."""
        if kind[0] == "root" or self.command == "DELETE":
            return _Route(everyone=True)
        try:
            resource: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
            return None
        reference = str((resource.get("subject") or {}).get("reference") or "")
        patient = location_id(reference, "Patient")
        return _Route(patient=patient) if patient else _Route(everyone=True)

    def _answer(self, status: HTTPStatus, headers: dict[str, str] | None = None) -> None:
        if status != HTTPStatus.OK:
            self.close_connection = True  # an unread body must not be taken for the next request
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib names it format
        logger.debug("endpoint: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    endpoint: NotificationEndpoint


class NotificationEndpoint:
    """The endpoint on ``host:port`` (port 0: a free one), serving under ``path`` in a thread of its own.

    ``queue`` gets each accepted notification; ``on_notification`` (optional) is told too, for the command's
    log. Use as a context manager, or ``start`` and ``stop``."""

    def __init__(
        self,
        queue: WorkQueue,
        *,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = DEFAULT_PATH,
        max_body: int = MAX_BODY,
    ) -> None:
        if not secret:
            raise ValueError("the endpoint needs a secret")
        self.queue = queue
        self.secret = secret
        self.path = "/" + path.strip("/")
        self.max_body = max_body
        self.accepted = 0
        self._server = _Server((host, port), _Handler)
        self._server.endpoint = self
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """The endpoint's local URL (what the server calls unless a public URL says otherwise)."""
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}{self.path}"

    def received(self, route: _Route) -> None:
        self.accepted += 1
        if route.patient is not None:
            self.queue.subject(route.patient)
        else:
            self.queue.all()

    def start(self) -> NotificationEndpoint:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="watch-endpoint", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> NotificationEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
