"""SMART Backend Services against a real authorization server (oidc-provider, servers/oidc) and a gateway.

HAPI sits behind a loopback gateway (tests/smartgateway.py on a FaultProxy) that lets a request through only with
an access token that the authorization server, asked by introspection, calls active and wide enough. Each test
registers its own client with a fresh key pair through Dynamic Client Registration (RFC 7591), so the server that
.ci/run starts holds no test keys. One subject is enough: the point is the token traffic, not the mapping.
The whole module takes about 15-25 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from faultproxy import FaultProxy
from smartgateway import SmartGateway
from typer.testing import CliRunner

from fhir_lupus import load_trial
from fhir_lupus.cli import app
from fhir_lupus.client import AuthenticationRefused, FatalHttpError, FhirClient, SmartBackendAuth
from fhir_lupus.journal import Journal
from fhir_lupus.pull import pull_study
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

pytestmark = pytest.mark.integration
# One FHIR server per test is enough behind the gateway: pushes go to Medplum (a one-subject push takes 10-30 s on
# HAPI on the 2-core machine, a few seconds on Medplum), the token tests' searches to HAPI, so both servers see it.
HAPI = pytest.mark.parametrize("server_url", ["hapi"], indirect=True)
MEDPLUM = pytest.mark.parametrize("server_url", ["medplum"], indirect=True)
INITIAL_ACCESS_TOKEN = "fhir-lupus-test-registration"  # servers/oidc/server.mjs, a loopback test value
runner = CliRunner()
Alg = Literal["RS384", "ES384"]


@dataclass
class Registered:
    client_id: str
    pem: bytes
    kid: str
    alg: Alg


def new_key(alg: Alg) -> tuple[bytes, dict[str, str]]:
    """A fresh private key (PEM) and its public JWK."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if alg == "RS384":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    else:
        key = ec.generate_private_key(ec.SECP384R1())
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, public


def register(issuer: str, alg: Alg, *, ttl: int | None = None, scope: str = "system/*.rs system/*.cud") -> Registered:
    """RFC 7591 registration of a private_key_jwt client with its public key, protected by the initial token."""
    pem, public = new_key(alg)
    kid = f"k-{alg.lower()}"
    public.update(kid=kid, alg=alg, use="sig")
    metadata: dict[str, object] = {
        "grant_types": ["client_credentials"],
        "response_types": [],
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": alg,
        "jwks": {"keys": [public]},
        "scope": scope,
    }
    if ttl is not None:
        metadata["x_access_token_ttl"] = ttl
    answer = httpx.post(
        f"{issuer}/reg", json=metadata, headers={"Authorization": f"Bearer {INITIAL_ACCESS_TOKEN}"}, timeout=30
    )
    assert answer.status_code == 201, answer.text
    return Registered(answer.json()["client_id"], pem, kid, alg)


class CountingTransport(httpx.HTTPTransport):
    """Counts the requests to the token endpoint (what the authorization server sees of our caching)."""

    def __init__(self, token_url: str) -> None:
        super().__init__()
        self.token_url = token_url
        self.token_requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == self.token_url:
            self.token_requests += 1
        return super().handle_request(request)


@dataclass
class Gated:
    proxy: FaultProxy
    gateway: SmartGateway
    fhir_url: str  # the FHIR base behind the gateway


@pytest.fixture
def gated(server_url: str, oidc_url: str) -> Iterator[Gated]:
    parts = urlsplit(server_url)
    gateway = SmartGateway(oidc_url, base_path=parts.path.rstrip("/"))
    with FaultProxy(f"{parts.scheme}://{parts.netloc}") as proxy:
        gateway.install(proxy)
        yield Gated(proxy, gateway, proxy.base + parts.path)


def smart_client(
    gated: Gated, oidc_url: str, who: Registered, **auth_options: object
) -> tuple[FhirClient, CountingTransport, SmartBackendAuth]:
    token_url = f"{oidc_url}/token"
    auth = SmartBackendAuth(
        token_url=token_url,
        client_id=who.client_id,
        private_key_pem=who.pem,
        algorithm=who.alg,
        key_id=who.kid,
        **auth_options,  # type: ignore[arg-type]
    )
    transport = CountingTransport(token_url)
    return FhirClient(gated.fhir_url, auth=auth, transport=transport, timeout=120), transport, auth


def search_once(client: FhirClient) -> None:
    client.get("Patient", params={"_count": "1"})


@MEDPLUM
def test_push_and_pull_with_es384_token_obtained_once(
    gated: Gated, oidc_url: str, isolated_settings: Settings, subset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(subset(1), pack=isolated_settings.pack)
    who = register(oidc_url, "ES384")
    client, transport, _ = smart_client(gated, oidc_url, who)
    with client, Journal(tmp_path / "journal.sqlite") as journal:
        first = push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        assert first.complete and first.created > 0, first.summary()
        second = push_trial(
            TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings
        )
        assert second.written == 0 and second.unchanged == first.created
        pulled = pull_study(client, journal, data.study, since=None, settings=isolated_settings)
        assert pulled.subjects == 1 and pulled.rows
    assert transport.token_requests == 1  # cached and reused by every request of two pushes and a pull
    assert gated.gateway.passed > 5 and gated.gateway.refused == [] and len(gated.gateway.tokens) == 1


@MEDPLUM
def test_cli_push_and_pull_with_rs384_discovering_the_token_endpoint(
    gated: Gated, oidc_url: str, isolated_mappings: Path, subset: Callable[..., Path], tmp_path: Path
) -> None:
    who = register(oidc_url, "RS384")
    key = tmp_path / "client.pem"
    key.write_bytes(who.pem)
    # no --smart-token-url: it is discovered from the gateway's .well-known/smart-configuration
    common = [
        "--server", gated.fhir_url, "--journal", str(tmp_path / "journal.sqlite"), "--mappings", str(isolated_mappings),
        "--smart-client-id", who.client_id, "--smart-key", str(key),
        "--smart-alg", "RS384", "--smart-kid", who.kid,
    ]  # fmt: skip
    data_dir = subset(1)
    first = runner.invoke(app, ["push", str(data_dir), *common])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["push", str(data_dir), *common])
    assert second.exit_code == 0 and "nothing changed since the last push" in second.output, second.output
    pulled = runner.invoke(app, ["pull", "--study", "NCT00698191", "-o", str(tmp_path / "labs.csv"), *common])
    assert pulled.exit_code == 0 and "of 1 subjects" in pulled.output, pulled.output
    assert gated.gateway.refused == [] and gated.gateway.passed > 3
    # one per command: the 2nd push sends nothing but asks the server what changed since the 1st (issue 25, item 2)
    assert len(gated.gateway.tokens) == 3
    assert who.pem.decode() not in first.output + pulled.output


@HAPI
def test_short_lived_token_is_renewed_before_it_expires(gated: Gated, oidc_url: str) -> None:
    who = register(oidc_url, "ES384", ttl=2)
    client, transport, _ = smart_client(gated, oidc_url, who)
    with client:
        search_once(client)
        search_once(client)
        assert transport.token_requests == 1  # a 2 s token is reused (the renewal margin is a tenth of it)
        time.sleep(2.0)
        search_once(client)
    assert transport.token_requests == 2 and gated.gateway.refused == []


@HAPI
def test_expired_token_gets_one_reauthentication(gated: Gated, oidc_url: str) -> None:
    who = register(oidc_url, "RS384", ttl=1)
    frozen = time.time()
    client, transport, _ = smart_client(gated, oidc_url, who, clock=lambda: frozen)  # we never see it expire
    with client:
        search_once(client)
        time.sleep(1.5)
        search_once(client)  # the gateway refuses the expired token; one new token; the request then passes
    assert gated.gateway.refused == [(401, "invalid_token")]
    assert transport.token_requests == 2 and gated.gateway.passed == 2


@HAPI
def test_revoked_token_gets_one_reauthentication(gated: Gated, oidc_url: str) -> None:
    who = register(oidc_url, "ES384")
    client, transport, auth = smart_client(gated, oidc_url, who)
    with client:
        search_once(client)
        revoked = httpx.post(
            f"{oidc_url}/token/revocation",
            data={
                "token": auth._token or "",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": auth.client_assertion(),
            },
            timeout=30,
        )
        assert revoked.status_code == 200, revoked.text
        search_once(client)
        search_once(client)
    assert gated.gateway.refused == [(401, "invalid_token")]
    assert transport.token_requests == 2 and gated.gateway.passed == 3


@HAPI
def test_gateway_that_keeps_refusing_ends_in_a_clear_error(gated: Gated, oidc_url: str) -> None:
    who = register(oidc_url, "ES384")
    client, transport, _ = smart_client(gated, oidc_url, who)
    gated.gateway.refuse_all = True
    with client, pytest.raises(AuthenticationRefused) as caught:
        search_once(client)
    message = str(caught.value)
    assert "401" in message and f"{oidc_url}/token" in message and who.client_id in message, message
    assert 'error="invalid_token"' in message and "\n" not in message
    assert transport.token_requests == 2 and len(gated.gateway.refused) == 2  # one re-auth, then stop


@HAPI
def test_scope_narrower_than_the_request_is_forbidden(gated: Gated, oidc_url: str) -> None:
    who = register(oidc_url, "ES384", scope="system/*.rs")
    client, _, _ = smart_client(gated, oidc_url, who, scope="system/*.rs")
    with client:
        search_once(client)
        with pytest.raises(FatalHttpError, match="403"):
            client.create({"resourceType": "Basic", "code": {"text": "scope check"}})
    assert gated.gateway.refused == [(403, "insufficient_scope")]


@MEDPLUM
@pytest.mark.parametrize("case", ["wrong key", "unknown client"])
def test_cli_refused_authentication_exits_4_and_says_what_to_check(
    case: str, gated: Gated, oidc_url: str, isolated_mappings: Path, subset: Callable[..., Path], tmp_path: Path
) -> None:
    who = register(oidc_url, "RS384")
    key = tmp_path / "client.pem"
    key.write_bytes(new_key("RS384")[0] if case == "wrong key" else who.pem)
    client_id = who.client_id if case == "wrong key" else "nobody-registered-this"
    token_url = f"{oidc_url}/token"
    result = runner.invoke(
        app,
        [
            "push", str(subset(1)), "--server", gated.fhir_url, "--journal", str(tmp_path / "j.sqlite"),
            "--mappings", str(isolated_mappings), "--smart-client-id", client_id, "--smart-key", str(key),
            "--smart-token-url", token_url,
        ],
    )  # fmt: skip
    assert result.exit_code == 4, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("error:"))
    assert token_url in line and repr(client_id) in line, line
    assert "invalid_client (client authentication failed)" in line and "JWKS" in line and "registered" in line
    assert gated.gateway.passed == 0 and gated.gateway.tokens == {}
