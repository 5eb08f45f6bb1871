"""What an operation runs with, held in one value instead of threaded through every signature.

A ``Settings`` carries the loaded, parsed mapping pack (mappings/), the validation path ("fast" or "strict",
fhir_lupus/validation.py) and, for the commands that talk to a server, the ``Connection``, as httpx's ``Client``
holds its ``Timeout`` and ``Limits``. The public operations (``TrialSource.directory``, ``map_trial``,
``push_trial``, ``pull_study``, ``package_trial``, ``write_report``, ...) take ``settings=`` (None: the default,
``Settings.default()``); the layers under them take the ``MappingPack`` itself. The pack keeps every file it has
read (``MappingPack.load``), so a mapper that asks for the medication catalogue per resource pays a dictionary
look-up, not a file read, and a ``Settings`` made once reads its mappings once.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path

from fhir_lupus.client import Connection
from fhir_lupus.terminology import MappingPack, load_pack
from fhir_lupus.validation import Validation, check_validation

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """The mapping pack, the validation path and the server connection of a run (see the module docstring)."""

    pack: MappingPack = field(default_factory=load_pack)
    validation: Validation = "fast"
    connection: Connection | None = None
    # the site profile (the next issue) joins here

    def __post_init__(self) -> None:
        check_validation(self.validation)  # ValueError for a typo, before any work

    @classmethod
    def default(cls) -> Settings:
        """The default pack (FHIR_LUPUS_MAPPINGS, the checkout's mappings/, or the installed copy), fast validation,
        no connection; one value per default directory, so a process that changes FHIR_LUPUS_MAPPINGS gets the
        pack it now names."""
        return _default_for(load_pack().root)

    @classmethod
    def from_mappings(
        cls, mappings: Path | None, *, validation: Validation = "fast", connection: Connection | None = None
    ) -> Settings:
        """The pack of ``mappings`` (None: the default directory), read and checked now: MappingError names the
        file when it is wrong."""
        return cls(pack=load_pack(mappings), validation=validation, connection=connection)

    def with_connection(self, connection: Connection) -> Settings:
        """These settings, talking to ``connection``'s server."""
        return dataclasses.replace(self, connection=connection)


@functools.lru_cache(maxsize=8)
def _default_for(root: Path) -> Settings:
    return Settings(pack=load_pack(root))
