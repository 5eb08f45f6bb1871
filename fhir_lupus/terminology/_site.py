"""The site profile: everything that identifies the site running the tool, in one file of its own.

A hospital's medical-record-number system, the canonical base of every URI the project mints (identifier systems,
the project CodeSystem, extensions), the site's organisation and location, and its SMART Backend Services client
are facts about the site, not about the trial or its terminology: two sites running the same mappings differ only
here. ``fhir-lupus site init DIR`` writes a commented profile; ``--site FILE`` (or FHIR_LUPUS_SITE) selects it;
without one, the example profile of the mapping pack (mappings/site/example-site.yaml) is used, whose systems are
placeholders under a reserved example domain, so that nothing written with it can be mistaken for a real
hospital's identifiers: ``placeholders`` finds them, and push refuses a server that is not on loopback while any
remains (``refuse_placeholders``).

A system that changes after a push re-keys every identifier minted under it. The profile's ``superseded`` section
keeps the values used before; push then looks a resource up by its identifier under each of them (and updates what
it finds), pull accepts them. ``site_systems`` is what the journal records per server to notice such a change.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_lupus.errors import SiteProfileError
from fhir_lupus.terminology._yaml import parse_model, read_yaml

__all__ = [
    "EXAMPLE_PROFILE",
    "SITE_TEMPLATE",
    "SiteLocation",
    "SiteOrganization",
    "SiteProfile",
    "SmartClient",
    "Superseded",
    "is_loopback",
    "is_placeholder",
    "load_site_profile",
    "placeholders",
    "profile_named",
    "refuse_changed_systems",
    "refuse_placeholders",
    "superseded_systems",
]

EXAMPLE_PROFILE = "site/example-site.yaml"  # relative to a mappings directory: the profile used when none is given
SITE_TEMPLATE = "site/site-template.yaml"  # what `fhir-lupus site init` writes: every site value to edit, explained

# Domains reserved for examples and tests (RFC 2606, RFC 6761): a URI under one identifies no real system.
_RESERVED_DOMAINS = ("example.com", "example.net", "example.org")
_RESERVED_TLDS = ("example", "invalid", "test", "localhost")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SiteOrganization(_Frozen):
    """The organisation the site belongs to (the hospital): Location.managingOrganization, by identifier."""

    key: str
    name: str


class SiteLocation(_Frozen):
    """The place that runs the trial (a department): the Location resource and ResearchStudy.site."""

    key: str
    name: str
    city: str
    state: str
    country: str = Field(pattern=r"^[A-Z]{2}$")  # ISO 3166-1 alpha-2


class SmartClient(_Frozen):
    """The site's SMART Backend Services client; command-line options override each field."""

    client_id: str
    key_file: Path  # relative paths are read from the profile's directory
    algorithm: Literal["RS384", "ES384"] = "RS384"
    kid: str | None = None
    token_url: str | None = None  # default: the server's .well-known/smart-configuration


class Superseded(_Frozen):
    """Values used before the current ones, so that what was written under them is still found."""

    canonical_base: tuple[str, ...] = ()
    identifier_systems: dict[str, tuple[str, ...]] = {}


class SiteProfile(_Frozen):
    """One site's identity (see the module docstring); ``identifier_systems`` must name the MRN system (``mrn``)
    and may override any identifier system of mappings/project.yaml (``{base}`` is ``canonical_base``)."""

    canonical_base: str
    identifier_systems: dict[str, str]
    organization: SiteOrganization
    location: SiteLocation
    smart: SmartClient | None = None
    superseded: Superseded = Superseded()
    source: Path | None = None  # the file it was read from (set by load_site_profile, never written in one)

    @model_validator(mode="after")
    def _consistent(self) -> SiteProfile:
        if "mrn" not in self.identifier_systems:
            raise ValueError("identifier_systems.mrn (the hospital's medical-record-number system) is required")
        if self.canonical_base.endswith("/") or not self.canonical_base.startswith(("https://", "http://")):
            raise ValueError("canonical_base must be an http(s) URI without a trailing slash")
        if self.canonical_base in self.superseded.canonical_base:
            raise ValueError("superseded.canonical_base holds the current canonical_base")
        for key, systems in self.superseded.identifier_systems.items():
            if self.identifier_systems.get(key) in systems:
                raise ValueError(f"superseded.identifier_systems.{key} holds the current system")
        return self

    @property
    def smart_key_path(self) -> Path | None:
        """The SMART key file, a relative path taken from the profile's directory."""
        if self.smart is None:
            return None
        if self.smart.key_file.is_absolute() or self.source is None:
            return self.smart.key_file
        return self.source.parent / self.smart.key_file


def load_site_profile(path: Path) -> SiteProfile:
    """The profile in ``path``, checked (MappingError naming the file and the key when it is wrong)."""
    profile = parse_model(SiteProfile, path, read_yaml(path))
    return profile.model_copy(update={"source": path})


def superseded_systems(
    templates: Mapping[str, str], earlier: Mapping[str, Iterable[str]], site: SiteProfile
) -> dict[str, tuple[str, ...]]:
    """For each identifier system key: the systems it used before, as templates (``{study}`` kept, ``{base}``
    filled where an old canonical base stands in for it): those of mappings/project.yaml (``earlier``), those the
    profile lists for the key, and the key's template under every superseded canonical base."""
    result: dict[str, tuple[str, ...]] = {}
    for key, template in templates.items():
        olds = [*earlier.get(key, ()), *site.superseded.identifier_systems.get(key, ())]
        if "{base}" in template:
            olds += [template.replace("{base}", base) for base in site.superseded.canonical_base]
        kept = tuple(s for s in dict.fromkeys(olds) if s != template)
        if kept:
            result[key] = kept
    return result


def is_placeholder(uri: str) -> bool:
    """True for a URI whose host is reserved for examples (example.org, ``.invalid``, ...): it names nothing real."""
    host = (urlsplit(uri).hostname or "").lower().rstrip(".")
    if not host:
        return False
    if host in _RESERVED_DOMAINS or any(host.endswith("." + domain) for domain in _RESERVED_DOMAINS):
        return True
    return host.rsplit(".", 1)[-1] in _RESERVED_TLDS


def placeholders(named: Mapping[str, str]) -> list[str]:
    """``name (uri)`` for every placeholder among ``named`` URIs, in their order."""
    return [f"{name} ({uri})" for name, uri in named.items() if is_placeholder(uri)]


def is_loopback(url: str) -> bool:
    """True for a server on this machine only (127.0.0.0/8, ::1, localhost): writing example identifiers there
    harms no one."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def profile_named(source: Path | None) -> str:
    """How messages name a profile: its file, or the example's when none was given."""
    return f"the site profile {source}" if source else "the example site profile (no --site given)"


def refuse_placeholders(server: str, named: Mapping[str, str], *, action: str, where: str) -> None:
    """SiteProfileError when ``action`` would write to ``server``, not on loopback, identifiers under placeholder
    systems (``named``, found in ``where``): a hospital Patient would not be found by its MRN and would be
    duplicated, and every identifier of ours would be minted under a domain no one owns. Called before any
    network I/O."""
    if is_loopback(server):
        return
    found = placeholders(named)
    if not found:
        return
    raise SiteProfileError(
        f"{action} to {server} refused: {where} still has example placeholder systems: {', '.join(found)}. "
        "Write your site's profile with `fhir-lupus site init DIR`, set the hospital's MRN system and a canonical "
        "base your organisation controls, and pass it with --site FILE (or FHIR_LUPUS_SITE); README 'Before your "
        "first real push'"
    )


def refuse_changed_systems(
    recorded: Mapping[str, str],
    current: Mapping[str, str],
    superseded: Mapping[str, frozenset[str]],
    *,
    server: str,
    profile_source: Path | None,
) -> None:
    """SiteProfileError when a system the server's resources were last written under (``recorded``, from the
    journal) has another value now and the old one is not recorded as superseded: every identifier under it would
    be re-keyed, push would not find what it wrote, and the server would get a duplicate of everything. Where the
    canonical base changed, only it and the systems not derived from it are named (the others follow it)."""
    changed = [
        (name, old, current[name])
        for name, old in sorted(recorded.items())
        if name in current and current[name] != old and old not in superseded.get(name, frozenset())
    ]
    if not changed:
        return
    if any(name == "canonical_base" for name, _, _ in changed):
        base = recorded["canonical_base"]
        changed = [c for c in changed if c[0] == "canonical_base" or not c[1].startswith(base)]
    where = profile_named(profile_source)
    lines = "; ".join(f"{name} was {old}, is now {new}" for name, old, new in changed)
    fixes = ", ".join(
        "superseded.canonical_base" if name == "canonical_base" else f"superseded.{name}" for name, _, _ in changed
    )
    raise SiteProfileError(
        f"push to {server} refused: {where} changes what this server's resources were written under ({lines}). "
        "Every identifier under it would change and the server would get a second copy of everything. If the "
        f"change is meant, list each old value under {fixes} in the profile, so push finds and updates what it "
        "wrote before; otherwise put the old value back"
    )
