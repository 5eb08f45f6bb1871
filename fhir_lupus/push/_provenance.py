"""One Provenance per push that wrote something: who (fhir_lupus, mapping version), from what source, which
resource versions. The push id goes into ``meta.tag``, so the write is idempotent where the server allows:
a conditional create on ``_tag``, else a PUT to an id derived from the push id (update-as-create), else a
plain create that is not retried. The references wait in the journal until the Provenance exists, so a push
whose Provenance failed (or that was killed) gets it from the next push.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from fhir_lupus.client import Capabilities, FhirClient, UnknownSearchParameter, location_id
from fhir_lupus.terminology import CodeRef, MappingPack, load_pack

__all__ = ["ProvenanceTemplate", "load_provenance_template", "provenance_resource", "write_provenance"]

# Provenance ids derived from push ids (uuid5 in this namespace): a repeated PUT lands on the same resource.
_PUSH_NAMESPACE = uuid.UUID("5f0c9a3e-1d7b-4c52-9e43-6a3b1f2d8c71")


class ProvenanceTemplate(BaseModel):
    """mappings/fhir/provenance.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_type: CodeRef
    agent_display: str
    activity_text: str


def load_provenance_template(pack: MappingPack | None = None) -> ProvenanceTemplate:
    return (pack or load_pack()).load(ProvenanceTemplate, "fhir/provenance.yaml")


def provenance_resource(
    push_id: str,
    targets: list[str],
    *,
    source: str,
    mapping_version: str,
    pack: MappingPack,
    template: ProvenanceTemplate,
    recorded: datetime | None = None,
) -> dict[str, Any]:
    """The Provenance of one push; ``targets`` are ``Type/id[/_history/v]`` references."""
    return {
        "resourceType": "Provenance",
        "meta": {"tag": [{"system": pack.identifier_system("push", study=""), "code": push_id}]},
        "target": [{"reference": reference} for reference in targets],
        "recorded": (recorded or datetime.now(UTC)).isoformat(timespec="seconds"),
        "activity": {"text": template.activity_text.format(push_id=push_id)},
        "agent": [
            {
                "type": {"coding": [pack.coding(template.agent_type)]},
                "who": {"display": template.agent_display.format(mapping_version=mapping_version)},
            }
        ],
        "entity": [{"role": "source", "what": {"display": source}}],
    }


def write_provenance(client: FhirClient, capabilities: Capabilities, provenance: dict[str, Any], push_id: str) -> str:
    """Write it once even if the request is repeated; ``Provenance/<id>``."""
    tag = provenance["meta"]["tag"][0]
    if "Provenance" in capabilities.conditional_create and capabilities.searches("Provenance", "_tag"):
        try:
            response = client.conditional_create(provenance, f"_tag={tag['system']}|{tag['code']}")
        except UnknownSearchParameter:
            response = None  # a server that lists _tag but refuses it: the next way
        if response is not None:
            stored = response.json() if response.content else {}
            server_id = location_id(response.headers.get("Location", ""), "Provenance") or stored.get("id")
            if server_id:
                return f"Provenance/{server_id}"
    if capabilities.allows_update_create("Provenance") is not False and capabilities.offers("Provenance", "update"):
        provenance_id = str(uuid.uuid5(_PUSH_NAMESPACE, push_id))
        client.put(f"Provenance/{provenance_id}", {**provenance, "id": provenance_id})
        return f"Provenance/{provenance_id}"
    created = client.create(provenance)
    return f"Provenance/{created['id']}"
