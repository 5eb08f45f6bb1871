"""Where a command's words go, and how many: the two consoles, ``-v``/``-q``, and ``--format`` for results.

``console`` (standard error) carries progress, notes and warnings: ``-q`` silences it. ``outcome`` (standard
error too) carries errors and each command's final result, so ``-q`` leaves exactly those. ``-v`` adds progress
(retries, timings, lists in full); ``-vv`` adds the request log of ``fhir_lupus/client`` (method, path with query
values redacted, status, time: ``fhir_lupus/_logredact.py`` filters every record). ``output_options`` gives every
command these two options (cli/__init__.py applies it to all of them), and turns an exception that escaped a
command, which would be a traceback, into one message and exit code 2.

A table that is a command's result goes to standard output (``result_console``): in a terminal it fits the
window; in a pipe or a file nothing is cut. ``--format csv|json`` (``FormatOption``) prints the same result in
full for a program to read (``emit_csv``, ``emit_json``).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import inspect
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from fhir_lupus._logredact import RedactingFilter
from fhir_lupus.cli._exit import OTHER_ERROR

__all__ = [
    "PIPE_WIDTH",
    "Format",
    "FormatOption",
    "console",
    "emit_csv",
    "emit_json",
    "listed",
    "outcome",
    "output_options",
    "result_console",
    "verbose",
]

R = TypeVar("R")

console = Console(stderr=True, soft_wrap=True)  # messages stay one grep-able line each; -q silences them
outcome = Console(stderr=True, soft_wrap=True)  # errors and final results: always printed
PIPE_WIDTH = 100_000  # a table printed to a pipe or a file is as wide as its content: nothing is cut
_FRAMEWORK = ("click", "typer")  # their exceptions (Exit, Abort, usage errors) end a command as they mean to
_level = [0]  # -1 quiet, 0 normal, 1 -v, 2 -vv: set for the duration of one command


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


FormatOption = Annotated[
    Format,
    typer.Option(
        "--format", help="table (for people), or csv or json: the result on standard output, in full, for programs."
    ),
]
_VERBOSE = inspect.Parameter(
    "verbose",
    inspect.Parameter.KEYWORD_ONLY,
    annotation=Annotated[
        int,
        typer.Option(
            "-v",
            "--verbose",
            count=True,
            help="More progress (retries, timings, lists in full); -vv adds the request log, identifiers redacted.",
            show_default=False,
        ),
    ],
    default=0,
)
_QUIET = inspect.Parameter(
    "quiet",
    inspect.Parameter.KEYWORD_ONLY,
    annotation=Annotated[bool, typer.Option("-q", "--quiet", help="Print only errors and the final result.")],
    default=False,
)


def verbose() -> bool:
    """True under -v (or -vv)."""
    return _level[0] >= 1


def listed(limit: int) -> int | None:
    """How many items of a long list a command shows: ``limit``, or all of them under -v."""
    return None if verbose() else limit


def result_console() -> Console:
    """Standard output for a result table: the terminal's width, or in a pipe or a file wide enough for every
    cell in full, without colour codes."""
    out = Console(soft_wrap=True, highlight=False)
    return out if out.is_terminal else Console(width=PIPE_WIDTH, highlight=False, color_system=None)


def emit_csv(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A CSV table (header first) on standard output."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([("" if cell is None else cell) for cell in row] for row in rows)


def emit_json(document: object) -> None:
    """One JSON document on standard output (dates as ISO strings)."""
    typer.echo(json.dumps(document, ensure_ascii=False, indent=1, default=str))


@contextlib.contextmanager
def _output(level: int) -> Iterator[None]:
    """``level`` for the duration of a command: console muted (-q), or the package's log records shown (-v: INFO,
    -vv: DEBUG, the request log) through a handler that redacts them again, and the time taken."""
    _level[0] = level
    console.quiet = level < 0
    package = logging.getLogger("fhir_lupus")
    before = package.level
    handler = logging.StreamHandler(sys.stderr)  # the stream of this run (a test runner swaps it)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if level >= 1:
        package.addHandler(handler)
        package.setLevel(logging.DEBUG if level >= 2 else logging.INFO)
    started = time.monotonic()
    try:
        yield
    finally:
        if level >= 1:
            console.print(f"took {time.monotonic() - started:.1f} s", highlight=False)
            package.removeHandler(handler)
            package.setLevel(before)
        _level[0] = 0
        console.quiet = False


def output_options(command: Callable[..., R]) -> Callable[..., R]:
    """``command`` with -v/--verbose (counted) and -q/--quiet; an exception that is not the framework's ends it
    with one line and exit code 2 (OTHER_ERROR; with -vv, its traceback too, redacted), never a bare traceback."""
    signature = inspect.signature(command, eval_str=True)
    parameters = [*signature.parameters.values(), _VERBOSE, _QUIET]

    @functools.wraps(command)
    def with_output(*args: Any, verbose: int = 0, quiet: bool = False, **values: Any) -> R:
        with _output(-1 if quiet else min(verbose, 2)):
            try:
                return command(*args, **values)
            except Exception as exc:
                if type(exc).__module__.partition(".")[0] in _FRAMEWORK:
                    raise
                logging.getLogger("fhir_lupus.cli").debug("the unexpected error", exc_info=True)
                outcome.print(
                    f"[red]error:[/red] unexpected {type(exc).__name__}: {escape(str(exc))} (run again with -vv "
                    "for the traceback, and report it)",
                    highlight=False,
                )
                raise typer.Exit(OTHER_ERROR) from None

    with_output.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_output.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_output
