"""The ``fhir-lupus`` command: thin wrappers that parse arguments, call the library and set exit codes.

Help is click's plain layout, not rich's panels: it wraps to any width and never cuts a default or an option
name, and a help text is printed as written (rich would take ``fhir_lupus[spark]`` for markup). The root's help
ends with the exit-code table (cli/_exit.py); ``--version`` names the tool's and the mapping pack's versions.
Every command gets ``-v``/``-q`` (cli/_output.py) here, in one place, so none is left without them.
"""

from __future__ import annotations

import functools
import inspect
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info, get_group_from_info
from typer.models import CommandInfo, TyperInfo

from fhir_lupus._scratch import exit_on_termination, sweep
from fhir_lupus._version import __version__
from fhir_lupus.cli._exit import exit_table_rows
from fhir_lupus.cli._lazy import Entry, LazyCommands
from fhir_lupus.cli._output import output_options

__all__ = ["app", "main"]

HELP_WIDTH = 160  # the widest help click writes (as rich did, up to the terminal's width); never narrower than 50


# Every command, in the order the root's help lists them: where it lives and the sentence the listing shows (the
# first of its help; tests/test_cli_imports.py checks they agree). A command module is imported only when its
# command runs or shows its own help (cli/_lazy.py), so a pull does not import the mappers, SDTM or the report.
COMMANDS: dict[str, Entry] = {
    "validate": Entry(
        "_mapping",
        "validate",
        "Check a data directory: every problem with file, line and column; nothing is written but quarantine and "
        "the query list.",
    ),
    "map": Entry(
        "_mapping",
        "map_command",
        "Map a data directory to FHIR: a transaction Bundle, or one NDJSON file per resource type.",
    ),
    "push": Entry(
        "_sync",
        "push",
        "Map DATA_DIR and send what changed since the last push to SERVER (planned from the server, journaled).",
    ),
    "pull": Entry(
        "_pull",
        "pull",
        "Pull the study's lab Observations into trial lab rows (units normalised, visits assigned).",
    ),
    "demo": Entry(
        "_demo",
        "demo",
        "Start a local FHIR server, push the example trial, pull its labs back, report, stop the server.",
    ),
    "safety": Entry(
        "_safety",
        "safety",
        "Adverse events by grade, seriousness and relatedness, per subject, and the serious events.",
    ),
    "report": Entry(
        "_report",
        "report",
        "Subject timelines around the MSC infusion, change from baseline and responders (definitions: "
        "mappings/report/report.yaml), as one HTML page that needs no network.",
    ),
    "schedule": Entry(
        "_schedule",
        "schedule",
        "Each subject's visits against the protocol schedule (mappings/studies/<NCT id>.yaml `protocol`).",
    ),
    "screen": Entry(
        "_screen",
        "screen",
        "Decide the eligibility criteria of the study file for every row of screening.csv (docs/csv-layout.md), "
        "as of each candidate's screening date.",
    ),
    "signals": Entry(
        "_signals",
        "signals",
        "Flare signals: SLEDAI-2K laboratory descriptors that appear since the previous value, and KDIGO kidney "
        "relapse from the post-treatment nadir (mappings/signals/flares.yaml, each with its source).",
    ),
    "spark-labs": Entry(
        "_spark",
        "spark_labs_command",
        "The study's lab table from NDJSON files, computed on Spark: the rows `pull` would write.",
    ),
    "sdtm": Entry(
        "_sdtm",
        "sdtm_command",
        "Write DATA_DIR's enrolled subjects as SDTMIG 3.4 datasets, one file per domain (--check: and check them).",
    ),
    "watch": Entry(
        "_watch",
        "watch_command",
        "Pull the study's lab results as they happen: notified by an R4 rest-hook Subscription, and by a periodic "
        "pull.",
    ),
    "audit": Entry("_audit", "app", "Verify and show the audit trail."),
    "registry": Entry("_registry", "registry_app", "Registry packages: make one, submit one."),
    "site": Entry("_site", "site_app", "The site profile: write one, check one."),
    "mappings": Entry("_site", "mappings_app", "The mapping pack: copy it out to edit."),
}


class _RootHelp(TyperGroup):
    """The root command, whose help ends with the exit codes every command follows; its commands are imported
    when first used (``COMMANDS``), and its listing shows each one's sentence without importing it."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(COMMANDS, _build)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names alone: TyperGroup's would build every command

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        commands = self.commands
        assert isinstance(commands, LazyCommands)
        limit = formatter.width - 6 - max(len(name) for name in commands)
        rows = [
            (name, commands[name].get_short_help_str(limit) if commands.loaded(name) else commands.summary(name))
            for name in commands
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        with formatter.section("Exit codes (every command)"):
            formatter.write_dl(exit_table_rows())
        super().format_epilog(ctx, formatter)


app = typer.Typer(
    cls=_RootHelp,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"max_content_width": HELP_WIDTH},
    help="FHIR adapter for the NCT00698191 MSC trial.",
)


def _print_version(wanted: bool) -> None:
    if not wanted:
        return
    from fhir_lupus.cli._common import fail
    from fhir_lupus.errors import FhirLupusError
    from fhir_lupus.settings import Settings

    typer.echo(f"fhir-lupus {__version__}")
    try:
        pack = Settings.default().pack
        typer.echo(f"mapping pack {pack.project.mapping_version} ({pack.root})")
    except FhirLupusError as exc:
        fail(exc)
    raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print the tool's version and the mapping pack's (mappings/project.yaml mapping_version), and exit.",
        ),
    ] = False,
) -> None:
    """FHIR adapter for the NCT00698191 MSC trial."""


def _first_sentence(doc: str | None) -> str | None:
    """What a command list shows of a command: the first sentence of its help, whole (click would cut it)."""
    paragraph = " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0] or None


def _with_output_options(commands: typer.Typer) -> None:
    """-v/-q on every command of ``commands`` and of its groups; their help laid out as the root's."""
    commands.rich_markup_mode = None
    for command in commands.registered_commands:
        if command.callback is not None:
            command.short_help = command.short_help or _first_sentence(command.help or command.callback.__doc__)
            command.callback = output_options(command.callback)
    for group in commands.registered_groups:
        if group.typer_instance is not None:
            _with_output_options(group.typer_instance)


@functools.cache
def _ready(group: typer.Typer) -> None:
    """``_with_output_options`` once per group, however many root commands are built (each test builds one)."""
    _with_output_options(group)


def _build(name: str, entry: Entry, target: Any) -> Any:
    """The click command of a command function or a ``typer.Typer`` group of ``COMMANDS``, as ``app.command()``
    and ``app.add_typer()`` made them: -v/-q on every command, help laid out as the root's."""
    if isinstance(target, typer.Typer):
        _ready(target)
        return get_group_from_info(
            TyperInfo(target, name=name, short_help=entry.summary),
            pretty_exceptions_short=target.pretty_exceptions_short,
            rich_markup_mode=None,
            suggest_commands=target.suggest_commands,
        )
    return get_command_from_info(
        CommandInfo(name=name, callback=output_options(target), short_help=_first_sentence(target.__doc__)),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=None,
    )


def main() -> None:
    exit_on_termination()  # SIGTERM/SIGHUP: a normal exit, so no temporary file with patient data stays behind
    sweep(Path(tempfile.gettempdir()))  # what a killed run left in the system's temporary directory (pull's spill)
    app(prog_name="fhir-lupus")
