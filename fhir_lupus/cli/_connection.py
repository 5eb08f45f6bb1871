"""The connection options (``--server``, ``--token``, ``--basic``, the SMART ones, ``--ca-bundle``, ``--timeout``),
declared once for every command that talks to a FHIR server (push, pull, registry submit).

``connection_options`` gives a command that takes ``connection: Connection`` these ten options in its place and
hands it one ``Connection`` (fhir_lupus/client); typer reads a command's ``inspect.signature``, so the wrapper
carries the options in its ``__signature__``. ``open_client`` makes the client, turning a connection it cannot
use into the CLI's error and exit code.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from fhir_lupus.cli._common import fail
from fhir_lupus.client import Connection, FhirClient
from fhir_lupus.settings import Settings

__all__ = ["Server", "connection_options", "open_client"]

R = TypeVar("R")

Server = Annotated[str, typer.Option("--server", help="FHIR base URL, e.g. https://hospital.example/fhir")]
_Token = Annotated[str | None, typer.Option("--token", envvar="FHIR_LUPUS_TOKEN", help="Bearer token.")]
_Basic = Annotated[str | None, typer.Option("--basic", envvar="FHIR_LUPUS_BASIC", help="user:password for basic auth.")]
_SmartClient = Annotated[str | None, typer.Option("--smart-client-id", help="SMART Backend Services client id.")]
_SmartKey = Annotated[Path | None, typer.Option("--smart-key", help="PEM private key for the client assertion.")]
_SmartTokenUrl = Annotated[
    str | None,
    typer.Option(
        "--smart-token-url", help="OAuth token endpoint (default: from the server's .well-known/smart-configuration)."
    ),
]
_SmartAlg = Annotated[str, typer.Option("--smart-alg", help="RS384 or ES384.")]
_SmartKid = Annotated[
    str | None, typer.Option("--smart-kid", help="Key id (kid) of --smart-key in the client's registered JWKS.")
]
_CaBundle = Annotated[
    Path | None, typer.Option("--ca-bundle", help="PEM file of CAs to trust instead of the system's.")
]
_Timeout = Annotated[float, typer.Option("--timeout", help="Seconds per request.")]

_KEYWORD = inspect.Parameter.KEYWORD_ONLY
# each a field of Connection, in the order --help lists them; the defaults are Connection's
_OPTIONS = tuple(
    inspect.Parameter(name, _KEYWORD, annotation=annotation, default=default)
    for name, annotation, default in (
        ("server", Server, inspect.Parameter.empty),
        ("token", _Token, None),
        ("basic", _Basic, None),
        ("smart_client_id", _SmartClient, None),
        ("smart_key", _SmartKey, None),
        ("smart_token_url", _SmartTokenUrl, None),
        ("smart_alg", _SmartAlg, Connection.smart_alg),
        ("smart_kid", _SmartKid, None),
        ("ca_bundle", _CaBundle, None),
        ("timeout", _Timeout, Connection.timeout),
    )
)


def connection_options(command: Callable[..., R]) -> Callable[..., R]:
    """``command``, taking the connection options where its ``connection`` parameter was, and called with the
    ``Connection`` they make. Every parameter becomes keyword-only (typer passes them all by name), so the
    required ``--server`` may follow options that have defaults."""
    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.name == "connection":
            parameters += _OPTIONS
        else:
            parameters.append(parameter.replace(kind=_KEYWORD))
    if len(parameters) != len(signature.parameters) + len(_OPTIONS) - 1:
        raise TypeError(f"{command.__name__} takes no connection: Connection parameter")

    @functools.wraps(command)
    def with_connection(**values: Any) -> R:
        options = {parameter.name: values.pop(parameter.name) for parameter in _OPTIONS}
        return command(connection=Connection(**options), **values)

    with_connection.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_connection.__annotations__ = {p.name: p.annotation for p in parameters}  # what get_type_hints reads
    return with_connection


def open_client(settings: Settings) -> FhirClient:
    """A client for the server of ``settings.connection``; exit 2 with the message when the connection options
    cannot be used (incomplete SMART options, an unreadable key, a server URL that is not http(s))."""
    if settings.connection is None:
        raise ValueError("these settings name no server")  # a command without --server asked: a bug, not usage
    try:
        return settings.connection.open()
    except ValueError as exc:
        fail(exc)
