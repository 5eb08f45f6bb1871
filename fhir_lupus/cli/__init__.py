"""The ``fhir-lupus`` command: thin wrappers that parse arguments, call the library and set exit codes.

Help is click's plain layout, not rich's panels: it wraps to any width and never cuts a default or an option
name, and a help text is printed as written (rich would take ``fhir_lupus[spark]`` for markup). The root's help
ends with the exit-code table (cli/_exit.py); ``--version`` names the tool's and the mapping pack's versions.
Every command gets ``-v``/``-q`` (cli/_output.py) here, in one place, so none is left without them.
"""

from __future__ import annotations

import inspect
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from fhir_lupus._scratch import exit_on_termination, sweep
from fhir_lupus._version import __version__
from fhir_lupus.cli._audit import app as audit_app
from fhir_lupus.cli._common import fail
from fhir_lupus.cli._demo import demo
from fhir_lupus.cli._exit import exit_table_rows
from fhir_lupus.cli._mapping import map_command, validate
from fhir_lupus.cli._output import output_options
from fhir_lupus.cli._registry import registry_app
from fhir_lupus.cli._report import report
from fhir_lupus.cli._safety import safety
from fhir_lupus.cli._schedule import schedule
from fhir_lupus.cli._screen import screen
from fhir_lupus.cli._sdtm import sdtm_command
from fhir_lupus.cli._signals import signals
from fhir_lupus.cli._site import mappings_app, site_app
from fhir_lupus.cli._spark import spark_labs_command
from fhir_lupus.cli._sync import pull, push
from fhir_lupus.cli._watch import watch_command
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.settings import Settings

__all__ = ["app", "main"]

HELP_WIDTH = 160  # the widest help click writes (as rich did, up to the terminal's width); never narrower than 50


class _RootHelp(TyperGroup):
    """The root command, whose help ends with the exit codes every command follows."""

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


app.command()(validate)
app.command("map")(map_command)
app.command()(push)
app.command()(pull)
app.command()(demo)
app.command()(safety)
app.command()(report)
app.command()(schedule)
app.command()(screen)
app.command()(signals)
app.command("spark-labs")(spark_labs_command)
app.command("sdtm")(sdtm_command)
app.command("watch")(watch_command)
app.add_typer(audit_app, name="audit")
app.add_typer(registry_app, name="registry", short_help="Registry packages: make one, submit one.")
app.add_typer(site_app, name="site", short_help="The site profile: write one, check one.")
app.add_typer(mappings_app, name="mappings", short_help="The mapping pack: copy it out to edit.")


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


_with_output_options(app)


def main() -> None:
    exit_on_termination()  # SIGTERM/SIGHUP: a normal exit, so no temporary file with patient data stays behind
    sweep(Path(tempfile.gettempdir()))  # what a killed run left in the system's temporary directory (pull's spill)
    app(prog_name="fhir-lupus")
