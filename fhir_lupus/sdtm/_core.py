"""CDISC CORE run offline as a separate process: the independent conformance check of the SDTM output.

The engine (``cdisc-rules-engine``, pinned to the version its rules cache matches) needs Python 3.12 while the
project runs on 3.11, so it never shares our interpreter: ``core_settings`` finds the CORE folder (the engine's
``core.py`` entry point, which its wheel lacks, beside the offline rules cache) and a Python that has the engine,
``run_core`` runs it and reads its JSON report into a ``CoreReport``. Standard library only, so checking needs
nothing the ``sdtm`` extra brings.

The engine's exit code says little: a Dataset-JSON file its schema refuses becomes an empty, nameless dataset and
the run still ends 0. So ``CoreReport.problems`` compares the datasets the report lists with those written, and
rules that failed to execute are kept apart from issues, so that a rule that did not run never reads as passed.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_lupus.errors import CoreUnavailable

__all__ = [
    "CORE_CT_PACKAGE",
    "CORE_DIR_ENV",
    "CORE_PYTHON_ENV",
    "CoreExample",
    "CoreExecutionError",
    "CoreIssue",
    "CoreReport",
    "CoreSetup",
    "CoreUnavailable",
    "core_settings",
    "read_core_report",
    "run_core",
]

CORE_DIR_ENV = "FHIR_LUPUS_CORE_DIR"
CORE_PYTHON_ENV = "FHIR_LUPUS_CORE_PYTHON"
CORE_STANDARD = ("sdtmig", "3-4")  # SDTMIG 3.4: the standards metadata the cache holds
CORE_CT_PACKAGE = "sdtmct-2015-12-18"  # the newest SDTM CT package of the cache the pinned engine reads
CORE_TIMEOUT = 900.0  # a full run is about 50 s on two idle cores; a busy machine can take several times that
REPORT_STEM = "core-report"  # the engine adds ".json"
EXAMPLES_PER_ISSUE = 3
_ERROR_PREFIX = "rule evaluation error"  # how the engine words a rule that failed to run
_EXECUTION_ERROR = "EXECUTION ERROR"
_SKIPPED = "SKIPPED"


@dataclass(frozen=True)
class CoreSetup:
    """Where CDISC CORE lives: ``core_dir`` holds ``engine/`` (core.py, resources) and ``cache/`` (rules,
    standards, terminology); ``python`` is a Python 3.12 with the pinned engine installed (a venv's
    ``bin/python``, kept unresolved: resolving its symlink would leave the venv)."""

    core_dir: Path
    python: Path

    @property
    def engine(self) -> Path:
        return self.core_dir / "engine"

    @property
    def cache(self) -> Path:
        return self.core_dir / "cache"


def _checkout() -> Path | None:
    """The repository checkout this package runs from (FHIR_LUPUS_ROOT overrides, as for the dev servers), or
    None in an installed wheel, where no default can be guessed."""
    root = Path(os.environ.get("FHIR_LUPUS_ROOT") or Path(__file__).resolve().parents[2])
    return root if (root / "Makefile").is_file() and (root / "pyproject.toml").is_file() else None


def _pick(given: Path | None, option: str, variable: str, default: Path | None) -> tuple[Path | None, str]:
    """The first of the option, the environment variable, the checkout's default; with where it came from."""
    if given is not None:
        return given.absolute(), option
    if os.environ.get(variable):
        return Path(os.environ[variable]).absolute(), variable
    return default, "the checkout's default"


def core_settings(core_dir: Path | None = None, core_python: Path | None = None) -> CoreSetup:
    """Resolve CORE's folder and Python: ``--core-dir``/``--core-python``, else ``FHIR_LUPUS_CORE_DIR`` /
    ``FHIR_LUPUS_CORE_PYTHON``, else (in a checkout) ``../shared/cdisc-core`` and ``.venv-core/bin/python``.

    Raises CoreUnavailable naming every missing part, where the path came from and how to make it, before
    anything runs: a check that cannot start must say so rather than look like a pass."""
    root = _checkout()
    folder, folder_from = _pick(core_dir, "--core-dir", CORE_DIR_ENV, root and root.parent / "shared" / "cdisc-core")
    python, python_from = _pick(core_python, "--core-python", CORE_PYTHON_ENV, root and root / ".venv-core/bin/python")
    missing: list[str] = []
    if folder is None:
        missing.append(f"no CORE folder given (--core-dir or {CORE_DIR_ENV}; an installed package has none)")
    else:
        lacking = [part for part in ("engine/core.py", "cache/rules.pkl") if not (folder / part).is_file()]
        if lacking:
            missing.append(
                f"the CORE folder {folder} ({folder_from}) has no {' or '.join(lacking)}: give the folder holding "
                f"engine/ and cache/ with --core-dir or {CORE_DIR_ENV}"
            )
    if python is None:
        missing.append(f"no CORE Python given (--core-python or {CORE_PYTHON_ENV}; an installed package has none)")
    elif not python.is_file():
        missing.append(
            f"CORE's Python {python} ({python_from}) does not exist: make it with `make .venv-core` in the checkout "
            f"(Python 3.12 with cdisc-rules-engine), or give one with --core-python or {CORE_PYTHON_ENV}"
        )
    if missing or folder is None or python is None:
        raise CoreUnavailable("CDISC CORE cannot run: " + "; ".join(missing))
    return CoreSetup(core_dir=folder.resolve(), python=python)


def _command(setup: CoreSetup, datasets: list[Path], output: Path, define: Path | None) -> list[str]:
    """The engine's command line (run in ``setup.engine``: it finds its resources by relative path). One
    process (``-ps 1``): as fast as two on two cores and far lighter; no progress bar in captured output."""
    standard, version = CORE_STANDARD
    command = [str(setup.python), "core.py", "validate", "-ca", str(setup.cache), "-s", standard, "-v", version]
    if define is None:  # beside a Define-XML 2.1 file the engine refuses -ct: it reads the package from def:Standards
        command += ["-ct", CORE_CT_PACKAGE]
    for dataset in datasets:
        command += ["-dp", str(dataset.absolute())]
    if define is not None:
        command += ["-dxp", str(define.absolute())]
    return [*command, "-of", "JSON", "-o", str(output.absolute()), "-ps", "1", "-p", "disabled"]


def run_core(
    setup: CoreSetup,
    datasets: list[Path],
    out_dir: Path,
    define: Path | None = None,
    *,
    timeout: float = CORE_TIMEOUT,
) -> CoreReport:
    """Check ``datasets`` (Dataset-JSON or XPT files, one per domain) against SDTMIG 3.4 and write the engine's
    report as ``out_dir/core-report.json``; return it parsed. Without ``define`` the two rules that read
    define.xml (CORE-000929, CORE-001081) end as execution errors.

    Raises CoreUnavailable when the engine cannot start, fails, times out or writes no report; FileNotFoundError
    for an input that does not exist (said now, not after a minute-long run)."""
    if not datasets:
        raise ValueError("run_core needs at least one dataset file")
    absent = [str(path) for path in [*datasets, *([define] if define else [])] if not path.is_file()]
    if absent:
        raise FileNotFoundError(f"no such file to check: {', '.join(absent)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / REPORT_STEM
    report = out_dir / f"{REPORT_STEM}.json"
    report.unlink(missing_ok=True)  # an earlier run's report must never be read as this run's
    # our PYTHONPATH points at 3.11 code; the engine's 3.12 must see only its own venv
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONHOME")}
    command = _command(setup, datasets, output, define)
    try:
        done = subprocess.run(
            command, cwd=setup.engine, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise CoreUnavailable(f"CDISC CORE did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise CoreUnavailable(f"CDISC CORE could not start ({setup.python}): {exc}") from None
    if done.returncode != 0 or not report.is_file():
        said = _last_lines(done.stderr or done.stdout)
        raise CoreUnavailable(
            f"CDISC CORE failed (exit {done.returncode}, {'a' if report.is_file() else 'no'} report) under "
            f"{setup.python}, which should be the Python 3.12 venv `make .venv-core` makes; it said:\n{said}"
        )
    return read_core_report(report)


def _last_lines(text: str, count: int = 12) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-count:]) or "(no output)"


# -- the report ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoreExample:
    """One flagged record: where it is (``row`` is the record's 1-based place in the dataset) and the values
    of the rule's variables there. None where the rule flags the dataset as a whole."""

    usubjid: str
    row: int | None
    seq: int | None
    values: Mapping[str, str | None] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class CoreIssue:
    """The records one rule flagged in one dataset (``STUDY`` for study-level rules such as a missing EX)."""

    rule: str  # the CORE id, e.g. CORE-000201
    message: str
    dataset: str
    variables: tuple[str, ...]
    count: int
    examples: tuple[CoreExample, ...]


@dataclass(frozen=True)
class CoreExecutionError:
    """A rule the engine could not run on a dataset (empty when the dataset could not be read): it checked
    nothing there. ``detail`` is the engine's reason (a missing define.xml, a failed dataset build)."""

    rule: str
    dataset: str
    message: str
    detail: str


@dataclass(frozen=True)
class CoreReport:
    """What CORE found, parsed from its JSON report.

    ``datasets`` is every dataset the engine read, with its record count (upper-case names); ``unnamed`` counts
    files it listed without a name, which is how a file its schema refused shows. ``rule_status`` is each rule's
    outcome as the engine words it (SUCCESS, SKIPPED, ISSUE REPORTED, EXECUTION ERROR)."""

    path: Path | None
    engine_version: str
    standard: str
    ct_version: str
    define_xml_version: str | None
    datasets: dict[str, int]
    unnamed: int
    issues: tuple[CoreIssue, ...]
    execution_errors: tuple[CoreExecutionError, ...]
    rule_status: dict[str, str]

    @property
    def skipped(self) -> tuple[str, ...]:
        """Rules that did not apply (their domain or variables absent): sorted CORE ids."""
        return tuple(sorted(rule for rule, status in self.rule_status.items() if status == _SKIPPED))

    @property
    def rules_with_issues(self) -> set[str]:
        return {issue.rule for issue in self.issues}

    @property
    def rules_not_executed(self) -> set[str]:
        return {error.rule for error in self.execution_errors}

    def problems(self, expected: Mapping[str, int]) -> list[str]:
        """Every dataset of ``expected`` (name -> records written) the report lacks or counts otherwise, and any
        file the engine could not name: the only sign of a file its Dataset-JSON schema refused."""
        found: list[str] = []
        for name, records in sorted(expected.items()):
            counted = self.datasets.get(name.upper())
            if counted is None:
                found.append(f"{name.upper()}: not in the report, {records} record(s) written")
            elif counted != records:
                found.append(f"{name.upper()}: {counted} record(s) in the report, {records} written")
        if self.unnamed:
            found.append(f"{self.unnamed} dataset file(s) the engine read as nameless and empty (schema refused?)")
        return found

    @property
    def summary(self) -> str:
        """One line for a terminal."""
        records = sum(issue.count for issue in self.issues)
        return (
            f"CDISC CORE {self.engine_version}, {self.standard} {self.ct_version}: {len(self.datasets)} dataset(s), "
            f"{records} issue(s) from {len(self.rules_with_issues)} rule(s), "
            f"{len(self.rules_not_executed)} rule(s) not executed, {len(self.skipped)} not applicable"
        )

    @classmethod
    def from_json(cls, document: Mapping[str, Any], path: Path | None = None) -> CoreReport:
        """From the engine's JSON report (``-of JSON``): its Dataset Details, Issue Details and Rules Report."""
        details = document.get("Conformance_Details") or {}
        datasets: dict[str, int] = {}
        unnamed = 0
        for entry in _rows(document, "Dataset_Details"):
            name = str(entry.get("filename") or "").upper()
            if not name:
                unnamed += 1
                continue
            datasets[name] = datasets.get(name, 0) + int(entry.get("length") or 0)
        flagged: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        errors: list[CoreExecutionError] = []
        for row in _rows(document, "Issue_Details"):
            rule, dataset, message = _text(row.get("core_id")), _text(row.get("dataset")), _text(row.get("message"))
            if not isinstance(row.get("variables"), list) or message.startswith(_ERROR_PREFIX):
                errors.append(CoreExecutionError(rule, dataset, message, _text(row.get("values"))))
            else:
                flagged.setdefault((rule, dataset), []).append(row)
        rules = {_text(r.get("core_id")): r for r in _rows(document, "Rules_Report")}
        # a rule the Rules Report says failed, with no detail row, is still a rule that did not run
        told = {error.rule for error in errors}
        errors += [
            CoreExecutionError(rule, "", _text(r.get("message")), "")
            for rule, r in rules.items()
            if r.get("status") == _EXECUTION_ERROR and rule not in told
        ]
        define = details.get("Define_XML_Version")
        return cls(
            path=path,
            engine_version=_text(details.get("CORE_Engine_Version")),
            standard=f"{_text(details.get('Standard'))} {_text(details.get('Version'))}".strip(),
            ct_version=_text(details.get("CT_Version")),
            define_xml_version=None if define is None else _text(define),
            datasets=datasets,
            unnamed=unnamed,
            issues=tuple(_issue(rule, dataset, rows) for (rule, dataset), rows in sorted(flagged.items())),
            execution_errors=tuple(errors),
            rule_status={rule: _text(r.get("status")) for rule, r in sorted(rules.items())},
        )


def read_core_report(path: Path) -> CoreReport:
    """Parse a report the engine wrote; CoreUnavailable when it is not one (a truncated or foreign file)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CoreUnavailable(f"CDISC CORE's report {path} cannot be read: {exc}") from None
    if not isinstance(document, dict) or "Rules_Report" not in document:
        raise CoreUnavailable(f"{path} is not a CDISC CORE JSON report (no Rules_Report)")
    return CoreReport.from_json(document, path)


def _rows(document: Mapping[str, Any], sheet: str) -> list[Mapping[str, Any]]:
    rows = document.get(sheet)
    return [row for row in rows if isinstance(row, Mapping)] if isinstance(rows, list) else []


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _issue(rule: str, dataset: str, rows: list[Mapping[str, Any]]) -> CoreIssue:
    """One rule's rows in one dataset, folded: the variables in order of first mention, a few examples."""
    variables = tuple(dict.fromkeys(_text(name) for row in rows for name in row["variables"]))
    examples = []
    for row in rows[:EXAMPLES_PER_ISSUE]:
        values = row.get("values")
        named = [_text(name) for name in row["variables"]]
        pairs = zip(named, values if isinstance(values, list) else [], strict=False)
        examples.append(
            CoreExample(
                usubjid=_text(row.get("USUBJID")),
                row=_number(row.get("row")),
                seq=_number(row.get("SEQ")),
                values={name: None if value is None else _text(value) for name, value in pairs},
            )
        )
    return CoreIssue(rule, _text(rows[0].get("message")), dataset, variables, len(rows), tuple(examples))
