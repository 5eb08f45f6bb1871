"""What every mapper needs: the study, the mapping pack, deterministic ids and common building blocks.

Ids are UUIDv5 of the resource type and its business key, so the same input always yields the same
resources (and the same bundle bytes). Mappers reference each other as ``Type/id``; the bundle builder
turns those into ``urn:uuid:`` references for a transaction.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from fhir_lupus._resource import Resource
from fhir_lupus.model import ProtocolVisit, StudyDefinition
from fhir_lupus.scoring import SledaiDefinition
from fhir_lupus.terminology import CodeRef, FhirCodes, MappingPack, SiteProfile, UnitConverter, load_fhir_codes

__all__ = ["ID_NAMESPACE", "MappingContext", "Resource", "event_timing", "fhir_datetime"]

# Fixed namespace of this project's UUIDv5 ids: changing it changes every id, so it never changes.
ID_NAMESPACE = uuid.UUID("6f1d7c4e-2b7a-5c1e-9a53-4c2f1b0d8e71")


def fhir_datetime(value: datetime | date) -> str:
    """ISO 8601 as FHIR wants it; date-times keep their offset (the loader requires one)."""
    return value.isoformat()


def event_timing(element: str, started: datetime, ended: datetime | None) -> dict[str, Any]:
    """``{element}Period`` when the event has an end, else ``{element}DateTime`` (performed[x], effective[x])."""
    if ended is None:
        return {f"{element}DateTime": fhir_datetime(started)}
    return {f"{element}Period": {"start": fhir_datetime(started), "end": fhir_datetime(ended)}}


@functools.lru_cache(maxsize=4096)
def _uuid5(name: str) -> str:
    """Cached: every Observation names its study, patient and visit again (a SHA-1 each, a third of a mapper)."""
    return str(uuid.uuid5(ID_NAMESPACE, name))


@dataclass(frozen=True)
class MappingContext:
    study: StudyDefinition
    pack: MappingPack
    units: UnitConverter
    sledai: SledaiDefinition

    @property
    def nct_id(self) -> str:
        return self.study.nct_id

    @property
    def site(self) -> SiteProfile:
        """The site the resources are written for (its organisation, location, MRN system)."""
        return self.pack.site

    @property
    def codes(self) -> FhirCodes:
        """The codes and units mappers write on their own (mappings/fhir/codes.yaml)."""
        return load_fhir_codes(self.pack)

    def resource_id(self, resource_type: str, *key: str) -> str:
        return _uuid5("|".join((resource_type, *key)))

    def protocol_visit(self, code: str) -> ProtocolVisit:
        """``study.visit(code)`` (KeyError when the schedule has no such visit), without expanding the schedule
        again for every Encounter: it is expanded once per context."""
        try:
            return self._protocol_visits[code]
        except KeyError:
            raise KeyError(code) from None

    @functools.cached_property
    def _protocol_visits(self) -> dict[str, ProtocolVisit]:
        visits: dict[str, ProtocolVisit] = {}
        for visit in self.study.visits():
            visits.setdefault(visit.code, visit)  # the first of a code, as ``study.visit`` finds it
        return visits

    def reference(self, resource_type: str, *key: str, display: str | None = None) -> dict[str, str]:
        ref = {"reference": f"{resource_type}/{self.resource_id(resource_type, *key)}"}
        if display:
            ref["display"] = display
        return ref

    def identifier(self, kind: str, value: str, **extra: Any) -> dict[str, Any]:
        return {"system": self.pack.identifier_system(kind, study=self.nct_id), "value": value, **extra}

    # business keys of the shared resources, in one place so references and resources agree
    def study_ref(self) -> dict[str, str]:
        return self.reference("ResearchStudy", self.nct_id)

    def patient_ref(self, patient_identifier: dict[str, Any]) -> dict[str, str]:
        return self.reference("Patient", patient_identifier["system"], patient_identifier["value"])

    def research_subject_ref(self, subject_id: str) -> dict[str, str]:
        return self.reference("ResearchSubject", self.nct_id, subject_id)

    def encounter_ref(self, subject_id: str, visit_code: str) -> dict[str, str]:
        return self.reference("Encounter", self.nct_id, subject_id, visit_code)

    def study_extension(self) -> dict[str, Any]:
        """The standard workflow-researchStudy extension that ties an event resource to the study."""
        return {"url": self.pack.extension_url("workflow_research_study"), "valueReference": self.study_ref()}

    def concept(self, ref: CodeRef) -> dict[str, Any]:
        concept: dict[str, Any] = {"coding": [self.pack.coding(ref)]}
        if ref.text or ref.display:
            concept["text"] = ref.text or ref.display
        return concept

    def project_concept(self, code: str) -> dict[str, Any]:
        coding = self.pack.coding(CodeRef(system="project", code=code))
        return {"coding": [coding], "text": coding["display"]}

    def quantity(self, value: float | int, ucum: str) -> dict[str, Any]:
        return {
            "value": value,
            "unit": self.units.display(ucum),
            "system": self.pack.system_uri("ucum"),
            "code": ucum,
        }
