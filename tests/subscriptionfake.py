"""A FHIR server that keeps Subscriptions, behind respx, for the watch tests that must run in milliseconds.

It answers what watch asks: the CapabilityStatement (with or without Subscription), a search by ``_tag``, create,
update by id, read and delete; ``activate_after`` reads of a requested Subscription make it ``active`` (None:
never, as Medplum as we run it), or ``status_after_read`` sets another status (``error``). HAPI and Medplum
confirm the same behaviour in tests/integration/test_watch.py.
"""

from __future__ import annotations

import copy
import itertools
import threading
from typing import Any
from urllib.parse import parse_qsl

import httpx

BASE = "http://127.0.0.1:9/fhir"


class SubscriptionServer:
    def __init__(self, *, subscriptions: bool = True, activate_after: int | None = 1) -> None:
        self.subscriptions = subscriptions
        self.activate_after = activate_after
        self.status_after_read: str | None = None
        self.store: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._reads: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/fhir").strip("/")
        with self._lock:
            self.requests.append((request.method, path))
            return self._route(request, path)

    def _route(self, request: httpx.Request, path: str) -> httpx.Response:
        if path == "metadata":
            return httpx.Response(200, json=self.statement())
        parts = path.split("/")
        if parts[0] != "Subscription":
            return httpx.Response(404, json={"resourceType": "OperationOutcome", "issue": []})
        if request.method == "GET" and len(parts) == 1:
            wanted = dict(parse_qsl(request.url.query.decode()))["_tag"].replace("\\", "")
            found = [r for r in self.store.values() if any(_token(t) == wanted for t in r["meta"].get("tag", []))]
            entries = [{"resource": copy.deepcopy(r), "search": {"mode": "match"}} for r in found]
            return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "entry": entries})
        if request.method == "POST" and len(parts) == 1:
            resource = {**_body(request), "id": f"sub{next(self._ids)}"}
            self.store[resource["id"]] = resource
            return httpx.Response(201, json=resource)
        if len(parts) != 2:
            return httpx.Response(400)
        sid = parts[1]
        if request.method == "PUT":
            self.store[sid] = {**_body(request), "id": sid}
            self._reads[sid] = 0
            return httpx.Response(200, json=self.store[sid])
        if sid not in self.store:
            return httpx.Response(404, json={"resourceType": "OperationOutcome", "issue": []})
        if request.method == "DELETE":
            del self.store[sid]
            return httpx.Response(200)
        self._reads[sid] = self._reads.get(sid, 0) + 1
        if self.status_after_read:
            self.store[sid]["status"] = self.status_after_read
        elif self.activate_after is not None and self._reads[sid] >= self.activate_after:
            self.store[sid]["status"] = "active"
        return httpx.Response(200, json=self.store[sid])

    def statement(self) -> dict[str, Any]:
        types = ["Observation", *(["Subscription"] if self.subscriptions else [])]
        resources = [
            {"type": name, "interaction": [{"code": c} for c in ("read", "create", "update", "delete", "search-type")]}
            for name in types
        ]
        return {
            "resourceType": "CapabilityStatement",
            "fhirVersion": "4.0.1",
            "rest": [{"mode": "server", "resource": resources}],
        }


def _token(tag: dict[str, str]) -> str:
    return f"{tag['system']}|{tag['code']}"


def _body(request: httpx.Request) -> dict[str, Any]:
    import json

    document: dict[str, Any] = json.loads(request.content)
    return document
