"""What a server can do, read from its CapabilityStatement, and the write strategy that follows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fhir_lupus.client._errors import UnsupportedInteraction

__all__ = ["Capabilities", "WriteStrategy"]

WriteStrategy = Literal["transaction", "batch", "individual"]


@dataclass(frozen=True)
class Capabilities:
    fhir_version: str
    system_interactions: frozenset[str]
    type_interactions: dict[str, frozenset[str]]
    conditional_create: frozenset[str]
    conditional_update: frozenset[str]
    search_params: dict[str, frozenset[str]]

    @classmethod
    def from_statement(cls, statement: dict[str, Any]) -> Capabilities:
        rest: dict[str, Any] = next((r for r in statement.get("rest", []) if r.get("mode") == "server"), {})
        types: dict[str, frozenset[str]] = {}
        params: dict[str, frozenset[str]] = {}
        conditional_create, conditional_update = set(), set()
        for resource in rest.get("resource", []):
            name = resource.get("type", "")
            types[name] = frozenset(i.get("code", "") for i in resource.get("interaction", []))
            params[name] = frozenset(p.get("name", "") for p in resource.get("searchParam", []))
            if resource.get("conditionalCreate"):
                conditional_create.add(name)
            if resource.get("conditionalUpdate"):
                conditional_update.add(name)
        return cls(
            fhir_version=str(statement.get("fhirVersion", "")),
            system_interactions=frozenset(i.get("code", "") for i in rest.get("interaction", [])),
            type_interactions=types,
            conditional_create=frozenset(conditional_create),
            conditional_update=frozenset(conditional_update),
            search_params=params,
        )

    def write_strategy(self, resource_types: set[str]) -> WriteStrategy:
        """transaction if offered, else batch, else one conditional write per resource.

        Raises UnsupportedInteraction naming what is missing when none of the three can carry the writes.
        """
        if "transaction" in self.system_interactions:
            return "transaction"
        missing = [
            f"{name} ({'conditional create' if name == 'Patient' else 'conditional update'})"
            for name in sorted(resource_types)
            if not self.can_write(name)
        ]
        if missing:
            raise UnsupportedInteraction(
                "the server offers neither transaction nor the per-resource writes needed: " + "; ".join(missing)
            )
        return "batch" if "batch" in self.system_interactions else "individual"

    def can_write(self, resource_type: str) -> bool:
        """Patients are conditional creates (never overwrite a hospital record); others, updates."""
        offered = self.type_interactions.get(resource_type, frozenset())
        if resource_type == "Patient":
            return "create" in offered and resource_type in self.conditional_create
        return "update" in offered and resource_type in self.conditional_update

    def require_search(self, resource_type: str, *params: str) -> None:
        """UnsupportedInteraction unless the server searches ``resource_type`` by every one of ``params``."""
        if "search-type" not in self.type_interactions.get(resource_type, frozenset()):
            raise UnsupportedInteraction(f"the server cannot search {resource_type}")
        known = self.search_params.get(resource_type, frozenset())
        absent = [p for p in params if p not in known and not p.startswith("_")]
        if absent:
            raise UnsupportedInteraction(f"the server cannot search {resource_type} by {', '.join(absent)}")
