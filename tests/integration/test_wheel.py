"""The built wheel works outside the checkout: installed into a fresh venv, run from another directory.

No FHIR server is needed; the test is in the integration group because building and installing a wheel and
mapping the whole example trial take about half a minute. The wheel is built from a copy of the sources that
packaging uses (pyproject.toml, setup.py, README.md, fhir_lupus/, mappings/), so the build leaves nothing in the
checkout. The fresh venv gets the wheel alone (``--no-deps``) and finds the dependencies in the project's venv
through a .pth line placed after its own site-packages: the installed fhir_lupus, not the checkout's, is imported.
Then ``pip install --no-index 'fhir-lupus[report]'`` installs the report extra, offline: everything it needs is
already on the path, so this checks that the wheel declares the extra and that its bounds admit what is installed.

A second, lean venv sees the project's dependencies less the report extra's own (matplotlib and what only it
needs, found from the installed distributions' metadata): there ``validate`` works and ``report`` exits 2 naming
the extra.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image
from support import EXAMPLE, REPO, example_subset

import fhir_lupus

pytestmark = pytest.mark.integration

PACKAGING = ("pyproject.toml", "setup.py", "README.md", "fhir_lupus", "mappings")


@dataclass(frozen=True)
class Installed:
    venv: Path
    site: Path
    cwd: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _check(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in PACKAGING:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(origin, src / name)
    dist = tmp / "dist"
    _check(subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
                          capture_output=True, text=True, timeout=600))  # fmt: skip
    (built,) = dist.glob("fhir_lupus-*.whl")
    return built


def _install(tmp: Path, wheel: Path, dependencies: Path) -> Installed:
    """A fresh venv in ``tmp`` holding the wheel alone, with ``dependencies`` on its path after its own
    site-packages, run from another folder."""
    venv = tmp / "venv"
    _check(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True))
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)]
    _check(subprocess.run(install, capture_output=True, text=True, timeout=600))
    site = Path(
        _check(
            subprocess.run(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True,
                text=True,
            )
        ).stdout.strip()
    )
    (site / "zz_project_dependencies.pth").write_text(f"{dependencies}\n", encoding="utf-8")
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("FHIR_LUPUS_MAPPINGS", "FHIR_LUPUS_ROOT", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return Installed(venv, site, cwd, env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Installed:
    """The wheel with the report extra installed (offline, see the module docstring)."""
    done = _install(tmp_path_factory.mktemp("installed"), wheel, Path(sysconfig.get_paths()["purelib"]))
    extra = [sys.executable, "-m", "pip", "--python", str(done.venv / "bin" / "python"), "install", "--no-index", "-q"]
    _check(subprocess.run([*extra, "fhir-lupus[report]"], capture_output=True, text=True, timeout=600))
    return done


def _closure(requirements: list[str], extras: frozenset[str] = frozenset()) -> set[str]:
    """The installed distributions ``requirements`` need, recursively (canonical names)."""
    needed: set[str] = set()
    todo = [(Requirement(text), extras) for text in requirements]
    while todo:
        requirement, wanted = todo.pop()
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in {"", *wanted}
        ):
            continue
        name = canonicalize_name(requirement.name)
        if name in needed:
            continue
        needed.add(name)
        todo += [(Requirement(t), frozenset(requirement.extras)) for t in metadata.distribution(name).requires or []]
    return needed


@pytest.fixture(scope="module")
def lean(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Installed:
    """The wheel without the report extra: the project's dependencies, less what only matplotlib needs."""
    tmp = tmp_path_factory.mktemp("lean")
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        declared = email.message_from_bytes(archive.read(meta)).get_all("Requires-Dist") or []
    base = _closure(declared)
    only_report = _closure(["matplotlib"]) - base
    assert "matplotlib" in only_report and "numpy" in only_report, only_report
    hidden = {
        Path(str(file)).parts[0]
        for name in only_report
        for file in metadata.distribution(name).files or []
        if not str(file).startswith("..")
    }
    project = Path(sysconfig.get_paths()["purelib"])
    dependencies = tmp / "dependencies"
    dependencies.mkdir()
    for entry in project.iterdir():
        if entry.name not in hidden:
            (dependencies / entry.name).symlink_to(entry)
    return _install(tmp, wheel, dependencies)


def test_the_installed_package_reads_its_packaged_mappings(installed: Installed) -> None:
    probe = (
        "import fhir_lupus, fhir_lupus.terminology as t; print(fhir_lupus.__file__); print(t.default_mappings_dir())"
    )
    package, mappings = _check(installed.run("python", "-c", probe)).stdout.split()
    assert Path(package).is_relative_to(installed.site), package
    assert Path(mappings) == installed.site / "fhir_lupus" / "_mappings"
    shipped = sorted(p.relative_to(mappings).as_posix() for p in Path(mappings).rglob("*.yaml"))
    assert shipped == sorted(p.relative_to(REPO / "mappings").as_posix() for p in (REPO / "mappings").rglob("*.yaml"))


def test_validate_and_map_from_another_directory(installed: Installed) -> None:
    _check(installed.run("fhir-lupus", "validate", str(EXAMPLE)))
    _check(installed.run("fhir-lupus", "map", str(EXAMPLE), "-o", "bundle.json"))
    assert (installed.cwd / "bundle.json").stat().st_size > 1_000_000


def test_mappings_option_still_overrides_the_packaged_copy(installed: Installed) -> None:
    own = installed.cwd / "my-mappings"
    own.mkdir(exist_ok=True)
    done = installed.run("fhir-lupus", "validate", str(EXAMPLE), "--mappings", str(own))
    assert done.returncode == 2
    said = " ".join(done.stderr.split())  # the first mapping file it reads is missing from the empty copy
    assert f"error: {own}/" in said and "mapping file missing" in said, done.stderr


def test_registry_package_from_another_directory(installed: Installed) -> None:
    if installed.run("fhir-lupus", "registry", "--help").returncode != 0:
        pytest.skip("the installed wheel has no `fhir-lupus registry` command yet (issue 10, item 1)")
    env = {**installed.env, "FHIR_LUPUS_REGISTRY_KEY": "wheel-test-key-0123456789abcdef"}
    done = subprocess.run(
        [str(installed.venv / "bin" / "fhir-lupus"), "registry", "package", str(EXAMPLE), "-o", "pkg"],
        cwd=installed.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    _check(done)
    assert (installed.cwd / "pkg" / "manifest.json").is_file()


def test_demo_says_it_needs_a_checkout(installed: Installed) -> None:
    done = installed.run("fhir-lupus", "demo")
    message = " ".join(done.stderr.split())
    assert done.returncode == 2, message
    assert "needs a checkout of the repository" in message
    assert "examples/nct00698191" in message and "servers" in message and "--server URL" in message
    started = installed.run("python", "-m", "fhir_lupus.devserver", "start", "medplum")
    assert started.returncode == 2
    assert "servers/medplum/run.sh not found" in started.stderr


def test_report_with_the_extra_from_another_directory(installed: Installed) -> None:
    data = example_subset(installed.cwd / "trial", 2)
    done = _check(installed.run("fhir-lupus", "report", str(data), "-o", "report.html"))
    assert done.stdout.strip().splitlines()[-1] == "report.html"
    figures = sorted((installed.cwd / "report_figures").glob("*.png"))
    assert len(figures) == 2 + 3  # two subjects, change from baseline, renal response, adverse events
    with Image.open(figures[0]) as image:
        assert image.text["Tool version"] == f"fhir-lupus {fhir_lupus.__version__}"  # type: ignore[attr-defined]
    assert "Data cut-off" in (installed.cwd / "report.html").read_text(encoding="utf-8")


def test_the_lean_install_validates_and_names_the_extra_for_report(lean: Installed) -> None:
    assert lean.run("python", "-c", "import matplotlib").returncode != 0  # lean indeed
    data = example_subset(lean.cwd.parent / "trial", 2)
    _check(lean.run("fhir-lupus", "validate", str(data)))
    done = lean.run("fhir-lupus", "report", str(data), "-o", "report.html")
    assert done.returncode == 2, done.stderr
    assert "pip install 'fhir-lupus[report]'" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr and list(lean.cwd.iterdir()) == []


def test_site_init_and_the_placeholder_refusal_from_the_wheel(installed: Installed) -> None:
    """A new site starts from `site init`; until its placeholders are replaced, a real server is refused before
    the trial is read or any request is made (the host is `.invalid`: a request could not even resolve)."""
    _check(installed.run("fhir-lupus", "site", "init", "conf"))
    profile = installed.cwd / "conf" / "site.yaml"
    assert "EDIT" in profile.read_text(encoding="utf-8")
    checked = installed.run("fhir-lupus", "site", "check", str(profile))
    assert checked.returncode == 1 and "placeholders" in checked.stderr, checked.stderr
    for site in ([], ["--site", str(profile)]):
        done = installed.run("fhir-lupus", "push", str(EXAMPLE), "--server", "https://hospital.invalid/fhir", *site)
        said = " ".join(done.stderr.split())
        assert done.returncode == 2, said
        assert "refused" in said and "identifier_systems.mrn" in said and "Traceback" not in said
        assert "Rows" not in said  # refused before the trial was read
    exported = _check(installed.run("fhir-lupus", "mappings", "export", "exported"))
    assert "copied" in exported.stderr and (installed.cwd / "exported" / "site" / "example-site.yaml").is_file()
