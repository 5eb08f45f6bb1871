"""A small in-memory FHIR server behind respx, for push tests that must run in milliseconds.

It implements just what push uses — CapabilityStatement, token/uri searches by OR-list, read, PUT by id,
conditional PUT / POST, and transaction or batch Bundles with urn:uuid references — and what pull's removals
read (DELETE, ``_elements=id``, the type-level history of Observation when ``history``), and can be told to
behave like the servers we meet: Bundle size caps (Medplum's 50 updates and 8 entries with a conditional
one), a search parameter it lacks or refuses, no update-as-create, a wrong transaction answer, a failing
write. The integration tests confirm the same behaviour on real HAPI FHIR and Medplum servers.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import httpx

from fhir_lupus.bundle import DEPENDENCY_ORDER

BASE = "http://127.0.0.1:9/fhir"  # loopback: what push accepts under the example site profile; respx answers
TYPES = (*DEPENDENCY_ORDER, "Provenance")
# What the fake searches by default, per type (others: identifier); a test can narrow it with search_params.
DEFAULT_PARAMS: dict[str, tuple[str, ...]] = {
    "CodeSystem": ("url", "system"),
    "ResearchSubject": ("identifier", "study", "patient"),
    "Encounter": ("identifier", "patient"),
    "Observation": ("identifier", "patient", "subject", "code", "category", "date"),
}
REFERENCES = {"study": ("study",), "patient": ("subject", "individual"), "subject": ("subject",)}
SIZE_MESSAGES = {
    "updates": "Transaction contains more update operations than allowed",
    "strict": "Transaction requires strict isolation but has too many entries",
}


SYS = "urn:test"


def res(resource_type: str, rid: str, **fields: Any) -> dict[str, Any]:
    """A resource as a mapper writes it: deterministic id, one business identifier."""
    return {"resourceType": resource_type, "id": rid, "identifier": [{"system": SYS, "value": rid}], **fields}


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def trial() -> list[dict[str, Any]]:
    """Organization <- Location <- ResearchStudy <- ResearchSubject -> Patient <- Observation <- score."""
    return [
        res("Observation", "score", subject=ref("Patient/p"), derivedFrom=[ref("Observation/lab")]),
        res("Observation", "lab", subject=ref("Patient/p"), status="final"),
        res("ResearchSubject", "rs", study=ref("ResearchStudy/st"), individual=ref("Patient/p")),
        res("Patient", "p"),
        res("ResearchStudy", "st", site=[ref("Location/loc")], sponsor=ref("Organization/org")),
        res("Location", "loc", managingOrganization=ref("Organization/org")),
        res("Organization", "org", name="ours"),
        {"resourceType": "CodeSystem", "id": "cs", "url": "urn:cs", "status": "active", "content": "complete"},
    ]


class Refusal(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def outcome(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
    }


@dataclass
class FakeFhir:
    max_updates: int | None = None  # PUT entries per transaction (Medplum: 50)
    max_strict: int | None = None  # entries per transaction holding a conditional entry (Medplum: 8)
    search_params: dict[str, tuple[str, ...]] = field(default_factory=dict)  # type -> params (default below)
    refuse_params: set[tuple[str, str]] = field(default_factory=set)  # listed, but refused at run time
    update_create: bool | None = True
    client_ids: bool = True  # False: a PUT to a new id is refused whatever the statement says (HAPI NOT_ALLOWED)
    conditional: bool = True
    system: tuple[str, ...] = ("transaction", "batch")
    store: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    before_write: Callable[[FakeFhir, dict[str, Any]], None] | None = None  # hook, e.g. to plant a twin
    answer_hook: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # rewrite a transaction answer
    refuse: Callable[[dict[str, Any]], str | None] | None = None  # a resource -> 400 text, or None
    fail_types: set[str] = field(default_factory=set)  # creates of these types answer 500
    max_count: int | None = None  # a cap on _count: larger searches answer in pages with next links
    refuse_not: bool = False  # the :not modifier answers 400, as on a server that does not know it
    history: bool = False  # offers Observation/_history (history-type), as HAPI does; Medplum does not
    history_page: int = 50  # history entries a page, next links for the rest
    refuse_last_updated: bool = False  # _lastUpdated answers 400, as on a server that lists it but cannot
    dates: bool = False  # answers carry a Date header: the second of the fake's own clock, as a server's does
    summary_count: bool = True  # _summary=count answers the total alone; False: ignored (no total), as some do
    log: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (lastUpdated, history entry), oldest first
    tombstones: dict[str, int] = field(default_factory=dict)  # Type/id deleted -> the version of its deletion
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _clock: int = 0  # lastUpdated advances one microsecond per write
    _lock: threading.Lock = field(default_factory=threading.Lock)  # one request at a time, as a database would
    in_flight: int = 0  # requests received and not yet answered
    max_in_flight: int = 0

    # -- state helpers for tests ------------------------------------------------------------------------

    def all(self, resource_type: str) -> list[dict[str, Any]]:
        return list(self.store.get(resource_type, {}).values())

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Store a resource as another system would (a server-assigned id)."""
        return self._store({k: v for k, v in copy.deepcopy(resource).items() if k != "id"}, None)

    def count(self, method: str, path_start: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(path_start))

    # -- HTTP --------------------------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = urlsplit(str(request.url))
        path = unquote(url.path)[len(urlsplit(BASE).path) :].strip("/")
        self.requests.append((request.method, path + ("?" + unquote(url.query) if url.query else "")))
        body = json.loads(request.content) if request.content else None
        self.in_flight += 1  # under the GIL; the counters only show whether requests overlapped
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(0.002 if request.method == "POST" else 0)  # a transaction takes a moment: others arrive
            with self._lock:
                status, document, headers = self._route(request.method, path, url.query, body, request.headers)
        except Refusal as exc:
            return httpx.Response(exc.status, json=outcome(exc.text))
        finally:
            self.in_flight -= 1
        if self.dates:
            headers = {**headers, "Date": format_datetime(_instant(self._now()), usegmt=True)}
        return httpx.Response(status, json=document, headers=headers)

    def _route(
        self, method: str, path: str, query: str, body: Any, headers: httpx.Headers
    ) -> tuple[int, Any, dict[str, str]]:
        if path == "metadata":
            return 200, self.statement(), {}
        if method == "POST" and path == "":
            return 200, self._bundle(body), {}
        parts = path.split("/")
        resource_type = parts[0]
        if parts[1:] == ["_history"] and method == "GET":
            if not self.history:
                raise Refusal(404, f"{path} is not supported")
            return 200, self._history(resource_type, query), {}
        if method == "DELETE" and len(parts) == 2:
            self._delete(resource_type, parts[1])
            return 200, outcome("deleted"), {}
        if method == "GET" and len(parts) == 1:
            return 200, self._searchset(resource_type, query), {}
        if method == "GET" and len(parts) == 2:
            found = self.store.get(resource_type, {}).get(parts[1])
            if not found:
                raise Refusal(404, f"{resource_type}/{parts[1]} not found")
            return 200, copy.deepcopy(found), {}
        request = {"method": method, "url": path + (f"?{unquote(query)}" if query else "")}
        if "If-None-Exist" in headers:
            request["ifNoneExist"] = headers["If-None-Exist"]
        if self.before_write:
            self.before_write(self, request)
        status, stored = self._write(request, body, {})
        return (
            status,
            stored,
            {"Location": f"{BASE}/{resource_type}/{stored['id']}/_history/{stored['meta']['versionId']}"},
        )

    def statement(self) -> dict[str, Any]:
        resources = []
        for name in TYPES:
            params = self.params_of(name)
            entry: dict[str, Any] = {
                "type": name,
                "interaction": [
                    {"code": c}
                    for c in ("read", "update", "create", "search-type", "delete")
                    + (("history-type",) if self.history and name == "Observation" else ())
                ],
                "conditionalCreate": self.conditional,
                "conditionalUpdate": self.conditional,
                "searchParam": [{"name": p, "type": "token"} for p in params],
            }
            if self.update_create is not None:
                entry["updateCreate"] = self.update_create
            resources.append(entry)
        return {
            "resourceType": "CapabilityStatement",
            "fhirVersion": "4.0.1",
            "rest": [{"mode": "server", "interaction": [{"code": c} for c in self.system], "resource": resources}],
        }

    # -- search --------------------------------------------------------------------------------------------

    def params_of(self, resource_type: str) -> tuple[str, ...]:
        return self.search_params.get(resource_type, DEFAULT_PARAMS.get(resource_type, ("identifier",)))

    def _searchset(self, resource_type: str, query: str) -> dict[str, Any]:
        params = dict(parse_qsl(query))
        count = params.pop("_count", None)
        offset = int(params.pop("_offset", "0"))
        elements = params.pop("_elements", None)
        summary = params.pop("_summary", None)
        if self.refuse_last_updated and "_lastUpdated" in params:
            raise Refusal(400, f"_lastUpdated is not supported for {resource_type}")
        matches = self.all(resource_type)
        for name, value in params.items():
            base, _, modifier = name.partition(":")
            self._check_param(resource_type, base)
            if modifier and (modifier != "not" or self.refuse_not):
                raise Refusal(400, f"Unknown modifier :{modifier} for {resource_type}?{base}")
            if name in ("date", "_lastUpdated"):  # the ge prefix pull asks, the gt prefix push asks
                assert value[:2] in ("ge", "gt"), value
                since, strict = _instant(value[2:]), value.startswith("gt")
                matches = [
                    m
                    for m in matches
                    if (when := _instant(self._when(m, name))) > since or (when == since and not strict)
                ]
                continue
            wanted = {v.replace("\\,", ",") for v in re.split(r"(?<!\\),", value)}
            matches = [m for m in matches if _token_hit(wanted, self._keys(m, base)) != (modifier == "not")]
        if summary == "count" and self.summary_count:
            return {"resourceType": "Bundle", "type": "searchset", "total": len(matches)}
        links = []
        if self.max_count is not None:
            size = min(int(count or self.max_count), self.max_count)
            if offset + size < len(matches):
                rest = urlencode({**params, "_count": str(size), "_offset": str(offset + size)})
                links.append({"relation": "next", "url": f"{BASE}/{resource_type}?{rest}"})
            matches = matches[offset : offset + size]
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": links,
            "entry": [{"resource": _subset(m, elements), "search": {"mode": "match"}} for m in matches],
        }

    def _history(self, resource_type: str, query: str) -> dict[str, Any]:
        """The type's history since ``_since``, newest first, ``history_page`` entries a page."""
        params = dict(parse_qsl(query))
        offset = int(params.pop("_offset", "0"))
        since = _instant(params["_since"]) if "_since" in params else None
        found = [
            entry
            for stamp, entry in reversed(self.log)
            if entry["request"]["url"].startswith(f"{resource_type}/") and (since is None or _instant(stamp) >= since)
        ]
        links = []
        if offset + self.history_page < len(found):
            rest = urlencode({**params, "_offset": str(offset + self.history_page)})
            links.append({"relation": "next", "url": f"{BASE}/{resource_type}/_history?{rest}"})
        page = found[offset : offset + self.history_page]
        return {"resourceType": "Bundle", "type": "history", "link": links, "entry": copy.deepcopy(page)}

    def _delete(self, resource_type: str, resource_id: str) -> None:
        gone = self.store.get(resource_type, {}).pop(resource_id, None)
        if gone is not None:
            version = self.tombstones[f"{resource_type}/{resource_id}"] = int(gone["meta"]["versionId"]) + 1
            request = {"method": "DELETE", "url": f"{resource_type}/{resource_id}/_history/{version}"}
            self.log.append((self._tick(), {"request": request, "response": {"status": "204 No Content"}}))

    def _check_param(self, resource_type: str, name: str) -> None:
        listed = self.params_of(resource_type)
        if name.startswith("_"):
            return
        if name not in listed or (resource_type, name) in self.refuse_params:
            raise Refusal(400, f'Unknown search parameter "{name}" for resource type "{resource_type}"')

    @staticmethod
    def _keys(resource: dict[str, Any], name: str) -> list[str]:
        if name == "identifier":
            return [f"{i['system']}|{i['value']}" for i in resource.get("identifier", [])]
        if name == "_tag":
            return [f"{t['system']}|{t['code']}" for t in resource.get("meta", {}).get("tag", [])]
        if name in REFERENCES:
            return [resource[f]["reference"] for f in REFERENCES[name] if isinstance(resource.get(f), dict)]
        if name in ("code", "category"):
            concepts = [resource["code"]] if name == "code" else resource.get("category", [])
            codings = [c for concept in concepts for c in concept.get("coding", [])]
            return [f"{c.get('system')}|{c.get('code')}" for c in codings] + [str(c.get("code")) for c in codings]
        return [resource.get("url", "")]

    @staticmethod
    def _when(resource: dict[str, Any], name: str) -> str:
        if name == "date":
            return str(resource.get("effectiveDateTime", ""))
        return str(resource["meta"]["lastUpdated"])

    def _matches(self, resource_type: str, query: str) -> list[dict[str, Any]]:
        return [e["resource"] for e in self._searchset(resource_type, query)["entry"]]

    # -- writes ----------------------------------------------------------------------------------------------

    def _store(self, resource: dict[str, Any], resource_id: str | None) -> dict[str, Any]:
        resource_type = resource["resourceType"]
        resource["id"] = resource_id or resource.get("id") or f"s{next(self._ids)}"
        previous = self.store.get(resource_type, {}).get(resource["id"])
        key = f"{resource_type}/{resource['id']}"
        was = int(previous["meta"]["versionId"]) if previous else self.tombstones.pop(key, 0)  # a deleted id goes on
        version, stamp = was + 1, self._tick()
        resource["meta"] = {**resource.get("meta", {}), "versionId": str(version), "lastUpdated": stamp}
        self.store.setdefault(resource_type, {})[resource["id"]] = resource
        request = {"method": "PUT" if previous else "POST", "url": f"{key}/_history/{version}"}
        self.log.append((stamp, {"resource": copy.deepcopy(resource), "request": request}))
        return copy.deepcopy(resource)

    def _tick(self) -> str:
        self._clock += 1
        return self._now()

    def _now(self) -> str:
        return f"2026-11-30T00:00:00.{self._clock:06d}+00:00"

    def _write(self, request: dict[str, Any], body: dict[str, Any], urns: dict[str, str]) -> tuple[int, dict[str, Any]]:
        body = _resolve(copy.deepcopy(body), urns)
        if self.refuse and (text := self.refuse(body)):
            raise Refusal(400, text)
        for target in _references(body):  # referential integrity, as HAPI and Medplum check it
            target_type, _, target_id = target.partition("/")
            if target_id.split("/")[0] not in self.store.get(target_type, {}):
                raise Refusal(400, f"Resource {target} not found, specified in path: reference")
        resource_type = body["resourceType"]
        if resource_type in self.fail_types:
            raise Refusal(500, f"cannot store {resource_type} now")
        url = request["url"]
        if request["method"] == "POST":
            if request.get("ifNoneExist"):
                found = self._matches(resource_type, request["ifNoneExist"])
                if len(found) > 1:
                    raise Refusal(412, f"If-None-Exist matched {len(found)} resources")
                if found:
                    return 200, copy.deepcopy(found[0])
            return 201, self._store(body, None)
        if "?" in url:
            found = self._matches(resource_type, url.split("?", 1)[1])
            if len(found) > 1:
                raise Refusal(412, f"Conditional update matched {len(found)} resources")
            if found:
                return 200, self._store(body, found[0]["id"])
            body.pop("id", None)
            return 201, self._store(body, None)
        resource_id = url.split("/")[1]
        exists = resource_id in self.store.get(resource_type, {})
        if not exists and self.update_create is False:
            raise Refusal(405, "update-as-create is not allowed")
        if not exists and not self.client_ids:
            raise Refusal(400, f"clients may not assign ids: {resource_type}/{resource_id} does not exist")
        return (200 if exists else 201), self._store(body, resource_id)

    def _bundle(self, bundle: dict[str, Any]) -> dict[str, Any]:
        entries = bundle["entry"]
        for item in entries:
            if self.before_write:  # outside the transaction: what it plants stays when the transaction fails
                self.before_write(self, item["request"])
        if bundle["type"] == "transaction":
            puts = sum(1 for e in entries if e["request"]["method"] == "PUT")
            strict = any("?" in e["request"]["url"] or e["request"].get("ifNoneExist") for e in entries)
            if self.max_updates is not None and puts > self.max_updates:
                raise Refusal(400, SIZE_MESSAGES["updates"])
            if strict and self.max_strict is not None and len(entries) > self.max_strict:
                raise Refusal(400, SIZE_MESSAGES["strict"])
            saved = copy.deepcopy(self.store)
            try:
                answer = self._entries(entries, atomic=True)
            except Refusal:
                self.store = saved
                raise
            return self.answer_hook(answer) if self.answer_hook else answer
        return self._entries(entries, atomic=False)

    def _entries(self, entries: list[dict[str, Any]], *, atomic: bool) -> dict[str, Any]:
        urns: dict[str, str] = {}
        out = []
        for item in entries:
            try:
                status, stored = self._write(item["request"], item["resource"], urns)
            except Refusal as exc:
                if atomic:
                    raise
                out.append({"response": {"status": str(exc.status), "outcome": outcome(exc.text)}})
                continue
            urns[item["fullUrl"]] = f"{stored['resourceType']}/{stored['id']}"
            location = f"{stored['resourceType']}/{stored['id']}/_history/{stored['meta']['versionId']}"
            out.append(
                {"response": {"status": f"{status} {'Created' if status == 201 else 'OK'}", "location": location}}
            )
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": out}


@contextmanager
def served(server: FakeFhir) -> Iterator[str]:
    """``server`` over HTTP on a loopback port, for a command run in a child process; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            origin = BASE[: -len(urlsplit(BASE).path)]  # the fake reads the path only
            request = httpx.Request(self.command, origin + self.path, headers=dict(self.headers), content=body)
            response = server(request)
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        do_GET = do_POST = do_PUT = do_DELETE = answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="fakefhir-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}{urlsplit(BASE).path}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _token_hit(wanted: set[str], keys: list[str]) -> bool:
    """A token search's match: a key asked for, or ``system|`` (any value of that system)."""
    return bool(wanted & set(keys)) or any(k.startswith(w) for w in wanted if w.endswith("|") for k in keys)


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")) if "T" in text else datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _subset(resource: dict[str, Any], elements: str | None) -> dict[str, Any]:
    """The resource as ``_elements`` asks (the elements named, plus resourceType, id and meta, as HAPI sends)."""
    if elements is None:
        return copy.deepcopy(resource)
    kept = {"resourceType", "id", "meta", *elements.split(",")}
    return {key: copy.deepcopy(value) for key, value in resource.items() if key in kept}


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        target = node.get("reference")
        # an absolute URL is outside the server (DetectedIssue.reference is a uri of that name, no Reference)
        own = [target] if isinstance(target, str) and "/" in target and "://" not in target else []
        return own + [r for value in node.values() for r in _references(value)]
    if isinstance(node, list):
        return [r for item in node for r in _references(item)]
    return []


def _resolve(node: Any, urns: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: (urns.get(v, v) if k == "reference" else _resolve(v, urns)) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(item, urns) for item in node]
    return node
