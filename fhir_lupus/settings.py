"""What an operation runs with, held in one value instead of threaded through every signature.

A ``Settings`` carries the loaded, parsed mapping pack (mappings/) with the site profile applied to it
(``site``: fhir_lupus/terminology/_site.py; the pack's example profile when none is given), the validation path
("fast" or "strict", fhir_lupus/validation.py) and, for the commands that talk to a server, the ``Connection``, as
httpx's ``Client`` holds its ``Timeout`` and ``Limits``. The profile's SMART client fills a connection that names
no credentials of its own. The public operations (``TrialSource.directory``, ``map_trial``,
``push_trial``, ``pull_study``, ``package_trial``, ``write_report``, ...) take ``settings=`` (None: the default,
``Settings.default()``); the layers under them take the ``MappingPack`` itself. The pack keeps every file it has
read (``MappingPack.load``), so a mapper that asks for the medication catalogue per resource pays a dictionary
look-up, not a file read, and a ``Settings`` made once reads its mappings once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fhir_lupus.client import Connection
from fhir_lupus.terminology import (
    MappingPack,
    SiteProfile,
    load_pack,
    load_site_profile,
    profile_named,
    refuse_changed_systems,
    refuse_placeholders,
)
from fhir_lupus.validation import Validation, check_validation

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """The mapping pack, the validation path and the server connection of a run (see the module docstring)."""

    pack: MappingPack = field(default_factory=load_pack)
    validation: Validation = "fast"
    connection: Connection | None = None

    def __post_init__(self) -> None:
        check_validation(self.validation)  # ValueError for a typo, before any work
        if self.connection is not None:
            object.__setattr__(self, "connection", _with_site_client(self.connection, self.pack.site))

    @property
    def site(self) -> SiteProfile:
        """The site profile the pack was made for."""
        return self.pack.site

    @classmethod
    def default(cls) -> Settings:
        """The default pack (FHIR_LUPUS_MAPPINGS, the checkout's mappings/, or the installed copy), fast validation,
        no connection; one value per default directory, so a process that changes FHIR_LUPUS_MAPPINGS gets the
        pack it now names."""
        return _default_for(load_pack().root)

    @classmethod
    def from_mappings(
        cls,
        mappings: Path | None,
        *,
        site: Path | None = None,
        validation: Validation = "fast",
        connection: Connection | None = None,
    ) -> Settings:
        """The pack of ``mappings`` (None: the default directory) for the site profile in ``site`` (None: the
        pack's example profile), read and checked now: MappingError names the file when either is wrong."""
        pack = load_pack(mappings)
        if site is not None:
            pack = pack.with_site(load_site_profile(site))
        return cls(pack=pack, validation=validation, connection=connection)

    def with_site(self, site: SiteProfile) -> Settings:
        """These settings for another site profile."""
        return Settings(pack=self.pack.with_site(site), validation=self.validation, connection=self.connection)

    def refuse_placeholders(self, server: str, action: str) -> None:
        """SiteProfileError when ``action`` would write to ``server`` (not on loopback) identifiers under example
        placeholder systems; called before any network I/O (fhir_lupus/terminology/_site.py)."""
        where = profile_named(self.site.source)
        refuse_placeholders(server, self.pack.site_systems(), action=action, where=where)

    def refuse_site_change(self, recorded: Mapping[str, str], server: str) -> None:
        """SiteProfileError when ``recorded`` (the systems the journal says ``server`` was last written under)
        differs from this site's without the old value recorded as superseded (fhir_lupus/terminology/_site.py)."""
        pack = self.pack
        current, superseded = pack.site_systems(derived=True), pack.superseded_values()
        refuse_changed_systems(recorded, current, superseded, server=server, profile_source=self.site.source)

    def with_connection(self, connection: Connection) -> Settings:
        """These settings, talking to ``connection``'s server."""
        return dataclasses.replace(self, connection=connection)


@functools.lru_cache(maxsize=8)
def _default_for(root: Path) -> Settings:
    return Settings(pack=load_pack(root))


def _with_site_client(connection: Connection, site: SiteProfile) -> Connection:
    """``connection`` with the profile's SMART client where it names no credentials; a field given on the command
    line (``--smart-kid``, ``--smart-token-url``) wins over the profile's."""
    smart = site.smart
    if smart is None or connection.token or connection.basic or connection.smart_client_id or connection.smart_key:
        return connection
    return dataclasses.replace(
        connection,
        smart_client_id=smart.client_id,
        smart_key=site.smart_key_path,
        smart_alg=smart.algorithm,
        smart_kid=connection.smart_kid or smart.kid,
        smart_token_url=connection.smart_token_url or smart.token_url,
    )
