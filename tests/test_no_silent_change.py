"""No silent change (issue 20): corrupt one cell at a time, or empty a whole file, and the run either names that
file and line (a refusal or a query) or every derived value equals the uncorrupted run's.

In process through the library (tests/corruption.py: load, screen, schedule, report statistics, map without FHIR
validation), on an excerpt of the example: two enrolled subjects with every row of theirs, and two screened
candidates who did not enrol (one ineligible, one incomplete). The corruptions are chosen at random with a fixed
seed among all of them: a cell blanked, a number negated or multiplied by 100, a date moved past the subject's
end of participation (or into the future for a subject still on study); and every file emptied in turn.
``bench/bench_no_silent_change.py`` runs the same on the whole example.

Blanking four cells of sledai.csv is not a corruption this check can see, and is left out: ``descriptors``,
``not_attributed``, ``reported_total`` and ``window_days`` are the clinician's answers, and a blank is itself a
complete, different answer (no descriptor present, none left out, "score it from the descriptors", the default
10-day window). No rule can tell it from the truth; the sledai-jump query catches the large ones.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
from corruption import Corruption, check, corruptions, derive, ends_of
from support import example_subset

SUBJECTS = 2  # MSC-001 and MSC-002
CANDIDATES = ("SCR-001", "SCR-006")
CASES = 220  # cell corruptions; every file emptied comes on top
SEED = 20261206
ANSWERS = {("sledai.csv", column) for column in ("descriptors", "not_attributed", "reported_total", "window_days")}


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return example_subset(tmp_path_factory.mktemp("excerpt") / "data", SUBJECTS, candidates=CANDIDATES)


def chosen(trial: Path) -> list[Corruption]:
    every = corruptions(trial, ends_of(trial), random.Random(SEED), CASES * 3)
    cells = [c for c in every if c.line is not None and (c.file, c.column) not in ANSWERS][:CASES]
    return cells + [c for c in every if c.line is None]


def test_the_excerpt_is_clean_and_covers_what_it_must(trial: Path) -> None:
    values, report = derive(trial)
    assert report.rejects == []
    assert values["verdicts"] == {
        "MSC-001": "eligible",
        "MSC-002": "eligible",
        "SCR-001": "ineligible",
        "SCR-006": "incomplete",
    }
    assert values["sledai"] and values["changes"] and values["observations"] and values["schedule"]
    cases = chosen(trial)
    hows = {c.how for c in cases}
    assert hows == {"blank", "negate", "x100", "past-end", "empty-file"}, hows
    assert {c.file for c in cases} >= {"labs.csv", "sledai.csv", "visits.csv", "subjects.csv", "screening.csv"}


def test_no_corruption_changes_a_derived_value_unnamed(trial: Path, tmp_path: Path) -> None:
    baseline, _ = derive(trial)
    silent = [
        problem
        for corruption in chosen(trial)
        if (problem := check(trial, tmp_path / "spoiled", corruption, baseline)) is not None
    ]
    assert silent == [], "\n".join(silent)


def test_the_check_would_see_a_silent_change(trial: Path, tmp_path: Path) -> None:
    """The oracle is not blind: blanking a CRF descriptor (a valid answer, left out above) changes a total
    without naming it, and ``check`` says so."""
    with (trial / "sledai.csv").open(encoding="utf-8", newline="") as handle:
        line = next(i + 2 for i, row in enumerate(csv.DictReader(handle)) if row["descriptors"])
    baseline, _ = derive(trial)
    problem = check(trial, tmp_path / "spoiled", Corruption("sledai.csv", line, "descriptors", "blank", ""), baseline)
    assert problem is not None and "sledai" in problem and "nothing names it" in problem
