"""Subject -> Patient: identified by the hospital MRN when known, else by a pseudonym.

With an MRN the Patient carries the hospital's identifier system, so a conditional create on it links to the
existing hospital record instead of creating a duplicate. No name, address or contact is ever emitted: the
trial holds none, and a registry package must stay de-identified.
"""

from __future__ import annotations

from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.model import Subject

__all__ = ["map_patient", "patient_identifier"]


def patient_identifier(subject: Subject, ctx: MappingContext) -> dict[str, Any]:
    """The one identifier the Patient is matched on (MRN first)."""
    if subject.mrn:
        mr_type = {
            "coding": [
                {
                    "system": ctx.pack.system_uri("identifier-type"),
                    "code": ctx.pack.project.extensions["mrn_type"],
                }
            ]
        }
        mrn_system = ctx.pack.identifier_system("mrn", study=ctx.nct_id)  # the site profile's
        return {"use": "usual", "type": mr_type, "system": mrn_system, "value": subject.mrn}
    assert subject.pseudonym, "the Subject model guarantees an mrn or a pseudonym"
    return {
        "use": "secondary",
        "system": ctx.pack.identifier_system("pseudonym", study=ctx.nct_id),
        "value": subject.pseudonym,
    }


def map_patient(subject: Subject, ctx: MappingContext) -> Resource:
    identifier = patient_identifier(subject, ctx)
    return {
        "resourceType": "Patient",
        "id": ctx.patient_ref(identifier)["reference"].split("/")[1],
        "identifier": [identifier],
        "gender": subject.sex,
        "birthDate": subject.birth_date,
    }
