"""Dataset-JSON 1.1 (CDISC, 2024): a dataset as one JSON document, columns described, rows as lists.

Written here (a few dozen lines of the standard library) rather than with a library: the one that exists is AGPL.
The engine that checks it (CDISC CORE) validates each file against the Dataset-JSON schema and reads a file that
fails it as an empty dataset, so tests compare the record counts the check reports with what was written.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from fhir_lupus._scratch import write_atomic
from fhir_lupus._version import __version__
from fhir_lupus.sdtm._engine import Dataset

__all__ = ["dataset_json", "write_dataset_json"]

DATASET_JSON_VERSION = "1.1.0"
_TYPES = {"text": "string", "integer": "integer", "float": "double"}


def dataset_json(dataset: Dataset, *, study_oid: str, created: datetime, originator: str) -> dict[str, Any]:
    """The Dataset-JSON document of ``dataset``; item OIDs are those of define.xml (``IT.<domain>.<variable>``)."""
    spec = dataset.spec
    key_order = {name: index + 1 for index, name in enumerate(spec.keys)}
    columns = []
    for variable in spec.variables:
        column: dict[str, Any] = {
            "itemOID": f"IT.{spec.domain}.{variable.name}",
            "name": variable.name,
            "label": variable.label,
            "dataType": _TYPES[variable.type],
        }
        if variable.type == "text":
            column["length"] = max([1, *(len(str(r[variable.name] or "")) for r in dataset.records)])
        if variable.name in key_order:
            column["keySequence"] = key_order[variable.name]
        columns.append(column)
    names = [v.name for v in spec.variables]
    return {
        "datasetJSONCreationDateTime": created.isoformat(timespec="seconds"),
        "datasetJSONVersion": DATASET_JSON_VERSION,
        "fileOID": f"FL.{study_oid}.{spec.domain}",
        "originator": originator,
        "sourceSystem": {"name": "fhir-lupus", "version": __version__},
        "studyOID": study_oid,
        "metaDataVersionOID": f"MDV.{study_oid}",
        "metaDataRef": "define.xml",
        "itemGroupOID": f"IG.{spec.domain}",
        "records": len(dataset.records),
        "name": spec.domain,
        "label": spec.label,
        "columns": columns,
        "rows": [[record[name] for name in names] for record in dataset.records],
    }


def write_dataset_json(dataset: Dataset, path: Path, **document: Any) -> Path:
    """``dataset`` as Dataset-JSON at ``path`` (written whole, then renamed into place)."""
    text = json.dumps(dataset_json(dataset, **document), ensure_ascii=False, separators=(",", ":"))
    write_atomic(path, text)
    return path
