"""TS, the trial summary: one record per parameter value of mappings/sdtm/design.yaml ``trial_summary``.

A parameter's values are given there with their source (the registration), or derived here from the study file and
the trial (``derive``), then coded through the parameter's ``translate``; the text and codes are all data. With a
registry key the study's dates (SSTDTC, SENDTC) are the subjects' dates as the datasets show them: each moved by
its subject's keyed offset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from typing import TYPE_CHECKING, Any

from fhir_lupus.errors import MappingError
from fhir_lupus.sdtm._design import DESIGN, SdtmDesign, TsParameter, TsValue, load_design
from fhir_lupus.sdtm._engine import iso_8601
from fhir_lupus.sdtm._spec import TrialDesign

if TYPE_CHECKING:
    from fhir_lupus.sdtm._sources import SdtmContext

__all__ = ["ts_rows"]

CDISC = "CDISC"  # TSVCDREF of a value from CDISC controlled terminology (its TSVCDVER: the CT version)
AGE_SOURCE = "screening.age"


def ts_rows(ctx: SdtmContext) -> Iterator[dict[str, Any]]:
    """One row per value of each parameter, TSSEQ numbering a parameter's values."""
    design = load_design(ctx.pack)
    for parameter in design.trial_summary:
        values = _derived(parameter, ctx, design) if parameter.derive else list(parameter.values)
        for seq, value in enumerate(values, start=1):
            yield {
                "tsseq": seq,
                "parmcd": parameter.parmcd,
                "parm": parameter.parm,
                "value": value.value or "",
                "null_flavor": value.null_flavor or "",
                "code": value.code or "",
                "reference": value.reference or "",
                "version": design.ct_version if value.reference == CDISC else value.version or "",
            }


def _derived(parameter: TsParameter, ctx: SdtmContext, design: SdtmDesign) -> list[TsValue]:
    derive = DERIVATIONS[parameter.derive or ""]
    derived = derive(ctx, design)
    if not derived:
        # no value: SDTMIG 3.4 TS gives a planned maximum age that has none as PINF (positive infinity)
        return [TsValue(null_flavor="PINF" if parameter.parmcd == "AGEMAX" else "NI")]
    if not parameter.translate:
        return derived
    translated = []
    for value in derived:
        coded = parameter.translate.get(value.value or "")
        if coded is None:
            raise MappingError(f"mappings/{DESIGN}: {parameter.parmcd} has no translation for {value.value!r}")
        translated.append(coded)
    return translated


def _text(*values: object) -> list[TsValue]:
    return [TsValue(value=str(v)) for v in values if v is not None and v != ""]


def _reference(design: SdtmDesign, key: str) -> str:
    reference = design.references.get(key)
    if reference is None:
        raise MappingError(f"mappings/{DESIGN}: references has no {key!r}")
    return reference.name


def _conditions(ctx: SdtmContext, design: SdtmDesign) -> list[TsValue]:
    """Each condition of the study file, its code's display (the code's meaning) as TSVAL."""
    return [
        TsValue(
            value=condition.display or condition.text or condition.code,
            code=condition.code,
            reference=_reference(design, condition.system),
        )
        for condition in ctx.trial.study.conditions
    ]


def _age(limit: str) -> Callable[[SdtmContext, SdtmDesign], list[TsValue]]:
    """AGEMIN / AGEMAX from the eligibility criterion on age, as an ISO 8601 duration (P15Y)."""

    def derive(ctx: SdtmContext, design: SdtmDesign) -> list[TsValue]:
        for criterion in ctx.trial.study.eligibility:
            rule = criterion.rule
            bound = getattr(rule, limit)
            if rule.source != AGE_SOURCE or bound is None:
                continue
            designator = design.age_units.get(rule.unit or "")
            if designator is None:
                raise MappingError(f"mappings/{DESIGN}: age_units has no ISO 8601 designator for {rule.unit!r}")
            return _text(f"P{bound.normalize():f}{designator}")
        return []

    return derive


def _start(ctx: SdtmContext, design: SdtmDesign) -> list[TsValue]:
    """SSTDTC: the earliest informed consent of an enrolled subject, else the earliest enrolment."""
    trial = ctx.trial
    enrolled = {s.record.subject_id: s.record.enrolled_on for s in trial.subjects}
    consents = [
        ctx.dated(s.record.subject_id, s.record.consent_on)
        for s in trial.screening
        if s.record.subject_id in enrolled and s.record.consent_on is not None
    ]
    days = consents or [ctx.dated(sid, day) for sid, day in enrolled.items()]
    return _text(iso_8601(min((d for d in days if isinstance(d, date)), default=None)))


def _end(ctx: SdtmContext, design: SdtmDesign) -> list[TsValue]:
    """SENDTC: the latest end of participation once every subject's ended; NAV (not yet available) before."""
    ends = []
    for located in ctx.trial.subjects:
        sid = located.record.subject_id
        timeline = ctx.trial.timelines.get(sid)
        if timeline is None or timeline.end is None:
            return [TsValue(null_flavor="NAV")]
        ends.append(ctx.dated(sid, timeline.end.day))
    return _text(iso_8601(max((d for d in ends if isinstance(d, date)), default=None)))


def _country(ctx: SdtmContext, design: SdtmDesign) -> list[TsValue]:
    alpha2 = ctx.pack.site.location.country
    alpha3 = ctx.pack.load(TrialDesign, "sdtm/trial.yaml").countries.get(alpha2, alpha2)
    return [TsValue(value=alpha3, code=alpha3, reference=_reference(design, "country"))]


def _registry(ctx: SdtmContext, design: SdtmDesign) -> list[TsValue]:
    nct = ctx.trial.study.nct_id
    return [TsValue(value=nct, code=nct, reference=_reference(design, "registry"))]


def _outcomes(kind: str) -> Callable[[SdtmContext, SdtmDesign], list[TsValue]]:
    return lambda ctx, _: _text(*(o.name for o in ctx.trial.study.outcomes if o.type == kind))


DERIVATIONS: dict[str, Callable[[SdtmContext, SdtmDesign], list[TsValue]]] = {
    "study.title": lambda ctx, _: _text(ctx.trial.study.title),
    "study.phase": lambda ctx, _: _text(ctx.trial.study.phase),
    "study.study_type": lambda ctx, _: _text(ctx.trial.study.study_type),
    "study.design": lambda ctx, _: _text(ctx.trial.study.design),
    "study.target_enrollment": lambda ctx, _: _text(ctx.trial.study.target_enrollment),
    "study.sex": lambda ctx, _: _text(ctx.trial.study.sex),
    "study.nct_id": _registry,
    "study.sponsor": lambda ctx, _: _text(ctx.trial.study.sponsor.name),
    "study.conditions": _conditions,
    "study.arms": lambda ctx, _: _text(len(ctx.trial.study.arms)),
    "study.primary_outcomes": _outcomes("primary"),
    "study.secondary_outcomes": _outcomes("secondary"),
    "eligibility.min_age": _age("at_least"),
    "eligibility.max_age": _age("at_most"),
    "trial.subjects": lambda ctx, _: _text(len(ctx.trial.subjects)),
    "trial.start": _start,
    "trial.end": _end,
    "site.country": _country,
}
