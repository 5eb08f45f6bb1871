"""Paths and data the tests share (a module of its own: conftest modules must not be imported by name)."""

from __future__ import annotations

import csv
import shutil
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from fhir_lupus.terminology import load_pack

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "nct00698191"
HOSPITAL_LIS = "urn:oid:1.2.156.112604.1.2.1"  # a hospital lab system's own identifier system (not ours)
FAULT_RESULT = "fault_result"  # a test report's property: one line of the fault-injection summary


def example_subset(target: Path, subjects: int, *, first: int = 0, candidates: tuple[str, ...] = ()) -> Path:
    """A copy of the example trial with only ``subjects`` of its subjects (from the ``first``-th), every row of theirs,
    and the screening and medication rows of the ``candidates`` who did not enrol.

    Most integration tests need a few subjects, not twenty: the same code paths, a fraction of the time.
    """
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / "trial.txt", target / "trial.txt")
    with (EXAMPLE / "subjects.csv").open(encoding="utf-8", newline="") as handle:
        wanted = {row["subject_id"] for row in list(csv.DictReader(handle))[first : first + subjects]}
    wanted |= set(candidates)
    for source in sorted(EXAMPLE.glob("*.csv")):
        with source.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [row for row in reader if row["subject_id"] in wanted]
            columns = reader.fieldnames or []
        with (target / source.name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return target


# The study identifier systems of mappings/project.yaml (current, then superseded), each made the run's own so
# that a run sees only its own ResearchStudy. The current line goes first (a superseded one is its prefix).
STUDY_SYSTEMS = (
    ("  study: https://clinicaltrials.gov/nctid\n", '  study: "{base}/sid/nct"\n'),
    ("    - https://clinicaltrials.gov ", '    - "{base}/sid/nct-superseded" '),
    ("    - http://clinicaltrials.gov\n", '    - "{base}/sid/nct-http"\n'),
)
OUR_BASE = "https://fhir-lupus.example.org/"


def isolated_mappings_copy(target: Path, tag: str) -> Path:
    """A copy of mappings/ at ``target`` whose every URI of ours (identifier systems, the MRN system, the project
    CodeSystem) and whose study identifier systems live under ``{OUR_BASE}{tag}/``: runs against one long-lived
    server do not see each other's resources."""
    shutil.copytree(REPO / "mappings", target)
    for path in target.rglob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        isolated = text.replace(OUR_BASE, f"{OUR_BASE}{tag}/")
        if path.name == "project.yaml":
            for current, ours in STUDY_SYSTEMS:
                if current not in isolated:
                    raise AssertionError(f"{path}: no line {current.strip()!r} to isolate")
                isolated = isolated.replace(current, ours)
        if isolated != text:
            path.write_text(isolated, encoding="utf-8")
    return target


def hospital_lab(
    patient: str,
    analyte: str,
    value: float,
    unit: str,
    day: date,
    *,
    ref: tuple[float, float] | None = None,
    label: str = "HOSP",
) -> dict[str, Any]:
    """An Observation as a hospital's lab system writes it for ``patient`` ("Patient/<id>"): its own identifier
    (``label`` and a random part), the LOINC code the catalogue gives for what it reports (a creatinine in mg/dL
    is not the one in umol/L), a UCUM unit, collected at 09:30 (+08:00) on ``day``. No Provenance of ours points
    at it, so a server lets it be deleted as a withdrawn result would be."""
    pack = load_pack()
    code = next(
        c.code
        for c in pack.labs.analytes[analyte].codes
        if c.when.unit_like in (None, unit) and c.when.value_kind == "quantity"
    )
    quantity = {"system": pack.system_uri("ucum"), "code": unit, "unit": unit}
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": HOSPITAL_LIS, "value": f"{label}-{uuid.uuid4().hex[:10]}"}],
        "status": "final",
        "category": [{"coding": [{"system": pack.system_uri("observation-category"), "code": "laboratory"}]}],
        "code": {"coding": [{"system": pack.system_uri("loinc"), "code": code}]},
        "subject": {"reference": patient},
        "effectiveDateTime": f"{day.isoformat()}T09:30:00+08:00",
        "valueQuantity": {**quantity, "value": value},
    }
    if ref is not None:
        resource["referenceRange"] = [{"low": {**quantity, "value": ref[0]}, "high": {**quantity, "value": ref[1]}}]
    return resource


def spy_on_subject_maps(monkeypatch: Any) -> list[str]:
    """The subjects the pipeline maps from now on, in order (each call of its per-subject map): what a push of
    unchanged inputs must leave out (push/_repush.py). ``monkeypatch``: the test's, which undoes the spy."""
    from fhir_lupus import pipeline

    calls: list[str] = []
    real = pipeline._map_subject

    def spy(row: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(row.record.subject_id)
        return real(row, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_map_subject", spy)
    return calls
