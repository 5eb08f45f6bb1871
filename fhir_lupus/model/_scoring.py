"""SLEDAI-2K assessments scored at load time, with what each score rests on (fhir_lupus/scoring/_sledai.py scores).

A lab row is read and coded once (``CheckedLab``); an assessment is scored from the CRF and the subject's accepted
labs (``ScoredAssessment``). The subject's refused lab rows, and an absent labs.csv, are handed to the calculator,
which leaves a descriptor they could have met undecided: the total is then preliminary, and a
``sledai-undecided`` query names the rows. A CRF total that differs from its own descriptors, and lab findings a
CRF total left out, are notes (mappings/checks/checks.yaml).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from fhir_lupus.model._edit_checks import Flags
from fhir_lupus.model._entities import LabResult, SledaiAssessment
from fhir_lupus.model._records import LoadReport, Located
from fhir_lupus.model._timeline import DateChecks
from fhir_lupus.scoring import LabEvidence, SledaiDefinition, SledaiScore, UnjudgedLab, score_sledai
from fhir_lupus.terminology import LabCatalogue, LabValue, ResolvedLab

__all__ = ["AssessmentScorer", "CheckedLab", "ScoredAssessment", "score_assessments"]

LABS = "labs.csv"


@dataclass(frozen=True)
class CheckedLab:
    """A lab row with its value read and its LOINC code chosen, done once at load time."""

    lab: LabResult
    value: LabValue
    resolved: ResolvedLab


@dataclass(frozen=True)
class ScoredAssessment:
    assessment: SledaiAssessment
    score: SledaiScore


class AssessmentScorer:
    """Scores the assessments of one load against its accepted labs and its refused lab rows."""

    def __init__(
        self,
        definition: SledaiDefinition,
        catalogue: LabCatalogue,
        flags: Flags,
        report: LoadReport,
        labs: list[Located[CheckedLab]],
        subjects: Collection[str],
    ) -> None:
        self.definition = definition
        self.units = catalogue.units
        self.flags = flags
        self.report = report
        self.evidence: dict[str, list[LabEvidence]] = defaultdict(list)
        for row in labs:
            checked = row.record
            self.evidence[checked.lab.subject_id].append(
                LabEvidence(
                    result_id=checked.lab.result_id,
                    analyte=checked.lab.analyte,
                    collected_at=checked.lab.collected_at,
                    value=checked.value,
                    ucum=checked.resolved.ucum,
                    ref_low=checked.lab.ref_low,
                    ref_high=checked.lab.ref_high,
                    where=f"{row.file}:{row.line}",
                )
            )
        self.refused = refused_labs(report, catalogue.pack.labs.analytes, subjects)
        self.labs_absent = not report.holds(LABS)

    def score(self, row: Located[SledaiAssessment]) -> Located[ScoredAssessment] | None:
        """Score one assessment (None: refused, its window is not allowed); a CRF total is the score."""
        assessment = row.record
        try:
            score = score_sledai(
                self.definition,
                flagged=assessment.descriptors,
                labs=self.evidence.get(assessment.subject_id, []),
                assessed_on=assessment.assessed_on,
                window_days=assessment.window_days,
                units=self.units,
                not_attributed=assessment.not_attribution_causes,
                reported_total=assessment.reported_total,
                unjudged=self.refused.get(assessment.subject_id, []) + self.refused.get("", []),
                labs_absent=self.labs_absent,
            )
        except ValueError as exc:
            self.report.reject(row, "window_days", str(exc))
            return None
        self._findings(row, score)
        return Located(ScoredAssessment(assessment, score), row.file, row.line, row.row)

    def _findings(self, row: Located[SledaiAssessment], score: SledaiScore) -> None:
        where = f"{row.record.subject_id} {row.record.visit_code}"
        if score.total_from_crf and score.total != score.assessed_total:
            self.flags.raise_(
                "sledai-total-differs",
                row,
                "reported_total",
                f"{where}: CRF total {score.total}, the descriptors it lists weigh {score.assessed_total}; "
                "the CRF total is the score",
            )
        if missed := score.uncounted_lab_findings:
            listed = ", ".join(f"{d.key} ({d.weight}; {'/'.join(d.evidence)})" for d in missed)
            self.flags.raise_(
                "sledai-lab-findings",
                row,
                "descriptors",
                f"{where}: CRF total {score.total}; labs also meet {listed}, which would give "
                f"{score.computed_total}. Mark them not_attributed, or add them to the CRF",
            )
        if score.undecided:
            causes = "; ".join(f"{d.key} (+{d.weight}): {', '.join(d.why)}" for d in score.undecided)
            self.flags.raise_(
                "sledai-undecided",
                row,
                "descriptors",
                f"{where}: SLEDAI-2K {score.total} is preliminary, between {score.total} and {score.upper_total}: "
                f"{causes}. Correct the lab rows, or give the CRF total",
                value=str(score.total),
            )


def score_assessments(
    rows: list[Located[SledaiAssessment]],
    belongs: Callable[[Located[Any], str, str], bool],
    scorer: AssessmentScorer,
    definition: SledaiDefinition,
    dates: DateChecks,
) -> list[Located[ScoredAssessment]]:
    """Pass 3 for sledai.csv: rows of accepted subjects and visits, with known descriptors and dates, scored by
    ``scorer`` (made once every lab row is settled: it reads their refusals); the others refused into its report."""
    accepted = []
    known = {d.key for d in definition.descriptors}
    for row in rows:
        assessment = row.record
        if not belongs(row, assessment.subject_id, assessment.visit_code):
            continue
        for column, keys in (
            ("descriptors", assessment.descriptors),
            ("not_attributed", tuple(assessment.not_attribution_causes)),
        ):
            unknown = [key for key in keys if key not in known]
            if unknown:
                scorer.report.reject(row, column, f"unknown SLEDAI-2K descriptor(s): {', '.join(unknown)}")
                break
        else:
            if dates.dated(row, assessment.subject_id, assessment.assessed_on, "assessed_on", "SLEDAI-2K"):
                continue
            scored = scorer.score(row)
            if scored is not None:
                accepted.append(scored)
    return accepted


def refused_labs(
    report: LoadReport, analytes: Mapping[str, Any], subjects: Collection[str]
) -> dict[str, list[UnjudgedLab]]:
    """The refused rows of labs.csv as the SLEDAI-2K calculator sees them, by subject ("" when the row's subject
    cannot be told: it could be anyone's). A cell that cannot be read stands for any analyte or day."""
    refused: dict[str, list[UnjudgedLab]] = defaultdict(list)
    seen: set[int] = set()
    for reject in report.rejects:
        if reject.file != LABS or reject.line in seen:
            continue
        seen.add(reject.line)
        cells = reject.row
        subject = (cells.get("subject_id") or "").strip()
        analyte = (cells.get("analyte") or "").strip()
        try:
            day: date | None = datetime.fromisoformat((cells.get("collected_at") or "").strip()).date()
        except ValueError:
            day = None
        refused[subject if subject in subjects else ""].append(
            UnjudgedLab(analyte if analyte in analytes else None, day, f"{LABS}:{reject.line}", reject.reason)
        )
    return refused
