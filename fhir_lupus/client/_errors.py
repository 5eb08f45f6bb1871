"""HTTP errors, with the server's own words (OperationOutcome / OAuth error_description) kept.

    FhirLupusError
     +-- FhirHttpError                  any failed exchange with a FHIR server
          +-- TransientHttpError        5xx / 429 / 408 / connection or timeout, still failing after retries
          +-- FatalHttpError            4xx and everything else that retrying cannot fix
          |    +-- PreconditionFailed   412 (or a 400 saying so): a conditional write matched several resources
          |    +-- TooLarge             413, or a 400/422 refusing a Bundle for its number of entries or operations
          |    +-- UnknownSearchParameter  a 400 naming a search parameter the server does not support
          |    +-- AuthenticationRefused  the token endpoint refused our client, or the server refused a fresh token
          +-- InvalidResponse           the server answered, but not with the FHIR JSON we asked for
          +-- PagingLoopError           a search's next links go round in a circle
     +-- UnsupportedInteraction         the CapabilityStatement says the server cannot do what we need

httpx exceptions are translated into these at one place (``_client.FhirClient._send_raw``); an error status
becomes one of these classes in one function, ``error_class``, which push also applies to the entries of a
batch response. Servers word their refusals differently (Medplum answers a conditional update that matches
twice with 400, HAPI with 412), so the class is chosen on the status and, for 400/422, on the server's words.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fhir_lupus._logredact import redact_url
from fhir_lupus.errors import FhirLupusError

__all__ = [
    "AuthenticationRefused",
    "FatalHttpError",
    "FhirHttpError",
    "InvalidResponse",
    "PagingLoopError",
    "PreconditionFailed",
    "TooLarge",
    "TransientHttpError",
    "UnknownSearchParameter",
    "UnsupportedInteraction",
    "error_class",
    "outcome_text",
    "server_message",
]

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})

# How servers word the refusals that a client can act on (matched case-insensitively in the server's message).
_TOO_LARGE = re.compile(
    r"too many (entries|operations|resources|requests)|has too many|more \w+( \w+)? (operations|entries) than"
    r"|more than \d+ (entries|operations|resources)|exceeds? (the )?(maximum|max|limit)|bundle (is )?too (large|big)"
    r"|maximum (number|size) of (entries|operations)",
    re.IGNORECASE,
)
_MULTIPLE_MATCHES = re.compile(
    r"match(ed|es)? (multiple|more than one|\d+) (resources|matches)|multiple (matches|resources match)",
    re.IGNORECASE,
)
_UNKNOWN_PARAMETER = re.compile(r"(unknown|unsupported|invalid|not a (valid|known)) search param", re.IGNORECASE)


class FhirHttpError(FhirLupusError):
    def __init__(self, message: str, *, status: int | None = None, method: str = "", url: str = "") -> None:
        self.status = status
        self.method = method
        self.url = url
        where = f"{method} {redact_url(url)}".strip()  # the message may be logged: no identifier values
        code = f" -> {status}" if status is not None else ""
        super().__init__(f"{where}{code}: {message}" if where else message)


class TransientHttpError(FhirHttpError):
    """The server or network kept failing in a way that might pass; the request was retried."""


class FatalHttpError(FhirHttpError):
    """The server refused the request; sending it again will not help."""


class PreconditionFailed(FatalHttpError):
    """HTTP 412: a conditional create/update matched several resources on the server."""


class TooLarge(FatalHttpError):
    """The server refused a Bundle for its size; the same entries in smaller Bundles may pass."""


class UnknownSearchParameter(FatalHttpError):
    """The server does not search by a parameter we used (its CapabilityStatement may have claimed it)."""


class AuthenticationRefused(FatalHttpError):
    """We could not authenticate: the authorization server refused our client (unknown client id, a key that is
    not in the client's registered JWKS, a scope it may not have), or the FHIR server refused a token fresh from
    it. Retrying with the same configuration cannot help; the CLI gives it its own exit code."""


class InvalidResponse(FhirHttpError):
    """The body is not JSON, or not the FHIR resource expected."""


class PagingLoopError(FhirHttpError):
    """A next link was seen before (or the page limit was hit): following it would never end."""


class UnsupportedInteraction(FhirLupusError):
    """The server's CapabilityStatement does not offer an interaction the operation needs."""


def error_class(status: int, message: str) -> type[FhirHttpError]:
    """The error an HTTP status (and, for 400/413/422, the server's message) stands for."""
    if status in TRANSIENT_STATUS:
        return TransientHttpError
    if status == 412 or (status in (400, 409, 422) and _MULTIPLE_MATCHES.search(message)):
        return PreconditionFailed
    if status == 413 or (status in (400, 422) and _TOO_LARGE.search(message)):
        return TooLarge
    if status == 400 and _UNKNOWN_PARAMETER.search(message):
        return UnknownSearchParameter
    return FatalHttpError


def outcome_text(outcome: dict[str, Any]) -> str:
    """An OperationOutcome's issues as one line (``error: text (at expression)``; ...), wherever it came from:
    an error body, or the ``response.outcome`` of a batch or transaction entry."""
    parts = []
    for issue in outcome.get("issue", []):
        if not isinstance(issue, dict):
            continue
        text = (issue.get("details") or {}).get("text") or issue.get("diagnostics") or issue.get("code", "")
        location = ", ".join(issue.get("expression", []) or issue.get("location", []))
        parts.append(f"{issue.get('severity', 'error')}: {text}" + (f" (at {location})" if location else ""))
    return "; ".join(parts) or "OperationOutcome without issues"


def server_message(body: bytes, limit: int = 500) -> str:
    """The human text of an error body: OperationOutcome issues, OAuth error_description, or the raw start."""
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body[:limit].decode("utf-8", "replace").strip()
        return text or "(empty body)"
    if isinstance(document, dict) and document.get("resourceType") == "OperationOutcome":
        return outcome_text(document)
    if isinstance(document, dict) and "error" in document:
        return str(document.get("error_description") or document["error"])
    return json.dumps(document)[:limit]
