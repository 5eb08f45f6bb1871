"""Screening a loaded trial: the facts of each screening.csv row, the verdicts, and the findings they raise.

SLEDAI: the screening row's ``sledai_total`` (a CRF total, which is the score, as in sledai.csv); when it is
empty and the candidate enrolled, the score of the subject's BL assessment in sledai.csv, as
fhir_lupus/scoring/sledai.py computes it. The source is written beside the value.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from fhir_lupus.model._history_checks import SCREENING
from fhir_lupus.model._records import Finding, Located
from fhir_lupus.model.eligibility import BOOLEAN_SOURCES
from fhir_lupus.model.history import MedicationHistory, ScreeningRecord
from fhir_lupus.model.loader import TrialData
from fhir_lupus.screening._engine import CandidateFacts, ScreeningResult, screen_candidate
from fhir_lupus.terminology import load_pack
from fhir_lupus.terminology.medications import load_medication_catalogue
from fhir_lupus.terminology.units import UnitConverter

__all__ = ["ScreenedCandidate", "screen_trial", "screening_findings"]


@dataclass(frozen=True)
class ScreenedCandidate:
    """A screening result with the row it came from and whether the candidate enrolled (subjects.csv)."""

    row: Located[ScreeningRecord]
    result: ScreeningResult
    enrolled: bool


def screen_trial(data: TrialData, mappings_dir: Path | None = None) -> list[ScreenedCandidate]:
    """Screen every accepted screening.csv row against the study's criteria, in file order."""
    pack = load_pack(mappings_dir)
    units = UnitConverter(pack)
    catalogue = load_medication_catalogue(pack.root)
    enrolled = {row.record.subject_id for row in data.subjects}
    medications: dict[str, list[MedicationHistory]] = defaultdict(list)
    for med in data.medications:
        medications[med.record.subject_id].append(med.record)
    baseline_sledai = {
        row.record.assessment.subject_id: row.record
        for row in data.sledai
        if row.record.assessment.visit_code == data.study.visits()[0].code
    }
    screened = []
    for row in data.screening:
        record = row.record
        facts = _facts(record, medications.get(record.subject_id, []), units)
        if facts.sledai_total is None and record.subject_id in baseline_sledai:
            scored = baseline_sledai[record.subject_id]
            source = f"sledai.csv {scored.assessment.visit_code} {scored.assessment.assessed_on}"
            facts = replace(facts, sledai_total=scored.score.total, sledai_source=source)
        result = screen_candidate(facts, data.study.eligibility, catalogue=catalogue, units=units)
        screened.append(ScreenedCandidate(row, result, enrolled=record.subject_id in enrolled))
    return screened


def screening_findings(data: TrialData, screened: list[ScreenedCandidate]) -> list[Finding]:
    """Enrolled subjects whose screening verdict is not eligible, and (when screening.csv has rows) enrolled
    subjects it does not list: told, never silently accepted."""
    findings = []
    for candidate in screened:
        if not candidate.enrolled or candidate.result.verdict == "eligible":
            continue
        result = candidate.result
        reasons = [f"{c.criterion.text}: {c.decision} ({c.data})" for c in result.failing() + result.unknown()]
        findings.append(
            Finding(
                SCREENING,
                candidate.row.line,
                "enrolled-not-eligible",
                f"{result.subject_id} enrolled but screened {result.verdict}: " + "; ".join(reasons),
            )
        )
    if data.screening:
        listed = {c.result.subject_id for c in screened}
        for subject in data.subjects:
            if subject.record.subject_id not in listed:
                findings.append(
                    Finding(
                        SCREENING,
                        None,
                        "not-screened",
                        f"{subject.record.subject_id} enrolled without a screening row",
                    )
                )
    return findings


def _facts(record: ScreeningRecord, medications: list[MedicationHistory], units: UnitConverter) -> CandidateFacts:
    protein = None
    if record.urine_protein_24h is not None and record.urine_protein_unit:
        protein = (record.urine_protein_24h, units.to_ucum(record.urine_protein_unit))
    findings = {
        source.removeprefix("screening."): getattr(record, source.removeprefix("screening."))
        for source in BOOLEAN_SOURCES
    }
    return CandidateFacts(
        subject_id=record.subject_id,
        sex=record.sex,
        birth_date=record.birth_date,
        age_on=record.age_date,
        age_on_label="consent" if record.consent_on else "screening",
        findings=findings,
        sledai_total=record.sledai_total,
        sledai_source="screening.csv",
        urine_protein=protein,
        alt=record.alt,
        alt_uln=record.alt_uln,
        medications=tuple(sorted(medications, key=lambda m: (m.started_on, m.medication_id))),
        as_of=record.screened_on,
    )
