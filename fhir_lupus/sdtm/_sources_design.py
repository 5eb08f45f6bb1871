"""The facts of the trial design datasets (TA, TE, TV), of the subject elements and visits (SE, SV) and of
disposition (DS), one dict per record, from the study file, mappings/sdtm/design.yaml (``_design``) and the trial.

SV holds one record per visits.csv row of a subject of DM; every visit there is a visit of the protocol schedule
(the loader refuses any other), so every record is planned (SVPRESP "Y") and has its TV VISITNUM. DS holds the
protocol milestones (informed consent, the statuses design.yaml lists), and one completion or discontinuation per
subject whose participation ended (the subject timeline, fhir_lupus/model/_timeline.py), its NCOMPLT term from the
coded off-study reason; a death is the disposition when it ended participation, else an OTHER EVENT after it.
Dates move by the subject's keyed offset with a registry key; EPOCH is read from the unshifted dates. With a key,
DSTERM of a disposition is its CDISC term, not the site's free text, where `registry package` drops that text
(mappings/registry/deidentification.yaml drop_extensions): the privacy rule wins, DSTERM stays filled.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any, Literal

from fhir_lupus.errors import MappingError
from fhir_lupus.model import Subject
from fhir_lupus.registry import load_rules
from fhir_lupus.sdtm._design import SdtmDesign, epochs, load_design, visit_numbers
from fhir_lupus.sdtm._sources import SdtmContext, arm_code
from fhir_lupus.sdtm._terms import SdtmTerms, load_sdtm_terms

__all__ = ["ds_rows", "se_rows", "sv_rows", "ta_rows", "te_rows", "tv_rows"]

Row = dict[str, Any]
Event = tuple[Literal["milestone", "disposition", "other"], str, str, date | None]  # DSCAT, DSDECOD, DSTERM, date


def _arms(ctx: SdtmContext) -> list[tuple[str, str]]:
    """(ARMCD, ARM) of each arm of the study file; ARMCD as DM gives it (mappings/sdtm/trial.yaml arms)."""
    return [(arm_code(arm.name, ctx), arm.name) for arm in ctx.trial.study.arms]


def ta_rows(ctx: SdtmContext) -> Iterator[Row]:
    """One row per element of each arm, in the order of design.yaml ``elements`` (no branches, no transitions
    other than going on to the next element)."""
    design = load_design(ctx.pack)
    terms = load_sdtm_terms(ctx.pack)
    for armcd, arm in _arms(ctx):
        for order, element in enumerate(design.elements, start=1):
            yield {
                "armcd": armcd,
                "arm": arm,
                "taetord": order,
                "etcd": element.etcd,
                "element": element.element,
                "tabranch": "",
                "tatrans": "",
                "epoch": terms.term(design.codelists.epoch, element.epoch).value,
            }


def te_rows(ctx: SdtmContext) -> Iterator[Row]:
    for element in load_design(ctx.pack).elements:
        yield {
            "etcd": element.etcd,
            "element": element.element,
            "testrl": element.testrl,
            "teenrl": element.teenrl,
            "tedur": element.tedur,
        }


def tv_rows(ctx: SdtmContext) -> Iterator[Row]:
    """One row per planned visit of each arm (``visit_numbers``: the study file's schedule)."""
    planned = visit_numbers(ctx)
    for armcd, arm in _arms(ctx):
        for visit in planned.values():
            yield {
                "visitnum": visit.number,
                "visit": visit.name,
                "visitdy": visit.study_day,
                "armcd": armcd,
                "arm": arm,
                "tvstrl": visit.start_rule,
            }


def sv_rows(ctx: SdtmContext) -> Iterator[Row]:
    """One row per visits.csv row of a subject of DM: the visit as TV numbers it, held on its visit_date."""
    planned = visit_numbers(ctx)
    subjects = ctx.enrolled
    for located in ctx.trial.visits:
        visit = located.record
        if visit.subject_id not in subjects:
            continue
        plan = planned.get(visit.visit_code)
        if plan is None:
            raise MappingError(f"visits.csv:{located.line}: visit {visit.visit_code} is not in the schedule")
        day = ctx.dated(visit.subject_id, visit.visit_date)
        yield {
            "usubjid": ctx.usubjid(visit.subject_id),
            "visitnum": plan.number,
            "visit": plan.name,
            "presp": "Y",
            "occur": "Y",
            "visitdy": plan.study_day,
            "start": day,
            "end": day,
        }


def se_rows(ctx: SdtmContext) -> Iterator[Row]:
    """Each subject's elements as ``epochs`` finds them, up to its last contact (the last visit held, or the end of
    participation): one ends where the next starts, the last at the end of participation (open while on study)."""
    subject_epochs = epochs(ctx)
    visited: dict[str, list[date]] = {}
    for visit in ctx.trial.visits:
        visited.setdefault(visit.record.subject_id, []).append(visit.record.visit_date)
    for sid in sorted(ctx.enrolled):
        timeline = ctx.trial.timelines.get(sid)
        last = timeline.end.day if timeline is not None and timeline.end is not None else None
        contact = max([*visited.get(sid, []), *([last] if last else [])], default=None)
        spans = [s for s in subject_epochs.spans(sid) if contact is None or s.start.date() <= contact]
        for span, following in zip(spans, [*spans[1:], None], strict=True):
            yield {
                "usubjid": ctx.usubjid(sid),
                "etcd": span.element.etcd,
                "element": span.element.element,
                "taetord": span.order,
                "epoch": span.element.epoch,
                "start": ctx.dated(sid, span.started),
                "end": ctx.dated(sid, following.started if following is not None else last),
            }


def ds_rows(ctx: SdtmContext) -> Iterator[Row]:
    """Each enrolled subject's milestones, then its disposition once its participation ended."""
    design = load_design(ctx.pack)
    terms = load_sdtm_terms(ctx.pack)
    codelists, disposition = design.codelists, design.disposition
    subject_epochs = epochs(ctx)
    consents = {s.record.subject_id: s.record.consent_on for s in ctx.trial.screening}
    for located in ctx.trial.subjects:
        subject = located.record
        sid = subject.subject_id
        if sid not in ctx.enrolled:
            continue
        events: list[Event] = []
        consent = consents.get(sid)
        if consent is not None:
            term = terms.term_for(codelists.milestone, disposition.consent).value
            events.append(("milestone", term, term, consent))
        reached: set[str] = set()
        for change in ctx.trial.status_history.get(sid, ()):
            if change.status in disposition.milestones and change.status not in reached:
                reached.add(change.status)
                term = terms.term_for(codelists.milestone, change.status).value
                events.append(("milestone", term, term, change.on))
        events.extend(_disposition(ctx, design, terms, subject))
        for category, decod, term, day in events:
            yield {
                "usubjid": ctx.usubjid(sid),
                "term": term,
                "decod": decod,
                "category": terms.term(codelists.category, disposition.categories[category]).value,
                "epoch": subject_epochs.epoch(sid, day),
                "start": ctx.dated(sid, day),
            }


def _disposition(ctx: SdtmContext, design: SdtmDesign, terms: SdtmTerms, subject: Subject) -> list[Event]:
    """The completion or discontinuation of a subject whose participation ended, and a death after it: the NCOMPLT
    term terms.yaml maps the off-study reason key to (the keys of mappings/fhir/lifecycle.yaml off_study_reasons)."""
    timeline = ctx.trial.timelines.get(subject.subject_id)
    if timeline is None or not timeline.ended:
        return []
    disposition = design.disposition

    def ncomplt(key: str) -> str:
        return terms.term_for(design.codelists.disposition, key).value

    history = ctx.trial.status_history.get(subject.subject_id, ())
    last = history[-1] if history else None
    code = subject.off_study_reason_code or (last.reason_code if last is not None else None)
    reason = subject.off_study_reason or (last.reason if last is not None else None) or ""
    died, left = timeline.died, timeline.left
    death_day = died.day if died is not None and died.exact else None
    kept = reason if ctx.key is None or disposition.free_text not in load_rules(ctx.pack).drop_extensions else ""
    death = ncomplt(disposition.death)
    if died is not None and (left is None or died.day <= left.day):
        return [("disposition", death, kept or death, death_day)]
    verbatim = {text.strip().casefold(): key for text, key in disposition.verbatim_reasons.items()}
    decod = ncomplt(code or verbatim.get(reason.strip().casefold()) or disposition.uncoded)
    events: list[Event] = [("disposition", decod, kept or decod, left.day if left is not None else None)]
    if died is not None:
        events.append(("other", death, death, death_day))
    return events
