"""Apply a push plan: send its writes in chunks the server accepts, and journal what the server confirmed.

(Over 400 lines: a chunk's write, the reading of its answer and the fall-backs on a refusal are one state
machine; split, each half would need the other's state.)

Chunks follow the plan's order (referenced resources first). Inside a transaction, a reference to an entry PUT
to an id we chose is ``Type/id``, to a conditional one its ``urn:uuid``; to earlier ones, the server's ids. A
chunk is as large as the server has shown it accepts for its kind (``conditional`` when it holds any conditional
entry, ``direct`` when every entry is addressed by id), never more than the user's ``--chunk-size``. When the
server answers:
- too large (TooLarge): the limit for that kind is halved, remembered in the journal, and the same entries
  go again in smaller chunks (all entries are idempotent, so nothing is written twice);
- several matches (412, or Medplum's 400 saying so): the chunk's keys are looked up again, the twins are
  reported with their server ids and held back with everything that refers to them, the rest goes again;
- any other refusal of the entries (400, 404, 409, 422): when the chunk creates by PUT to new ids on a type
  that also has conditional writes, it goes again with those entries conditional, and if the server takes
  that, the type is written conditionally from then on (``refused_by_id``: a server that does not let clients
  choose ids); otherwise the chunk is halved until the refused resource is alone; it is reported with the
  server's words and held back, the others are written;
- anything else (5xx after retries, 401/403, a malformed answer) stops the push: the journal keeps what was
  confirmed, and the next push settles the rest with a look-up first.
Batch and one-by-one writers (servers without transactions) send a chunk level by level, so that every
reference already has a server id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fhir_lupus.bundle import ReferenceTarget, entry, references
from fhir_lupus.client import (
    AuthenticationRefused,
    FatalHttpError,
    FhirClient,
    FhirHttpError,
    InvalidResponse,
    Outcome,
    PreconditionFailed,
    TooLarge,
    Verdict,
    WriteStrategy,
    classify,
    location_id,
    location_version,
)
from fhir_lupus.journal import Journal, JournalEntry
from fhir_lupus.push._lookup import look_up
from fhir_lupus.push._plan import Plan, PlanItem
from fhir_lupus.push._routes import TypeRoute

__all__ = ["Applier", "ChunkKind", "Problem", "WriteLimits", "chunk_kind", "make_chunks"]

ChunkKind = Literal["conditional", "direct"]
ENTRIES_REFUSED: frozenset[Verdict] = frozenset({"refused", "unsupported", "not-found", "conflict", "multiple-matches"})


def chunk_kind(item: PlanItem) -> ChunkKind:
    return "conditional" if item.write == "conditional" else "direct"


@dataclass
class WriteLimits:
    """Bundle sizes per chunk kind: the user's upper bound, lowered to what the server has accepted."""

    upper: int
    learned: dict[str, int] = field(default_factory=dict)

    def size(self, kind: str) -> int:
        return max(1, min(self.upper, self.learned.get(kind, self.upper)))

    def for_items(self, items: list[PlanItem]) -> int:
        return min(self.size(kind) for kind in {chunk_kind(i) for i in items})

    def lower(self, kind: ChunkKind, refused_size: int) -> int:
        self.learned[kind] = max(1, min(self.size(kind), refused_size // 2))
        return self.learned[kind]


def make_chunks(items: list[PlanItem], limits: WriteLimits) -> list[list[PlanItem]]:
    """Consecutive chunks, each within the limit of the strictest kind it holds (order kept)."""
    chunks: list[list[PlanItem]] = []
    current: list[PlanItem] = []
    for item in items:
        if current and len(current) + 1 > limits.for_items([*current, item]):
            chunks.append(current)
            current = []
        current.append(item)
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True)
class Problem:
    """A resource the push did not write, and why (conflict, held-back, refused or skipped)."""

    kind: Literal["conflict", "held-back", "refused", "skipped"]
    resource_type: str
    business_key: str
    reason: str
    server_ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        ids = f" (server ids: {', '.join(self.server_ids)})" if self.server_ids else ""
        return f"{self.kind}: {self.resource_type} {self.business_key}: {self.reason}{ids}"


@dataclass
class ApplyCounts:
    created: int = 0
    updated: int = 0
    linked: int = 0
    chunks: int = 0
    size_refusals: int = 0
    problems: list[Problem] = field(default_factory=list)

    def add(self, other: ApplyCounts) -> None:
        """Add the counts of another applier (a window written in another thread) to these."""
        self.created += other.created
        self.updated += other.updated
        self.linked += other.linked
        self.chunks += other.chunks
        self.size_refusals += other.size_refusals
        self.problems.extend(other.problems)


@dataclass
class Applier:
    """Sends one plan after another for one push; keeps the server ids learned so far for later chunks."""

    client: FhirClient
    journal: Journal
    push_id: str
    strategy: WriteStrategy
    routes: Mapping[str, TypeRoute]
    limits: WriteLimits
    counts: ApplyCounts = field(default_factory=ApplyCounts)
    on_written: Callable[[int], None] | None = None
    _refs: dict[str, str] = field(default_factory=dict)
    _logical: dict[str, dict[str, Any]] = field(default_factory=dict)
    _held: set[str] = field(default_factory=set)
    refused_by_id: set[str] = field(default_factory=set)  # types whose PUT to a new id the server refused

    @property
    def server(self) -> str:
        return self.client.base_url

    @property
    def held_back(self) -> set[str]:
        return self._held

    def apply(self, plan: Plan) -> None:
        """Write the plan's creates and updates; its held-back set grows with what the server refused."""
        self._refs = dict(plan.server_refs)
        self._logical = dict(plan.logical)
        self._held = plan.held_back
        self._send_all(plan.writes())

    def _send_all(self, items: list[PlanItem]) -> None:
        """Chunk by chunk, each cut with the limits as they are now (a refusal lowers them for the rest)."""
        while items:
            chunk = make_chunks(items, self.limits)[0]
            self._send(chunk)
            items = items[len(chunk) :]

    # -- one chunk, and what to do when the server refuses it ----------------------------------------------

    def _send(self, chunk: list[PlanItem]) -> None:
        chunk = [_conditional(i) if i.resource_type in self.refused_by_id else i for i in self._writable(chunk)]
        if not chunk:
            return
        if self.strategy != "transaction" and len(levels := _levels(chunk)) > 1:
            for level in levels:  # without a transaction, a reference needs the server id of an earlier request
                self._send(level)
            return
        try:
            results = self._write(chunk)
        except TooLarge as exc:
            self._too_large(chunk, exc)
            return
        except PreconditionFailed as exc:
            self._twins(chunk, exc)
            return
        except FatalHttpError as exc:
            if not _about_the_entries(exc) or isinstance(exc, AuthenticationRefused):
                raise
            if not self._without_ids(chunk):
                self._isolate(chunk, exc)
            return
        self._record(results)

    def _without_ids(self, chunk: list[PlanItem]) -> bool:
        """Send the chunk again with its creates by id made conditional, where the route allows; False if none.

        A server that does not let clients choose ids (HAPI's client id strategy NOT_ALLOWED, say) refuses
        the whole chunk; when the conditional form goes through, the type stays conditional for this push.
        """
        routes = self.routes
        by_id = {
            i.resource_type
            for i in chunk
            if i.write == "create-by-id" and routes[i.resource_type].new_by_id and routes[i.resource_type].conditional
        }
        if not by_id:
            return False
        problems = len(self.counts.problems)
        self._send([_conditional(i) if i.resource_type in by_id else i for i in chunk])
        if len(self.counts.problems) == problems:
            self.refused_by_id |= by_id
        return True

    def _too_large(self, chunk: list[PlanItem], exc: FhirHttpError) -> None:
        if len(chunk) == 1:
            self._refuse(chunk[0], f"refused even alone for its size: {exc}")
            return
        kind: ChunkKind = "conditional" if any(chunk_kind(i) == "conditional" for i in chunk) else "direct"
        self.journal.set_write_limit(self.server, kind, self.limits.lower(kind, len(chunk)))
        self.counts.size_refusals += 1
        self._send_all(chunk)

    def _twins(self, chunk: list[PlanItem], exc: FhirHttpError) -> None:
        found = look_up(self.client, [i.resource for i in chunk], self.routes)
        twins = [i for i in chunk if len(found.get((i.resource_type, i.key), [])) > 1]
        if not twins:  # the server's 412 is about something we cannot see: find the resource it refuses
            self._isolate(chunk, exc)
            return
        for item in twins:
            ids = tuple(sorted(m.server_id for m in found[(item.resource_type, item.key)]))
            self._problem("conflict", item, "several server resources match", ids)
        self._send([i for i in chunk if i not in twins])

    def _isolate(self, chunk: list[PlanItem], exc: FhirHttpError) -> None:
        if len(chunk) == 1:
            self._refuse(chunk[0], str(exc))
            return
        half = len(chunk) // 2
        self._send(chunk[:half])
        self._send(chunk[half:])

    def _refuse(self, item: PlanItem, message: str) -> None:
        self._problem("refused", item, f"the server refused it: {message}")

    def _problem(
        self, kind: Literal["conflict", "refused", "held-back"], item: PlanItem, reason: str, ids: tuple[str, ...] = ()
    ) -> None:
        self._held.add(item.local_ref)
        self.counts.problems.append(Problem(kind, item.resource_type, item.key, reason, ids))

    def _writable(self, chunk: list[PlanItem]) -> list[PlanItem]:
        """Drop (and report) what refers to a held-back resource or to one that was never written."""
        keep: list[PlanItem] = []
        in_chunk = {i.local_ref for i in chunk}
        for item in chunk:
            targets = references(item.resource)
            blocked = sorted(t for t in targets if t in self._held)
            missing = sorted(t for t in targets if t not in self._refs and t not in self._logical and t not in in_chunk)
            if blocked or missing:
                why = (
                    f"refers to {blocked[0]}, which is held back" if blocked else f"refers to {missing[0]}, not written"
                )
                self._problem("held-back", item, why)
                in_chunk.discard(item.local_ref)
            else:
                keep.append(item)
        return keep

    # -- writing ---------------------------------------------------------------------------------------------

    def _targets(self, chunk: list[PlanItem]) -> dict[str, ReferenceTarget]:
        """How each reference is written: the server id known so far; inside the chunk, ``Type/id`` for an entry
        PUT to an id chosen here (the server need not resolve a placeholder), else the entry's ``urn:uuid``."""
        targets: dict[str, ReferenceTarget] = {**self._logical, **self._refs}
        for item in chunk:
            by_id = item.write == "create-by-id" and item.server_id
            targets.setdefault(
                item.local_ref, f"{item.resource_type}/{item.server_id}" if by_id else f"urn:uuid:{item.resource['id']}"
            )
        return targets

    def _entry(self, item: PlanItem, targets: Mapping[str, ReferenceTarget]) -> dict[str, Any]:
        route = self.routes[item.resource_type]
        return entry(
            item.resource,
            write=item.write or "conditional",
            targets=targets,
            server_id=item.server_id,
            parameter=route.search_param,
            create_only=route.create_only,
        )

    def _write(self, chunk: list[PlanItem]) -> list[tuple[PlanItem, dict[str, Any]]]:
        if self.strategy == "transaction":
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [self._entry(item, self._targets(chunk)) for item in chunk],
            }
            response = self.client.transaction(bundle, idempotent=True)
            answers = response.get("entry")
            if not isinstance(answers, list) or len(answers) != len(chunk):
                count = len(answers) if isinstance(answers, list) else 0
                raise InvalidResponse(
                    f"the transaction response has {count} entries for {len(chunk)} sent: the outcome of this chunk "
                    "is unknown; push again, and a look-up settles what the server holds"
                )
            return [(item, _answer(answer)) for item, answer in zip(chunk, answers, strict=True)]
        return self._write_batch(chunk) if self.strategy == "batch" else self._write_each(chunk)

    def _write_batch(self, level: list[PlanItem]) -> list[tuple[PlanItem, dict[str, Any]]]:
        targets = self._targets([])
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [self._entry(i, targets) for i in level]}
        response = self.client.transaction(bundle, idempotent=True)
        answers = response.get("entry")
        if not isinstance(answers, list) or len(answers) != len(level):
            raise InvalidResponse(f"the batch response has the wrong number of entries for {len(level)} sent")
        done = []
        for item, raw in zip(level, answers, strict=True):
            answer = _answer(raw)
            if 200 <= answer["status"] < 300:
                done.append((item, answer))
                continue
            verdict = classify(answer["status"], answer["outcome"])
            if verdict == "too-large":
                raise TooLarge(answer["message"], status=answer["status"], outcome=answer["outcome"])
            if verdict == "multiple-matches":
                twins = PreconditionFailed(answer["message"], status=answer["status"], outcome=answer["outcome"])
                self._twins([item], twins)
            else:
                self._refuse(item, f"{answer['status']} {answer['message']}".strip())
        return done

    def _write_each(self, level: list[PlanItem]) -> list[tuple[PlanItem, dict[str, Any]]]:
        targets = self._targets([])
        done = []
        for item in level:
            request = self._entry(item, targets)
            try:
                done.append((item, self._send_one(request)))
            except PreconditionFailed as exc:
                self._twins([item], exc)
            except FatalHttpError as exc:
                if not _about_the_entries(exc) or isinstance(exc, TooLarge | AuthenticationRefused):
                    raise
                self._refuse(item, str(exc))
        return done

    def _send_one(self, request_entry: dict[str, Any]) -> dict[str, Any]:
        body, request = request_entry["resource"], request_entry["request"]
        if request["method"] == "POST":
            response = self.client.conditional_create(body, request["ifNoneExist"])
        else:
            response = self.client.put(request["url"], body)
        location = response.headers.get("Location") or response.headers.get("Content-Location", "")
        stored: dict[str, Any] = response.json() if response.content else {}
        return {
            "status": response.status_code,
            "location": location,
            "etag": response.headers.get("ETag", ""),
            "resource": stored if isinstance(stored, dict) else {},
            "message": "",
            "outcome": None,
        }

    # -- recording -------------------------------------------------------------------------------------------

    def _record(self, results: list[tuple[PlanItem, dict[str, Any]]]) -> None:
        if not results:
            return
        entries: list[JournalEntry] = []
        targets: list[str] = []
        for item, answer in results:
            resource_type = item.resource_type
            server_id = location_id(answer["location"], resource_type) or answer["resource"].get("id") or item.server_id
            version = location_version(answer["location"]) or _etag_version(answer["etag"])
            version = version or (answer["resource"].get("meta") or {}).get("versionId")
            # Medplum answers 200 to a PUT that creates at a new id: the plan knows it was a create
            created = answer["status"] == 201 or (answer["status"] == 200 and item.write == "create-by-id")
            linked = not created and self.routes[resource_type].create_only
            outcome = "created" if created else "linked" if linked else "updated"
            if created:
                self.counts.created += 1
            elif linked:
                self.counts.linked += 1
            else:
                self.counts.updated += 1
            if server_id:
                self._refs[item.local_ref] = f"{resource_type}/{server_id}"
                if not linked:
                    targets.append(f"{resource_type}/{server_id}" + (f"/_history/{version}" if version else ""))
            entries.append(item.journal_entry(outcome, server_id=server_id, version_id=version))
        self.journal.record(self.server, self.push_id, entries, targets=targets)
        self.counts.chunks += 1
        if self.on_written:
            self.on_written(len(results))


def _conditional(item: PlanItem) -> PlanItem:
    """A create by id turned into a conditional one (the route's search parameter is its condition)."""
    if item.write != "create-by-id":
        return item
    return replace(item, write="conditional", server_id=None)


def _answer(raw: Any) -> dict[str, Any]:
    """status (int), location, etag, resource, message and outcome of one entry of a batch or transaction answer."""
    raw = raw if isinstance(raw, dict) else {}
    response = raw.get("response") or {}
    status_text = str(response.get("status", "")).strip()
    digits = status_text.split(" ", 1)[0]
    outcome = Outcome.from_json(response["outcome"]) if isinstance(response.get("outcome"), dict) else None
    resource = raw.get("resource")
    return {
        "status": int(digits) if digits.isdigit() else 0,
        "location": str(response.get("location") or ""),
        "etag": str(response.get("etag") or ""),
        "resource": resource if isinstance(resource, dict) else {},
        "message": outcome.text if outcome else "",
        "outcome": outcome,
    }


def _about_the_entries(exc: FhirHttpError) -> bool:
    """A refusal of the entries (400, 404, 409, 410, 412, 422): isolate the resource the server refuses."""
    return classify(exc.status, exc.outcome) in ENTRIES_REFUSED


def _etag_version(etag: str) -> str | None:
    """``W/"3"`` -> ``3``."""
    value = etag.strip().removeprefix("W/").strip('"')
    return value or None


def _levels(chunk: list[PlanItem]) -> list[list[PlanItem]]:
    """Split a chunk (already in dependency order) so that nothing refers to a resource of its own level."""
    levels: list[list[PlanItem]] = []
    depth: dict[str, int] = {}
    for item in chunk:
        parents = [depth[t] for t in references(item.resource) if t in depth]
        level = 1 + max(parents, default=-1)
        depth[item.local_ref] = level
        while len(levels) <= level:
            levels.append([])
        levels[level].append(item)
    return levels
