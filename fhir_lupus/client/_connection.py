"""Where and how to reach a FHIR server, held as one value: the server, its credentials, TLS and the timeout.

``Connection`` is what the CLI's connection options (``--server``, ``--token``, ``--smart-key``, ...) make, and
what ``Settings`` (fhir_lupus/settings.py) carries, as httpx's ``Client`` holds a ``Timeout``. It holds names, not
secrets read from disk: the SMART key file is read by ``open``, when a client is made, so a ``Connection`` can be
built, compared and shown before anything is read (the token and the basic password are left out of its repr).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fhir_lupus.client._auth import BasicAuth, BearerAuth, SmartBackendAuth
from fhir_lupus.client._client import FhirClient

__all__ = ["Connection"]


@dataclass(frozen=True)
class Connection:
    """A FHIR server and how to authenticate to it: a bearer ``token``, ``basic`` (``user:password``) or SMART
    Backend Services (``smart_client_id`` and the PEM ``smart_key``; the token URL is discovered from the server
    unless given), in that order of precedence; ``ca_bundle`` trusts these CAs instead of the system's;
    ``timeout``: seconds per request."""

    server: str
    token: str | None = field(default=None, repr=False)
    basic: str | None = field(default=None, repr=False)
    smart_client_id: str | None = None
    smart_key: Path | None = None
    smart_token_url: str | None = None
    smart_alg: str = "RS384"
    smart_kid: str | None = None
    ca_bundle: Path | None = None
    timeout: float = 60.0

    def open(self) -> FhirClient:
        """A client for the server (close it, or use it in a ``with``). ValueError, saying which option is wrong,
        for SMART settings that are incomplete or name another algorithm, a key file that cannot be read, or a
        server URL that is not http(s)."""
        auth: BearerAuth | BasicAuth | SmartBackendAuth | None = None
        if self.token:
            auth = BearerAuth(self.token)
        elif self.basic:
            user, _, password = self.basic.partition(":")
            auth = BasicAuth(user, password)
        elif self.smart_client_id or self.smart_key or self.smart_token_url:
            auth = self._smart()
        return FhirClient(
            self.server, auth=auth, timeout=self.timeout, ca_bundle=str(self.ca_bundle) if self.ca_bundle else None
        )

    def _smart(self) -> SmartBackendAuth:
        if not (self.smart_client_id and self.smart_key):
            raise ValueError(
                "SMART Backend Services needs --smart-client-id and --smart-key (--smart-token-url "
                "is discovered from the server's .well-known/smart-configuration when not given)"
            )
        if self.smart_alg not in ("RS384", "ES384"):
            raise ValueError("--smart-alg must be RS384 or ES384")
        return SmartBackendAuth(
            token_url=self.smart_token_url,
            fhir_base=self.server,
            client_id=self.smart_client_id,
            private_key_pem=_read_key(self.smart_key),
            algorithm="RS384" if self.smart_alg == "RS384" else "ES384",
            key_id=self.smart_kid,
        )


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"--smart-key {path}: {exc.strerror or exc}") from None
