"""A push that maps only what changed: subjects whose inputs are as they were when the server confirmed them.

``push_trial`` asks ``Repush.prepare`` before it maps. It computes every subject's input digest (``_inputs``);
a subject whose digest equals the one the journal stored (``_settled``) is not mapped nor validated: its
resources are offered as the journal holds them (``SettledGroup``: unchanged, their confirmed hashes in the audit
digest). That trust rests on one look per type at what changed on the server since the last complete push
(``_since``): a subject with a resource changed there is mapped, and that resource looked up and compared as
always (updated, reported as a conflict, a final version kept). Nothing is skipped when the look is impossible
(no ``_lastUpdated``), for a trial with refused rows, a source without a data directory, a push of chosen types,
or before a complete push left its mark. After the push, each subject mapped whose resources are all confirmed
gets its digest stored (none when the map refused a record: the next push maps and refuses it again), and a
complete push stores its start and end as the next look's mark.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime

from fhir_lupus._resource import Resource
from fhir_lupus.bundle import local_ref
from fhir_lupus.client import FhirClient, ServerClock
from fhir_lupus.journal import Journal
from fhir_lupus.model import LoadReport
from fhir_lupus.pipeline import MappedBatch
from fhir_lupus.push._inputs import input_digests, unchanged_subjects
from fhir_lupus.push._plan import Plan
from fhir_lupus.push._runner import PushOptions, PushReport
from fhir_lupus.push._settled import SettledGroup, SettledStore
from fhir_lupus.push._since import changed_since, mark_of
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

__all__ = ["Repush"]

Key = tuple[str, str]


class Repush:
    """One push's use of the digests and the mark (module docstring); ``Repush.off()`` when it cannot use them."""

    def __init__(
        self,
        store: SettledStore | None = None,
        digests: dict[str, str] | None = None,
        unchanged: frozenset[str] = frozenset(),
        recheck: frozenset[Key] = frozenset(),
        load: LoadReport | None = None,
    ) -> None:
        self.store, self.digests, self.load = store, digests or {}, load
        self.unchanged, self.recheck = unchanged, recheck
        self.mapped: set[str] = set()  # the subjects whose resources were remembered by this push
        self.pending: dict[str, str] = {}  # local ref -> subject, for the resources mapped and not yet planned
        self.local_start = datetime.now(UTC)

    @classmethod
    def off(cls) -> Repush:
        return cls()

    @classmethod
    def prepare(
        cls,
        trial: TrialSource,
        client: FhirClient,
        journal: Journal,
        *,
        settings: Settings,
        options: PushOptions | None,
        fhir_version: str,
        report: PushReport,
    ) -> Repush:
        """What this push may leave unmapped, and what it must look up again (module docstring)."""
        chosen = options is not None and (options.only_types is not None or options.skip_types)
        if trial.data_dir is None or chosen:
            return cls.off()
        trial.check()  # a refused row anywhere may come from another subject's rows: then everything is mapped
        store = SettledStore(journal, client.base_url)
        if trial.report.rejects:  # mapped whole; each subject mapped forgets its digest (``planned``), none stored
            return cls(store, load=trial.report)
        digests = input_digests(trial.data_dir, settings, fhir_version)
        unchanged = unchanged_subjects(digests, store.digests())
        mark = store.mark()
        if not unchanged or mark is None:
            return cls(store, digests, load=trial.report)
        changed = changed_since(client, journal, store, mark)
        if changed is None:
            report.warnings.append(
                "the server did not say what changed since the last push (a _lastUpdated search per type): every "
                "subject is mapped and planned"
            )
            return cls(store, digests, load=trial.report)
        if changed:
            report.warnings.append(
                f"{len(changed)} resource(s) of ours changed on the server since the last complete push (edited "
                "there, or another resource carries the key): looked up and compared again"
            )
        return cls(store, digests, unchanged - store.subjects_of(changed), frozenset(changed), trial.report)

    def skip(self, subject: str) -> bool:
        return subject in self.unchanged

    def groups(self, batches: Iterable[MappedBatch]) -> Iterator[Sequence[Resource] | SettledGroup]:
        """The mapped batches as push groups, the unchanged subjects after the study's (so the counts show them
        early); which subject each mapped resource is of, until its plan is made (``planned``)."""
        for batch in batches:
            if batch.subject_id is None:
                yield batch.resources
                if self.store is not None:
                    yield from (self.store.settled(subject) for subject in sorted(self.unchanged))
                continue
            if self.store is not None:
                self.pending.update((local_ref(r), batch.subject_id) for r in batch.resources)
            yield batch.resources

    def planned(self, plan: Plan) -> None:
        """Each mapped subject's resources of a window's plan remembered (with the content hash the plan
        computed), before anything of the window is sent; a window holds whole subjects."""
        if self.store is None:
            return
        by_subject: dict[str, list[tuple[str, str, str]]] = {}
        for item in plan.items:
            subject = self.pending.pop(item.local_ref, None)
            if subject is not None:
                by_subject.setdefault(subject, []).append((item.resource_type, item.key, item.digest))
        self.store.remember(by_subject)
        self.mapped.update(by_subject)  # only these: a subject's digest is stored with what was remembered of it

    def finish(self, report: PushReport, clock: ServerClock, *, succeeded: bool) -> None:
        """The digests of the subjects mapped and now all confirmed; the mark, when the push is complete (its
        start and end as the ``clock`` saw the server's answers)."""
        if self.store is None:
            return
        if self.load is not None and self.load.rejects:  # refused by the map: it must be refused again next time
            return
        self.store.confirm({s: self.digests[s] for s in self.mapped if s in self.digests})
        if succeeded and report.complete:
            self.store.set_mark(mark_of(report.push_id, clock.earliest, clock.latest, self.local_start))
