"""HTTP errors, with the server's own words (OperationOutcome / OAuth error_description) kept.

    FhirLupusError
     +-- FhirHttpError                  any failed exchange with a FHIR server
          +-- TransientHttpError        5xx / 429 / 408 / connection or timeout, still failing after retries
          +-- FatalHttpError            4xx and everything else that retrying cannot fix
          |    +-- PreconditionFailed   412: a conditional write matched more than one resource
          +-- InvalidResponse           the server answered, but not with the FHIR JSON we asked for
          +-- PagingLoopError           a search's next links go round in a circle
     +-- UnsupportedInteraction         the CapabilityStatement says the server cannot do what we need

httpx exceptions are translated into these at one place (``_client.FhirClient._send``).
"""

from __future__ import annotations

import json
from typing import Any

from fhir_lupus.errors import FhirLupusError

__all__ = [
    "FatalHttpError",
    "FhirHttpError",
    "InvalidResponse",
    "PagingLoopError",
    "PreconditionFailed",
    "TransientHttpError",
    "UnsupportedInteraction",
    "server_message",
]


class FhirHttpError(FhirLupusError):
    def __init__(self, message: str, *, status: int | None = None, method: str = "", url: str = "") -> None:
        self.status = status
        self.method = method
        self.url = url
        where = f"{method} {url}".strip()
        code = f" -> {status}" if status is not None else ""
        super().__init__(f"{where}{code}: {message}" if where else message)


class TransientHttpError(FhirHttpError):
    """The server or network kept failing in a way that might pass; the request was retried."""


class FatalHttpError(FhirHttpError):
    """The server refused the request; sending it again will not help."""


class PreconditionFailed(FatalHttpError):
    """HTTP 412: a conditional create/update matched several resources on the server."""


class InvalidResponse(FhirHttpError):
    """The body is not JSON, or not the FHIR resource expected."""


class PagingLoopError(FhirHttpError):
    """A next link was seen before (or the page limit was hit): following it would never end."""


class UnsupportedInteraction(FhirLupusError):
    """The server's CapabilityStatement does not offer an interaction the operation needs."""


def server_message(body: bytes, limit: int = 500) -> str:
    """The human text of an error body: OperationOutcome issues, OAuth error_description, or the raw start."""
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body[:limit].decode("utf-8", "replace").strip()
        return text or "(empty body)"
    if isinstance(document, dict) and document.get("resourceType") == "OperationOutcome":
        parts = []
        for issue in document.get("issue", []):
            text = (issue.get("details") or {}).get("text") or issue.get("diagnostics") or issue.get("code", "")
            location = ", ".join(issue.get("expression", []) or issue.get("location", []))
            parts.append(f"{issue.get('severity', 'error')}: {text}" + (f" (at {location})" if location else ""))
        return "; ".join(parts) or "OperationOutcome without issues"
    if isinstance(document, dict) and "error" in document:
        return str(document.get("error_description") or document["error"])
    return json.dumps(document)[:limit]
