"""FhirClient: the one place where HTTP happens.

A small pool of kept-alive connections per server (``max_connections``, default 4: pull may fetch a few
subjects at once; push sends one request at a time and uses one), ``application/fhir+json`` both ways,
timeouts, TLS verification on by default (a custom CA bundle is an option), retries in a wrapping transport,
auth as an httpx.Auth flow.
Searches are lazy iterators that follow ``link[relation=next]`` (relative or absolute) with loop protection.
Every httpx exception and every error status is translated here into the fhir_lupus error tree.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from fhir_lupus._logredact import get_logger, install, redact_url
from fhir_lupus._scratch import open_private
from fhir_lupus.client._bulk import NDJSON, ExportManifest, ExportRequest, ExportStatus
from fhir_lupus.client._capability import Capabilities
from fhir_lupus.client._classify import classify
from fhir_lupus.client._clock import ServerClock
from fhir_lupus.client._errors import error_class, read_error_body, transport_failure
from fhir_lupus.client._retry import FIRST_CONTACT, IDEMPOTENT, RetryPolicy, RetryTransport, retry_after_seconds
from fhir_lupus.errors import FatalHttpError, FhirHttpError, InvalidResponse, PagingLoopError, TransientHttpError

__all__ = ["FHIR_JSON", "FhirClient", "location_id", "location_version"]

FHIR_JSON = "application/fhir+json"
Params = Mapping[str, str | list[str]]
logger = get_logger(__name__)
_NOT_A_BASE = "not a FHIR server's base URL: /metadata {}; check the server URL (--server, e.g. https://host/fhir)"


def location_id(location: str, resource_type: str) -> str | None:
    """The logical id in a Location such as ``[base/]Patient/123/_history/2`` (None when absent)."""
    parts = location.split("?")[0].split("/")
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] == resource_type and index + 1 < len(parts) and parts[index + 1]:
            return parts[index + 1]
    return None


def location_version(location: str) -> str | None:
    """The version in a ``.../_history/2`` Location (None when absent)."""
    parts = location.split("?")[0].split("/")
    return parts[parts.index("_history") + 1] if "_history" in parts[:-1] else None


@contextlib.contextmanager
def _translated(method: str, url: str) -> Iterator[None]:
    """httpx's exceptions, raised inside the block (also while a streamed body is read), as our error tree."""
    try:
        yield
    except httpx.TransportError as exc:  # timeouts included
        raise TransientHttpError(transport_failure(exc, url), method=method, url=url) from None
    except httpx.HTTPError as exc:
        raise FhirHttpError(str(exc), method=method, url=url) from None


def _raise_for_status(response: httpx.Response, method: str) -> None:
    """An error status as the class its status and the server's words say (``error_class``), carrying the
    OperationOutcome parsed from the body."""
    if response.status_code >= 400:
        message, outcome = read_error_body(response.content)
        status = response.status_code
        error = error_class(status, outcome or message)
        raise error(message, status=status, method=method, url=str(response.url), outcome=outcome)


class FhirClient:
    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout: float = 60.0,
        verify: bool = True,
        ca_bundle: str | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        max_pages: int = 100_000,
        max_connections: int = 4,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base URL must be http(s): {base_url!r}")
        self.base_url = base_url.rstrip("/") + "/"  # with the slash, relative links join under the base
        self.max_pages = max_pages
        install()  # redact httpx's request log lines (and httpcore's DEBUG ones) from now on
        tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else verify
        self._tls = tls
        self._timeout = timeout
        self._retry = retry
        self._foreign: httpx.Client | None = None  # bulk files kept off the server (requiresAccessToken false)
        self._clocks: list[ServerClock] = []  # open server_clock() blocks
        if transport is None:
            transport = httpx.HTTPTransport(
                verify=tls,
                limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            )
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=auth,
            timeout=httpx.Timeout(timeout),
            transport=RetryTransport(transport, retry),
            headers={"Accept": FHIR_JSON, "User-Agent": "fhir_lupus"},
            follow_redirects=False,
        )
        self._capabilities: Capabilities | None = None

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        if self._foreign is not None:
            self._foreign.close()

    # -- reading -------------------------------------------------------------------------------------------

    def capabilities(self, *, fresh: bool = True) -> Capabilities:
        """The server's CapabilityStatement, read once per client.

        ``fresh``: asked with ``Cache-Control: no-cache``, since a cached statement may predate a change of the
        server's search parameters (HAPI caches it for 60 s). A reader that copes with a stale one (pull: a
        parameter gained since is applied here, one lost answers 400) passes False: HAPI takes 0.3 s to build
        a fresh statement and 0.1 s to send its cached one.
        """
        if self._capabilities is None:
            self._capabilities = self._statement(fresh=fresh, first_contact=False)
        return self._capabilities

    def reach(self, *, fresh: bool = True) -> Capabilities:
        """``capabilities`` as a run's first request, asked before any data is loaded: a connection that cannot be
        made (refused, unknown host, TLS) is not retried, so a wrong URL fails at once with what to check."""
        if self._capabilities is None:
            self._capabilities = self._statement(fresh=fresh, first_contact=True)
        return self._capabilities

    def _statement(self, *, fresh: bool, first_contact: bool) -> Capabilities:
        """The statement; InvalidResponse saying to check the base URL when /metadata is missing (404) or answers
        something else than a CapabilityStatement (an HTML page, a 200 that is not JSON)."""
        url = self.base_url + "metadata"
        headers = {"Cache-Control": "no-cache"} if fresh else None
        try:
            response = self._send_raw("GET", "metadata", headers=headers, first_contact=first_contact)
        except FatalHttpError as exc:
            if exc.status != 404:
                raise
            raise InvalidResponse(_NOT_A_BASE.format("answered 404"), status=404, method="GET", url=url) from None
        try:
            statement = orjson.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            snippet = response.content[:80].decode("utf-8", "replace")
            said = f"answered {response.headers.get('content-type', 'without a content type')}: {snippet!r}"
            raise InvalidResponse(
                _NOT_A_BASE.format(said), status=response.status_code, method="GET", url=url
            ) from None
        kind = statement.get("resourceType") if isinstance(statement, dict) else None
        if kind != "CapabilityStatement":
            said = f"answered {'a ' + str(kind) if kind else 'JSON that is no FHIR resource'}"
            raise InvalidResponse(_NOT_A_BASE.format(said), status=response.status_code, method="GET", url=url)
        return Capabilities.from_statement(statement)

    def get(self, path: str, params: Params | None = None) -> dict[str, Any]:
        return self._send("GET", path, params=params)

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        return self.get(f"{resource_type}/{resource_id}")

    def search_pages(self, resource_type: str, params: Params | None = None) -> Iterator[dict[str, Any]]:
        """Each searchset Bundle page in turn, following next links lazily; PagingLoopError on a cycle."""
        page = self._send("GET", resource_type, params=params)
        seen: set[str] = set()
        while True:
            if page.get("resourceType") != "Bundle":
                raise InvalidResponse(f"search answered with a {page.get('resourceType')}, not a Bundle")
            yield page
            next_url = next((link.get("url") for link in page.get("link", []) if link.get("relation") == "next"), None)
            if not next_url:
                return
            absolute = urljoin(self.base_url, next_url)
            if absolute in seen or len(seen) >= self.max_pages:
                raise PagingLoopError(
                    f"next link repeats or exceeds {self.max_pages} pages", method="GET", url=absolute
                )
            seen.add(absolute)
            page = self._send("GET", absolute)

    def search(self, resource_type: str, params: Params | None = None) -> Iterator[dict[str, Any]]:
        """Every matching resource (search mode 'match'; included resources are skipped)."""
        for page in self.search_pages(resource_type, params):
            for entry in page.get("entry", []):
                if entry.get("search", {}).get("mode", "match") == "match" and "resource" in entry:
                    yield entry["resource"]

    # -- writing -------------------------------------------------------------------------------------------

    def transaction(self, bundle: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        """POST a transaction or batch Bundle; ``idempotent`` (all entries conditional) allows retries."""
        return self._send("POST", "", body=bundle, idempotent=idempotent)

    def put(self, path: str, resource: dict[str, Any]) -> httpx.Response:
        """PUT a resource at ``Type/id`` (update, or update-as-create) or ``Type?query`` (conditional update)."""
        return self._send_raw("PUT", path, body=resource, idempotent=True)

    def conditional_update(self, resource: dict[str, Any], query: str) -> httpx.Response:
        return self._send_raw("PUT", f"{resource['resourceType']}?{query}", body=resource, idempotent=True)

    def conditional_create(self, resource: dict[str, Any], query: str) -> httpx.Response:
        return self._send_raw(
            "POST", resource["resourceType"], body=resource, idempotent=True, headers={"If-None-Exist": query}
        )

    def delete(self, resource_type: str, resource_id: str) -> None:
        self._send_raw("DELETE", f"{resource_type}/{resource_id}")

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Plain create (not retried after the request may have reached the server); the stored resource.

        When the server answers without a body, the id comes from the Location header.
        """
        response = self._send_raw("POST", resource["resourceType"], body=resource, idempotent=False)
        created = self._json(response)
        if not created.get("id"):
            created = {**resource, "id": location_id(response.headers.get("Location", ""), resource["resourceType"])}
        return created

    # -- bulk data ($export) ---------------------------------------------------------------------------------

    def export(self, request: ExportRequest) -> str:
        """Kick off an asynchronous export; the status URL (the answer's Content-Location).

        Not retried once it may have reached the server: a repeated kick-off would start a second job.
        """
        headers = {"Prefer": "respond-async"}
        if request.patients:
            response = self._send_raw("POST", request.path, body=request.parameters(), headers=headers)
        else:
            response = self._send_raw("GET", request.path, params=request.query(), headers=headers)
        location = response.headers.get("Content-Location")
        if response.status_code != 202 or not location:
            raise InvalidResponse(
                f"export kick-off answered {response.status_code} without a status URL (Content-Location)",
                status=response.status_code,
                url=str(response.url),
            )
        return str(urljoin(self.base_url, location))

    def export_status(self, status_url: str) -> ExportStatus:
        """One look at an export job: running (Retry-After and X-Progress as the server gives them) or done."""
        response = self._send_raw("GET", status_url)
        if response.status_code == 202:
            return ExportStatus(
                None,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                progress=response.headers.get("X-Progress"),
            )
        if response.status_code != 200:
            raise InvalidResponse(f"export status answered {response.status_code}", url=status_url)
        return ExportStatus(ExportManifest.from_json(self._json(response), url=status_url))

    def cancel_export(self, status_url: str) -> None:
        """DELETE the job: the server may drop its files. A job the server no longer knows is not an error."""
        try:
            self._send_raw("DELETE", status_url)
        except FatalHttpError as exc:
            if classify(exc.status, exc.outcome) != "not-found":
                raise

    def download(self, url: str, target: Path, *, access_token: bool = True) -> int:
        """Stream an NDJSON file of an export to ``target`` (through ``target.part``); the bytes written.

        With ``access_token`` (the manifest's requiresAccessToken) the file must be on the server and our
        credentials go with the request; without, a file elsewhere (object storage) is fetched without them,
        so a token never leaves the server it was issued for.
        """
        on_server = url.startswith(self.base_url.rstrip("/"))
        if not on_server and access_token:
            raise FatalHttpError(f"refusing to send our credentials off the server for an export file: {url}")
        client = self._http if on_server else self._foreign_client()
        part = target.with_name(target.name + ".part")
        written = 0
        with _translated("GET", url), client.stream("GET", url, headers={"Accept": NDJSON}) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for_status(response, "GET")
            with open_private(part, "wb") as handle:  # an export's data: only its owner may read it
                for chunk in response.iter_bytes(1 << 20):
                    handle.write(chunk)
                    written += len(chunk)
        os.replace(part, target)
        return written

    def _foreign_client(self) -> httpx.Client:
        if self._foreign is None:
            self._foreign = httpx.Client(
                timeout=httpx.Timeout(self._timeout),
                transport=RetryTransport(httpx.HTTPTransport(verify=self._tls), self._retry),
                headers={"User-Agent": "fhir_lupus"},
            )
        return self._foreign

    # -- the one place requests are sent -------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send_raw(method, path, **kwargs)
        return self._json(response)

    def _send_raw(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: dict[str, Any] | None = None,
        idempotent: bool = False,
        headers: dict[str, str] | None = None,
        first_contact: bool = False,
    ) -> httpx.Response:
        url = self._url(path)
        content = orjson.dumps(body) if body is not None else None  # UTF-8 bytes; a push's Bundles are megabytes
        request_headers = {"Content-Type": FHIR_JSON, **(headers or {})} if content is not None else headers
        started = time.monotonic()
        with _translated(method, url):
            response = self._http.request(
                method,
                url,
                params=params,
                content=content,
                headers=request_headers,
                extensions={IDEMPOTENT: idempotent, FIRST_CONTACT: first_contact},
            )
        if logger.isEnabledFor(logging.DEBUG):  # the path only, query values redacted; never the bodies
            where = redact_url(str(response.url)).removeprefix(self.base_url.rstrip("/"))
            took = (time.monotonic() - started) * 1000
            logger.debug("%s %s -> %s (%.0f ms)", method, where or "/", response.status_code, took)
        for clock in self._clocks:
            clock.saw(response.headers.get("Date"))
        _raise_for_status(response, method)
        return response

    @contextlib.contextmanager
    def server_clock(self) -> Iterator[ServerClock]:
        """A ``ServerClock`` that sees the ``Date`` of every answer while the block runs (the pull's mark)."""
        clock = ServerClock()
        self._clocks.append(clock)
        try:
            yield clock
        finally:
            self._clocks.remove(clock)

    def _url(self, path: str) -> str:
        if urlsplit(path).scheme:
            if not path.startswith(self.base_url.rstrip("/")):
                raise FatalHttpError(f"refusing to follow a link off the server: {path}")
            return path
        return urljoin(self.base_url, path.lstrip("/"))

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        if not response.content:
            return {}
        try:
            document = orjson.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            snippet = response.content[:200].decode("utf-8", "replace")
            raise InvalidResponse(
                f"expected FHIR JSON, got {response.headers.get('content-type', 'no content type')}: {snippet!r}",
                status=response.status_code,
                method=response.request.method,
                url=str(response.request.url),
            ) from None
        if not isinstance(document, dict):
            raise InvalidResponse("expected a JSON object", status=response.status_code, url=str(response.request.url))
        return document
