"""Adverse event -> AdverseEvent (R4), shaped after the HL7 Adverse Event Clinical Research IG; R5 reshaping.

Every code, extension URL and rule is in mappings/terminology/adverse_events.yaml; the choices are explained in
docs/terminology.md ("Adverse events"). R4 elements carry what R4 defines (seriousness, severity, outcome,
suspectEntity with causality, study); the IG's extensions carry the CTCAE grade, the seriousness criteria and the
resolution date. R4 ``AdverseEvent.identifier`` is a single Identifier: the sync layer reads it either way.

A suspected study treatment points at the resources the mapping made from its procedures.csv row: the MSC
infusion Procedure; for cyclophosphamide the MedicationAdministration when the mapping produces one, and the
pretreatment Procedure. ``mapped`` (the ``Type/id`` references already mapped) says which exist.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

from fhir_lupus.errors import MappingError
from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.mappers._patient import patient_identifier
from fhir_lupus.model import CheckedAdverseEvent, Subject
from fhir_lupus.terminology import AdverseEventTerms, load_adverse_event_terms

__all__ = ["adverse_event_to_r5", "map_adverse_event", "suspect_references"]


def _terms(ctx: MappingContext) -> AdverseEventTerms:
    return load_adverse_event_terms(ctx.pack)


def _coding(ctx: MappingContext, system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": ctx.pack.system_uri(system), "code": code}
    if display:
        coding["display"] = display
    return coding


def suspect_references(
    checked: CheckedAdverseEvent, ctx: MappingContext, mapped: Collection[str]
) -> list[tuple[str, dict[str, str]]]:
    """(suspect key, reference) for each resource that stands for a suspected treatment, in mapping-file order.

    Raises MappingError when no resource of a suspect was mapped (the row is then refused, never half-written).
    """
    terms = _terms(ctx)
    found: list[tuple[str, dict[str, str]]] = []
    for suspect, procedure_id in checked.suspects:
        refs = [ctx.reference(kind, ctx.nct_id, procedure_id) for kind in terms.suspects[suspect].resources]
        present = [ref for ref in refs if ref["reference"] in mapped]
        if not present:
            raise MappingError(f"suspect {suspect} ({procedure_id}) was not mapped to any of its resources")
        found += [(suspect, ref) for ref in present]
    return found


def map_adverse_event(
    checked: CheckedAdverseEvent, subject: Subject, ctx: MappingContext, *, mapped: Collection[str]
) -> Resource:
    terms, event = _terms(ctx), checked.event
    urls = terms.extensions.r4
    grade = terms.grades[event.grade]
    grade_concept: dict[str, Any] = {
        "coding": [_coding(ctx, terms.grade_system, grade.code, grade.display)],
        "text": terms.grade_text_with_term.format(display=grade.display, ctcae_term=event.ctcae_term)
        if event.ctcae_term
        else grade.display,
    }
    extensions: list[dict[str, Any]] = [{"url": urls.grade, "valueCodeableConcept": grade_concept}]
    for key in event.seriousness_criteria:
        criterion = terms.seriousness_criteria[key]
        extensions.append(
            {
                "url": urls.seriousness_criteria,
                "extension": [
                    {
                        "url": "criterionCode",
                        "valueCodeableConcept": {
                            "coding": [_coding(ctx, "nci-thesaurus", criterion.code, criterion.display)]
                        },
                    },
                    {"url": "criterionPresent", "valueBoolean": True},
                ],
            }
        )
    if event.resolved_on and urls.resolved_date:
        extensions.append({"url": urls.resolved_date, "valueDateTime": event.resolved_on.isoformat()})

    codings = []
    if event.meddra_code:
        codings.append(_coding(ctx, terms.meddra_system, event.meddra_code))
    if event.ctcae_code:
        codings.append(_coding(ctx, terms.ctcae_system, event.ctcae_code, event.ctcae_term))
    event_concept: dict[str, Any] = {"coding": codings, "text": event.term} if codings else {"text": event.term}

    seriousness = terms.seriousness[event.serious]
    severity = grade.severity
    outcome = terms.outcomes[event.outcome]

    identifier = ctx.identifier("adverse_event", event.event_id)
    resource: Resource = {
        "resourceType": "AdverseEvent",
        # the id is the key servers without an identifier search find it by (read, then PUT): made from the whole
        # business key, system included (as the Patient's), so another identifier system never meets this id
        "id": ctx.resource_id("AdverseEvent", identifier["system"], identifier["value"]),
        "extension": extensions,
        "identifier": identifier,
        "actuality": "actual",
        "event": event_concept,
        "subject": ctx.patient_ref(patient_identifier(subject, ctx)),
        "date": event.onset_on.isoformat(),
    }
    if event.recorded_on:
        resource["recordedDate"] = event.recorded_on.isoformat()
    resource["seriousness"] = {
        "coding": [_coding(ctx, seriousness.system, seriousness.code, seriousness.display)],
        "text": seriousness.display,
    }
    resource["severity"] = {
        "coding": [_coding(ctx, terms.severity.system, severity, terms.severity.displays[severity])],
    }
    resource["outcome"] = {"coding": [_coding(ctx, terms.outcome_system, outcome.r4, outcome.r4_display)]}
    if event.reporter:
        resource["recorder"] = {"display": event.reporter}
    if event.causality is not None:
        resource["suspectEntity"] = [
            {"instance": ref, "causality": [_causality(ctx, terms, event.causality)]}
            for _suspect, ref in suspect_references(checked, ctx, mapped)
        ]
    resource["study"] = [ctx.study_ref()]
    return resource


def _causality(ctx: MappingContext, terms: AdverseEventTerms, key: str) -> dict[str, Any]:
    entry = terms.causality[key]
    codings = [_coding(ctx, terms.causality_system, entry.nci, entry.nci_display)]
    if entry.who_umc:
        codings.append(_coding(ctx, terms.who_umc_system, entry.who_umc, entry.who_umc_display))
    method = terms.causality_method
    return {
        "assessment": {"coding": codings, "text": key},
        "method": {"coding": [_coding(ctx, method.system, method.code, method.display)]},
    }


def adverse_event_to_r5(resource: Resource, ctx: MappingContext) -> Resource:
    """R4 AdverseEvent -> R5: status, code, identifier list, outcome list, causality, and onset to resolution as
    occurrencePeriod (R5 has no resolution date element; the R5 IG profiles occurrence[x] as a Period).

    Seriousness and causality codes take R5's spelling (``AdverseEventTerms.r5_codes``: THO 5.x lower-cases them)."""
    terms, resource = _terms(ctx), copy.deepcopy(resource)
    r4_urls, r5_urls = terms.extensions.r4, terms.extensions.r5
    outcome_system = ctx.pack.system_uri(terms.outcome_system)
    outcome_code = next(c["code"] for c in resource["outcome"]["coding"] if c["system"] == outcome_system)
    outcome = next(o for o in terms.outcomes.values() if o.r4 == outcome_code)
    if outcome.nci:
        resource["outcome"]["coding"].append(_coding(ctx, "nci-thesaurus", outcome.nci, outcome.nci_display))
    r5_codes = {ctx.pack.system_uri(system): codes for system, codes in terms.r5_codes().items()}
    concepts = [resource.get("seriousness", {})] + [
        concept
        for suspect in resource.get("suspectEntity", [])
        for causality in suspect.get("causality", [])
        for concept in (causality.get("assessment", {}), causality.get("method", {}))
    ]
    for coding in (coding for concept in concepts for coding in concept.get("coding", [])):
        coding["code"] = r5_codes.get(coding["system"], {}).get(coding["code"], coding["code"])
    rename = {r4_urls.grade: r5_urls.grade, r4_urls.seriousness_criteria: r5_urls.seriousness_criteria}
    extensions = []
    occurrence = {"start": resource.pop("date")}
    for extension in resource.pop("extension", []):
        if extension["url"] == r4_urls.resolved_date:
            occurrence["end"] = extension["valueDateTime"]
        else:
            extensions.append({**extension, "url": rename.get(extension["url"], extension["url"])})
    severity = resource.pop("severity", None)
    if severity and r5_urls.severity:
        extensions.append({"url": r5_urls.severity, "valueCodeableConcept": severity})
    reshaped: Resource = {
        "resourceType": "AdverseEvent",
        "id": resource.pop("id"),
        "extension": extensions,
        "identifier": [resource.pop("identifier")],
        "status": outcome.r5_status,
        "actuality": resource.pop("actuality"),
        "code": resource.pop("event"),
        "subject": resource.pop("subject"),
        "occurrencePeriod": occurrence,
    }
    del resource["resourceType"]
    if "outcome" in resource:
        resource["outcome"] = [resource["outcome"]]
    for suspect in resource.get("suspectEntity", []):
        suspect["instanceReference"] = suspect.pop("instance")
        causality = suspect.pop("causality", [])
        if causality:
            suspect["causality"] = {
                "assessmentMethod": causality[0]["method"],
                "entityRelatedness": causality[0]["assessment"],
            }
    if not extensions:
        del reshaped["extension"]
    return {**reshaped, **resource}
