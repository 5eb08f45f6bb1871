"""The one place where the CLI turns how a command ended into an exit code.

An error of the library (``fhir_lupus.errors``) ends a command through ``fail`` (cli/_common.py), which prints
it and exits with ``exit_code``: its class looked up in ``EXIT_CODES`` (every class of the tree is listed, a
test checks it); a command that ran
to its end but must say it did not do all it was asked ends through ``stop`` with a ``Result`` of
``RESULT_CODES``. Today's codes: 0 success; 1 rows were rejected (unless --allow-rejects; a command that
publishes then writes nothing), a push did not write everything it was asked to (conflicts, refusals,
skipped types, a missing Provenance, a preliminary value held back), or the server refused or failed (or
lacks what we need); 2 our own usage or configuration error (bad options, a needed file missing or empty, a
file whose header or encoding is wrong, inconsistent mappings), and any error from outside the tree; 3 an
audit log intact but for a torn last line; 4 authentication refused (SMART Backend Services: the token
endpoint refused the client id or the key's signature, or the FHIR server answered 401 even to a fresh
token), so scripts can tell "fix the credentials" from other failures.
"""

from __future__ import annotations

from typing import Literal, NoReturn

import typer

from fhir_lupus import errors

__all__ = ["EXIT_AUTH_REFUSED", "EXIT_CODES", "OTHER_ERROR", "RESULT_CODES", "Result", "exit_code", "stop"]

EXIT_AUTH_REFUSED = 4
OTHER_ERROR = 2  # an exception from outside the tree: OSError, a bad option's ValueError, ...

EXIT_CODES: dict[type[errors.FhirLupusError], int] = {
    errors.FhirLupusError: 2,
    errors.MappingError: 2,
    errors.UnitError: 2,
    errors.TerminologyError: 2,
    errors.InputError: 2,
    errors.ResourceInvalidError: 2,
    errors.RejectedRows: 1,
    errors.DeidentificationError: 2,
    errors.RegistryConfigError: 2,
    errors.SiteProfileError: 2,
    errors.NdjsonError: 2,
    errors.BulkExportError: 2,
    errors.RouteRefused: 2,
    errors.UnsupportedInteraction: 1,
    errors.SparkUnavailable: 2,
    errors.ExtraMissing: 2,
    errors.CheckoutMissing: 2,
    errors.FhirHttpError: 1,
    errors.TransientHttpError: 1,
    errors.FatalHttpError: 1,
    errors.PreconditionFailed: 1,
    errors.TooLarge: 1,
    errors.UnknownSearchParameter: 1,
    errors.AuthenticationRefused: EXIT_AUTH_REFUSED,
    errors.InvalidResponse: 1,
    errors.PagingLoopError: 1,
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
    "rows-rejected": 1,
    "push-incomplete": 1,
    "package-invalid": 1,
    "round-trip-different": 1,
    "audit-tampered": 1,
    "audit-torn": 3,
    "check-failed": 1,
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
