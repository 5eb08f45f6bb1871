"""Study site -> Location (the department that runs the trial)."""

from __future__ import annotations

from fhir_lupus.mappers._context import MappingContext, Resource

__all__ = ["map_site_location"]


def map_site_location(ctx: MappingContext) -> Resource:
    site = ctx.study.site
    return {
        "resourceType": "Location",
        "id": ctx.resource_id("Location", site.key),
        "identifier": [ctx.identifier("location", site.key)],
        "status": "active",
        "name": site.name,
        "mode": "instance",
        "address": {"city": site.city, "state": site.state, "country": site.country},
    }
