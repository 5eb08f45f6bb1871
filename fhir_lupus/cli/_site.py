"""``fhir-lupus site init|check`` and ``fhir-lupus mappings export``: the files a site edits, copied out of the
installed package, and a check of a profile before the first real push (README "Before your first real push")."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from fhir_lupus.cli._common import Mappings, fail, settings_of
from fhir_lupus.cli._exit import stop
from fhir_lupus.cli._output import console, outcome
from fhir_lupus.terminology import SITE_TEMPLATE, load_pack, placeholders

__all__ = ["mappings_app", "site_app"]

site_app = typer.Typer(no_args_is_help=True, help="The site profile: who this site is (fhir-lupus site init).")
mappings_app = typer.Typer(no_args_is_help=True, help="The mapping pack (terminology and study definitions).")

PROFILE_NAME = "site.yaml"

Directory = Annotated[Path, typer.Argument(help="Directory to write into (created if missing).", show_default=False)]


@site_app.command("init")
def site_init(
    directory: Directory,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing site.yaml.")] = False,
    mappings: Mappings = None,
) -> None:
    """Write a commented site profile, DIRECTORY/site.yaml, to edit before the first real push."""
    target = directory / PROFILE_NAME
    if target.exists() and not force:
        fail(ValueError(f"{target} exists; edit it, or pass --force to overwrite it"))
    try:
        template = load_pack(mappings).root / SITE_TEMPLATE
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, target)
    except OSError as exc:
        fail(ValueError(f"{target}: cannot write the profile: {exc.strerror or exc}"))
    outcome.print(f"wrote {target}", highlight=False)
    console.print(
        "next: edit every line marked EDIT (the hospital's MRN system, your canonical base, organisation and "
        f"location), run `fhir-lupus site check {target}`, then pass --site {target} to push",
        highlight=False,
    )


@site_app.command("check")
def site_check(
    profile: Annotated[Path, typer.Argument(help="The site profile to check.", show_default=False)],
    mappings: Mappings = None,
) -> None:
    """Read PROFILE with the mapping pack and list the systems it writes under; exit 1 while any is a placeholder
    (push and registry submit would refuse a real server)."""
    settings = settings_of(mappings, site=profile)
    systems = settings.pack.site_systems(derived=True)
    for name, value in systems.items():
        outcome.print(f"{name}: {value}", highlight=False, markup=False)
    found = placeholders(settings.pack.site_systems())
    if found:
        outcome.print(f"[red]placeholders[/red]: {', '.join(found)}", highlight=False)
        stop("check-failed")
    outcome.print(f"{profile}: no placeholder systems; organisation {settings.site.organization.name}", markup=False)


@mappings_app.command("export")
def mappings_export(
    directory: Annotated[
        Path, typer.Argument(help="Directory to copy the mappings into (new, or empty).", show_default=False)
    ],
    mappings: Mappings = None,
) -> None:
    """Copy the bundled mappings (or --mappings DIR) to DIRECTORY, to edit and use with --mappings DIRECTORY."""
    source = load_pack(mappings).root
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        fail(ValueError(f"{directory} exists and is not an empty directory; name a new one"))
    try:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(source, directory, ignore=ignore, dirs_exist_ok=True)
    except OSError as exc:
        fail(ValueError(f"{directory}: cannot copy the mappings: {exc.strerror or exc}"))
    count = sum(1 for path in directory.rglob("*") if path.is_file())
    outcome.print(f"copied {count} files of {source} to {directory}", highlight=False)
    console.print(f"use them with --mappings {directory} (or FHIR_LUPUS_MAPPINGS={directory})", highlight=False)
