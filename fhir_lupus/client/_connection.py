"""Where and how to reach a FHIR server, held as one value: the server, its credentials, TLS and the timeout.

``Connection`` is what the CLI's connection options (``--server``, ``--token``, ``--smart-key``, ...) make, and
what ``Settings`` (fhir_lupus/settings.py) carries, as httpx's ``Client`` holds a ``Timeout``. It holds names, not
secrets read from disk: the SMART key file is read by ``open``, when a client is made, so a ``Connection`` can be
built, compared and shown before anything is read (the token and the basic password are left out of its repr).
``open`` checks the key before any request: a file that cannot be read, that is not a PEM private key, or whose
key does not fit the algorithm (an EC key with RS384) is a ValueError saying what to change, never a failure
deep inside the first request.
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
            private_key_pem=_read_key(self.smart_key, self.smart_alg),
            algorithm="RS384" if self.smart_alg == "RS384" else "ES384",
            key_id=self.smart_kid,
        )


def _read_key(path: Path, algorithm: str) -> bytes:
    """The PEM bytes of ``--smart-key``, once they are known to hold a private key that ``algorithm`` can sign
    with: RS384 an RSA key, ES384 an EC key on P-384."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa  # here: only SMART needs cryptography (issue 25)
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        pem = path.read_bytes()
    except PermissionError:
        raise ValueError(
            f"--smart-key {path}: permission denied: make the key readable by the user running fhir-lupus "
            "(and by nobody else: chmod 600)"
        ) from None
    except OSError as exc:
        raise ValueError(
            f"--smart-key {path}: {exc.strerror or exc}: give the path of the client's private key"
        ) from None
    try:
        key = load_pem_private_key(pem, password=None)
    except TypeError:  # encrypted, and we have no password to give
        raise ValueError(f"--smart-key {path}: the key is encrypted: give it without a passphrase") from None
    except ValueError:
        raise ValueError(
            f"--smart-key {path}: not a PEM private key: give the private key in PEM form (-----BEGIN PRIVATE KEY-----)"
        ) from None
    if algorithm == "RS384" and not isinstance(key, rsa.RSAPrivateKey):
        hint = "pass --smart-alg ES384" if isinstance(key, ec.EllipticCurvePrivateKey) else "give an RSA key"
        raise ValueError(f"--smart-key {path}: RS384 signs with an RSA key, this is {_kind(key)}: {hint}")
    if algorithm == "ES384" and not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"):
        hint = "pass --smart-alg RS384" if isinstance(key, rsa.RSAPrivateKey) else "give an EC key on P-384"
        raise ValueError(f"--smart-key {path}: ES384 signs with an EC key on P-384, this is {_kind(key)}: {hint}")
    return pem


def _kind(key: object) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC key on {key.curve.name}"
    return "an RSA key" if isinstance(key, rsa.RSAPrivateKey) else f"a {type(key).__name__.lstrip('_')}"
