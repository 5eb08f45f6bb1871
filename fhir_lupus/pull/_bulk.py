"""The export job of ``pull --bulk``: kicked off or resumed, polled, its files downloaded, deleted when done.

What the export asks for, and what its files become, is the bulk pass's (``_bulk_pass``). This is the job:
the status URL is written to the journal as soon as the server accepts the kick-off, so a pull that is
interrupted (while the server builds the export, or while downloading) resumes the same job on its next run,
and files already downloaded are not fetched again; a job of another request (the subjects or the mark
changed), or one gone on the server, is replaced. Polling honours Retry-After (up to ``max_poll_wait``) and
hands X-Progress to the caller. Files are streamed to disk, ``downloads`` at a time; the manifest's error files
are read and said aloud. After the rows are merged and the output written, the job is deleted on the server (so
it can drop the files) and in the journal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from fhir_lupus._scratch import PRIVATE_DIR, private_dir
from fhir_lupus.client import (
    ExportFile,
    ExportManifest,
    ExportRequest,
    ExportStatus,
    FatalHttpError,
    FhirClient,
    FhirHttpError,
    TransientHttpError,
    classify,
)
from fhir_lupus.errors import BulkExportError
from fhir_lupus.journal import BulkJob, Journal
from fhir_lupus.model import StudyDefinition
from fhir_lupus.pull._local import read_ndjson

__all__ = ["BulkExportError", "BulkOptions", "BulkRun", "BulkSummary", "poll_wait"]

Level = Literal["patient", "group", "system"]
DOWNLOAD_ATTEMPTS = 3  # a file whose download breaks off is fetched again from its start


@dataclass(frozen=True)
class BulkOptions:
    """How to run the export. The defaults suit a hospital server; tests shorten the waits."""

    level: Level = "patient"
    group_id: str | None = None  # the Group of the group level (``actual: true``, the enrolled Patients)
    downloads: int = 3  # files downloaded at once
    max_poll_wait: float = 120.0  # Retry-After is honoured up to this many seconds (HAPI 8.8 always asks 120)
    first_poll_wait: float = 1.0  # without Retry-After: 1, 2, 4 ... seconds, up to max_poll_wait
    poll_timeout: float = 6 * 3600.0  # the export must be complete within this; a rerun resumes it
    # Ask the server to filter the Observations too (_typeFilter by lab category and catalogue codes). Off by
    # default: HAPI 8.8 (H2) builds a patient-level export of 8,248 labs in 7 s without it and in 524 s with it,
    # and the selection is made here in any case (the same as the search pull's). Worth it on a server that
    # holds many other Observations of the subjects and filters them quickly.
    lab_filters: bool = False
    type_filters: bool = True  # False: no _typeFilter at all (a server refusing it gets none after one 400)
    restart: bool = False  # kick off a new export even if the journal holds an unfinished one
    work_dir: Path | None = None  # downloaded files (default: next to the journal, ``<journal>.bulk/``)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    on_poll: Callable[[ExportStatus], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.level == "group" and not self.group_id:
            raise ValueError("a group-level export needs the Group's id (--group)")
        if self.downloads < 1:
            raise ValueError("downloads must be at least 1")


@dataclass
class BulkSummary:
    """What the export did, for the pull's report and audit."""

    level: Level
    status_url: str = ""
    resumed: bool = False  # the job came from the journal: not kicked off again
    restarted: bool = False  # the journal's job was gone on the server (expired): kicked off again
    polls: int = 0
    waited: float = 0.0  # seconds slept between polls
    progress: str | None = None  # the last X-Progress
    transaction_time: str = ""
    files: int = 0
    reused_files: int = 0  # downloaded by an interrupted run of the same job
    bytes: int = 0
    others: int = 0  # results of Patients who are no enrolled subject (a group or system export)
    server_errors: list[str] = field(default_factory=list)


def poll_wait(retry_after: float | None, polls: int, options: BulkOptions) -> float:
    """Seconds to wait before the next status request: the server's Retry-After when it gives one, else a
    doubling delay (``first_poll_wait`` after the first poll); never more than ``max_poll_wait``."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), options.max_poll_wait)
    return float(min(options.first_poll_wait * 2 ** max(polls - 1, 0), options.max_poll_wait))


class BulkRun:
    """One export job of ``pull --bulk``: kicked off or resumed, waited for, its files downloaded."""

    def __init__(
        self,
        client: FhirClient,
        journal: Journal,
        study: StudyDefinition,
        request: ExportRequest,
        options: BulkOptions,
        *,
        notes: list[str],
    ) -> None:
        """Nothing is requested until ``files``; ``notes`` gathers what the report says of the export."""
        self.client = client
        self.journal = journal
        self.study = study
        self.request = request
        self.options = options
        self.notes = notes
        self.summary = BulkSummary(options.level)
        self.key = hashlib.sha256(request.describe().encode()).hexdigest()[:20]
        base = options.work_dir or journal.path.with_name(journal.path.name + ".bulk")
        self.work_dir = base / self.key
        self.deleted_files: list[tuple[Path, ExportFile]] | None = None

    # -- the job --------------------------------------------------------------------------------------------

    def files(self) -> list[tuple[Path, ExportFile]]:
        """Run the export to its end and download its files of Observations, Encounters and Procedures, and
        those of its ``deleted`` part (``deleted_files``: None when the manifest has none)."""
        manifest = self._manifest()
        wanted = [f for f in manifest.output if f.type in {"Observation", "Encounter", "Procedure"}]
        deleted = manifest.deleted or ()
        files = self._download([*wanted, *deleted], manifest.requires_access_token)
        self.deleted_files = files[len(wanted) :] if manifest.deleted is not None else None
        self._server_errors(manifest)
        return files[: len(wanted)]

    def finish(self) -> None:
        """After the rows are merged: delete the job on the server (best effort) and in the journal, drop files."""
        if not self.summary.status_url:  # nobody enrolled: no export was asked
            return
        try:
            self.client.cancel_export(self.summary.status_url)
        except FhirHttpError as exc:
            self.notes.append(f"the finished export could not be deleted on the server: {exc}")
        self.journal.end_bulk_export(self.client.base_url, self.study.nct_id)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the folder of this journal's exports, when no other is left in it
            self.work_dir.parent.rmdir()

    def _manifest(self) -> ExportManifest:
        server, study = self.client.base_url, self.study.nct_id
        job = self.journal.bulk_export(server, study)
        if job is not None and (job.request != self.key or self.options.restart):
            self._abandon(job)
            job = None
        if job is not None:
            self.summary.resumed = True
            try:
                return self._wait(job.status_url)
            except FatalHttpError as exc:
                if classify(exc.status, exc.outcome) != "not-found":
                    raise
                self.summary.restarted = True  # expired or deleted on the server: the export is asked again
                self.notes.append(f"the export the journal kept is gone on the server ({exc.status}); asked again")
        try:
            status_url = self.client.export(self.request)
        except FatalHttpError as exc:
            if classify(exc.status) != "refused" or not self.request.type_filters:  # the status decides, not words
                raise
            # a server that refuses _typeFilter (the IG makes it optional): everything of those types, selected here
            self.notes.append(f"the server refused _typeFilter ({exc.status}); the export is asked without it")
            self.request = dataclasses.replace(self.request, type_filters=())
            status_url = self.client.export(self.request)
        kicked_off = datetime.now(UTC).isoformat(timespec="seconds")
        self.journal.set_bulk_export(server, study, BulkJob(self.key, status_url, kicked_off))
        return self._wait(status_url)

    def _abandon(self, job: BulkJob) -> None:
        """A job of another request (the subjects or the mark changed) or a restart: cancelled, files dropped."""
        with contextlib.suppress(FhirHttpError):  # an old job the server may have dropped; it expires there anyway
            self.client.cancel_export(job.status_url)
        self.journal.end_bulk_export(self.client.base_url, self.study.nct_id)
        base = self.work_dir.parent
        shutil.rmtree(base / job.request, ignore_errors=True)

    def _wait(self, status_url: str) -> ExportManifest:
        self.summary.status_url = status_url
        started = self.options.clock()
        while True:
            status = self.client.export_status(status_url)
            self.summary.polls += 1
            if status.manifest is not None:
                self.summary.transaction_time = status.manifest.transaction_time
                return status.manifest
            self.summary.progress = status.progress or self.summary.progress
            if self.options.on_poll is not None:
                self.options.on_poll(status)
            wait = poll_wait(status.retry_after, self.summary.polls, self.options)
            if self.options.clock() - started + wait > self.options.poll_timeout:
                raise BulkExportError(
                    f"the export was not complete after {self.options.poll_timeout:.0f} s "
                    f"(last progress: {self.summary.progress or 'none given'}); run the pull again to resume it "
                    f"from its status URL, kept in the journal"
                )
            self.options.sleep(wait)
            self.summary.waited += wait

    # -- the files ------------------------------------------------------------------------------------------

    def _download(self, files: list[ExportFile], access_token: bool) -> list[tuple[Path, ExportFile]]:
        """Each file to the work directory, ``downloads`` at a time; a file complete from an earlier run is kept."""
        private_dir(self.work_dir.parent)  # the downloads are patient data: only their owner may read them
        self.work_dir.mkdir(PRIVATE_DIR, exist_ok=True)
        targets = [(self.work_dir / f"{index:05d}-{file.type}.ndjson", file) for index, file in enumerate(files)]

        def fetch(target: Path, file: ExportFile) -> int:
            if target.exists():
                self.summary.reused_files += 1
                return 0
            for attempt in range(DOWNLOAD_ATTEMPTS):
                try:
                    return self.client.download(file.url, target, access_token=access_token)
                except TransientHttpError:
                    if attempt == DOWNLOAD_ATTEMPTS - 1:
                        raise
            raise AssertionError("unreachable")

        # every file is tried even when one fails, so that a rerun has all the others already
        with ThreadPoolExecutor(max_workers=self.options.downloads, thread_name_prefix="bulk-download") as pool:
            futures = [pool.submit(fetch, target, file) for target, file in targets]
        failed = next((f.exception() for f in futures if f.exception() is not None), None)
        if failed is not None:
            raise failed
        sizes = [f.result() for f in futures]
        self.summary.files = len(targets)
        self.summary.bytes = sum(sizes)
        return targets

    def _server_errors(self, manifest: ExportManifest) -> None:
        """The manifest's ``error`` files (OperationOutcomes): what the server could not export, said aloud."""
        if not manifest.error:
            return
        errors = self.work_dir / "errors"
        errors.mkdir(exist_ok=True)
        for index, file in enumerate(manifest.error):
            target = errors / f"{index:05d}.ndjson"
            if not target.exists():
                self.client.download(file.url, target, access_token=manifest.requires_access_token)
            for outcome in read_ndjson(target, source=file.url):
                for issue in outcome.get("issue", []):
                    text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
                    message = f"the export reported ({issue.get('severity', 'error')}): {text}"
                    self.summary.server_errors.append(message)
                    if message not in self.notes:
                        self.notes.append(message)
