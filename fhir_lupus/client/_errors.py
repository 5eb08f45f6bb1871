"""An error answer read once: its OperationOutcome parsed, its words kept, its class chosen by ``classify``.

The HTTP error classes are drawn and defined with the rest of the tree in ``fhir_lupus/errors.py`` (the
package re-exports them). httpx exceptions are translated into them at one place (``_client._translated``); an
error status becomes one of them in one function, ``error_class``, which push also applies to the entries
of a batch response.
"""

from __future__ import annotations

import json
from typing import Any

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

__all__ = ["error_class", "outcome_text", "read_error_body", "server_message"]

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
