"""Every AdverseEvent shape, R4 and R5, through HAPI FHIR's offline instance validator (scripts/fhir-validate):
no error. R5 is checked against HL7 Terminology 5.1.0 (what R5 validates against), R4 against FHIR 4.0.1's own code
systems. A wrong causality code must be an error in each version, so a pass cannot come from a validator that does
not know the code systems."""

from __future__ import annotations

import copy
import csv
import json
import subprocess
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import EXAMPLE, REPO, example_subset

from fhir_lupus import load_trial
from fhir_lupus.model._adverse_events import ADVERSE_EVENTS
from fhir_lupus.pipeline import map_trial
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import load_pack
from fhir_lupus.terminology._adverse_events import load_adverse_event_terms

pytestmark = pytest.mark.integration

VALIDATE = REPO / "scripts" / "fhir-validate"
ERRORS = ("error", "fatal")
# the columns of adverse_events.csv that change the shape of the AdverseEvent (the rest is text, ids and dates)
SHAPE_COLUMNS = ("grade", "serious", "seriousness_criteria", "outcome", "related_to", "causality")

Resource = dict[str, Any]


def hand_made_events() -> list[dict[str, str]]:
    """Rows for MSC-001 of tests/conftest.py's base_rows (cyclophosphamide P1 on 2008-01-06, MSC infusion P2 on
    2008-01-07): every causality value with every suspect, no suspect, every outcome, grades 1 to 5, every
    seriousness criterion, coded event terms, no reporter or recording date. The fatal event comes after every other
    row of the subject: nothing may follow a death."""
    terms = load_adverse_event_terms()
    rows: list[dict[str, str]] = []

    def event(onset: date | None = None, **over: str) -> None:
        onset = onset or date(2008, 1, 10) + timedelta(days=len(rows))
        closed = over.get("outcome", "recovered") in terms.resolved_outcomes
        resolved = (onset + timedelta(days=1)).isoformat() if closed else ""
        row = dict(
            event_id=f"AE{len(rows) + 1:02d}",
            subject_id="MSC-001",
            term="fever",
            meddra_code="",
            ctcae_term="Fever",
            ctcae_code="",
            grade=str(len(rows) % 4 + 1),
            serious="no",
            seriousness_criteria="",
            outcome="recovered",
            onset_on=onset.isoformat(),
            resolved_on=resolved,
            related_to="none",
            causality="",
            reporter="WJ",
            recorded_on=onset.isoformat(),
        )
        rows.append(row | over)

    for causality in terms.causality:
        for related, suspects in terms.related_to.items():
            if suspects:
                event(related_to=related, causality=causality)
    event(related_to="none")
    for outcome in terms.outcomes:
        if outcome != "fatal":
            event(outcome=outcome)
    others = ";".join(key for key in terms.seriousness_criteria if key != "death")
    event(serious="yes", seriousness_criteria=others, grade="4", related_to="both", causality="definite")
    event(meddra_code="10016558", ctcae_code="C55125", reporter="", recorded_on="")
    last = date(2008, 6, 1)  # after every visit, lab and SLEDAI-2K of base_rows
    event(last, grade="5", outcome="fatal", serious="yes", seriousness_criteria="death;hospitalization")
    return rows


def example_subjects() -> list[int]:
    """Positions in subjects.csv of a few example subjects whose adverse events show every shape the example has."""
    with (EXAMPLE / "adverse_events.csv").open(encoding="utf-8", newline="") as handle:
        events = list(csv.DictReader(handle))
    with (EXAMPLE / "subjects.csv").open(encoding="utf-8", newline="") as handle:
        subjects = [row["subject_id"] for row in csv.DictReader(handle)]
    shapes: dict[str, set[tuple[str, ...]]] = {}
    for row in events:
        shape = (*(row[c] for c in SHAPE_COLUMNS), str(bool(row["resolved_on"])))
        shapes.setdefault(row["subject_id"], set()).add(shape)
    left, chosen = set().union(*shapes.values()), []
    while left:
        best = max(sorted(shapes), key=lambda subject: len(shapes[subject] & left))
        chosen.append(subjects.index(best))
        left -= shapes[best]
    return sorted(chosen)


def adverse_events(data_dir: Path) -> dict[str, list[Resource]]:
    """The AdverseEvents that ``map`` makes of a trial directory, by FHIR version."""
    data, report = load_trial(data_dir)
    assert report.rejects == [], report.rejects
    mapped = {
        version: [
            r
            for r in map_trial(TrialSource.loaded(data, report), fhir_version=version).resources
            if r["resourceType"] == "AdverseEvent"
        ]
        for version in ("R4", "R5")
    }
    assert len(mapped["R4"]) == len(mapped["R5"]) == len(data.adverse_events) > 0
    return mapped


def event_id(resource: Resource) -> str:
    identifier = resource["identifier"]
    return str((identifier[0] if isinstance(identifier, list) else identifier)["value"])


def controls(r4: Resource, r5: Resource) -> tuple[Resource, Resource, tuple[str, ...], tuple[str, ...]]:
    """An R4 event whose WHO-UMC causality code is made up, and the same R5 event with R4's spelling of its causality
    codes (what the mapping wrote before issue 20); the codes each must be refused for."""
    pack, terms = load_pack(), load_adverse_event_terms()
    who_umc = pack.system_uri(terms.who_umc_system)
    bad_r4 = copy.deepcopy(r4)
    for coding in bad_r4["suspectEntity"][0]["causality"][0]["assessment"]["coding"]:
        if coding["system"] == who_umc:
            coding["code"] = "Probably-Not"
    r4_codes = {c["system"]: c["code"] for c in r4["suspectEntity"][0]["causality"][0]["assessment"]["coding"]}
    bad_r5 = copy.deepcopy(r5)
    causality = bad_r5["suspectEntity"][0]["causality"]
    for coding in causality["entityRelatedness"]["coding"]:
        if coding["system"] == who_umc:
            coding["code"] = r4_codes[who_umc]
    causality["assessmentMethod"]["coding"][0]["code"] = terms.causality_method.code
    return bad_r4, bad_r5, ("Probably-Not",), (r4_codes[who_umc], terms.causality_method.code)


def validate(files: dict[str, list[Path]]) -> dict[str, list[dict[str, Any]]]:
    """One run of scripts/fhir-validate for every file (building the jar first when needed): issues by file."""
    command = [str(VALIDATE)]
    for version, paths in files.items():
        command += [version, *map(str, paths)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, f"fhir-validate exited {done.returncode}:\n{done.stderr[-4000:]}"
    results = [json.loads(line) for line in done.stdout.splitlines()]
    by_file = {result["file"]: result["issues"] for result in results}
    assert sorted(by_file) == sorted(str(p) for paths in files.values() for p in paths), done.stderr[-4000:]
    return by_file


def test_every_adverse_event_shape_is_valid_and_a_wrong_causality_code_is_not(
    dataset: Callable[..., Path], tmp_path: Path
) -> None:
    rows = hand_made_events()

    def with_events(tables: dict[str, list[dict[str, str]]]) -> None:
        tables[ADVERSE_EVENTS] = rows

    shapes = [adverse_events(dataset(with_events))]
    shapes += [adverse_events(example_subset(tmp_path / f"example-{i}", 1, first=i)) for i in example_subjects()]
    files: dict[str, list[Path]] = {"R4": [], "R5": []}
    for version in files:
        folder = tmp_path / version
        folder.mkdir()
        for resource in (r for mapped in shapes for r in mapped[version]):
            path = folder / f"{event_id(resource)}.json"
            path.write_text(json.dumps(resource), encoding="utf-8")
            files[version].append(path)

    probable = next(row["event_id"] for row in rows if row["causality"] == "probable")  # NCI and WHO-UMC codings
    r4, r5 = (next(r for r in shapes[0][version] if event_id(r) == probable) for version in ("R4", "R5"))
    bad_r4, bad_r5, r4_wrong, r5_wrong = controls(r4, r5)
    control = {"R4": tmp_path / "control-r4.json", "R5": tmp_path / "control-r5.json"}
    control["R4"].write_text(json.dumps(bad_r4), encoding="utf-8")
    control["R5"].write_text(json.dumps(bad_r5), encoding="utf-8")

    issues = validate({version: [*paths, control[version]] for version, paths in files.items()})

    errors = {
        name: [f"{i['severity']} {i['location']}: {i['message']}" for i in found if i["severity"] in ERRORS]
        for name, found in issues.items()
        if Path(name) not in control.values()
    }
    assert {name: found for name, found in errors.items() if found} == {}
    assert len(files["R4"]) == len(files["R5"]) > len(rows)  # the example's events besides the hand-made ones
    # the causality code systems were found and their codes checked: not even a warning that they could not be
    mentioned = [
        i["message"]
        for name, found in issues.items()
        if Path(name) not in control.values()
        for i in found
        if "adverse-event-causality" in i["message"]
    ]
    assert mentioned == []
    for version, wrong in (("R4", r4_wrong), ("R5", r5_wrong)):
        messages = [i["message"] for i in issues[str(control[version])] if i["severity"] in ERRORS]
        for code in wrong:
            assert any(code in message for message in messages), (version, code, messages)
