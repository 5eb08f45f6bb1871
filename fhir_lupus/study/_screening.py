"""Screening a loaded trial: the facts of each screening.csv row, the verdicts, and the findings they raise.

SLEDAI: the screening row's ``sledai_total`` (a CRF total, which is the score, as in sledai.csv); when it is
empty and the candidate enrolled, the score of the subject's BL assessment in sledai.csv, as
fhir_lupus/scoring/_sledai.py computes it (a preliminary score is a range: the criterion is decided only when
both ends agree). The source is written beside the value.

With the load report, a candidate's refused medications.csv rows make a "not met" regimen unknown (the refused
row could have been the failed regimen), and a refused screening.csv row of an enrolled subject is named. The
findings are queries for the site (mappings/checks/checks.yaml): each names the rows that decided the verdict or
left a criterion unknown.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

from fhir_lupus.model import (
    BOOLEAN_SOURCES,
    MEDICATIONS,
    SCREENING,
    Finding,
    LoadReport,
    Located,
    MedicationHistory,
    ScreeningRecord,
    TrialData,
    finding,
    load_check_rules,
)
from fhir_lupus.study._criteria import CandidateFacts, ScreeningResult, screen_candidate
from fhir_lupus.terminology import MappingPack, UnitConverter, load_medication_catalogue, load_pack

__all__ = ["ScreenedCandidate", "screen_trial", "screening_findings"]


@dataclass(frozen=True)
class ScreenedCandidate:
    """A screening result with the row it came from and whether the candidate enrolled (subjects.csv)."""

    row: Located[ScreeningRecord]
    result: ScreeningResult
    enrolled: bool


def screen_trial(
    data: TrialData, pack: MappingPack | None = None, report: LoadReport | None = None
) -> list[ScreenedCandidate]:
    """Screen every accepted screening.csv row against the study's criteria, in file order, as of each
    candidate's screening date. ``report``: the load's, whose refused medications.csv rows make a criterion
    they could have met unknown; ``pack``: the mappings (default: ``load_pack()``)."""
    pack = pack or load_pack()
    units = UnitConverter(pack)
    catalogue = load_medication_catalogue(pack)
    enrolled = {row.record.subject_id for row in data.subjects}
    medications: dict[str, list[MedicationHistory]] = defaultdict(list)
    lines: dict[str, str] = {}
    for med in data.medications:
        medications[med.record.subject_id].append(med.record)
        lines[med.record.medication_id] = f"{med.file}:{med.line}"
    refused: dict[str, list[str]] = defaultdict(list)
    for reject in report.rejects if report is not None else ():
        if reject.file == MEDICATIONS:
            where = f"{MEDICATIONS}:{reject.line}"
            subject = reject.row.get("subject_id", "").strip()
            if where not in refused[subject]:
                refused[subject].append(where)
    baseline = data.study.visits()[0].code  # expanding the schedule is not free: once, not per row
    baseline_sledai = {
        row.record.assessment.subject_id: row.record
        for row in data.sledai
        if row.record.assessment.visit_code == baseline
    }
    screened = []
    for row in data.screening:
        record = row.record
        facts = _facts(record, medications.get(record.subject_id, []), units)
        facts = replace(
            facts,
            medication_lines=lines,
            refused_medications=tuple(refused.get(record.subject_id, []) + refused.get("", [])),
        )
        if facts.sledai_total is None and record.subject_id in baseline_sledai:
            scored = baseline_sledai[record.subject_id]
            source = f"sledai.csv {scored.assessment.visit_code} {scored.assessment.assessed_on}"
            facts = replace(
                facts, sledai_total=scored.score.total, sledai_upper=scored.score.upper_total, sledai_source=source
            )
        result = screen_candidate(facts, data.study.eligibility, catalogue=catalogue, units=units)
        screened.append(ScreenedCandidate(row, result, enrolled=record.subject_id in enrolled))
    return screened


def screening_findings(
    data: TrialData,
    screened: list[ScreenedCandidate],
    report: LoadReport | None = None,
    pack: MappingPack | None = None,
) -> list[Finding]:
    """Queries for the site (severities in mappings/checks/checks.yaml), never silently accepted:

    - ``enrolled-not-eligible``: an enrolled subject whose verdict is not eligible;
    - ``not-screened``: an enrolled subject without an accepted screening row, once screening.csv has rows
      (its refused row named, when there is one);
    - ``eligibility-incomplete``: a candidate who did not enrol, whose verdict is incomplete.

    Each names the criteria that failed or stayed unknown with the data and rows they were decided on.
    """
    rules = load_check_rules(pack)
    findings = []
    for candidate in screened:
        result = candidate.result
        if result.verdict == "eligible" or (not candidate.enrolled and result.verdict != "incomplete"):
            continue
        reasons = [f"{c.criterion.text}: {c.decision} ({c.data})" for c in result.failing() + result.unknown()]
        if candidate.enrolled:
            check, said = "enrolled-not-eligible", f"{result.subject_id} enrolled but screened {result.verdict}: "
        else:
            check, said = "eligibility-incomplete", f"{result.subject_id} screened incomplete, criteria unknown: "
        row = candidate.row
        findings.append(
            finding(check, rules.severity(check), row.file, row.line, said + "; ".join(reasons), row=row.row)
        )
    if data.screening or (report is not None and report.read[SCREENING]):
        listed = {c.result.subject_id for c in screened}
        refused = {
            r.row.get("subject_id", "").strip(): r.line
            for r in (report.rejects if report is not None else ())
            if r.file == SCREENING
        }
        for subject in data.subjects:
            subject_id = subject.record.subject_id
            if subject_id in listed:
                continue
            line = refused.get(subject_id)
            why = f"its screening row was refused ({SCREENING}:{line})" if line else "without a screening row"
            findings.append(
                finding(
                    "not-screened",
                    rules.severity("not-screened"),
                    SCREENING,
                    line,
                    f"{subject_id} enrolled {why}",
                    subject_id=subject_id,
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
