"""TS, the trial summary: one record per parameter value of mappings/sdtm/design.yaml ``trial_summary``.

A parameter is a term of mappings/sdtm/terms.yaml TSPARMCD, which gives its TSPARM and the codelist of its value.
Its values are given in design.yaml with their source (the registration), or derived here from the study file and
the trial (``derive``); a derived value of a parameter with a value codelist is the term terms.yaml maps it to
(phase-1 -> PHASE I TRIAL), and every value of such a codelist is written with its code (TSVALCD, TSVCDREF CDISC,
TSVCDVER the CT version). The text and codes are all data. With a registry key the study's dates (SSTDTC, SENDTC)
are the subjects' dates as the datasets show them: each moved by its subject's keyed offset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

from fhir_lupus.errors import MappingError
from fhir_lupus.sdtm._design import DESIGN, SdtmDesign, TsParameter, TsValue, load_design
from fhir_lupus.sdtm._engine import iso_8601
from fhir_lupus.sdtm._sources import SdtmContext
from fhir_lupus.sdtm._terms import CtTerm, SdtmTerms, load_sdtm_terms

__all__ = ["DERIVATIONS", "ts_rows"]

CDISC = "cdisc"  # the key of design.yaml references that is CDISC CT itself
REGISTRY = "registry"  # the key of design.yaml references that names the registry of the NCT number
AGE_SOURCE = "screening.age"


def ts_rows(ctx: SdtmContext) -> Iterator[dict[str, Any]]:
    """One row per value of each parameter, TSSEQ numbering a parameter's values."""
    design = load_design(ctx.pack)
    terms = load_sdtm_terms(ctx.pack)
    if not terms.package.endswith(design.ct_version):
        raise MappingError(
            f"mappings/{DESIGN}: ct_version {design.ct_version} is not the CT of terms ({terms.package})"
        )
    for parameter in design.trial_summary:
        name = terms.term(design.codelists.parameter, parameter.parmcd).name or ""
        for seq, value in enumerate(_values(parameter, ctx, design, terms), start=1):
            reference = design.references.get(value.reference or "")
            if value.reference and reference is None:
                raise MappingError(f"mappings/{DESIGN}: references has no {value.reference!r}")
            yield {
                "tsseq": seq,
                "parmcd": parameter.parmcd,
                "parm": name,
                "value": value.value or "",
                "null_flavor": value.null_flavor or "",
                "code": value.code or "",
                "reference": terms.term(design.codelists.reference, reference).value if reference else "",
                "version": design.ct_version if value.reference == CDISC else "",
            }


def _values(parameter: TsParameter, ctx: SdtmContext, design: SdtmDesign, terms: SdtmTerms) -> list[TsValue]:
    """The parameter's values: given or derived, each a term of the parameter's codelist when it has one."""
    if parameter.null_flavor is not None:
        return [TsValue(null_flavor=parameter.null_flavor)]
    codelist = terms.term(design.codelists.parameter, parameter.parmcd).value_codelist
    if parameter.values:
        if codelist is None:
            return [TsValue(value=value) for value in parameter.values]
        return [_coded(terms.term(codelist, value)) for value in parameter.values]
    derived = DERIVATIONS[parameter.derive or ""](ctx, design)
    if not derived:
        # no value: SDTMIG 3.4 TS gives a planned maximum age that has none as PINF (positive infinity)
        return [TsValue(null_flavor="PINF" if parameter.parmcd == "AGEMAX" else "NI")]
    if codelist is None:
        return derived
    return [_coded(terms.term_for(codelist, value.value or "")) for value in derived]


def _coded(term: CtTerm) -> TsValue:
    """A CDISC CT term as a TS value; a sponsor-defined term has no code to give."""
    if term.code is None:
        return TsValue(value=term.value)
    return TsValue(value=term.value, code=term.code, reference=CDISC)


def _text(*values: object) -> list[TsValue]:
    return [TsValue(value=str(v)) for v in values if v is not None and v != ""]


def _conditions(ctx: SdtmContext, design: SdtmDesign) -> list[TsValue]:
    """Each condition of the study file, its code's display (the code's meaning) as TSVAL."""
    return [
        TsValue(
            value=condition.display or condition.text or condition.code,
            code=condition.code,
            reference=condition.system,
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
    enrolled = {
        s.record.subject_id: s.record.enrolled_on for s in trial.subjects if s.record.subject_id in ctx.enrolled
    }
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
    for sid in sorted(ctx.enrolled):
        timeline = ctx.trial.timelines.get(sid)
        if timeline is None or timeline.end is None:
            return [TsValue(null_flavor="NAV")]
        ends.append(ctx.dated(sid, timeline.end.day))
    return _text(iso_8601(max((d for d in ends if isinstance(d, date)), default=None)))


def _registry(ctx: SdtmContext, design: SdtmDesign) -> list[TsValue]:
    nct = ctx.trial.study.nct_id
    return [TsValue(value=nct, code=nct, reference=REGISTRY)]


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
    "trial.subjects": lambda ctx, _: _text(len(ctx.enrolled)),
    "trial.start": _start,
    "trial.end": _end,
    "site.country": lambda ctx, _: _text(ctx.pack.site.location.country),  # coded through the parameter's codelist
}
