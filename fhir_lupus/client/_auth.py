"""Authentication as httpx.Auth flows: bearer, basic, and SMART Backend Services.

SMART Backend Services (client_credentials with a private_key_jwt assertion, RS384 or ES384): the token is
fetched through the same client (so it shares retries and TLS settings), cached until shortly before it
expires, and a 401 from the FHIR server triggers exactly one re-authentication, which is not a retry.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Generator
from typing import Literal

import httpx
import jwt

from fhir_lupus._logredact import register_secret

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
    """OAuth client_credentials with a signed JWT assertion; one instance per client (not thread-safe)."""

    requires_response_body = True
    EXPIRY_SKEW = 30.0  # renew this many seconds before the token's stated expiry

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        private_key_pem: bytes | str,
        algorithm: Literal["RS384", "ES384"] = "RS384",
        key_id: str | None = None,
        scope: str = "system/*.rs system/*.cud",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if algorithm not in ("RS384", "ES384"):
            raise ValueError("SMART Backend Services allows RS384 or ES384")
        self.token_url = token_url
        self.client_id = client_id
        self._key = private_key_pem
        register_secret(private_key_pem)
        self.algorithm = algorithm
        self.key_id = key_id
        self.scope = scope
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0

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
        from fhir_lupus.client._errors import FatalHttpError, server_message

        if response.status_code != 200:
            raise FatalHttpError(
                f"token request refused: {server_message(response.content)}",
                status=response.status_code,
                method="POST",
                url=self.token_url,
            )
        try:
            body = json.loads(response.content)
            token = body["access_token"]
        except (ValueError, KeyError, TypeError):
            raise FatalHttpError(
                "token response has no access_token", status=200, method="POST", url=self.token_url
            ) from None
        self._token = str(token)
        register_secret(self._token)
        self._expires_at = self._clock() + float(body.get("expires_in", 300)) - self.EXPIRY_SKEW

    def _valid(self) -> bool:
        return self._token is not None and self._clock() < self._expires_at

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not self._valid():
            self._store((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:
            self._store((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request
