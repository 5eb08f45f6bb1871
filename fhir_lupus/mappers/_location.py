"""The site profile's location -> Location (the department that runs the trial), managed by the site's
organisation: a logical reference by its identifier, since the hospital's own Organization is not ours to write."""

from __future__ import annotations

from fhir_lupus.mappers._context import MappingContext, Resource

__all__ = ["map_site_location"]


def map_site_location(ctx: MappingContext) -> Resource:
    site = ctx.site
    location = site.location
    return {
        "resourceType": "Location",
        "id": ctx.resource_id("Location", location.key),
        "identifier": [ctx.identifier("location", location.key)],
        "status": "active",
        "name": location.name,
        "mode": "instance",
        "address": {"city": location.city, "state": location.state, "country": location.country},
        "managingOrganization": {
            "identifier": ctx.identifier("organization", site.organization.key),
            "display": site.organization.name,
        },
    }
