"""The registry key: read from a private file or the environment, used only through HMAC, never written.

Everything keyed (pseudonyms, identifiers, ids, date shifts) is HMAC-SHA256 of a purpose label and the source
value, so each use of the key is independent and nobody without the key can recompute or reverse them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from fhir_lupus.errors import RegistryConfigError

__all__ = ["KEY_ENV", "MIN_KEY_BYTES", "RegistryConfigError", "RegistryKey", "load_key"]

KEY_ENV = "FHIR_LUPUS_REGISTRY_KEY"
MIN_KEY_BYTES = 16
_KEY_ID_LABEL = "fhir-lupus registry key id v1"


class RegistryKey:
    """A secret that only ever leaves this object as an HMAC; its repr and str show the key id only."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise RegistryConfigError(f"the registry key is too short: at least {MIN_KEY_BYTES} bytes are needed")
        self._secret = secret

    def digest(self, purpose: str, *parts: str) -> bytes:
        """HMAC-SHA256 of the purpose label and the parts (unit-separated, so no two inputs collide)."""
        message = "\x1f".join((purpose, *parts)).encode("utf-8")
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def hex(self, purpose: str, *parts: str, length: int = 32) -> str:
        return self.digest(purpose, *parts).hex()[:length]

    @property
    def key_id(self) -> str:
        """A short HMAC of a fixed label: tells keys apart without telling anything about the key."""
        return self.hex(_KEY_ID_LABEL, length=16)

    def __repr__(self) -> str:
        return f"RegistryKey(key_id={self.key_id})"

    __str__ = __repr__


def load_key(key_file: Path | None = None, environ: Mapping[str, str] | None = None) -> RegistryKey:
    """The key from ``key_file`` (which only its owner may read) or else from FHIR_LUPUS_REGISTRY_KEY."""
    if key_file is not None:
        try:
            mode = key_file.stat().st_mode
            if mode & 0o077:
                raise RegistryConfigError(
                    f"{key_file}: the key file can be read or written by group or others "
                    f"(mode {stat.S_IMODE(mode):04o}); run chmod 600 {key_file}"
                )
            secret = key_file.read_bytes().strip()
        except OSError as exc:
            raise RegistryConfigError(f"{key_file}: cannot read the key file: {exc.strerror or exc}") from None
        if not secret:
            raise RegistryConfigError(f"{key_file}: the key file is empty")
        return RegistryKey(secret)
    value = (os.environ if environ is None else environ).get(KEY_ENV, "").strip()
    if not value:
        raise RegistryConfigError(f"no registry key: set {KEY_ENV} or pass --key-file FILE (mode 600)")
    return RegistryKey(value.encode("utf-8"))
