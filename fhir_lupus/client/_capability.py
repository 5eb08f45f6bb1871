"""What a server can do, read from its CapabilityStatement, and the write strategy that follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fhir_lupus.errors import UnsupportedInteraction

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
    update_create: dict[str, bool] = field(default_factory=dict)  # types that state updateCreate (absent: unstated)

    @classmethod
    def from_statement(cls, statement: dict[str, Any]) -> Capabilities:
        rest: dict[str, Any] = next((r for r in statement.get("rest", []) if r.get("mode") == "server"), {})
        types: dict[str, frozenset[str]] = {}
        params: dict[str, frozenset[str]] = {}
        conditional_create, conditional_update = set(), set()
        update_create: dict[str, bool] = {}
        for resource in rest.get("resource", []):
            name = resource.get("type", "")
            if isinstance(resource.get("updateCreate"), bool):
                update_create[name] = resource["updateCreate"]
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
            update_create=update_create,
        )

    def write_strategy(self) -> WriteStrategy:
        """transaction if offered, else batch, else one request per resource.

        Whether each type can be written that way (conditionally, or by id) is decided per type by push's
        routes, which skip a type the server cannot take instead of failing the whole push.
        """
        if "transaction" in self.system_interactions:
            return "transaction"
        return "batch" if "batch" in self.system_interactions else "individual"

    def offers(self, resource_type: str, interaction: str) -> bool:
        """The type-level interaction (read, update, create, search-type...) is listed for the type."""
        return interaction in self.type_interactions.get(resource_type, frozenset())

    def searches(self, resource_type: str, param: str) -> bool:
        """The server searches ``resource_type`` by ``param`` (``_``-parameters count as known when searchable)."""
        if not self.offers(resource_type, "search-type"):
            return False
        return param.startswith("_") or param in self.search_params.get(resource_type, frozenset())

    def allows_update_create(self, resource_type: str) -> bool | None:
        """True/False when the statement says whether PUT to a new id creates; None when it is silent."""
        if not self.offers(resource_type, "update"):
            return False
        return self.update_create.get(resource_type)

    def require_search(self, resource_type: str, *params: str) -> None:
        """UnsupportedInteraction unless the server searches ``resource_type`` by every one of ``params``."""
        if "search-type" not in self.type_interactions.get(resource_type, frozenset()):
            raise UnsupportedInteraction(f"the server cannot search {resource_type}")
        known = self.search_params.get(resource_type, frozenset())
        absent = [p for p in params if p not in known and not p.startswith("_")]
        if absent:
            raise UnsupportedInteraction(f"the server cannot search {resource_type} by {', '.join(absent)}")
