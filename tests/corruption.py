"""No silent change, as a harness: spoil one cell of a trial (or empty one file) and demand that the run either
names that file and line (a refusal or a query) or changes no derived value.

Derived values are everything the trial's outputs compute rather than copy: SLEDAI-2K totals (and whether they
are final), eligibility verdicts, schedule statuses (and the analytes missing or unknown at each visit), the
report's statistics (change from baseline, responders, the adverse-event counts, which are preliminary) and the
mapped Observations' values and statuses. They are computed in process through the library's public functions,
without FHIR validation and without figures. Used by tests/test_no_silent_change.py on an excerpt of the example, and by
bench/bench_no_silent_change.py on the whole example.
"""

from __future__ import annotations

import csv
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model import LoadReport, load_trial
from fhir_lupus.model._inputs import require_inputs
from fhir_lupus.pipeline import iter_mapped
from fhir_lupus.report import report_statistics
from fhir_lupus.study import schedule_report, screen_trial, screening_findings

TODAY = date(2026, 12, 6)  # the day the checks run: fixed, so that "in the future" means the same every run
_NUMBER = re.compile(r"^(<=|>=|<|>)?(-?\d+(?:\.\d+)?)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Corruption:
    file: str
    line: int | None  # None: the whole file emptied
    column: str | None
    how: str  # blank, negate, x100, past-end, empty-file
    value: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: emptied"
        return f"{self.file}:{self.line}: {self.column} {self.how} -> {self.value!r}"


def derive(data_dir: Path) -> tuple[dict[str, Any], LoadReport]:
    """Every derived value of a trial directory and the load report; InputError when ``map`` cannot start."""
    require_inputs(data_dir, "map")
    data, report = load_trial(data_dir, today=TODAY)
    screened = screen_trial(data, report=report)
    report.findings.extend(screening_findings(data, screened, report))
    values: dict[str, Any] = {
        "sledai": {
            (s.record.assessment.subject_id, s.record.assessment.visit_code): (
                s.record.score.total,
                s.record.score.final,
            )
            for s in data.sledai
        },
        "verdicts": {c.result.subject_id: c.result.verdict for c in screened},
        "schedule": {
            (s.subject_id, o.visit.code): (o.status, o.missing, o.unknown)
            for s in schedule_report(data, report=report)
            for o in s.visits
        },
    }
    stats = report_statistics(data, report=report)
    values["changes"] = {
        (key, item.month): (item.changes, item.final, item.incomplete)
        for key, items in stats.summaries.items()
        for item in items
    }
    values["responders"] = {
        (key, tally.month, c.subject_id): c.category
        for key, tallies in stats.tallies.items()
        for tally in tallies
        for c in tally.classifications
    }
    adverse = stats.adverse_events
    values["adverse_events"] = {
        (table, count.key): (count.count, adverse.final)
        for table, counts in (
            ("grade", adverse.by_grade),
            ("serious", adverse.by_seriousness),
            ("related", adverse.by_relatedness),
            ("subjects", adverse.per_subject),
        )
        for count in counts
    }
    observations = {}
    for batch in iter_mapped(data, report, trusted=lambda resource: True):  # no FHIR validation: not its job here
        for resource in batch.resources:
            if resource["resourceType"] == "Observation":
                value = {k: v for k, v in resource.items() if k.startswith("value") or k == "dataAbsentReason"}
                observations[resource["identifier"][0]["value"]] = (resource["status"], repr(value))
    values["observations"] = observations
    return values, report


def named(report: LoadReport, corruption: Corruption) -> bool:
    """Whether a refusal or a query names the corrupted file and line (or, for an emptied file, the file)."""
    if corruption.line is None:
        hits = [*report.rejects, *report.findings]
        return any(item.file == corruption.file or corruption.file in str(item) for item in hits)
    where = f"{corruption.file}:{corruption.line}"
    for reject in report.rejects:
        if (reject.file, reject.line) == (corruption.file, corruption.line) or where in reject.reason:
            return True
    return any((q.file, q.line) == (corruption.file, corruption.line) or where in q.message for q in report.queries)


def corruptions(data_dir: Path, ends: dict[str, date | None], rng: random.Random, count: int) -> list[Corruption]:
    """``count`` cell corruptions chosen at random among every possible one, then every file emptied.
    ``ends``: each subject's end of participation (a date past it is "past the end"; none: the future)."""
    possible = list(_possible(data_dir, ends))
    chosen = rng.sample(possible, min(count, len(possible)))
    return chosen + [Corruption(path.name, None, None, "empty-file", "") for path in sorted(data_dir.glob("*.csv"))]


def _possible(data_dir: Path, ends: dict[str, date | None]) -> Iterator[Corruption]:
    for path in sorted(data_dir.glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for index, row in enumerate(csv.DictReader(handle)):
                line = index + 2  # no cell of the example spans lines
                for column, cell in row.items():
                    cell = cell.strip()
                    if not cell:
                        continue
                    yield Corruption(path.name, line, column, "blank", "")
                    if match := _NUMBER.match(cell):
                        comparator, number = match.group(1) or "", Decimal(match.group(2))
                        yield Corruption(path.name, line, column, "negate", f"{comparator}{-number}")
                        yield Corruption(path.name, line, column, "x100", f"{comparator}{(number * 100).normalize():f}")
                    elif _DATE.match(cell):
                        end = ends.get(row.get("subject_id", ""))
                        day = (end + timedelta(days=30)) if end else TODAY + timedelta(days=365)
                        yield Corruption(path.name, line, column, "past-end", day.isoformat() + cell[10:])


def apply(source: Path, target: Path, corruption: Corruption) -> Path:
    """A copy of ``source`` at ``target`` with the one change."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    path = target / corruption.file
    if corruption.line is None:
        path.write_text("", encoding="utf-8")
        return target
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    rows[corruption.line - 1][header.index(corruption.column or "")] = corruption.value
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return target


def check(source: Path, scratch: Path, corruption: Corruption, baseline: dict[str, Any]) -> str | None:
    """None when the run named the corruption or changed nothing derived; else what changed, unnamed."""
    spoiled = apply(source, scratch, corruption)
    try:
        values, report = derive(spoiled)
    except FhirLupusError as exc:
        return None if corruption.file in str(exc) else f"{corruption}: stopped without naming it: {exc}"
    if named(report, corruption):
        return None
    changed = sorted(key for key in baseline if values[key] != baseline[key])
    if not changed:
        return None
    detail = []
    for key in changed:
        before, after = baseline[key], values[key]
        if isinstance(before, dict):
            diff = [k for k in before.keys() | after.keys() if before.get(k) != after.get(k)]
            detail.append(f"{key}: {sorted(diff, key=str)[:3]}")
    return f"{corruption}: changed {', '.join(detail)} and nothing names it"


def ends_of(data_dir: Path) -> dict[str, date | None]:
    data, _ = load_trial(data_dir, today=TODAY)
    return {sid: (t.end.day if t.end else None) for sid, t in data.timelines.items()}
