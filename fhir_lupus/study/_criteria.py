"""The screening engine: one candidate's facts + the study's criteria -> a decision per criterion and a verdict.

Pure: no files, no I/O. Each criterion's ``rule`` (fhir_lupus/model/_eligibility.py) is decided three-valued:
``met``, ``not met`` or ``unknown`` (a fact it needs is missing), with the data it used written out. The verdict
is ``eligible`` when every inclusion criterion is met and no exclusion criterion is; ``ineligible`` when an
inclusion criterion is not met or an exclusion criterion is; ``incomplete`` otherwise.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal

from fhir_lupus.errors import UnitError
from fhir_lupus.model import Bounds, Eligibility, EligibilityRule, MedicationHistory, RegimenRule, add_calendar_months
from fhir_lupus.terminology import MedicationCatalogue, UnitConverter

__all__ = [
    "CandidateFacts",
    "CriterionResult",
    "Decision",
    "ScreeningResult",
    "Verdict",
    "screen_candidate",
    "screening_status",
]

Decision = Literal["met", "not met", "unknown"]
Verdict = Literal["eligible", "ineligible", "incomplete"]
Tri = bool | None  # True, False, or not decidable from the data


@dataclass(frozen=True)
class CandidateFacts:
    """What screening knows about one candidate, each fact with where it came from."""

    subject_id: str
    sex: str
    birth_date: str | None  # YYYY, YYYY-MM or YYYY-MM-DD
    age_on: date  # consent date (else the screening date)
    age_on_label: str  # "consent" or "screening"
    findings: Mapping[str, bool | None]  # screening.<column> -> yes / no / unknown
    sledai_total: int | None
    sledai_source: str  # e.g. "screening.csv" or "sledai.csv BL 2008-01-05"
    urine_protein: tuple[Decimal, str] | None  # value, UCUM unit
    alt: Decimal | None
    alt_uln: Decimal | None
    medications: tuple[MedicationHistory, ...]
    as_of: date  # the screening date: eligibility is judged as of it (courses are cut there)
    sledai_upper: int | None = None  # a preliminary SLEDAI-2K total is a lower bound; this is the most it can be
    # where each course comes from (medication_id -> "medications.csv:12"), and the candidate's refused rows of
    # medications.csv: a refused row could have been a failed regimen, so "not met" becomes unknown
    medication_lines: Mapping[str, str] = field(default_factory=dict)
    refused_medications: tuple[str, ...] = ()


@dataclass(frozen=True)
class CriterionResult:
    criterion: Eligibility
    decision: Decision
    data: str  # the data used, for a reader


@dataclass(frozen=True)
class ScreeningResult:
    subject_id: str
    verdict: Verdict
    criteria: tuple[CriterionResult, ...]

    @property
    def status(self) -> str:
        return screening_status(self.verdict)

    def failing(self) -> list[CriterionResult]:
        """The criteria that make the candidate ineligible (inclusion not met, exclusion met)."""
        return [c for c in self.criteria if (c.decision == "met") == c.criterion.exclude and c.decision != "unknown"]

    def unknown(self) -> list[CriterionResult]:
        return [c for c in self.criteria if c.decision == "unknown"]


def screening_status(verdict: Verdict) -> str:
    """FHIR research-subject-status after screening: eligible, ineligible, or still a candidate (incomplete)."""
    return {"eligible": "eligible", "ineligible": "ineligible"}.get(verdict, "candidate")


def screen_candidate(
    facts: CandidateFacts,
    criteria: Sequence[Eligibility],
    *,
    catalogue: MedicationCatalogue,
    units: UnitConverter,
) -> ScreeningResult:
    results = tuple(_decide(criterion, facts, catalogue, units) for criterion in criteria)
    inclusion = [r.decision for r in results if not r.criterion.exclude]
    exclusion = [r.decision for r in results if r.criterion.exclude]
    verdict: Verdict
    if "not met" in inclusion or "met" in exclusion:
        verdict = "ineligible"
    elif all(d == "met" for d in inclusion) and all(d == "not met" for d in exclusion):
        verdict = "eligible"
    else:
        verdict = "incomplete"
    return ScreeningResult(facts.subject_id, verdict, results)


def _decide(
    criterion: Eligibility, facts: CandidateFacts, catalogue: MedicationCatalogue, units: UnitConverter
) -> CriterionResult:
    rule = criterion.rule
    if rule.applies_to_sex and facts.sex not in rule.applies_to_sex:
        return CriterionResult(criterion, "not met", f"does not apply (sex {facts.sex})")
    if rule.source == "medications":
        outcome, data = _medications(rule, facts, catalogue, units)
    elif rule.source in (
        "screening.age",
        "screening.sledai_total",
        "screening.urine_protein_24h",
        "screening.alt_x_uln",
    ):
        outcome, data = _numeric(rule, facts, units)
    else:
        value = facts.findings.get(rule.source.removeprefix("screening."))
        column = rule.source.removeprefix("screening.")
        outcome = None if value is None else value == rule.equals
        data = f"{column}: {'not given' if value is None else 'yes' if value else 'no'}"
    decision: Decision = "unknown" if outcome is None else "met" if outcome else "not met"
    return CriterionResult(criterion, decision, data)


# -- numbers ---------------------------------------------------------------------------------------------


def _numeric(rule: EligibilityRule, facts: CandidateFacts, units: UnitConverter) -> tuple[Tri, str]:
    limits = f"(needs {rule.describe()})"
    if rule.source == "screening.age":
        if not facts.birth_date:
            return None, f"birth_date not given {limits}"
        youngest, oldest = _age_range(facts.birth_date, facts.age_on)
        seen = {rule.holds(Decimal(youngest)), rule.holds(Decimal(oldest))}
        age = str(youngest) if youngest == oldest else f"{youngest}-{oldest}"
        data = f"age {age} at {facts.age_on_label} {facts.age_on} (born {facts.birth_date}) {limits}"
        return (seen.pop() if len(seen) == 1 else None), data
    if rule.source == "screening.sledai_total":
        if facts.sledai_total is None:
            return None, f"SLEDAI-2K total not given {limits}"
        upper = facts.sledai_total if facts.sledai_upper is None else facts.sledai_upper
        if upper != facts.sledai_total:  # preliminary: decided only when both ends of its range agree
            seen = {rule.holds(Decimal(facts.sledai_total)), rule.holds(Decimal(upper))}
            shown = f"SLEDAI-2K {facts.sledai_total}-{upper}, preliminary ({facts.sledai_source})"
            return (seen.pop() if len(seen) == 1 else None), f"{shown} {limits}"
        total = Decimal(facts.sledai_total)
        return rule.holds(total), f"SLEDAI-2K {facts.sledai_total} ({facts.sledai_source}) {limits}"
    if rule.source == "screening.urine_protein_24h":
        if facts.urine_protein is None:
            return None, f"24-h urine protein not given {limits}"
        value, unit = facts.urine_protein
        try:
            converted = Decimal(str(units.convert(value, unit, rule.unit or unit)))
        except UnitError as exc:
            return None, f"24-h urine protein {value} {unit}: {exc} {limits}"
        shown = f"{value} {unit}" + ("" if unit == rule.unit else f" = {converted:g} {rule.unit}")
        return rule.holds(converted), f"24-h urine protein {shown} {limits}"
    # screening.alt_x_uln
    if facts.alt is None or facts.alt_uln is None:
        missing = " and ".join(n for n, v in (("alt", facts.alt), ("alt_uln", facts.alt_uln)) if v is None)
        return None, f"{missing} not given {limits}"
    ratio = facts.alt / facts.alt_uln
    return rule.holds(ratio), f"ALT {facts.alt} / ULN {facts.alt_uln} = {ratio:.3g} x ULN {limits}"


def _age_range(birth: str, on: date) -> tuple[int, int]:
    """Completed years on ``on`` for the latest and the earliest birth date a partial date allows."""
    parts = [int(p) for p in birth.split("-")]
    year = parts[0]
    first_month, last_month = (parts[1], parts[1]) if len(parts) > 1 else (1, 12)
    if len(parts) > 2:
        first_day = last_day = parts[2]
    else:
        first_day, last_day = 1, calendar.monthrange(year, last_month)[1]
    earliest, latest = date(year, first_month, first_day), date(year, last_month, last_day)
    return _completed_years(latest, on), _completed_years(earliest, on)


def _completed_years(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


# -- medication history ----------------------------------------------------------------------------------


def _medications(
    rule: EligibilityRule, facts: CandidateFacts, catalogue: MedicationCatalogue, units: UnitConverter
) -> tuple[Tri, str]:
    refused = facts.refused_medications
    if not facts.medications:
        why = "no medication history in medications.csv"
        return None, why + (f" ({', '.join(refused)} refused)" if refused else "")
    lines: list[str] = []
    branches: list[Tri] = []
    for regimen in rule.any_of:
        drugs = _drugs(regimen, catalogue)
        rows = [m for m in facts.medications if m.drug in drugs]
        results = [(_course(regimen, row, facts.as_of, catalogue, units), row) for row in rows]
        branch = _any(r[0][0] for r in results)
        branches.append(branch)
        for (outcome, why), row in results:
            mark = {True: "meets", False: "does not meet", None: "cannot tell"}[outcome]
            where = facts.medication_lines.get(row.medication_id)
            named = f"{row.medication_id} ({where})" if where else row.medication_id
            lines.append(f"{named} {_show(row)}: {mark} (rule: {regimen.describe()}): {why}")
        if not rows:
            lines.append(f"no course of {', '.join(sorted(drugs)) or 'such a drug'} (rule: {regimen.describe()})")
    verdict = _any(branches)
    if verdict is False and refused:  # a refused course might have been the failed regimen
        lines.append(f"{', '.join(refused)} refused: could have met it")
        verdict = None
    return verdict, "; ".join(lines)


def _drugs(regimen: RegimenRule, catalogue: MedicationCatalogue) -> frozenset[str]:
    drugs = set(regimen.drugs)
    if regimen.drug_class:
        drugs |= catalogue.drugs_of_class(regimen.drug_class)
    return frozenset(drugs - set(regimen.except_drugs))


def _course(
    regimen: RegimenRule, row: MedicationHistory, as_of: date, catalogue: MedicationCatalogue, units: UnitConverter
) -> tuple[Tri, str]:
    """Whether one course meets the regimen as of the screening date (``as_of``), and the checks that decided
    it: a course that starts after it does not count; a longer one counts its part up to it."""
    if row.started_on > as_of:
        return False, f"started after screening ({as_of}): not counted"
    checks: list[tuple[Tri, str]] = []
    frequency = catalogue.frequencies.get(row.frequency) if row.frequency else None
    if regimen.dose is not None:
        checks.append(_dose_check("dose", regimen.dose, row.dose, row.dose_unit, units))
    if regimen.daily_dose is not None:
        per_day = None if frequency is None else catalogue.doses_per_day(frequency)
        if row.dose is None or per_day is None:
            checks.append((None, "daily dose unknown (dose or a repeating frequency missing)"))
        else:
            daily = row.dose * Decimal(str(per_day))
            unit = catalogue.daily(row.dose_unit) if row.dose_unit else None  # a dose has a unit (MedicationHistory)
            checks.append(_dose_check("daily dose", regimen.daily_dose, daily, unit, units))
    if regimen.interval_days is not None:
        interval = None if frequency is None else catalogue.interval_days(frequency)
        if interval is None:
            checks.append((None, "dosing interval unknown"))
        else:
            days = Decimal(str(round(interval, 6)))
            checks.append((regimen.interval_days.holds(days), f"every {_num(days)} days"))
    if regimen.duration_months is not None:
        end = min(row.ended_on or as_of, as_of)
        months = _completed_months(row.started_on, end)
        cut = f" up to screening ({as_of})" if row.ended_on is None or row.ended_on > as_of else ""
        checks.append((regimen.duration_months.holds(Decimal(months)), f"{months} months{cut}"))
    if row.outcome not in regimen.outcome and row.outcome == "unknown":
        checks.append((None, "outcome unknown"))
    else:
        checks.append((row.outcome in regimen.outcome, f"outcome {row.outcome}"))
    return _all(c[0] for c in checks), ", ".join(c[1] for c in checks)


def _dose_check(
    name: str, bounds: Bounds, value: Decimal | None, unit: str | None, units: UnitConverter
) -> tuple[Tri, str]:
    if value is None or not unit:
        return None, f"{name} not given"
    target = bounds.unit or unit
    try:
        converted = Decimal(str(units.convert(value, units.to_ucum(unit), target)))
    except UnitError:
        return None, f"{name} {value:g} {unit} cannot be compared with {target}"
    return bounds.holds(converted), f"{name} {_num(converted)} {target}"


def _num(value: Decimal) -> str:
    """A decimal as a person writes it: 30, 0.5, 20.5 (no exponent, no trailing zeros)."""
    return format(value.normalize(), "f")


def _completed_months(start: date, end: date) -> int:
    months = max(0, (end.year - start.year) * 12 + end.month - start.month)
    while months > 0 and add_calendar_months(start, months) > end:
        months -= 1
    return months


def _show(row: MedicationHistory) -> str:
    dose = f"{row.dose:g} {row.dose_unit}" if row.dose is not None else "dose ?"
    period = f"{row.started_on}..{row.ended_on or 'ongoing'}"
    return f"{row.drug} {dose} {row.frequency or ''} {period} {row.outcome}".replace("  ", " ")


def _all(values: Iterable[Tri]) -> Tri:
    seen = list(values)
    if False in seen:
        return False
    return None if None in seen else True


def _any(values: Iterable[Tri]) -> Tri:
    seen = list(values)
    if True in seen:
        return True
    return None if None in seen else False
