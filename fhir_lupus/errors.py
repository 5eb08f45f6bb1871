"""One error tree for the library, so callers can catch by meaning; every class is defined here.

    FhirLupusError(Exception)
     +-- MappingError(ValueError)          the data in mappings/ is inconsistent (found at load time)
     +-- UnitError(ValueError)             an unknown unit, or a conversion UCUM forbids
     +-- TerminologyError(ValueError)      no catalogue code matches what the lab reported
     +-- InputError(ValueError)            a located problem in an input file (file, line, column)
     +-- ResourceInvalidError(ValueError)  a mapped resource failed FHIR validation (a bug, never input)
     +-- RejectedRows                      rows were refused, so a command that publishes wrote nothing
     +-- DeidentificationError(ValueError)  a registry resource cannot be de-identified safely
     +-- RegistryConfigError(ValueError)   the registry key or a package is unusable
     +-- SiteProfileError(ValueError)      the site profile forbids the write asked for: placeholders, a changed system
     +-- NdjsonError                       a line of an NDJSON file that is not one FHIR resource
     +-- BulkExportError                   a bulk export did not finish; the journal keeps the job
     +-- RouteRefused                      the server refused a search parameter its CapabilityStatement lists
     +-- UnsupportedInteraction            the CapabilityStatement says the server cannot do what we need
     +-- SparkUnavailable                  PySpark, Pathling or a suitable Java is missing
     +-- CoreUnavailable                   CDISC CORE cannot run here: its folder or Python is missing, or it failed
     +-- ExtraMissing(ImportError)         an optional part is not installed: the message names the pip extra
     +-- CheckoutMissing(RuntimeError)     what was asked for lives in a checkout, not in an installed wheel
     +-- FhirHttpError                     any failed exchange with a FHIR server (``outcome``: its OperationOutcome)
          +-- TransientHttpError           5xx / 429 / 408 / connection or timeout, still failing after retries
          +-- FatalHttpError               4xx and everything else that retrying cannot fix
          |    +-- PreconditionFailed      412 (or a 400 saying so): a conditional write matched several resources
          |    +-- TooLarge                413, or a 400/422 refusing a Bundle for its number of entries
          |    +-- UnknownSearchParameter  a 400 naming a search parameter the server does not support
          |    +-- AuthenticationRefused   the token endpoint refused our client, or the server a fresh token
          +-- InvalidResponse              the server answered, but not with the FHIR JSON we asked for
          +-- PagingLoopError              a search's next links go round in a circle

Errors that reject data subclass ValueError so generic handlers still catch them. Which HTTP class an error
status becomes is decided by ``fhir_lupus.client.classify`` (status and the server's words); the CLI turns
every class of this tree into an exit code in one table (``fhir_lupus/cli/_exit.py``). A test compares this
drawing with the classes that exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhir_lupus._logredact import redact_url

__all__ = [
    "AuthenticationRefused",
    "BulkExportError",
    "CheckoutMissing",
    "CoreUnavailable",
    "DeidentificationError",
    "ExtraMissing",
    "FatalHttpError",
    "FhirHttpError",
    "FhirLupusError",
    "InputError",
    "InvalidResponse",
    "MappingError",
    "NdjsonError",
    "Outcome",
    "OutcomeIssue",
    "PagingLoopError",
    "PreconditionFailed",
    "RegistryConfigError",
    "RejectedRows",
    "ResourceInvalidError",
    "RouteRefused",
    "SiteProfileError",
    "SparkUnavailable",
    "TerminologyError",
    "TooLarge",
    "TransientHttpError",
    "UnitError",
    "UnknownSearchParameter",
    "UnsupportedInteraction",
]


class FhirLupusError(Exception):
    """Base of every error the library raises on purpose."""


# -- the data: mappings, units, terminology, input files, mapped resources ----------------------------------


class MappingError(FhirLupusError, ValueError):
    """The mapping data (YAML in mappings/) is missing, malformed or self-contradictory."""


class UnitError(FhirLupusError, ValueError):
    """A unit is not UCUM (after aliases), or a conversion between two units is not allowed."""


class TerminologyError(FhirLupusError, ValueError):
    """No code of the lab catalogue fits the analyte, value kind, specimen, unit and method reported.

    ``field`` names the input column to blame when one is clearly at fault (``specimen``), or ``refused``
    when the catalogue lists the form as refused on purpose.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class InputError(FhirLupusError, ValueError):
    """A problem located in an input file.

    ``line`` is the physical line (header = 1; 0 = the file as a whole); ``column`` the CSV column name,
    or None for the whole row.
    """

    def __init__(self, file: str, line: int, column: str | None, message: str) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        where = file + (f":{line}" if line > 0 else "") + (f": column {column}" if column else "")
        super().__init__(f"{where}: {message}")


class ResourceInvalidError(FhirLupusError, ValueError):
    """A mapped resource does not validate; raised before anything is emitted."""


class RejectedRows(FhirLupusError):
    """Rows were refused, so a command that publishes (map, report, registry package, screen --csv) wrote
    nothing: a derived value computed without them could be wrong. ``--allow-rejects`` (library:
    ``allow_rejects=True``) publishes anyway, with every derived value that depends on a refused row marked
    preliminary."""

    def __init__(self, count: int, what: str = "nothing was written") -> None:
        self.count = count
        super().__init__(f"{count} row(s) rejected: {what} (fix them, or pass --allow-rejects)")


# -- the registry ------------------------------------------------------------------------------------------


class DeidentificationError(FhirLupusError, ValueError):
    """A resource cannot be de-identified safely (it would leak, or refers to something not in the package)."""


class RegistryConfigError(FhirLupusError, ValueError):
    """The registry key or a package is unusable (unreadable, too open, too short, tampered with)."""


class SiteProfileError(FhirLupusError, ValueError):
    """The site profile forbids what was asked: a write to a real server while identifier systems are still
    example placeholders, or a system changed since the last push without the old value recorded as superseded
    (every identifier would be re-keyed and the server would get a duplicate of everything)."""


# -- pulling and pushing, above HTTP -----------------------------------------------------------------------


class NdjsonError(FhirLupusError):
    """A line of an NDJSON file that is not one FHIR resource (JSON object with a resourceType)."""


class BulkExportError(FhirLupusError):
    """The export did not finish (timed out, or the server could not build it); the journal keeps the job."""


class RouteRefused(FhirLupusError):
    """The server refused a search parameter that its CapabilityStatement lists."""

    def __init__(self, resource_type: str, parameter: str, message: str) -> None:
        self.resource_type = resource_type
        self.parameter = parameter
        super().__init__(f"the server refused {resource_type}?{parameter}: {message}")


class UnsupportedInteraction(FhirLupusError):
    """The server's CapabilityStatement does not offer an interaction the operation needs."""


# -- what this machine lacks -------------------------------------------------------------------------------


class SparkUnavailable(FhirLupusError):
    """PySpark, Pathling or a suitable Java is missing: the message says what to install."""


class CoreUnavailable(FhirLupusError):
    """CDISC CORE, the SDTM conformance engine run as a separate Python 3.12 process, cannot run: its folder or
    its Python is missing (the message names which, and ``make .venv-core``), or the run failed, timed out or
    wrote no report (the message ends with the engine's last words). Never a verdict on the datasets."""


class ExtraMissing(FhirLupusError, ImportError):
    """An optional part of the package is not installed (``fhir-lupus report`` needs matplotlib, the ``report``
    extra): the message names what to install. An ImportError too, as the failed import it stands for."""


class CheckoutMissing(FhirLupusError, RuntimeError):
    """What was asked for lives in a checkout of the repository, not in an installed wheel (a RuntimeError
    too, as the servers' own start-up failures are)."""


# -- HTTP: the server's answer, kept as it said it ---------------------------------------------------------


def _words(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


@dataclass(frozen=True)
class OutcomeIssue:
    """One issue of an OperationOutcome. Absent fields are empty; ``expression`` falls back on the deprecated
    ``location`` when the server gives only that (HAPI still does)."""

    severity: str = "error"
    code: str = ""
    diagnostics: str = ""
    details: str = ""  # details.text
    expression: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, issue: Mapping[str, Any]) -> OutcomeIssue:
        details = issue.get("details")
        where = issue.get("expression") or issue.get("location")
        where = [where] if isinstance(where, str) else where if isinstance(where, list) else []
        return cls(
            severity=_words(issue.get("severity", "error")),
            code=_words(issue.get("code")),
            diagnostics=_words(issue.get("diagnostics")),
            details=_words(details.get("text")) if isinstance(details, Mapping) else "",
            expression=tuple(_words(w) for w in where),
        )

    @property
    def text(self) -> str:
        """``severity: words (at expression)``, the words being details.text, else diagnostics, else the code."""
        at = f" (at {', '.join(self.expression)})" if self.expression else ""
        return f"{self.severity}: {self.details or self.diagnostics or self.code}{at}"


@dataclass(frozen=True)
class Outcome:
    """A server's OperationOutcome, parsed once where the answer is read, so that a caller can look at the
    issues (severity, code, expression) instead of parsing a message; ``text`` is the one-line form every
    error message has carried."""

    issues: tuple[OutcomeIssue, ...] = ()

    @classmethod
    def from_json(cls, resource: Mapping[str, Any]) -> Outcome:
        """From an OperationOutcome as JSON (an error body, or a batch entry's ``response.outcome``)."""
        issues = resource.get("issue")
        if not isinstance(issues, list):
            return cls()
        return cls(tuple(OutcomeIssue.from_json(i) for i in issues if isinstance(i, Mapping)))

    @property
    def text(self) -> str:
        return "; ".join(issue.text for issue in self.issues) or "OperationOutcome without issues"


class FhirHttpError(FhirLupusError):
    """A failed exchange with a server: ``status`` (None when no answer came), the request, and ``outcome``,
    the OperationOutcome the server answered with (None when its body was something else, or there was none)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str = "",
        url: str = "",
        outcome: Outcome | None = None,
    ) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.outcome = outcome
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
