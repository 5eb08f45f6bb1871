"""What a command imports: ``fhir-lupus --help`` and a pull import only what they use (issue 25, item 4).

Start-up was a third of a pull through the CLI: every command module, and through ``fhir_lupus/__init__`` the
whole library (the mappers, SDTM, the report, the registry, fhir.resources), was imported before any command
ran. The root's listing now names each command without importing it (cli/_lazy.py, ``COMMANDS``), the package
imports a public name when it is first used, and a pull imports its own modules. Each check runs in a fresh
child process (``sys.modules`` of this one holds whatever other tests imported), so a gain cannot silently go.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from support import REPO

from fhir_lupus.cli import COMMANDS, app
from fhir_lupus.cli._lazy import LazyCommands

# what a help or a pull never needs: plotting, the report, SDTM, Spark, the registry, the mappers and mapping
# pipeline, push, FHIR models (R4B and R5 alike: validation.py imports them when it validates), SMART's JWT
# signing and key reading, UCUM (a pull of results in the catalogue's units needs none), pyarrow
NEVER = (
    "matplotlib",
    "fhir_lupus.report",
    "fhir_lupus.sdtm",
    "fhir_lupus.spark",
    "fhir_lupus.registry",
    "fhir_lupus.signals",
    "fhir_lupus.watch",
    "fhir_lupus.mappers",
    "fhir_lupus.pipeline",
    "fhir_lupus.push",
    "fhir_lupus.devserver",
    "fhir.resources",
    "jwt",
    "cryptography",
    "ucumvert",
    "pyarrow",
)
# a root --help needs none of the library either: only the listing and the exit-code table
HELP_NEVER = (*NEVER, "fhir_lupus.pull", "fhir_lupus.model", "fhir_lupus.terminology", "fhir_lupus.client", "httpx")


def _imported_by(argv: list[str]) -> set[str]:
    """The modules a fresh interpreter holds after running ``fhir-lupus ARGV`` (exit code 0 required)."""
    probe = (
        "import json, sys\n"
        "from fhir_lupus.cli import app\n"
        f"try:\n    app({argv!r}, prog_name='fhir-lupus')\n"
        "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "sys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def _offending(modules: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == b or m.startswith(f"{b}.") for b in banned))


def test_root_help_imports_no_command_and_no_library() -> None:
    modules = _imported_by(["--help"])
    assert _offending(modules, HELP_NEVER) == []
    assert not [m for m in modules if m.startswith("fhir_lupus.cli._") and m.endswith(("_sync", "_pull", "_demo"))]


@pytest.mark.parametrize(
    ("argv", "banned"),
    [(["pull", "--help"], NEVER), (["push", "--help"], ("matplotlib", "fhir_lupus.report", "fhir_lupus.sdtm"))],
    ids=["pull", "push"],
)
def test_a_command_help_imports_its_own_module_and_no_other(argv: list[str], banned: tuple[str, ...]) -> None:
    modules = _imported_by(argv)
    assert _offending(modules, banned) == []
    own = f"fhir_lupus.cli.{COMMANDS[argv[0]].module}"
    others = {f"fhir_lupus.cli.{entry.module}" for entry in COMMANDS.values()} - {own}
    assert own in modules
    assert sorted(modules & others) == []


def test_a_pull_imports_neither_push_nor_the_mappers(tmp_path: Path) -> None:
    """A pull run to its end (against nothing: it fails to connect, exit 6), with the modules it held."""
    probe = (
        "import json, sys\n"
        "from fhir_lupus.cli import app\n"
        "try:\n"
        "    app(['pull', '--server', 'http://127.0.0.1:9/fhir', '--since', 'all',"
        f" '-o', {str(tmp_path / 'labs.csv')!r}, '--journal', {str(tmp_path / 'j.sqlite')!r}],"
        " prog_name='fhir-lupus')\n"
        "except SystemExit as exc:\n    print(exc.code)\n"
        "sys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False)
    assert done.stdout.strip().splitlines()[-1] == "6", done.stdout + done.stderr[-2000:]
    modules = set(json.loads(done.stderr.strip().splitlines()[-1]))
    assert "fhir_lupus.pull" in modules
    assert _offending(modules, NEVER) == []


def test_the_listing_shows_each_commands_own_first_sentence() -> None:
    """``COMMANDS`` names a sentence for each command without importing it; it must be the one the command's
    help begins with, and every command of the CLI is listed (a new one needs its line there)."""
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    assert isinstance(root.commands, LazyCommands)
    ctx = typer.Context(root)
    for name, entry in COMMANDS.items():
        command = root.get_command(ctx, name)
        assert command is not None, name
        assert command.get_short_help_str(10_000) == entry.summary, name


def test_an_unknown_command_is_still_refused_with_a_suggestion() -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["pul"])
    assert result.exit_code == 2
    assert "pull" in result.output
