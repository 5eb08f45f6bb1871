"""Study sponsor -> Organization."""

from __future__ import annotations

from fhir_lupus.mappers._context import MappingContext, Resource

__all__ = ["map_sponsor_organization"]


def map_sponsor_organization(ctx: MappingContext) -> Resource:
    sponsor = ctx.study.sponsor
    return {
        "resourceType": "Organization",
        "id": ctx.resource_id("Organization", sponsor.key),
        "identifier": [ctx.identifier("organization", sponsor.key)],
        "active": True,
        "name": sponsor.name,
    }
