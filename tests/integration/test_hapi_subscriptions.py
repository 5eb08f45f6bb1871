"""HAPI's REST-hook delivery on the switched test server (``hapi-subscriptions``), as `fhir-lupus watch` meets it.

Two R4 Subscriptions to a loopback receiver of this test: one with a resource payload (application/fhir+json), one
with none (R4's empty notification). The test waits until HAPI marks both active, writes an Observation that
matches and one that does not, and checks what arrives: HAPI sends the resource as an update to
``endpoint/Observation/{id}``, the empty notification as a bodyless POST to the endpoint itself, each with the
Subscription's header. The criteria carry an identifier system unique to the run, so notifications of other tests'
writes on the shared server never reach this receiver. servers/hapi/README.md records what was observed.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from fhir_lupus.client import FatalHttpError, FhirClient

pytestmark = pytest.mark.integration

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SECRET_HEADER = "X-Fhir-Lupus-Secret"
WAIT = 120.0  # generous: a loaded CI machine; nothing here asserts a time


@dataclass(frozen=True)
class Delivery:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


class Receiver:
    """A loopback HTTP endpoint on a free port that answers 200 to anything and keeps what it was sent."""

    def __init__(self) -> None:
        received: queue.Queue[Delivery] = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                received.put(Delivery(self.command, self.path, headers, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_GET = do_DELETE = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.received = received
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def next(self) -> Delivery:
        return self.received.get(timeout=WAIT)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


@pytest.fixture
def hapi(hapi_subscriptions_url: str) -> Iterator[FhirClient]:
    with FhirClient(hapi_subscriptions_url, timeout=60) as fhir:
        yield fhir


def _subscription(criteria: str, endpoint: str, secret: str, payload: str | None) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint, "header": [f"{SECRET_HEADER}: {secret}"]}
    if payload is not None:
        channel["payload"] = payload
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "fhir_lupus integration test of REST-hook delivery",
        "criteria": criteria,
        "channel": channel,
    }


def _observation(system: str, category: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": system, "value": uuid.uuid4().hex}],
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"text": "subscription smoke test"},
        "valueQuantity": {"value": 1.0},
    }


def _wait_active(fhir: FhirClient, ids: list[str]) -> float:
    """Seconds until HAPI marks every Subscription active (it starts as requested)."""
    start = time.monotonic()
    while time.monotonic() - start < WAIT:
        statuses = {fhir.read("Subscription", sid)["status"] for sid in ids}
        if statuses == {"active"}:
            return time.monotonic() - start
        assert statuses <= {"requested", "active"}, statuses
        time.sleep(0.2)
    raise AssertionError(f"Subscriptions {ids} not active after {WAIT:.0f} s")


def test_rest_hook_delivers_the_resource_as_an_update_and_the_empty_payload_as_a_bodyless_post(
    hapi: FhirClient, receiver: Receiver
) -> None:
    system = f"urn:fhir-lupus:test:subscriptions:{uuid.uuid4().hex}"
    criteria = f"Observation?category={CATEGORY}|laboratory&identifier={system}|"
    secret = uuid.uuid4().hex
    full = hapi.create(_subscription(criteria, f"{receiver.base}/hook/full", secret, "application/fhir+json"))
    empty = hapi.create(_subscription(criteria, f"{receiver.base}/hook/empty", secret, None))
    created: list[tuple[str, str]] = [("Subscription", full["id"]), ("Subscription", empty["id"])]
    try:
        assert full["status"] == empty["status"] == "requested"
        to_active = _wait_active(hapi, [full["id"], empty["id"]])
        assert receiver.received.empty()  # activation sends nothing (no handshake in R4)

        vital = hapi.create(_observation(system, "vital-signs"))  # same identifier system, other category
        created.append(("Observation", vital["id"]))
        written = time.monotonic()
        lab = hapi.create(_observation(system, "laboratory"))
        created.append(("Observation", lab["id"]))
        deliveries = {"/hook/full" if d.path.startswith("/hook/full") else d.path: d for d in _take(receiver, 2)}
        latency = time.monotonic() - written

        resource = deliveries["/hook/full"]
        assert resource.method == "PUT"
        assert resource.path == f"/hook/full/Observation/{lab['id']}"
        assert resource.headers[SECRET_HEADER.lower()] == secret
        assert resource.headers["content-type"].startswith("application/fhir+json")
        assert resource.headers["if-match"] == 'W/"1"'
        sent = json.loads(resource.body)
        assert (sent["resourceType"], sent["id"], sent["meta"]["versionId"]) == ("Observation", lab["id"], "1")
        assert sent["identifier"] == lab["identifier"] and sent["category"] == lab["category"]

        bare = deliveries["/hook/empty"]
        assert (bare.method, bare.path, bare.body) == ("POST", "/hook/empty", b"")
        assert bare.headers[SECRET_HEADER.lower()] == secret

        # an update notifies again, with the new version
        hapi.put(f"Observation/{lab['id']}", {**lab, "valueQuantity": {"value": 2.0}})
        again = {d.method: d for d in _take(receiver, 2)}
        assert again["PUT"].path == f"/hook/full/Observation/{lab['id']}"
        assert json.loads(again["PUT"].body)["meta"]["versionId"] == "2"
        assert again["PUT"].headers["if-match"] == 'W/"2"'
        assert (again["POST"].path, again["POST"].body) == ("/hook/empty", b"")
        # The vital-signs Observation was queued before the lab one and never matched: nothing else came.
        assert receiver.received.empty()
        print(f"\nactive after {to_active:.1f} s; first notifications {latency:.2f} s after the write")
    finally:
        for resource_type, resource_id in reversed(created):
            hapi.delete(resource_type, resource_id)
    for subscription in (full, empty):
        with pytest.raises(FatalHttpError) as gone:
            hapi.read("Subscription", subscription["id"])
        assert gone.value.status == 410


def _take(receiver: Receiver, count: int) -> list[Delivery]:
    return [receiver.next() for _ in range(count)]


def test_the_switched_server_validates_subscriptions_and_the_plain_one_only_stores_them(
    hapi_subscriptions_url: str,
) -> None:
    """With the switch on, HAPI's submitter checks a Subscription on write; off (servers/hapi's default, the
    HAPI every other test uses), no subscription module runs, so the same invalid one is stored as plain data."""
    invalid = _subscription("Observation?category=laboratory", "", "x", "application/fhir+json")
    del invalid["channel"]["endpoint"]
    headers = {"Content-Type": "application/fhir+json"}
    refused = httpx.post(f"{hapi_subscriptions_url}/Subscription", json=invalid, headers=headers, timeout=60)
    if refused.status_code == 201:  # the switch is off there: leave no stray Subscription on a shared server
        httpx.delete(f"{hapi_subscriptions_url}/Subscription/{refused.json()['id']}", timeout=60)
    assert refused.status_code == 422, refused.text
    assert "endpoint" in refused.text.lower()
    plain = os.environ.get("FHIR_LUPUS_HAPI_URL")
    if not plain:
        pytest.skip("FHIR_LUPUS_HAPI_URL is unset: the plain HAPI's side is not checked")
    stored = httpx.post(f"{plain.rstrip('/')}/Subscription", json=invalid, headers=headers, timeout=60)
    assert stored.status_code == 201, stored.text
    httpx.delete(f"{plain.rstrip('/')}/Subscription/{stored.json()['id']}", timeout=60).raise_for_status()
