"""A loopback resource-server gateway for the SMART Backend Services tests: tokens checked by introspection.

Why it exists: the FHIR test servers (HAPI, Medplum) accept every request, so nothing would show that the client
sends a token the authorization server really issued, renews it when it expires and re-authenticates once when
it is revoked. The gateway is a :class:`faultproxy.FaultProxy` ``intercept`` hook: for each request it asks the
authorization server about the bearer token (RFC 7662 introspection, as the confidential client ``fhir-gateway``)
and answers itself when the token is missing, inactive (expired, revoked, unknown) or too narrow; otherwise the
proxy forwards the request to the FHIR server unchanged. Answers follow RFC 6750 §3: 401 with
``WWW-Authenticate: Bearer error="invalid_token"`` (no error code when no token was sent), 403 with
``error="insufficient_scope"``.

Scopes are SMART system scopes (SMART App Launch 2.x ``system/<type>.<cruds>``, and the 1.0 forms
``.read`` / ``.write`` / ``.*``): a GET needs read (v2 ``r`` for a read, ``s`` for a search), POST ``c``,
PUT/PATCH ``u``, DELETE ``d`` (1.0 ``write`` grants all three). ``/metadata`` and
``/.well-known/smart-configuration`` are public, as a FHIR server's CapabilityStatement and SMART discovery are.

Only the standard library is used, like faultproxy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from faultproxy import FaultProxy, Request, Response, Rule

__all__ = ["GATEWAY_CLIENT_ID", "GATEWAY_SECRET", "SmartGateway", "scope_allows"]

# The static confidential client of servers/oidc/server.mjs (loopback test values, see its README).
GATEWAY_CLIENT_ID = "fhir-gateway"
GATEWAY_SECRET = "fhir-lupus-test-gateway-secret"

_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


def scope_allows(scopes: str, resource_type: str, interaction: str) -> bool:
    """Whether any SMART system scope in ``scopes`` allows ``interaction`` (one of c r u d s) on the type."""
    for scope in scopes.split():
        context, _, rest = scope.partition("/")
        scope_type, _, permissions = rest.partition(".")
        if context != "system" or not permissions:
            continue
        if scope_type not in ("*", resource_type):
            continue
        letters = _V1.get(permissions, permissions.partition("?")[0])
        if interaction in letters:
            return True
    return False


@dataclass
class SmartGateway:
    """The hook; ``install(proxy)`` puts it in front of the proxy's upstream FHIR server.

    ``base_path`` is the FHIR base on the upstream (``/fhir``). ``refuse_all`` makes every checked request fail
    with 401 whatever the token (a resource server that does not trust this authorization server).
    """

    issuer: str
    base_path: str = "/fhir"
    refuse_all: bool = False
    passed: int = 0  # requests let through after a successful introspection
    refused: list[tuple[int, str]] = field(default_factory=list)  # (status, error code) of our own answers
    tokens: Counter[str] = field(default_factory=Counter)  # sha256 of each token seen -> requests carrying it
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def install(self, proxy: FaultProxy) -> Rule:
        return proxy.intercept(self)

    @property
    def introspection_url(self) -> str:
        return f"{self.issuer}/token/introspection"

    def __call__(self, request: Request) -> Response | None:
        path = request.path
        if not path.startswith(self.base_path):
            return None
        relative = path[len(self.base_path) :].strip("/")
        if relative == ".well-known/smart-configuration":
            return Response.json(200, self.smart_configuration(), content_type="application/json")
        if relative == "metadata":
            return None
        authorization = request.header("Authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._refuse(401, "", "a bearer token is required")
        token = token.strip()
        with self._lock:
            self.tokens[hashlib.sha256(token.encode()).hexdigest()] += 1
        if self.refuse_all:
            return self._refuse(401, "invalid_token", "this server accepts no token")
        answer = self.introspect(token)
        if not answer.get("active") or float(answer.get("exp", 0)) <= time.time():
            return self._refuse(401, "invalid_token", "the access token is not active (expired, revoked or unknown)")
        resource_type, interaction = _interaction(request.method, relative)
        if not scope_allows(str(answer.get("scope", "")), resource_type, interaction):
            return self._refuse(
                403, "insufficient_scope", f"the token's scopes do not allow {interaction} on {resource_type}"
            )
        with self._lock:
            self.passed += 1
        return None

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: POST the token, authenticated as the gateway's confidential client (client_secret_basic)."""
        credentials = base64.b64encode(f"{GATEWAY_CLIENT_ID}:{GATEWAY_SECRET}".encode()).decode()
        request = urllib.request.Request(
            self.introspection_url,
            data=urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"}).encode(),
            headers={"Authorization": f"Basic {credentials}", "Accept": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except (urllib.error.URLError, ValueError):
            return {"active": False}

    def smart_configuration(self) -> dict[str, Any]:
        """SMART discovery (SMART App Launch 2.x, ``/.well-known/smart-configuration``) for backend services."""
        return {
            "issuer": self.issuer,
            "token_endpoint": f"{self.issuer}/token",
            "introspection_endpoint": self.introspection_url,
            "revocation_endpoint": f"{self.issuer}/token/revocation",
            "registration_endpoint": f"{self.issuer}/reg",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": ["system/*.rs", "system/*.cud", "system/*.read", "system/*.write"],
            "capabilities": ["client-confidential-asymmetric"],
        }

    def _refuse(self, status: int, error: str, description: str) -> Response:
        with self._lock:
            self.refused.append((status, error))
        challenge = 'Bearer realm="fhir-lupus-test"'
        if error:
            challenge += f', error="{error}", error_description="{description}"'
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "security" if status == 401 else "forbidden", "diagnostics": description}
            ],
        }
        return Response.json(status, outcome, headers={"WWW-Authenticate": challenge})


def _interaction(method: str, relative: str) -> tuple[str, str]:
    """The resource type (``*`` for the base: batch/transaction) and the SMART interaction letter."""
    parts = [p for p in relative.split("/") if p]
    resource_type = parts[0] if parts and parts[0][:1].isupper() else "*"
    method = method.upper()
    if method in ("GET", "HEAD"):
        return resource_type, "r" if len(parts) >= 2 else "s"
    return resource_type, {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}.get(method, "u")
