"""RS rows: each SLEDAI-2K assessment as its 24 descriptors and its totals, and the renal response the investigator
report classifies, per subject and evaluation visit (mappings/sdtm/domains/rs.yaml; the tests, categories and renal
results are codelists of mappings/sdtm/terms.yaml, looked up from the keys these rows carry).

The descriptors and totals are the scoring's (``ScoredAssessment``), never scored again here. A descriptor scores
its weight when the CRF lists it or the labs meet it, else 0; the computed total is what those records add up to
(``SledaiScore.computed_total``), kept beside the CRF total, which is the score when given: two records, since
SDTMIG's RSORRES and RSSTRESC/RSSTRESN are one result in two forms, not two results (docs/sdtm.md). A descriptor
no lab result could decide is NOT DONE with the reason, and a computed total that is a lower bound is written as
one (``>=N``, no RSSTRESN), never as final.

The renal response is the report's own classification (``report_statistics``), so the datasets and the page agree;
one whose inputs are incomplete (a refused row, a preliminary value) is NOT DONE with the report's reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict

from fhir_lupus.errors import MappingError
from fhir_lupus.model import ScoredAssessment
from fhir_lupus.report import report_statistics
from fhir_lupus.scoring import load_sledai_definition
from fhir_lupus.sdtm._design import Epochs, epochs, visit_numbers
from fhir_lupus.sdtm._sources import Row, SdtmContext, first_exposures
from fhir_lupus.sdtm._terms import load_sdtm_terms

__all__ = ["ResponseTerms", "rs_rows"]

TERMS = "sdtm/responses.yaml"
REASON_LIMIT = 200  # bytes: RSREASND is text, and XPT version 5 holds no more
# the keys RSCAT, RSTESTCD and RSTEST are looked up from (their terms' `from` in mappings/sdtm/terms.yaml); a
# descriptor is its key of mappings/scoring/sledai2k.yaml, the renal response the report's response key
SLEDAI = "sledai"
CRF_TOTAL = "crf_total"
COMPUTED_TOTAL = "computed_total"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SledaiTerms(_Frozen):
    evaluator: str
    at_least: str


class RenalTerms(_Frozen):
    response: str
    results: str


class ResponseTerms(_Frozen):
    """mappings/sdtm/responses.yaml: what RS writes for SLEDAI-2K and the renal response beside the codelists."""

    sledai: SledaiTerms
    renal: RenalTerms
    not_done: str


def rs_rows(ctx: SdtmContext) -> Iterator[Row]:
    """The SLEDAI-2K records of every accepted assessment, then the renal responses of the subjects in DM."""
    terms = ctx.pack.load(ResponseTerms, TERMS)
    visits = {code: (float(v.number), v.name) for code, v in visit_numbers(ctx).items()}  # as TV numbers them
    subject_epochs = epochs(ctx)
    yield from _sledai_rows(ctx, terms, visits, subject_epochs)
    yield from _renal_rows(ctx, terms, visits, subject_epochs)


def _visit(visits: dict[str, tuple[float, str]], code: str) -> Row:
    """A visit the schedule does not list keeps its code as VISIT and has no VISITNUM."""
    number, name = visits.get(code, (None, code))
    return {"visitnum": number, "visit": name}


def _sledai_rows(
    ctx: SdtmContext, terms: ResponseTerms, visits: dict[str, tuple[float, str]], subject_epochs: Epochs
) -> Iterator[Row]:
    sledai = terms.sledai
    definition = load_sledai_definition(ctx.pack)
    rows: list[Row] = []
    for located in ctx.trial.sledai:
        scored = located.record
        assessment = scored.assessment
        sid = assessment.subject_id
        common = {
            "_subject": sid,
            "_on": assessment.assessed_on,
            "usubjid": ctx.usubjid(sid),
            "category": SLEDAI,
            **_visit(visits, assessment.visit_code),
            "dtc": ctx.dated(sid, assessment.assessed_on),
            "epoch": subject_epochs.epoch(sid, assessment.assessed_on),
        }
        for descriptor in definition.descriptors:
            rows.append({**common, **_descriptor(scored, descriptor.key, descriptor.weight, terms)})
        score = scored.score
        if score.total_from_crf:
            rows.append({**common, **_result(score.total), "test": CRF_TOTAL, "evaluator": sledai.evaluator})
        computed = _result(score.computed_total) if score.computed_final else _at_least(score.computed_total, sledai)
        rows.append({**common, **computed, "test": COMPUTED_TOTAL, "derived": True})
    _flag_last_before_exposure(rows, first_exposures(ctx.trial))
    for row in rows:
        del row["_subject"], row["_on"]
        yield row


def _flag_last_before_exposure(rows: list[Row], exposure: dict[str, datetime]) -> None:
    """RSLOBXFL = Y on each subject's last result per test assessed before the first study treatment. SLEDAI-2K is
    dated to the day: one assessed on the day of the first treatment is taken as before it (the protocol assesses
    at the pre-treatment admission)."""
    last: dict[tuple[str, str], Row] = {}
    for row in rows:
        start = exposure.get(row["_subject"])
        if start is None or row["_on"] > start.date() or not row.get("stresc"):
            continue
        key = (row["_subject"], row["test"])
        if key not in last or row["_on"] > last[key]["_on"]:
            last[key] = row
    chosen = {id(row) for row in last.values()}
    for row in rows:
        row["lobxfl"] = True if id(row) in chosen else None


def _descriptor(scored: ScoredAssessment, key: str, weight: int, terms: ResponseTerms) -> Row:
    """A descriptor's result: its weight when listed on the CRF (collected) or met by the labs (derived), 0 when
    absent or present but not due to lupus (the clinician's answer), NOT DONE when no lab result could decide."""
    score = scored.score
    found = next((d for d in score.descriptors if d.key == key), None)
    if found is not None and found.source == "derived":
        return {**_result(weight), "test": key, "derived": True}
    if found is not None and found.source == "flagged":
        return {**_result(weight), "test": key, "evaluator": terms.sledai.evaluator}
    why = next((d.why for d in score.unjudged if d.key == key), ())
    if why:
        short = f"could not be judged: {len(why)} lab input(s) refused, absent or not comparable with its threshold"
        return {"test": key, "stat": terms.not_done, "reasnd": _fit(f"could not be judged: {'; '.join(why)}", short)}
    return {**_result(0), "test": key, "evaluator": terms.sledai.evaluator}


def _renal_rows(
    ctx: SdtmContext, terms: ResponseTerms, visits: dict[str, tuple[float, str]], subject_epochs: Epochs
) -> Iterator[Row]:
    """The report's classification of every subject in DM at each evaluation month of the renal response."""
    renal = terms.renal
    stats = report_statistics(ctx.trial, pack=ctx.pack, report=ctx.report)
    tallies = stats.tallies.get(renal.response)
    if tallies is None:
        raise MappingError(f"mappings/{TERMS}: the report defines no response {renal.response!r}")
    results = load_sdtm_terms(ctx.pack)
    by_month = {visit.month: visit.code for visit in ctx.trial.study.visits()}
    held = {(v.record.subject_id, v.record.visit_code): v.record.visit_date for v in ctx.trial.visits}
    enrolled = ctx.enrolled
    for tally in tallies:
        stresc = {key: results.submission_value(renal.results, key) for key, _ in tally.categories()}
        code = by_month.get(tally.month, "")
        for found in tally.classifications:
            sid = found.subject_id
            if sid not in enrolled:
                continue  # a subject refused whole: not in DM, so not in RS
            visit_day: date | None = held.get((sid, code))
            row: Row = {
                "usubjid": ctx.usubjid(sid),
                "category": renal.response,
                "test": renal.response,
                **_visit(visits, code),
                "dtc": ctx.dated(sid, visit_day),
                "epoch": subject_epochs.epoch(sid, visit_day),
                "derived": True,
            }
            if found.preliminary:
                reason = _fit(f"inputs incomplete: {found.reason}", "inputs incomplete: a row refused or preliminary")
                row |= {"stat": terms.not_done, "reasnd": reason}
            else:
                row |= {"orres": found.label, "stresc": stresc[found.category]}
            yield row


def _result(points: int) -> Row:
    return {"orres": str(points), "stresc": str(points), "stresn": points}


def _at_least(points: int, sledai: SledaiTerms) -> Row:
    """A lower bound, as SDTMIG writes a censored result: in RSORRES and RSSTRESC, RSSTRESN empty."""
    bound = f"{sledai.at_least}{points}"
    return {"orres": bound, "stresc": bound}


def _fit(reason: str, short: str) -> str:
    """``reason`` when it fits RSREASND, else ``short`` (the loader's query keeps the whole reason)."""
    return reason if len(reason.encode("utf-8")) <= REASON_LIMIT else short
