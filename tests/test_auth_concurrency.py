"""SMART Backend Services with requests sent from several threads at once (pull's subject workers).

The token is fetched and renewed under a lock: requests in flight together share one token request, when the
first token is fetched, when it expires, and when the server revokes it (each of them answered 401).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fhir_lupus.client import FhirClient, SmartBackendAuth

BASE = "https://fhir.test/fhir"
TOKEN_URL = "https://auth.test/token"
THREADS = 6


def _pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _token_endpoint(issued: list[str]) -> respx.Route:
    def answer(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)  # long enough for the other threads to arrive meanwhile
        issued.append(f"t{len(issued) + 1}")
        return httpx.Response(200, json={"access_token": issued[-1], "expires_in": 300, "token_type": "bearer"})

    return respx.post(TOKEN_URL).mock(side_effect=answer)


@respx.mock
def test_requests_sent_at_once_share_one_token_request_and_one_renewal() -> None:
    now = [1_000_000.0]
    auth = SmartBackendAuth(token_url=TOKEN_URL, client_id="lupus", private_key_pem=_pem(), clock=lambda: now[0])
    issued: list[str] = []
    token_route = _token_endpoint(issued)
    seen: list[str] = []
    respx.get(f"{BASE}/Patient/1").mock(
        side_effect=lambda request: (
            seen.append(request.headers["authorization"]) or httpx.Response(200, json={"resourceType": "Patient"})
        )
    )
    with FhirClient(BASE, auth=auth, transport=httpx.HTTPTransport()) as client, ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda _: client.read("Patient", "1"), range(THREADS)))
        assert token_route.call_count == 1 and seen == ["Bearer t1"] * THREADS
        now[0] += 300  # expired for all of them
        list(pool.map(lambda _: client.read("Patient", "1"), range(THREADS)))
    assert token_route.call_count == 2 and seen[THREADS:] == ["Bearer t2"] * THREADS


@respx.mock
def test_a_token_revoked_under_requests_in_flight_is_renewed_once() -> None:
    auth = SmartBackendAuth(token_url=TOKEN_URL, client_id="lupus", private_key_pem=_pem())
    issued: list[str] = []
    token_route = _token_endpoint(issued)
    together = threading.Barrier(THREADS, timeout=5)
    seen: list[str] = []

    def fhir(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        if request.headers["authorization"] == "Bearer t1":  # revoked: every request in flight is refused
            together.wait()
            return httpx.Response(401, json={"resourceType": "OperationOutcome", "issue": []})
        return httpx.Response(200, json={"resourceType": "Patient"})

    respx.get(f"{BASE}/Patient/1").mock(side_effect=fhir)
    with FhirClient(BASE, auth=auth, transport=httpx.HTTPTransport()) as client:
        issued.append("t1")  # t1 was fetched before the requests went out (set here without a request)
        auth._token, auth._expires_at = "t1", time.time() + 3600
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda _: client.read("Patient", "1"), range(THREADS)))
    assert token_route.call_count == 1  # one renewal for the six 401s
    assert sorted(seen) == ["Bearer t1"] * THREADS + ["Bearer t2"] * THREADS
