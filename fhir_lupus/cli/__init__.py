"""The ``fhir-lupus`` command: thin wrappers that parse arguments, call the library and set exit codes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from fhir_lupus._scratch import exit_on_termination, sweep
from fhir_lupus.cli._audit import app as audit_app
from fhir_lupus.cli._demo import demo
from fhir_lupus.cli._mapping import map_command, validate
from fhir_lupus.cli._registry import registry_app
from fhir_lupus.cli._report import report
from fhir_lupus.cli._safety import safety
from fhir_lupus.cli._schedule import schedule
from fhir_lupus.cli._screen import screen
from fhir_lupus.cli._site import mappings_app, site_app
from fhir_lupus.cli._spark import spark_labs_command
from fhir_lupus.cli._sync import pull, push

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="FHIR adapter for the NCT00698191 MSC trial.")
app.command()(validate)
app.command("map")(map_command)
app.command()(push)
app.command()(pull)
app.command()(demo)
app.command()(safety)
app.command()(report)
app.command()(schedule)
app.command()(screen)
app.command("spark-labs")(spark_labs_command)
app.add_typer(audit_app, name="audit")
app.add_typer(registry_app, name="registry")
app.add_typer(site_app, name="site")
app.add_typer(mappings_app, name="mappings")


def main() -> None:
    exit_on_termination()  # SIGTERM/SIGHUP: a normal exit, so no temporary file with patient data stays behind
    sweep(Path(tempfile.gettempdir()))  # what a killed run left in the system's temporary directory (pull's spill)
    app()
