"""Bulk Data Access ($export) as it comes over the wire: the kick-off request, the status answers, the manifest.

Pure shapes and parsing (HL7 FHIR Bulk Data Access IG, v2): ``FhirClient`` sends the requests, and
``fhir_lupus.pull._bulk`` drives a job from kick-off to the last file. A kick-off that names patients goes as a
POST of a Parameters resource (the only way the IG allows a ``patient`` list); one without goes as a GET, which
every server that exports supports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhir_lupus.errors import InvalidResponse

__all__ = ["NDJSON", "ExportFile", "ExportManifest", "ExportRequest", "ExportStatus"]

NDJSON = "application/fhir+ndjson"


@dataclass(frozen=True)
class ExportRequest:
    """What to export: at which level (``$export``, ``Patient/$export``, ``Group/<id>/$export``), and the filters."""

    path: str  # relative to the server's base
    types: tuple[str, ...] = ()  # _type
    type_filters: tuple[str, ...] = ()  # _typeFilter, each ``Type?query``
    since: str | None = None  # _since
    patients: tuple[str, ...] = ()  # patient (``Patient/<id>``): a POST kick-off

    def query(self) -> dict[str, list[str]]:
        """The GET kick-off's parameters (``_typeFilter`` repeated: one query each, as the IG's v2 allows)."""
        params: dict[str, list[str]] = {"_outputFormat": [NDJSON]}
        if self.types:
            params["_type"] = [",".join(self.types)]
        if self.type_filters:
            params["_typeFilter"] = list(self.type_filters)
        if self.since:
            params["_since"] = [self.since]
        return params

    def parameters(self) -> dict[str, Any]:
        """The POST kick-off's Parameters resource: the same parameters, and one ``patient`` per Patient."""
        parameter: list[dict[str, Any]] = [
            {"name": name, "valueInstant" if name == "_since" else "valueString": value}  # the IG's types
            for name, values in self.query().items()
            for value in values
        ]
        parameter.extend({"name": "patient", "valueReference": {"reference": ref}} for ref in self.patients)
        return {"resourceType": "Parameters", "parameter": parameter}

    def describe(self) -> str:
        """The request in a line, for the journal's key and for people (the patient list as its size)."""
        parts = [self.path, *(f"{name}={','.join(values)}" for name, values in sorted(self.query().items()))]
        if self.patients:
            parts.append(f"patient={','.join(sorted(self.patients))}")
        return "&".join(parts)


@dataclass(frozen=True)
class ExportFile:
    """One file of the manifest's ``output`` (or ``error``: OperationOutcomes about the export)."""

    type: str
    url: str
    count: int | None = None


@dataclass(frozen=True)
class ExportManifest:
    transaction_time: str
    request: str
    requires_access_token: bool
    output: tuple[ExportFile, ...]
    error: tuple[ExportFile, ...]
    # Bundles of the resources deleted since ``_since`` (Bulk Data 2.0 ``deleted``); None when the manifest has no
    # such key, which a server may also mean as "none", so a reader cannot tell absence from an empty list
    deleted: tuple[ExportFile, ...] | None = None

    @classmethod
    def from_json(cls, document: Mapping[str, Any], *, url: str) -> ExportManifest:
        """The complete-status body; InvalidResponse naming the field when it is not a manifest."""
        if not isinstance(document.get("output"), list):
            raise InvalidResponse("export manifest without an 'output' list", url=url)

        def files(key: str) -> tuple[ExportFile, ...]:
            found = []
            for index, item in enumerate(document.get(key) or []):
                if not isinstance(item, dict) or not item.get("url") or not item.get("type"):
                    raise InvalidResponse(f"export manifest: {key}[{index}] has no 'type' or 'url'", url=url)
                count = item.get("count")
                found.append(ExportFile(str(item["type"]), str(item["url"]), int(count) if count is not None else None))
            return tuple(found)

        return cls(
            transaction_time=str(document.get("transactionTime") or ""),
            request=str(document.get("request") or ""),
            requires_access_token=bool(document.get("requiresAccessToken", True)),
            output=files("output"),
            error=files("error"),
            deleted=files("deleted") if isinstance(document.get("deleted"), list) else None,
        )


@dataclass(frozen=True)
class ExportStatus:
    """One answer of the status URL: still running (with the server's hints), or done with its manifest."""

    manifest: ExportManifest | None  # None while the job runs
    retry_after: float | None = None  # seconds the server asks us to wait before asking again
    progress: str | None = None  # X-Progress, free text ("50% complete", "Build in progress")

    @property
    def done(self) -> bool:
        return self.manifest is not None
