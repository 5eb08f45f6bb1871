"""What changed on the server among our resources since the last complete push: a look or two per type.

A push that trusts the journal for a subject whose inputs did not change (``_settled``) must still see an edit
made on the server, as a push that looks each resource up would. So it asks, per type the journal holds, what
has a ``_lastUpdated`` after the last complete push's start (``Mark.since``), and only counts first
(``_summary=count``): nothing, and the type is settled in one small answer. Something: if it is exactly as many
as the journal says we wrote since (the last push's own writes), only what changed after that push's end
(``Mark.until``) is left to see, counted again and listed when not nothing; otherwise the whole window is listed.
A listing (``_elements``: ids, versions, keys) is compared with the journal: a resource of ours at a version the
journal did not record was changed by someone else, a resource not ours carrying one of our keys is a twin. Both
come back as keys the plan looks up and compares as every push always has (update, conflict, final version kept).

What a count cannot show: an edit, during the last push, of a resource that push had already written (the
count stays that push's own). The window after its end catches every edit made since. ``None`` when the server
cannot answer (``_lastUpdated`` not searchable, or any of these searches refused): then nothing is trusted and
every subject is mapped.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir_lupus.client import AuthenticationRefused, FatalHttpError, FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.push._lookup import keys_of
from fhir_lupus.push._settled import Mark, SettledStore

__all__ = ["LOCAL_MARGIN", "MARGIN", "changed_since", "mark_of"]

MARGIN = timedelta(seconds=5)  # a push's start: its first answer's Date (truncated to the second; a proxy's)
END_MARGIN = timedelta(seconds=1)  # a push's end: its last answer's Date, after every write it made committed
LOCAL_MARGIN = timedelta(minutes=5)  # no Date from the server: our own clock, which may be off from its clock
PAGE = 1000

Key = tuple[str, str]


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def mark_of(push_id: str, first: datetime | None, last: datetime | None, local_start: datetime) -> Mark:
    """The mark a complete push leaves for the next look: its start and end on the server's clock (the ``Date``
    of its first and last answers) moved back by their margins; without a ``Date``, its start on our clock moved
    back by ``LOCAL_MARGIN`` for both (then the whole window is listed whenever anything changed in it)."""
    if first is None or last is None:
        since = _instant(local_start - LOCAL_MARGIN)
        return Mark(push_id, since, since)
    return Mark(push_id, _instant(first - MARGIN), _instant(last - END_MARGIN))


def _elements(resource_type: str) -> str:
    return "identifier,url" if resource_type == "CodeSystem" else "identifier"


def _count(client: FhirClient, resource_type: str, since: str) -> int | None:
    total = client.get(resource_type, {"_lastUpdated": f"gt{since}", "_summary": "count"}).get("total")
    return total if isinstance(total, int) else None


def changed_since(client: FhirClient, journal: Journal, store: SettledStore, mark: Mark) -> set[Key] | None:
    """The (type, business key) pairs of ours changed on the server since ``mark``, or None (module docstring)."""
    capabilities = client.capabilities(fresh=False)
    changed: set[Key] = set()
    for resource_type in store.types():
        if not capabilities.searches(resource_type, "_lastUpdated"):
            return None
        try:
            since = mark.since
            total = _count(client, resource_type, since)
            if total == 0:
                continue
            if total == store.written_since(mark.push_id, resource_type) and mark.until != mark.since:
                since = mark.until  # all of it is the last push's own writes, as far as a count shows
                if _count(client, resource_type, since) == 0:
                    continue
            params = {"_lastUpdated": f"gt{since}", "_elements": _elements(resource_type), "_count": str(PAGE)}
            for page in client.search_pages(resource_type, params):
                found = [e["resource"] for e in page.get("entry", []) if isinstance(e.get("resource"), dict)]
                changed |= _theirs(journal, store, resource_type, found)
        except AuthenticationRefused:
            raise
        except FatalHttpError:  # _lastUpdated, _summary or _elements refused (400, 404, 405...): no trust
            return None
    return changed


def _theirs(journal: Journal, store: SettledStore, resource_type: str, found: Iterable[dict[str, Any]]) -> set[Key]:
    """Among these changed server resources, the keys of ours someone else changed or twinned."""
    found = [r for r in found if r.get("resourceType", resource_type) == resource_type and r.get("id")]
    ours = store.by_server_id(resource_type, [str(r["id"]) for r in found])
    changed: set[Key] = set()
    foreign: set[Key] = set()
    parameter = "url" if resource_type == "CodeSystem" else "identifier"
    for resource in found:
        server_id = str(resource["id"])
        if server_id in ours:
            key, version = ours[server_id]
            if version is None or version != (resource.get("meta") or {}).get("versionId"):
                changed.add((resource_type, key))
        else:
            foreign.update((resource_type, key) for key in keys_of(resource, parameter))
    if foreign:
        changed.update(journal.lookup(store.server, foreign))
    return changed
