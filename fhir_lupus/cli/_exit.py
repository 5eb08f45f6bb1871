"""The one exit-code table of the CLI: what each code means (``MEANINGS``), which code an error class gets
(``EXIT_CODES``) and which a command that ran to its end without doing all it was asked gets (``RESULT_CODES``).

``fhir-lupus --help`` and the README show ``MEANINGS`` (``exit_table_rows``, ``exit_table_markdown``; a test checks
that the README's table is this one, and that a real command reaches every code). An error of the library
(``fhir_lupus.errors``) ends a command through ``fail`` (cli/_common.py), which prints it and exits with
``exit_code``: its class looked up in ``EXIT_CODES`` (every class of the tree is listed, a test checks it); a
command that must say it did not do all it was asked ends through ``stop`` with a ``Result``. The codes tell a
script what to do next: fix the input (1), the command line or the configuration (2), look at the audit log (3),
the credentials (4), rerun or look at what the server refused (5), the server or the network (6).
"""

from __future__ import annotations

from typing import Literal, NoReturn

import typer

from fhir_lupus import errors

__all__ = [
    "AUDIT_TORN",
    "AUTH_REFUSED",
    "CHECK_FAILED",
    "EXIT_CODES",
    "INCOMPLETE_WRITE",
    "MEANINGS",
    "OTHER_ERROR",
    "RESULT_CODES",
    "SERVER_FAILURE",
    "SUCCESS",
    "USAGE_ERROR",
    "Result",
    "exit_code",
    "exit_table_markdown",
    "exit_table_rows",
    "stop",
]

SUCCESS = 0
CHECK_FAILED = 1
USAGE_ERROR = 2
AUDIT_TORN = 3
AUTH_REFUSED = 4
INCOMPLETE_WRITE = 5
SERVER_FAILURE = 6
OTHER_ERROR = USAGE_ERROR  # an exception from outside the tree: OSError, a bad option's ValueError, ...

MEANINGS: dict[int, str] = {
    SUCCESS: "success",
    CHECK_FAILED: "input rejected or a check failed (rows rejected; `audit verify` found tampering; a registry "
    "package that does not validate; a demo round trip that differs)",
    USAGE_ERROR: "usage or configuration error (a bad option, a file missing or unreadable, inconsistent "
    "mappings, an unusable key)",
    AUDIT_TORN: "the audit log is intact but for a torn last line (an append killed mid-write)",
    AUTH_REFUSED: "authentication refused (the token endpoint or the server refused our credentials)",
    INCOMPLETE_WRITE: "incomplete write: something asked for is not on the server (conflicts, refusals, skipped "
    "types, a held-back value, a missing Provenance)",
    SERVER_FAILURE: "server or network failure (unreachable, TLS, an answer that is not FHIR, errors after "
    "retries, an export the server failed, a server without what is needed)",
}

EXIT_CODES: dict[type[errors.FhirLupusError], int] = {
    errors.FhirLupusError: USAGE_ERROR,
    errors.MappingError: USAGE_ERROR,
    errors.UnitError: USAGE_ERROR,
    errors.TerminologyError: USAGE_ERROR,
    errors.InputError: USAGE_ERROR,
    errors.ResourceInvalidError: USAGE_ERROR,
    errors.RejectedRows: CHECK_FAILED,
    errors.DeidentificationError: USAGE_ERROR,
    errors.RegistryConfigError: USAGE_ERROR,
    errors.SiteProfileError: USAGE_ERROR,
    errors.NdjsonError: SERVER_FAILURE,  # the CLI reads NDJSON only from a bulk export: the server's files
    errors.BulkExportError: SERVER_FAILURE,
    errors.RouteRefused: SERVER_FAILURE,
    errors.UnsupportedInteraction: SERVER_FAILURE,
    errors.SparkUnavailable: USAGE_ERROR,
    errors.CoreUnavailable: USAGE_ERROR,
    errors.ExtraMissing: USAGE_ERROR,
    errors.CheckoutMissing: USAGE_ERROR,
    errors.FhirHttpError: SERVER_FAILURE,
    errors.TransientHttpError: SERVER_FAILURE,
    errors.FatalHttpError: SERVER_FAILURE,
    errors.PreconditionFailed: SERVER_FAILURE,
    errors.TooLarge: SERVER_FAILURE,
    errors.UnknownSearchParameter: SERVER_FAILURE,
    errors.AuthenticationRefused: AUTH_REFUSED,
    errors.InvalidResponse: SERVER_FAILURE,
    errors.PagingLoopError: SERVER_FAILURE,
}

Result = Literal[
    "rows-rejected",  # rows were rejected and --allow-rejects was not given
    "push-incomplete",  # a push (or a registry submit) did not write everything it was asked to
    "package-invalid",  # a registry package holds resources that do not validate
    "round-trip-different",  # the demo pulled back other values than it pushed
    "audit-tampered",  # the audit log's hash chain is broken
    "audit-torn",  # the audit log is intact but for a torn last line (an append killed mid-write)
    "check-failed",  # a check command found what it checks for (site check: placeholder systems)
]
RESULT_CODES: dict[Result, int] = {
    "rows-rejected": CHECK_FAILED,
    "push-incomplete": INCOMPLETE_WRITE,
    "package-invalid": CHECK_FAILED,
    "round-trip-different": CHECK_FAILED,
    "audit-tampered": CHECK_FAILED,
    "audit-torn": AUDIT_TORN,
    "check-failed": CHECK_FAILED,
}


def exit_code(exc: BaseException) -> int:
    """The code of the nearest class of ``exc`` listed in EXIT_CODES; OTHER_ERROR outside the tree."""
    for kind in type(exc).__mro__:
        if kind in EXIT_CODES:
            return EXIT_CODES[kind]
    return OTHER_ERROR


def stop(result: Result) -> NoReturn:
    """End a command that ran to its end without doing all it was asked, with the code of ``result``."""
    raise typer.Exit(RESULT_CODES[result])


def exit_table_rows() -> list[tuple[str, str]]:
    """(code, meaning) for each code, as ``--help`` lists them."""
    return [(str(code), meaning) for code, meaning in sorted(MEANINGS.items())]


def exit_table_markdown() -> str:
    """The table as the README shows it (a test compares the two)."""
    lines = ["| code | meaning |", "|---|---|", *(f"| {code} | {meaning} |" for code, meaning in exit_table_rows())]
    return "\n".join(lines) + "\n"
