"""One error tree for the library, so callers can catch by meaning.

    FhirLupusError
     +-- MappingError(ValueError)       the data in mappings/ is inconsistent (found at load time)
     +-- UnitError(ValueError)          an unknown unit, or a conversion UCUM forbids
     +-- TerminologyError(ValueError)   no catalogue code matches what the lab reported
     +-- InputError(ValueError)         a located problem in an input file (file, line, column)
     +-- ResourceInvalidError(ValueError)  a mapped resource failed FHIR validation (a bug, never input)
     +-- RejectedRows                   rows were refused, so a command that publishes wrote nothing

Errors subclass ValueError so generic handlers still catch them; the CLI turns them into exit codes.
"""

from __future__ import annotations

__all__ = [
    "FhirLupusError",
    "InputError",
    "MappingError",
    "RejectedRows",
    "ResourceInvalidError",
    "TerminologyError",
    "UnitError",
]


class FhirLupusError(Exception):
    """Base of every error the library raises on purpose."""


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
