"""One input for every operation on a trial: its data, loaded, checked and screened once, with one report.

Map, push, the dry run, a registry package and the report all take a ``TrialSource``; none reads a data
directory itself. A source is either a data directory (``TrialSource.directory``) or a trial already loaded
(``TrialSource.loaded``: a test's hand-made trial, one loaded with ``load_trial``). A directory source
- refuses at once, naming the file, a directory that lacks what the ``command`` needs (mappings/checks/inputs.yaml
  of its ``Settings``' pack, the mappings it is loaded and checked against);
- reads each CSV file once per operation. ``whole()`` loads the trial as one (``load_trial``: the commands that
  look at all of it). ``chunks()`` loads it a chunk of subjects at a time (``load_trial_chunks``), so memory holds
  one chunk however large the trial. ``check()`` reads every chunk before anything is written (a push must know
  every refused row before it sends one): a trial of one chunk is kept, a larger one is kept on disk, each chunk
  as it was checked, so the operation that follows replays the chunks instead of reading the files again;
- screens every chunk it loads (fhir_lupus/study: enrolled subjects who did not screen eligible, ...): the
  findings join the one ``report``; the candidates of a trial loaded whole are kept for ``fhir-lupus screen``.

A source read chunk by chunk without ``check()`` is read once: reading it again would count every row twice, so it
is refused (RuntimeError). The chunks kept on disk are temporary files (fhir_lupus/_scratch.py: a private
directory in the system's temporary directory, nothing is renamed out of it) removed by ``close()`` (or when
the source is collected, or the process ends).
"""

from __future__ import annotations

import pickle
import tempfile
import weakref
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Literal

from fhir_lupus._scratch import discard, open_private, scratch_dir
from fhir_lupus.model import (
    Finding,
    LoadReport,
    StudyDefinition,
    TrialData,
    chunk_plan,
    load_trial,
    load_trial_chunks,
    require_inputs,
)
from fhir_lupus.settings import Settings
from fhir_lupus.study import ScreenedCandidate, screen_trial, screening_findings

__all__ = ["TrialSource"]

_State = Literal["unread", "read", "streamed"]


class TrialSource:
    """A trial's data and its one ``LoadReport`` (see the module docstring); make one with ``directory`` or
    ``loaded``. Use it as a context manager (or call ``close``) to remove the chunks ``check`` kept on disk."""

    def __init__(
        self,
        report: LoadReport,
        *,
        data_dir: Path | None = None,
        held: TrialData | None = None,
        settings: Settings | None = None,
        max_rows: int | None = None,
        study: StudyDefinition | None = None,
        today: date | None = None,
    ) -> None:
        self.report = report
        self.data_dir = data_dir
        self.settings = settings or Settings.default()
        self.screened: list[ScreenedCandidate] = []  # the candidates of a trial loaded whole, in file order
        self.screening_findings: list[Finding] = []  # what the screening added to the report
        self._held = held
        self._state: _State = "unread" if held is None else "read"
        self._max_rows, self._study, self._today = max_rows, study, today
        self._spool: Path | None = None
        self._spooled: list[Path] = []
        self._removal: Callable[[], object] | None = None  # a weakref.finalize: runs once, also at exit

    @classmethod
    def directory(
        cls,
        data_dir: Path,
        *,
        command: str | None = None,
        settings: Settings | None = None,
        max_rows: int | None = None,
        study: StudyDefinition | None = None,
        today: date | None = None,
    ) -> TrialSource:
        """A data directory (docs/csv-layout.md), read when an operation asks. ``command``: InputError now, naming
        the file, when a file it needs is missing or has no row. ``settings``: whose mapping pack the rows are
        checked against (default: ``Settings.default()``). ``max_rows``: rows a chunk holds at most (default
        ``CHUNK_ROWS``); ``study``, ``today``: as for ``load_trial``."""
        settings = settings or Settings.default()
        if command is not None:
            require_inputs(data_dir, command, settings.pack)
        return cls(LoadReport(), data_dir=data_dir, settings=settings, max_rows=max_rows, study=study, today=today)

    @classmethod
    def loaded(cls, data: TrialData, report: LoadReport | None = None) -> TrialSource:
        """A trial already loaded, with the report of its load (or a new one); it is not screened again."""
        return cls(report if report is not None else LoadReport(), held=data)

    def whole(self) -> TrialData:
        """The whole trial: loaded now (as ``load_trial`` does, and screened) unless it was read as one chunk.
        RuntimeError for a trial read in several chunks: it is not held whole, ``chunks()`` replays it."""
        if self._state == "unread":
            assert self.data_dir is not None  # a loaded source is never unread
            data, _ = load_trial(
                self.data_dir,
                study=self._study,
                pack=self.settings.pack,
                today=self._today,
                report=self.report,
            )
            self.screened = self._screen(data)
            self._held, self._state = data, "read"
        if self._held is None:
            raise RuntimeError(f"{self.data_dir} was read in several chunks: it is not held whole; use chunks()")
        return self._held

    def check(self) -> LoadReport:
        """Read and check every chunk now, keeping each for the operation that follows; returns the report, which
        then holds every refused row and every finding."""
        if self._state == "unread":
            for _ in self._load(keep=True):
                pass
        return self.report

    def chunks(self) -> Iterator[TrialData]:
        """The trial a chunk of subjects at a time, in subjects.csv order (one chunk when it fits ``max_rows``):
        read from the directory (checked and screened as each comes) the first time, replayed after ``check``."""
        if self._state == "unread":
            yield from self._load(keep=False)
        elif self._held is not None:
            yield self._held
        elif self._spooled:
            yield from _replay(self._spooled)
        else:
            raise RuntimeError(f"{self.data_dir} was read chunk by chunk once; check() it first to read it twice")

    def close(self) -> None:
        """Remove the chunks kept on disk (a trial larger than one chunk, after ``check``)."""
        if self._removal is not None:
            self._removal()
        self._spooled = []

    def __enter__(self) -> TrialSource:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _load(self, *, keep: bool) -> Iterator[TrialData]:
        """Each chunk loaded, screened and yielded; a single chunk is kept in memory, several (``keep``) on disk.

        The number of chunks is known before the first loads (``chunk_plan``), so a chunk of a large trial is
        never held while the next one loads."""
        assert self.data_dir is not None
        self._state = "streamed"
        plan = chunk_plan(self.data_dir, self._max_rows)
        chunks = load_trial_chunks(
            self.data_dir, self.report, plan=plan, study=self._study, pack=self.settings.pack, today=self._today
        )
        for data in chunks:
            self._screen(data)
            if len(plan) == 1:
                self._held, self._state = data, "read"
            elif keep:
                self._spooled.append(self._keep(data))
            yield data
            del data  # let this chunk go before the next one loads
        if keep:
            self._state = "read"

    def _keep(self, data: TrialData) -> Path:
        if self._spool is None:
            self._spool = scratch_dir(Path(tempfile.gettempdir()), "chunks")
            self._removal = weakref.finalize(self, discard, self._spool)
        path = self._spool / f"{len(self._spooled)}.pickle"
        with open_private(path, "wb") as handle:
            pickle.dump(data, handle, protocol=pickle.HIGHEST_PROTOCOL)
        return path

    def _screen(self, data: TrialData) -> list[ScreenedCandidate]:
        """The screening of one loaded chunk: its queries (mappings/checks/checks.yaml) added to the report; its
        verdicts returned (kept for a trial loaded whole only: a large trial's would fill the memory chunks save)."""
        screened = screen_trial(data, self.settings.pack, self.report)
        findings = screening_findings(data, screened, self.report, self.settings.pack)
        self.report.findings.extend(findings)
        self.screening_findings.extend(findings)
        return screened


def _replay(paths: list[Path]) -> Iterator[TrialData]:
    """The chunks ``check`` kept, one at a time (written by this process into its own private directory)."""
    for path in paths:
        with path.open("rb") as handle:
            data: TrialData = pickle.load(handle)
        yield data
        del data
