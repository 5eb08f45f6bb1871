"""FhirClient behaviour against respx: retries, Retry-After, auth, paging, errors, capabilities."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_lupus.client import (
    AuthenticationRefused,
    BearerAuth,
    Capabilities,
    FatalHttpError,
    FhirClient,
    InvalidResponse,
    PagingLoopError,
    PreconditionFailed,
    RetryPolicy,
    SmartBackendAuth,
    TransientHttpError,
    UnsupportedInteraction,
    retry_after_seconds,
)

BASE = "https://fhir.test/r4"


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(sleeps: Sleeps) -> FhirClient:
    policy = RetryPolicy(attempts=4, base_delay=1.0, max_delay=8.0, retry_after_cap=30.0, sleep=sleeps, rng=lambda: 1.0)
    return FhirClient(BASE, retry=policy, transport=httpx.HTTPTransport())


def outcome(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
    }


def bundle(*ids: str, next_url: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Observation", "id": i}, "search": {"mode": "match"}} for i in ids],
    }
    if next_url:
        page["link"] = [{"relation": "next", "url": next_url}]
    return page


class TestRetries:
    @respx.mock
    def test_retry_after_seconds_is_honoured(self, client: FhirClient, sleeps: Sleeps) -> None:
        route = respx.get(f"{BASE}/Patient/1").mock(
            side_effect=[
                httpx.Response(429, headers={"Retry-After": "7"}),
                httpx.Response(503, headers={"Retry-After": "2"}),
                httpx.Response(200, json={"resourceType": "Patient", "id": "1"}),
            ]
        )
        assert client.read("Patient", "1")["id"] == "1"
        assert route.call_count == 3 and sleeps == [7.0, 2.0]

    @respx.mock
    def test_retry_after_is_capped_and_backoff_grows(self, client: FhirClient, sleeps: Sleeps) -> None:
        respx.get(f"{BASE}/Patient/1").mock(
            side_effect=[
                httpx.Response(503, headers={"Retry-After": "3600"}),
                httpx.Response(502),
                httpx.Response(500),
                httpx.Response(200, json={"resourceType": "Patient", "id": "1"}),
            ]
        )
        client.read("Patient", "1")
        assert sleeps == [30.0, 2.0, 4.0]  # cap, then base * 2**attempt (jitter pinned at 1.0)

    def test_retry_after_http_date(self) -> None:
        now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        assert retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
        assert retry_after_seconds("garbage", now=now) is None
        assert retry_after_seconds(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now) == 0

    @respx.mock
    def test_transient_errors_exhaust_into_transient_error(self, client: FhirClient, sleeps: Sleeps) -> None:
        route = respx.get(f"{BASE}/Patient/1").mock(return_value=httpx.Response(503, json=outcome("maintenance")))
        with pytest.raises(TransientHttpError, match="503: error: maintenance"):
            client.read("Patient", "1")
        assert route.call_count == 4 and len(sleeps) == 3

    @respx.mock
    def test_fatal_status_is_not_retried_and_keeps_the_outcome_text(self, client: FhirClient) -> None:
        route = respx.get(f"{BASE}/Patient/x").mock(
            return_value=httpx.Response(404, json=outcome("Resource Patient/x is not known"))
        )
        with pytest.raises(FatalHttpError, match="Patient/x is not known"):
            client.read("Patient", "x")
        assert route.call_count == 1

    @respx.mock
    def test_timeouts_and_connection_errors_are_retried(self, client: FhirClient, sleeps: Sleeps) -> None:
        respx.get(f"{BASE}/metadata").mock(
            side_effect=[
                httpx.ReadTimeout("slow"),
                httpx.ConnectError("refused"),
                httpx.Response(200, json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}),
            ]
        )
        assert client.capabilities().fhir_version == "4.0.1"
        assert len(sleeps) == 2

    @respx.mock
    def test_persistent_timeout_becomes_a_transient_error(self, client: FhirClient) -> None:
        respx.get(f"{BASE}/Patient/1").mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(TransientHttpError, match="timed out"):
            client.read("Patient", "1")

    @respx.mock
    def test_non_idempotent_post_is_not_retried_after_a_read_timeout(self, client: FhirClient) -> None:
        route = respx.post(f"{BASE}/Observation").mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(TransientHttpError):
            client.create({"resourceType": "Observation"})
        assert route.call_count == 1

    @respx.mock
    def test_conditional_transaction_is_retried(self, client: FhirClient) -> None:
        route = respx.post(f"{BASE}/").mock(
            side_effect=[
                httpx.Response(500),
                httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response"}),
            ]
        )
        assert (
            client.transaction({"resourceType": "Bundle", "type": "transaction"}, idempotent=True)["type"]
            == "transaction-response"
        )
        assert route.call_count == 2

    @respx.mock
    def test_non_idempotent_transaction_is_not_retried_on_5xx(self, client: FhirClient) -> None:
        route = respx.post(f"{BASE}/").mock(return_value=httpx.Response(500))
        with pytest.raises(TransientHttpError):
            client.transaction({"resourceType": "Bundle", "type": "transaction"}, idempotent=False)
        assert route.call_count == 1


class TestResponses:
    @respx.mock
    def test_412_is_its_own_error(self, client: FhirClient) -> None:
        respx.put(f"{BASE}/Observation").mock(
            return_value=httpx.Response(412, json=outcome("Multiple resources match this search"))
        )
        with pytest.raises(PreconditionFailed, match="Multiple resources match"):
            client.conditional_update({"resourceType": "Observation"}, "identifier=s|1")

    @respx.mock
    def test_non_json_response(self, client: FhirClient) -> None:
        respx.get(f"{BASE}/Patient/1").mock(
            return_value=httpx.Response(200, text="<html>proxy login</html>", headers={"content-type": "text/html"})
        )
        with pytest.raises(InvalidResponse, match="text/html"):
            client.read("Patient", "1")

    @respx.mock
    def test_malformed_json_and_wrong_shapes(self, client: FhirClient) -> None:
        respx.get(f"{BASE}/Patient/1").mock(return_value=httpx.Response(200, content=b'{"resourceType": "Pat'))
        with pytest.raises(InvalidResponse):
            client.read("Patient", "1")
        respx.get(f"{BASE}/Patient/2").mock(return_value=httpx.Response(200, json=[1, 2]))
        with pytest.raises(InvalidResponse, match="JSON object"):
            client.read("Patient", "2")
        respx.get(f"{BASE}/Observation").mock(return_value=httpx.Response(200, json={"resourceType": "Patient"}))
        with pytest.raises(InvalidResponse, match="not a Bundle"):
            list(client.search("Observation"))

    @respx.mock
    def test_error_body_that_is_not_json(self, client: FhirClient) -> None:
        respx.get(f"{BASE}/Patient/1").mock(return_value=httpx.Response(400, text="Bad things"))
        with pytest.raises(FatalHttpError, match="Bad things"):
            client.read("Patient", "1")

    @respx.mock
    def test_headers(self, client: FhirClient) -> None:
        route = respx.put(f"{BASE}/Observation").mock(return_value=httpx.Response(200, json={}))
        client.conditional_update({"resourceType": "Observation"}, "identifier=s|1")
        request = route.calls[0].request
        assert request.headers["content-type"] == "application/fhir+json"
        assert request.headers["accept"] == "application/fhir+json"
        assert request.url.params["identifier"] == "s|1"


class TestPaging:
    @pytest.mark.parametrize("base", [BASE, BASE + "/"])
    @respx.mock
    def test_relative_and_absolute_next_links(self, base: str) -> None:
        client = FhirClient(base, transport=httpx.HTTPTransport())
        respx.get(f"{BASE}/Observation", params={"code": "x"}).mock(
            return_value=httpx.Response(200, json=bundle("1", "2", next_url="Observation?page=2"))
        )
        respx.get(f"{BASE}/Observation", params={"page": "2"}).mock(
            return_value=httpx.Response(200, json=bundle("3", next_url=f"{BASE}/Observation?page=3"))
        )
        respx.get(f"{BASE}/Observation", params={"page": "3"}).mock(return_value=httpx.Response(200, json=bundle("4")))
        assert [r["id"] for r in client.search("Observation", {"code": "x"})] == ["1", "2", "3", "4"]

    @respx.mock
    def test_next_link_loop_is_detected(self, client: FhirClient) -> None:
        respx.get(f"{BASE}/Observation", params={"code": "x"}).mock(
            return_value=httpx.Response(200, json=bundle("1", next_url="Observation?page=2"))
        )
        respx.get(f"{BASE}/Observation", params={"page": "2"}).mock(
            return_value=httpx.Response(200, json=bundle("2", next_url="Observation?page=2"))
        )
        seen = []
        with pytest.raises(PagingLoopError, match="repeats"):
            for resource in client.search("Observation", {"code": "x"}):
                seen.append(resource["id"])
        assert seen == ["1", "2"]

    @respx.mock
    def test_next_link_to_another_host_is_refused(self, client: FhirClient) -> None:
        respx.get(f"{BASE}/Observation").mock(
            return_value=httpx.Response(200, json=bundle("1", next_url="https://elsewhere.test/Observation?p=2"))
        )
        with pytest.raises(FatalHttpError, match="off the server"):
            list(client.search("Observation"))

    @respx.mock
    def test_included_resources_are_not_matches(self, client: FhirClient) -> None:
        page = bundle("1")
        page["entry"].append({"resource": {"resourceType": "Patient", "id": "p"}, "search": {"mode": "include"}})
        respx.get(f"{BASE}/Observation").mock(return_value=httpx.Response(200, json=page))
        assert [r["id"] for r in client.search("Observation")] == ["1"]


def _rsa_pem() -> tuple[bytes, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, key.public_key()


class TestAuth:
    @respx.mock
    def test_bearer(self) -> None:
        route = respx.get(f"{BASE}/metadata").mock(
            return_value=httpx.Response(200, json={"resourceType": "CapabilityStatement"})
        )
        FhirClient(BASE, auth=BearerAuth("abc"), transport=httpx.HTTPTransport()).capabilities()
        assert route.calls[0].request.headers["authorization"] == "Bearer abc"

    @respx.mock
    def test_smart_backend_token_is_cached_and_401_reauthenticates_once(self) -> None:
        pem, public = _rsa_pem()
        now = [1_000_000.0]
        auth = SmartBackendAuth(
            token_url="https://auth.test/token",
            client_id="lupus",
            private_key_pem=pem,
            key_id="k1",
            clock=lambda: now[0],
        )
        tokens = iter(["t1", "t2", "t3"])
        token_route = respx.post("https://auth.test/token").mock(
            side_effect=lambda request: httpx.Response(
                200, json={"access_token": next(tokens), "expires_in": 300, "token_type": "bearer"}
            )
        )
        seen: list[str] = []

        def fhir(request: httpx.Request) -> httpx.Response:
            seen.append(request.headers["authorization"])
            if len(seen) == 3:  # the server revokes t1 on the third call
                return httpx.Response(401, json=outcome("token revoked"))
            return httpx.Response(200, json={"resourceType": "Patient", "id": "1"})

        respx.get(f"{BASE}/Patient/1").mock(side_effect=fhir)
        client = FhirClient(BASE, auth=auth, transport=httpx.HTTPTransport())
        client.read("Patient", "1")
        client.read("Patient", "1")
        client.read("Patient", "1")
        assert seen == ["Bearer t1", "Bearer t1", "Bearer t1", "Bearer t2"]
        assert token_route.call_count == 2
        now[0] += 300  # expired (with skew): a new token before the next call
        client.read("Patient", "1")
        assert seen[-1] == "Bearer t3" and token_route.call_count == 3
        form = dict(httpx.QueryParams(token_route.calls[0].request.content.decode()))
        assert form["grant_type"] == "client_credentials"
        assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        claims = jwt.decode(
            form["client_assertion"],
            public,
            algorithms=["RS384"],
            audience="https://auth.test/token",
            options={"verify_exp": False},
        )
        assert claims["iss"] == claims["sub"] == "lupus" and claims["exp"] - claims["iat"] == 300
        assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "k1"

    @respx.mock
    def test_persistent_401_is_not_a_loop(self) -> None:
        pem, _ = _rsa_pem()
        auth = SmartBackendAuth(token_url="https://auth.test/token", client_id="c", private_key_pem=pem)
        token_route = respx.post("https://auth.test/token").mock(
            return_value=httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        )
        route = respx.get(f"{BASE}/Patient/1").mock(return_value=httpx.Response(401, json=outcome("no")))
        with pytest.raises(FatalHttpError, match="401"):
            FhirClient(BASE, auth=auth, transport=httpx.HTTPTransport()).read("Patient", "1")
        assert route.call_count == 2 and token_route.call_count == 2

    @respx.mock
    def test_token_refusal_says_why(self) -> None:
        key = ec.generate_private_key(ec.SECP384R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        auth = SmartBackendAuth(
            token_url="https://auth.test/token", client_id="c", private_key_pem=pem, algorithm="ES384"
        )
        respx.post("https://auth.test/token").mock(
            return_value=httpx.Response(400, json={"error": "invalid_client", "error_description": "unknown key"})
        )
        with pytest.raises(FatalHttpError, match="unknown key"):
            FhirClient(BASE, auth=auth, transport=httpx.HTTPTransport()).read("Patient", "1")

    def test_algorithm_is_restricted(self) -> None:
        with pytest.raises(ValueError, match="RS384 or ES384"):
            SmartBackendAuth(token_url="u", client_id="c", private_key_pem=b"", algorithm="HS256")  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("expires_in", "used_for"), [(3600, 3570), (300, 270), (60, 54), (30, 27), (5, 4.5), (1, 0.9), (0, 0)]
    )
    def test_renewal_margin_is_30_s_or_a_tenth_of_a_short_token(self, expires_in: float, used_for: float) -> None:
        assert SmartBackendAuth.lifetime(expires_in) == pytest.approx(used_for)

    @respx.mock
    def test_short_lived_token_is_reused_until_its_margin(self) -> None:
        """Before the margin was proportional, a token of 30 s or less was never valid: a token per request."""
        pem, _ = _rsa_pem()
        now = [1_000_000.0]
        auth = SmartBackendAuth(
            token_url="https://auth.test/token", client_id="c", private_key_pem=pem, clock=lambda: now[0]
        )
        token_route = respx.post("https://auth.test/token").mock(
            return_value=httpx.Response(200, json={"access_token": "t", "expires_in": 20})
        )
        respx.get(f"{BASE}/Patient/1").mock(return_value=httpx.Response(200, json={"resourceType": "Patient"}))
        client = FhirClient(BASE, auth=auth, transport=httpx.HTTPTransport())
        client.read("Patient", "1")
        now[0] += 17.9
        client.read("Patient", "1")
        assert token_route.call_count == 1
        now[0] += 0.2  # 18.1 s: inside the last tenth of its life, renewed before the server would refuse it
        client.read("Patient", "1")
        assert token_route.call_count == 2

    @respx.mock
    def test_persistent_401_after_reauthentication_says_what_to_check(self) -> None:
        pem, _ = _rsa_pem()
        auth = SmartBackendAuth(token_url="https://auth.test/token", client_id="lupus", private_key_pem=pem)
        respx.post("https://auth.test/token").mock(
            return_value=httpx.Response(200, json={"access_token": "secret-token-value", "expires_in": 300})
        )
        challenge = 'Bearer error="invalid_token", error_description="not from an issuer we trust"'
        respx.get(f"{BASE}/Patient/1").mock(
            return_value=httpx.Response(401, json=outcome("no"), headers={"WWW-Authenticate": challenge})
        )
        with pytest.raises(AuthenticationRefused) as caught:
            FhirClient(BASE, auth=auth, transport=httpx.HTTPTransport()).read("Patient", "1")
        message = str(caught.value)
        assert "https://auth.test/token" in message and "'lupus'" in message and challenge in message
        assert "secret-token-value" not in message and "\n" not in message and caught.value.status == 401

    @pytest.mark.parametrize(
        ("status", "body", "expected"),
        [
            (401, {"error": "invalid_client", "error_description": "client authentication failed"}, "JWKS"),
            (400, {"error": "invalid_client"}, "registered at this authorization server"),
            (400, {"error": "invalid_scope", "error_description": "requested scope is not allowed"}, "scopes"),
            (403, {"no": "oauth"}, "check the client registration"),
        ],
    )
    @respx.mock
    def test_token_refusal_is_authentication_refused_naming_url_client_and_error(
        self, status: int, body: dict[str, str], expected: str
    ) -> None:
        pem, _ = _rsa_pem()
        auth = SmartBackendAuth(token_url="https://auth.test/token", client_id="lupus", private_key_pem=pem)
        respx.post("https://auth.test/token").mock(return_value=httpx.Response(status, json=body))
        with pytest.raises(AuthenticationRefused) as caught:
            FhirClient(BASE, auth=auth, transport=httpx.HTTPTransport()).read("Patient", "1")
        message = str(caught.value)
        assert message.startswith(f"POST https://auth.test/token -> {status}: authentication refused: ")
        assert "client 'lupus'" in message and expected in message, message
        if "error" in body:
            assert body["error"] in message and body.get("error_description", "") in message

    @respx.mock
    def test_token_endpoint_outage_is_transient_not_refused(self) -> None:
        pem, _ = _rsa_pem()
        auth = SmartBackendAuth(token_url="https://auth.test/token", client_id="c", private_key_pem=pem)
        respx.post("https://auth.test/token").mock(return_value=httpx.Response(503, text="down"))
        client = FhirClient(BASE, auth=auth, transport=httpx.HTTPTransport(), retry=RetryPolicy(attempts=1))
        with pytest.raises(TransientHttpError):
            client.read("Patient", "1")

    @respx.mock
    def test_token_endpoint_is_discovered_once_from_the_smart_configuration(self) -> None:
        pem, public = _rsa_pem()
        auth = SmartBackendAuth(fhir_base=BASE, client_id="lupus", private_key_pem=pem)
        discovery = respx.get(f"{BASE}/.well-known/smart-configuration").mock(
            return_value=httpx.Response(
                200,
                json={
                    "token_endpoint": "https://auth.test/moved/token",
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                    "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                },
            )
        )
        token_route = respx.post("https://auth.test/moved/token").mock(
            return_value=httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        )
        respx.get(f"{BASE}/Patient/1").mock(return_value=httpx.Response(200, json={"resourceType": "Patient"}))
        client = FhirClient(BASE, auth=auth, transport=httpx.HTTPTransport())
        client.read("Patient", "1")
        client.read("Patient", "1")
        assert discovery.call_count == 1 and token_route.call_count == 1
        form = dict(httpx.QueryParams(token_route.calls[0].request.content.decode()))
        claims = jwt.decode(form["client_assertion"], public, algorithms=["RS384"], audience=auth.token_url)
        assert claims["aud"] == "https://auth.test/moved/token"  # the assertion is for the discovered endpoint

    @pytest.mark.parametrize(
        ("status", "config", "error", "expected"),
        [
            (404, {}, FatalHttpError, "answered 404"),
            (200, {"issuer": "x"}, FatalHttpError, "no token_endpoint"),
            (
                200,
                {"token_endpoint": "https://a/t", "token_endpoint_auth_methods_supported": ["client_secret_basic"]},
                AuthenticationRefused,
                "does not accept private_key_jwt",
            ),
            (
                200,
                {"token_endpoint": "https://a/t", "token_endpoint_auth_signing_alg_values_supported": ["ES384"]},
                AuthenticationRefused,
                "does not accept RS384 assertions",
            ),
        ],
    )
    @respx.mock
    def test_discovery_that_cannot_serve_us_says_so(
        self, status: int, config: dict[str, object], error: type[Exception], expected: str
    ) -> None:
        pem, _ = _rsa_pem()
        auth = SmartBackendAuth(fhir_base=BASE + "/", client_id="c", private_key_pem=pem)
        respx.get(f"{BASE}/.well-known/smart-configuration").mock(return_value=httpx.Response(status, json=config))
        fhir = respx.get(f"{BASE}/Patient/1").mock(return_value=httpx.Response(200, json={}))
        with pytest.raises(error, match=expected) as caught:
            FhirClient(BASE, auth=auth, transport=httpx.HTTPTransport()).read("Patient", "1")
        assert "smart-configuration" in str(caught.value) and fhir.call_count == 0

    def test_without_token_url_or_fhir_base_is_a_usage_error(self) -> None:
        with pytest.raises(ValueError, match="token URL"):
            SmartBackendAuth(client_id="c", private_key_pem=b"")


class TestCapabilities:
    def statement(self, system: list[str], conditional: bool = True) -> dict[str, Any]:
        resources = [
            {
                "type": name,
                "interaction": [{"code": c} for c in ("read", "create", "update", "search-type")],
                "conditionalCreate": conditional,
                "conditionalUpdate": conditional,
                "searchParam": [{"name": "identifier"}, {"name": "patient"}],
            }
            for name in ("Patient", "Observation")
        ]
        return {
            "resourceType": "CapabilityStatement",
            "fhirVersion": "4.0.1",
            "rest": [{"mode": "server", "interaction": [{"code": c} for c in system], "resource": resources}],
        }

    def test_strategy_order(self) -> None:
        assert Capabilities.from_statement(self.statement(["transaction", "batch"])).write_strategy() == "transaction"
        assert Capabilities.from_statement(self.statement(["batch"])).write_strategy() == "batch"
        assert Capabilities.from_statement(self.statement([])).write_strategy() == "individual"

    def test_what_the_statement_says_per_type(self) -> None:
        caps = Capabilities.from_statement(self.statement([], conditional=False))
        assert caps.searches("Observation", "patient") and not caps.searches("Observation", "code")
        assert caps.searches("Observation", "_lastUpdated") and not caps.searches("Encounter", "identifier")
        assert caps.allows_update_create("Observation") is None and not caps.conditional_update

    def test_unsupported_interaction_is_named(self) -> None:
        caps = Capabilities.from_statement(self.statement([], conditional=False))
        with pytest.raises(UnsupportedInteraction, match="ResearchSubject"):
            caps.require_search("ResearchSubject", "study")
        with pytest.raises(UnsupportedInteraction, match="by code"):
            caps.require_search("Observation", "patient", "code")
        caps.require_search("Observation", "patient", "_lastUpdated")


def test_location_parsing() -> None:
    from fhir_lupus.client import location_id, location_version

    assert location_id("Patient/12/_history/3", "Patient") == "12"
    assert location_version("Patient/12/_history/3") == "3"
    assert location_id("http://h:1/fhir/Observation/ab-c/_history/1", "Observation") == "ab-c"
    assert location_id("http://h:1/fhir/Observation/ab-c", "Patient") is None
    assert location_version("Observation/1") is None


@respx.mock
def test_lock_conflict_409_on_a_conditional_write_is_retried(client: FhirClient, sleeps: Sleeps) -> None:
    route = respx.post(f"{BASE}/").mock(
        side_effect=[
            httpx.Response(409, json=outcome("HAPI-0550: Timeout trying to lock table")),
            httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response"}),
        ]
    )
    client.transaction({"resourceType": "Bundle", "type": "transaction"}, idempotent=True)
    assert route.call_count == 2 and len(sleeps) == 1


@respx.mock
def test_409_on_a_versioned_write_is_final(client: FhirClient) -> None:
    route = respx.put(f"{BASE}/Patient/1").mock(return_value=httpx.Response(409, json=outcome("version conflict")))
    with pytest.raises(FatalHttpError, match="version conflict"):
        client._send_raw("PUT", "Patient/1", body={"resourceType": "Patient"}, headers={"If-Match": 'W/"1"'})
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (400, "Transaction contains more update operations than allowed", "TooLarge"),  # Medplum 5.2
        (400, "Transaction requires strict isolation but has too many entries", "TooLarge"),  # Medplum 5.2
        (413, "Payload Too Large", "TooLarge"),
        (400, "Bundle contains 600 entries, which exceeds the maximum of 500", "TooLarge"),
        (400, "Conditional PUT matched multiple resources", "PreconditionFailed"),  # Medplum, in a transaction
        (412, "HAPI-0988: Failed to UPDATE ... because this search matched 2 resources", "PreconditionFailed"),
        (400, 'HAPI-0524: Unknown search parameter "url" for resource type "CodeSystem"', "UnknownSearchParameter"),
        (400, "Observation.status: Missing required property", "FatalHttpError"),
        (503, "down for maintenance", "TransientHttpError"),
    ],
)
def test_refusals_are_classified_by_status_and_words(status: int, message: str, expected: str) -> None:
    from fhir_lupus.client import error_class

    assert error_class(status, message).__name__ == expected
