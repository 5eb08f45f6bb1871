"""Authentication as httpx.Auth flows: bearer, basic, and SMART Backend Services.

SMART Backend Services (client_credentials with a private_key_jwt assertion, RS384 or ES384): the token is
fetched through the same client (so it shares retries and TLS settings), cached until shortly before it
expires, and a 401 from the FHIR server triggers exactly one re-authentication, which is not a retry. A second
401 right after a fresh token, or a token endpoint that refuses us, ends in ``AuthenticationRefused`` with a
one-line message that says what to check: retrying the same key or client id cannot succeed.

The token endpoint may be given, or discovered from the FHIR server's ``.well-known/smart-configuration`` (SMART
App Launch 2.x discovery, which Backend Services reuses) on first use: hospitals move their authorization
servers, and a script that names only the FHIR base keeps working. Discovery also checks that the server says it
accepts ``private_key_jwt`` with our algorithm, so a mismatch is reported as such rather than as a refused token.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Generator
from typing import Any, Literal

import httpx

from fhir_lupus._logredact import register_secret
from fhir_lupus.client._classify import classify
from fhir_lupus.client._errors import error_class, read_error_body, server_message
from fhir_lupus.errors import AuthenticationRefused, FatalHttpError

__all__ = ["BasicAuth", "BearerAuth", "SmartBackendAuth"]

BasicAuth = httpx.BasicAuth


class BearerAuth(httpx.Auth):
    """A fixed bearer token (for servers that hand one out of band)."""

    def __init__(self, token: str) -> None:
        self._token = token
        register_secret(token)  # never in a log record

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class SmartBackendAuth(httpx.Auth):
    """OAuth client_credentials with a signed JWT assertion; one instance per client.

    Requests may be sent from several threads at once (pull's subject workers): the token is fetched (or
    renewed) by one of them at a time, under a lock, and the others use what it got, so an expired or
    revoked token costs one token request however many requests were in flight.
    """

    requires_response_body = True
    # Renew this long before the token's stated expiry: 30 s, but never more than a tenth of the token's life,
    # or a token that lives 30 s or less would never count as valid and every request would fetch a new one.
    EXPIRY_SKEW = 30.0
    EXPIRY_SKEW_FRACTION = 0.1

    def __init__(
        self,
        *,
        token_url: str | None = None,
        fhir_base: str | None = None,
        client_id: str,
        private_key_pem: bytes | str,
        algorithm: Literal["RS384", "ES384"] = "RS384",
        key_id: str | None = None,
        scope: str = "system/*.rs system/*.cud",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if algorithm not in ("RS384", "ES384"):
            raise ValueError("SMART Backend Services allows RS384 or ES384")
        if not token_url and not fhir_base:
            raise ValueError("SMART Backend Services needs the token URL, or the FHIR base URL to discover it from")
        self.token_url = token_url or ""  # empty until discovered
        self.discovery_url = "" if token_url else f"{str(fhir_base).rstrip('/')}/.well-known/smart-configuration"
        self.client_id = client_id
        self._key = private_key_pem
        register_secret(private_key_pem)
        self.algorithm = algorithm
        self.key_id = key_id
        self.scope = scope
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()  # held while the token endpoint (or discovery) is asked, by one request

    def client_assertion(self) -> str:
        """The signed JWT proving who we are to the token endpoint (SMART Backend Services; 5 min life)."""
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
        }
        headers = {"typ": "JWT", **({"kid": self.key_id} if self.key_id else {})}
        import jwt  # here, not at the top: PyJWT and cryptography cost 35-70 ms to import, and only SMART needs them

        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)

    def _token_request(self) -> httpx.Request:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.client_assertion(),
        }
        return httpx.Request("POST", self.token_url, data=form, headers={"Accept": "application/json"})

    def _store(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            kind = error_class(response.status_code)
            refused = kind is FatalHttpError  # a 4xx; 5xx were retried already and stay transient
            raise (AuthenticationRefused if refused else kind)(
                self._refusal(response),
                status=response.status_code,
                method="POST",
                url=self.token_url,
            )
        body, token = _json_field(response, "access_token", "token response", method="POST", url=self.token_url)
        self._token = str(token)
        register_secret(self._token)
        self._expires_at = self._clock() + self.lifetime(float(body.get("expires_in", 300)))

    @classmethod
    def lifetime(cls, expires_in: float) -> float:
        """How long we use a token that the server says lives ``expires_in`` seconds (see EXPIRY_SKEW)."""
        return max(0.0, expires_in - min(cls.EXPIRY_SKEW, cls.EXPIRY_SKEW_FRACTION * expires_in))

    def _refusal(self, response: httpx.Response) -> str:
        """One line: who refused whom, in the server's own words (OAuth error / error_description), and what to
        check; the server does not say which of key or client id was wrong (RFC 6749 §5.2 invalid_client)."""
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if isinstance(body, dict) and "error" in body:
            error = str(body["error"])
            said = error + (f" ({body['error_description']})" if body.get("error_description") else "")
        else:
            error, said = "", server_message(response.content, limit=200)
        hints = {
            "invalid_client": (
                f"check that --smart-key is the private half of a key in the JWKS registered for client "
                f"{self.client_id!r} (and --smart-kid / --smart-alg {self.algorithm} match it), and that this "
                "client id is registered at this authorization server"
            ),
            "invalid_scope": f"check the scopes registered for the client (we asked for {self.scope!r})",
            "unauthorized_client": "check that the client is registered for the client_credentials grant",
        }
        hint = hints.get(error, "check the client registration and the token URL")
        return (
            f"authentication refused: token endpoint {self.token_url} refused client {self.client_id!r}: "
            f"{' '.join(said.split())}; {hint}"
        )

    def _valid(self) -> bool:
        return self._token is not None and self._clock() < self._expires_at

    def _discover(self, response: httpx.Response) -> None:
        """Take the token endpoint from the SMART configuration, after checking that it accepts our assertion."""
        url = self.discovery_url
        if response.status_code != 200:
            said, outcome = read_error_body(response.content, limit=200)
            raise error_class(response.status_code)(
                f"SMART discovery failed: {url} answered {response.status_code} ({' '.join(said.split())}); "
                "pass the token endpoint (--smart-token-url)",
                status=response.status_code,
                method="GET",
                url=url,
                outcome=outcome,
            )
        config, token_url = _json_field(
            response,
            "token_endpoint",
            f"SMART discovery failed: {url}",
            "pass --smart-token-url",
            method="GET",
            url=url,
        )
        methods = config.get("token_endpoint_auth_methods_supported")
        algorithms = config.get("token_endpoint_auth_signing_alg_values_supported")
        if isinstance(methods, list) and "private_key_jwt" not in methods:
            missing = f"private_key_jwt (it lists {', '.join(map(str, methods))})"
        elif isinstance(algorithms, list) and self.algorithm not in algorithms:
            missing = f"{self.algorithm} assertions (it lists {', '.join(map(str, algorithms))}); try --smart-alg"
        else:
            self.token_url = str(token_url)
            return
        raise AuthenticationRefused(
            f"authentication refused: the SMART configuration at {url} does not accept {missing}",
            status=200,
            method="GET",
            url=url,
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        with self._lock:  # the generator runs in the sending thread: the lock is released when it ends
            if not self.token_url:
                accept = {"Accept": "application/json"}
                self._discover((yield httpx.Request("GET", self.discovery_url, headers=accept)))
            if not self._valid():
                self._store((yield self._token_request()))
            token = self._token
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if classify(response.status_code) == "auth-refused":
            with self._lock:
                if self._token == token:  # not renewed by another request in the meantime
                    self._store((yield self._token_request()))
                token = self._token
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
            # refused again, a token fresh from the token endpoint: another would fare no better
            if classify(response.status_code) == "auth-refused":
                challenge = response.headers.get("WWW-Authenticate", "")
                said, outcome = read_error_body(response.content, limit=200)
                raise AuthenticationRefused(
                    "authentication refused: the FHIR server answered 401 again to a fresh token from "
                    f"{self.token_url} for client {self.client_id!r}"
                    + (f" (WWW-Authenticate: {' '.join(challenge.split())})" if challenge else "")
                    + f": {' '.join(said.split())}; check that the server "
                    "accepts tokens from this authorization server and the scopes granted to the client",
                    status=401,
                    method=request.method,
                    url=str(request.url),
                    outcome=outcome,
                )


def _json_field(
    response: httpx.Response, field: str, what: str, hint: str = "", *, method: str, url: str
) -> tuple[dict[str, Any], Any]:
    """The JSON object of a 200 answer and its ``field``; FatalHttpError saying ``what`` has no such field."""
    try:
        body = json.loads(response.content)
        return body, body[field]
    except (ValueError, KeyError, TypeError):
        message = f"{what} has no {field}" + (f"; {hint}" if hint else "")
        raise FatalHttpError(message, status=200, method=method, url=url) from None
