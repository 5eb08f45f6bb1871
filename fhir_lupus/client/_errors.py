"""An error answer read once: its OperationOutcome parsed, its words kept, its class chosen by ``classify``.

The HTTP error classes are drawn and defined with the rest of the tree in ``fhir_lupus/errors.py`` (the
package re-exports them). httpx exceptions are translated into them at one place (``_client._translated``); an
error status becomes one of them in one function, ``error_class``, which push also applies to the entries
of a batch response. ``transport_failure`` puts a failure without an answer (no connection, TLS, a timeout) in
one sentence that says what to check.
"""

from __future__ import annotations

import json
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import httpx

from fhir_lupus.client._classify import Verdict, classify
from fhir_lupus.errors import (
    FatalHttpError,
    FhirHttpError,
    Outcome,
    PreconditionFailed,
    TooLarge,
    TransientHttpError,
    UnknownSearchParameter,
)

__all__ = ["error_class", "outcome_text", "read_error_body", "server_message", "transport_failure"]

_CLASS_OF: dict[Verdict, type[FhirHttpError]] = {
    "transient": TransientHttpError,
    "multiple-matches": PreconditionFailed,
    "too-large": TooLarge,
    "unsupported": UnknownSearchParameter,
}


def error_class(status: int, outcome: Outcome | str | None = None) -> type[FhirHttpError]:
    """The error an HTTP status (and, for 400/409/422, the server's words) stands for (``classify``)."""
    return _CLASS_OF.get(classify(status, outcome), FatalHttpError)


def outcome_text(outcome: dict[str, Any]) -> str:
    """An OperationOutcome's issues as one line (``error: text (at expression)``; ...), wherever it came from:
    an error body, or the ``response.outcome`` of a batch or transaction entry."""
    return Outcome.from_json(outcome).text


def read_error_body(body: bytes, limit: int = 500) -> tuple[str, Outcome | None]:
    """The human text of an error body (OperationOutcome issues, OAuth error_description, or the raw start)
    and, when the body is an OperationOutcome, the Outcome parsed from it: the body is parsed once."""
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body[:limit].decode("utf-8", "replace").strip()
        return text or "(empty body)", None
    if isinstance(document, dict) and document.get("resourceType") == "OperationOutcome":
        outcome = Outcome.from_json(document)
        return outcome.text, outcome
    if isinstance(document, dict) and "error" in document:
        return str(document.get("error_description") or document["error"]), None
    return json.dumps(document)[:limit], None


def server_message(body: bytes, limit: int = 500) -> str:
    """The human text of an error body (see ``read_error_body``)."""
    return read_error_body(body, limit)[0]


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of type ``kind`` in ``exc``'s chain (httpx wraps httpcore's, which wraps the socket's)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def transport_failure(exc: httpx.TransportError, url: str) -> str:
    """What went wrong before any answer came, and what to check, in one sentence: a connection refused, a host
    that does not resolve, TLS (an untrusted certificate, or https to a port that speaks plain HTTP), a timeout."""
    split = urlsplit(url)
    where = f"{split.hostname}:{split.port or (443 if split.scheme == 'https' else 80)}"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection to {where} within the timeout: check the server URL (--server) and the network"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__}) waiting for {where}: the server is slow; raise --timeout"
    if (untrusted := _cause(exc, ssl.SSLCertVerificationError)) is not None:
        reason = getattr(untrusted, "verify_message", "") or untrusted
        return f"TLS failed with {where}: certificate not trusted ({reason}); pass its CA with --ca-bundle"
    if (tls := _cause(exc, ssl.SSLError)) is not None:
        return (
            f"TLS failed with {where} ({getattr(tls, 'reason', None) or tls}): check that the server speaks https on "
            "this port (use http:// if it does not)"
        )
    if _cause(exc, ConnectionRefusedError) is not None:
        return f"connection refused by {where}: check the server URL (--server) and that the server is running"
    if _cause(exc, socket.gaierror) is not None:
        return f"cannot resolve the host {split.hostname}: check the server URL (--server)"
    return f"connection failed ({exc or type(exc).__name__}): check the server URL (--server) and the network"
