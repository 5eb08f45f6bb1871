"""The project CodeSystem as a FHIR resource, so every code the bundle uses is resolvable on the server."""

from __future__ import annotations

from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.mappers._observation_sledai import descriptor_code

__all__ = ["map_project_codesystem"]


def map_project_codesystem(ctx: MappingContext) -> Resource:
    source = ctx.pack.codesystem
    url = ctx.pack.system_uri("project")
    concepts: list[dict[str, Any]] = [
        {"code": c.code, "display": c.display, "definition": c.definition} for c in source.concepts
    ]
    parent = next(c for c in concepts if c["code"] == "sledai-descriptor")
    parent["concept"] = [
        {
            "code": descriptor_code(d.key),
            "display": d.display,
            "definition": f"SLEDAI-2K descriptor, weight {d.weight}.",
        }
        for d in ctx.sledai.descriptors
    ]
    return {
        "resourceType": "CodeSystem",
        "id": ctx.resource_id("CodeSystem", url),
        "url": url,
        "version": ctx.pack.project.mapping_version,
        "name": source.name,
        "title": source.title,
        "status": source.status,
        "experimental": False,
        "description": (
            "Concepts of the NCT00698191 trial for which no LOINC, SNOMED CT or HL7 code was found: "
            "the SLEDAI-2K "
            "total and descriptors, regulatory T cells (CD4+CD25+FOXP3+ % of CD4+), the MSC infusion and its "
            "cyclophosphamide pretreatment, and eligibility concepts. Owned by the fhir_lupus project."
        ),
        "caseSensitive": True,
        "hierarchyMeaning": "is-a",
        "content": source.content,
        "count": len(concepts) + len(parent["concept"]),
        "concept": concepts,
    }
