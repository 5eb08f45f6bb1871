"""What an incremental pull removes: the results deleted on the server since the search start.

A search by ``_lastUpdated`` brings what changed, never what was deleted. So an incremental pull also asks:
- the type-level history, ``Observation/_history?_since=<the search start>`` (paged through its next links),
  when the CapabilityStatement offers ``history-type`` for Observation (HAPI does); or, with ``--bulk``, the
  ``deleted`` part of the export manifest (Bundles of DELETE entries). An id whose latest entry is a deletion
  is deleted (``deleted_ids``): deleted and then created again is not;
- else (the statement does not offer it, as Medplum's, or the request is refused), a listing of the ids of
  every Observation of each subject searched (``listed_ids``): what the table holds of those subjects and the
  listing lacks is gone. The listing asks ``_elements=id``: HAPI then sends ids and meta only, and Medplum
  ignores it and sends whole resources (measured on both), which is slower but the same answer.
What is removed is decided by the store's merge (``_store.Prune``), in the transaction that moves the mark.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fhir_lupus.client import Capabilities, FatalHttpError, FhirClient
from fhir_lupus.pull._search import PAGE, Search
from fhir_lupus.pull._search_pass import patient_param
from fhir_lupus.pull._state import PassState

__all__ = ["deleted_ids", "history_deletions", "listed_ids"]

_HISTORY = "Observation/_history"
_VERSION = re.compile(r"/_history/([^/?]+)")
_ETAG = re.compile(r'^(?:W/)?"?([^"]+)"?$')
_STILL = frozenset({401, 408, 429})  # not a refusal of history itself: raised as any failed request is
_NO_HISTORY = (
    "Observation/_history {why}: deletions are found by listing the Observation ids of the {count} subjects "
    "searched; what the table holds of them and the listing lacks is removed"
)


def deleted_ids(entries: Iterable[dict[str, Any]], resource_type: str = "Observation") -> set[str]:
    """The ids of ``resource_type`` whose latest entry among ``entries`` (history or transaction Bundle entries)
    is a deletion: ``request.method`` DELETE, ``response.status`` 410, or no resource.

    The latest entry of an id is the one with the highest version when the entries carry numbers, else the
    first one (a history lists the newest first); so a result deleted and then created again is not deleted.
    """
    latest: dict[str, tuple[int | None, bool]] = {}  # id -> (its version, deleted)
    for entry in entries:
        found = _entry_id(entry, resource_type)
        if found is None:
            continue
        version = _version(entry)
        resource = entry.get("resource")
        request, response = entry.get("request") or {}, entry.get("response") or {}
        deleted = (
            str(request.get("method", "")).upper() == "DELETE"
            or str(response.get("status", "")).startswith("410")
            or not isinstance(resource, dict)
        )
        kept = latest.get(found)
        if kept is None or (version is not None and kept[0] is not None and version > kept[0]):
            latest[found] = (version, deleted)
    return {found for found, (_, deleted) in latest.items() if deleted}


def history_deletions(
    client: FhirClient, caps: Capabilities, since: str, state: PassState, *, subjects: int
) -> set[str] | None:
    """The Observation ids deleted since ``since`` by the type-level history; None when the server does not offer
    it or refuses it, noted (the caller then lists the ids of the ``subjects`` searched)."""
    if not caps.offers("Observation", "history-type"):
        state.note_once(_NO_HISTORY.format(why="is not offered by the server (CapabilityStatement)", count=subjects))
        return None
    pages = client.search_pages(_HISTORY, {"_since": since, "_count": PAGE})
    try:
        return deleted_ids(entry for page in pages for entry in page.get("entry", []))
    except FatalHttpError as exc:
        if exc.status is None or exc.status in _STILL or not (400 <= exc.status < 500 or exc.status == 501):
            raise
        state.note_once(_NO_HISTORY.format(why=f"is refused by the server ({exc.status})", count=subjects))
        return None


def listed_ids(client: FhirClient, caps: Capabilities, patient_refs: Iterable[str]) -> frozenset[str]:
    """The ids of every Observation of each of ``patient_refs`` (``Patient/<id>``), one search per subject.

    Every Observation, not only the lab results: a listing larger than the table's is safe (only an id it lacks
    is removed), and a search without category or code costs the server least.
    """
    param = patient_param(caps)
    ids: set[str] = set()
    for patient_ref in patient_refs:
        search = Search("Observation").where(caps, **{param: patient_ref}).with_params(_elements="id", _count=PAGE)
        ids.update(str(found.get("id")) for found in search.fetch(client))
    return frozenset(ids)


def _entry_id(entry: dict[str, Any], resource_type: str) -> str | None:
    """The logical id an entry is about, if it is of ``resource_type``: its resource's, else its request URL's
    (``Observation/1/_history/2``), else its fullUrl's."""
    resource = entry.get("resource")
    if isinstance(resource, dict) and resource.get("id"):
        return str(resource["id"]) if resource.get("resourceType") == resource_type else None
    for url in ((entry.get("request") or {}).get("url"), entry.get("fullUrl")):
        if not url:
            continue
        parts = str(url).split("?")[0].split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
            return parts[-1]
    return None


def _version(entry: dict[str, Any]) -> int | None:
    """The entry's version number, when it carries one (request URL, meta.versionId, or the response's ETag)."""
    request, response = entry.get("request") or {}, entry.get("response") or {}
    texts = [
        m.group(1) if (m := _VERSION.search(str(request.get("url", "")))) else None,
        ((entry.get("resource") or {}).get("meta") or {}).get("versionId"),
        m.group(1) if (m := _ETAG.match(str(response.get("etag", "")))) else None,
    ]
    for text in texts:
        if text is not None and str(text).isdigit():
            return int(text)
    return None
