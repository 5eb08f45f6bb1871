"""Loading of mappings/: the data that says what every code, unit and study setting is.

The contract is frozen pydantic with ``extra="forbid"``: a misspelt key in a YAML file fails when the pack is
loaded, before any data moves. Over 400 lines: each file's contract, and the pack's look-ups that the site
profile changes (systems, superseded values), are read together.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_lupus.errors import MappingError
from fhir_lupus.terminology._locate import (
    checkout_mappings_dir,
    default_mappings_dir,
    packaged_mappings_dir,
    resolved_root,
)
from fhir_lupus.terminology._site import EXAMPLE_PROFILE, SiteProfile, load_site_profile, superseded_systems
from fhir_lupus.terminology._yaml import parse_model, read_yaml

__all__ = [
    "CodeChoice",
    "CodeRef",
    "CrossConversion",
    "LabAnalyte",
    "MappingPack",
    "OrdinalAnswer",
    "ProjectConcept",
    "checkout_mappings_dir",
    "default_mappings_dir",
    "load_pack",
    "packaged_mappings_dir",
    "parse_model",
    "read_yaml",
]


M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CodeRef(_Frozen):
    """A code written in mappings/ as ``{system: <short name>, code: ..., display: ...}``."""

    system: str
    code: str
    display: str | None = None
    text: str | None = None


class CodeWhen(_Frozen):
    """What a reported result must be for a code to apply. ``specimen`` is required: the specimen is part of
    what a LOINC code means, so a code never applies to a specimen it was not made for."""

    value_kind: Literal["quantity", "ordinal", "titer"]
    specimen: tuple[str, ...] = Field(min_length=1)
    unit_like: str | None = None
    method: tuple[str | None, ...] | None = None


class CodeChoice(_Frozen):
    """One code of an analyte: LOINC unless ``system`` names another short system (``project``)."""

    system: str = "loinc"
    code: str
    display: str
    when: CodeWhen

    @model_validator(mode="after")
    def _loinc_shape(self) -> CodeChoice:
        if self.system == "loinc" and not re.fullmatch(r"\d{1,6}-\d", self.code):
            raise ValueError(f"{self.code!r} is not a LOINC code (digits, hyphen, check digit)")
        return self

    @property
    def loinc(self) -> str:
        """The LOINC code, or "" when the code is from another system."""
        return self.code if self.system == "loinc" else ""


class RefusedForm(_Frozen):
    """A way of reporting an analyte that has no verified code: such rows are refused with ``reason``."""

    when: CodeWhen
    reason: str
    blame: Literal["value", "unit", "method", "specimen"] | None = None  # the input column at fault


class LabAnalyte(_Frozen):
    display: str
    trial_unit: str | None = None
    molar_mass: float | None = Field(default=None, gt=0)
    codes: tuple[CodeChoice, ...] = Field(min_length=1)
    refused: tuple[RefusedForm, ...] = ()


class CrossConversion(_Frozen):
    from_: str = Field(alias="from")
    to: str
    mass_per_mol: float = Field(gt=0)
    why: str


class SpecimenCode(_Frozen):
    code: str
    display: str


class LabCatalogueFile(_Frozen):
    analytes: dict[str, LabAnalyte]
    cross_conversions: tuple[CrossConversion, ...] = ()
    specimens: dict[str, SpecimenCode]

    @model_validator(mode="after")
    def _conversions_name_analytes(self) -> LabCatalogueFile:
        for key, analyte in self.analytes.items():
            for when in [c.when for c in analyte.codes] + [r.when for r in analyte.refused]:
                unknown = [s for s in when.specimen if s not in self.specimens]
                if unknown:
                    raise ValueError(f"analyte {key}: unknown specimen {', '.join(unknown)} (see specimens)")
        for conv in self.cross_conversions:
            for key in (conv.from_, conv.to):
                if key not in self.analytes:
                    raise ValueError(f"cross_conversions names unknown analyte {key!r}")
        return self


class UnitsFile(_Frozen):
    aliases: dict[str, str]
    arbitrary_markers: tuple[str, ...]
    display: dict[str, str]
    molar_mass: str  # the UCUM unit of labs.yaml molar_mass


class OrdinalAnswer(_Frozen):
    code: str
    display: str
    rank: int


class ProjectConcept(_Frozen):
    code: str
    display: str
    definition: str


class ProjectCodeSystemFile(_Frozen):
    name: str
    title: str
    status: str
    content: str
    concepts: tuple[ProjectConcept, ...]


class ProjectFile(_Frozen):
    canonical_base: str = ""  # the site profile's (fhir_lupus/terminology/_site.py): filled when the pack is made
    mapping_version: str
    identifier_systems: dict[str, str]
    # key -> systems it used before, kept so that resources stored under them are still found (and updated)
    superseded_identifier_systems: dict[str, tuple[str, ...]] = {}
    canonicals: dict[str, str] = {}  # key -> canonical URL template ({base}, {study}, {name})
    profiles: dict[str, str] = {}  # key -> StructureDefinition URL claimed in meta.profile
    extensions: dict[str, str]

    @model_validator(mode="after")
    def _superseded_name_current_systems(self) -> ProjectFile:
        for key, systems in self.superseded_identifier_systems.items():
            current = self.identifier_systems.get(key)
            if current is None:
                raise ValueError(f"superseded_identifier_systems names unknown identifier system {key!r}")
            if current in systems or len(set(systems)) != len(systems):
                raise ValueError(f"superseded_identifier_systems.{key} repeats a system or holds the current one")
        return self


class _Loaded(dict[Any, Any]):
    """What a pack has read and built from its other files. Not part of what the pack is: pickled empty (a chunk
    kept on disk, a worker process read them again), and the pack's equality compares its fields only."""

    lock = threading.RLock()  # a first read in two threads (push lanes) parses the file once

    def __reduce__(self) -> tuple[type[_Loaded], tuple[()]]:
        return (_Loaded, ())


class MappingPack(_Frozen):
    """Everything in mappings/ except studies and scoring, validated and ready to use; the other files (rules,
    studies, scoring, ...) are read through ``load`` and kept by the pack, so each is parsed once per pack."""

    root: Path
    systems: dict[str, str]  # short name -> URI; ``{base}`` already filled from the site profile
    project: ProjectFile  # with the site profile applied (``with_site``)
    site: SiteProfile
    labs: LabCatalogueFile
    units: UnitsFile
    ordinals: dict[str, OrdinalAnswer]
    codesystem: ProjectCodeSystemFile

    @functools.cached_property
    def _loaded(self) -> _Loaded:
        return _Loaded()  # kept in the instance's __dict__: a plain attribute look-up once made (mappers ask per row)

    def load(self, model: type[M], relative: str) -> M:
        """The file ``relative`` to the pack's root, checked against ``model`` the first time it is asked for and
        kept: a later call is a dictionary look-up (mappers ask once per resource)."""
        try:  # the look-up ``derive`` makes, inlined: this is the call mappers make per resource
            loaded: M = self._loaded[model, relative]
            return loaded
        except KeyError:
            return self.derive((model, relative), lambda: _parse_file(model, self.root / relative))

    def derive(self, key: object, build: Callable[[], T]) -> T:
        """What ``build`` makes from the pack's files (compiled invariants, a checked view), made once per pack and
        kept under ``key``."""
        loaded = self._loaded
        try:
            made: T = loaded[key]
            return made
        except KeyError:
            pass
        with _Loaded.lock:
            if key not in loaded:
                loaded[key] = build()
            made = loaded[key]
        return made

    def with_site(self, site: SiteProfile) -> MappingPack:
        """This pack for ``site``: its canonical base and identifier systems, its superseded values added to
        those of mappings/project.yaml (a pack of its own, with its own cache of read files)."""
        if site == self.site:
            return self
        return _assemble(self.root, site)

    def site_systems(self, *, derived: bool = False) -> dict[str, str]:
        """What identifies the site's writes, by name: the canonical base and each identifier system (``{study}``
        left as written); only those that do not derive from the base unless ``derived``. The journal records
        them all per server; placeholders are looked for in the others (the base covers what derives from it)."""
        base = self.project.canonical_base
        named = {"canonical_base": base}
        for key, template in sorted(self.project.identifier_systems.items()):
            if derived or "{base}" not in template:
                named[f"identifier_systems.{key}"] = template.replace("{base}", base)
        return named

    def superseded_values(self) -> dict[str, frozenset[str]]:
        """By the names of ``site_systems``: the values each may have had before (what a change may come from)."""
        base = self.project.canonical_base
        values = {"canonical_base": frozenset(self.site.superseded.canonical_base)}
        for key, olds in self.project.superseded_identifier_systems.items():
            values[f"identifier_systems.{key}"] = frozenset(old.replace("{base}", base) for old in olds)
        return values

    def old_systems(self, system: str) -> tuple[str, ...]:
        """The systems (or CodeSystem URLs) that ``system`` replaced, from the superseded values of
        mappings/project.yaml and the site profile: push looks a resource up under them when its key is not found."""
        renames = self.derive("renames", self._renames)
        if system in renames.exact:
            return renames.exact[system]
        for prefix, suffix, olds in renames.per_study:
            middle = system[len(prefix) : len(system) - len(suffix)] if len(system) > len(prefix) + len(suffix) else ""
            if middle and "/" not in middle and system.startswith(prefix) and system.endswith(suffix):
                return tuple(self.expand(old, study=middle) for old in olds)
        return ()

    def _renames(self) -> _Renames:
        renames = _Renames()
        for key, olds in self.project.superseded_identifier_systems.items():
            current = self.project.identifier_systems[key].replace("{base}", self.project.canonical_base)
            if "{study}" in current:
                prefix, _, suffix = current.partition("{study}")
                renames.per_study.append((prefix, suffix, olds))
            else:
                renames.exact[current] = tuple(self.expand(old) for old in olds)
        for short, template in _raw_at(self.root).systems.items():
            if "{base}" in template:  # the project CodeSystem's URL follows the canonical base
                olds = tuple(template.replace("{base}", base) for base in self.site.superseded.canonical_base)
                if olds:
                    renames.exact[self.systems[short]] = olds
        return renames

    def system_uri(self, short: str) -> str:
        """The URI for a short system name used in mappings/ (``loinc``, ``snomed``, ``project``...)."""
        try:
            return self.systems[short]
        except KeyError:
            raise MappingError(
                f"unknown code system short name {short!r} (mappings/terminology/systems.yaml)"
            ) from None

    def expand(self, template: str, *, study: str = "") -> str:
        """Fill ``{base}`` and ``{study}`` in an identifier-system or extension template."""
        return template.format(base=self.project.canonical_base, study=study)

    def identifier_system(self, key: str, *, study: str) -> str:
        try:
            return self.expand(self.project.identifier_systems[key], study=study)
        except KeyError:
            raise MappingError(f"no identifier system {key!r} in mappings/project.yaml") from None

    def superseded_identifier_systems(self, key: str, *, study: str) -> tuple[str, ...]:
        """The systems identifier ``key`` used before its current one, oldest last (none: an empty tuple)."""
        return tuple(self.expand(s, study=study) for s in self.project.superseded_identifier_systems.get(key, ()))

    def canonical_url(self, key: str, name: str, *, study: str) -> str:
        try:
            template = self.project.canonicals[key]
        except KeyError:
            raise MappingError(f"no canonical {key!r} in mappings/project.yaml") from None
        return template.format(base=self.project.canonical_base, study=study, name=name)

    def profile_url(self, key: str) -> str:
        try:
            return self.project.profiles[key]
        except KeyError:
            raise MappingError(f"no profile {key!r} in mappings/project.yaml") from None

    def extension_url(self, key: str) -> str:
        try:
            return self.expand(self.project.extensions[key])
        except KeyError:
            raise MappingError(f"no extension {key!r} in mappings/project.yaml") from None

    def project_concept(self, code: str) -> ProjectConcept:
        for concept in self.codesystem.concepts:
            if concept.code == code:
                return concept
        raise MappingError(f"code {code!r} is not in mappings/terminology/project-codesystem.yaml")

    def coding(self, ref: CodeRef) -> dict[str, str]:
        """A FHIR Coding for a CodeRef; project codes get their display from the project CodeSystem."""
        display = ref.display
        if ref.system == "project":
            display = display or self.project_concept(ref.code).display
        coding = {"system": self.system_uri(ref.system), "code": ref.code}
        if display:
            coding["display"] = display
        return coding


def _parse_file(model: type[M], path: Path) -> M:
    return parse_model(model, path, read_yaml(path))


def load_pack(root: Path | None = None) -> MappingPack:
    """Load and check mappings/ once per process and directory (the files are small and read-only); ``None``:
    the default directory (``default_mappings_dir``). The pack comes with the directory's example site profile
    (``EXAMPLE_PROFILE``); ``with_site`` gives it for another."""
    return _pack_at(resolved_root(root))


@functools.lru_cache(maxsize=8)
def _pack_at(root: Path) -> MappingPack:
    example = load_site_profile(root / EXAMPLE_PROFILE).model_copy(update={"source": None})  # named as the example
    return _assemble(root, example)


class _Renames:
    """``MappingPack.old_systems``' index: systems without ``{study}`` by value, the others by prefix/suffix."""

    def __init__(self) -> None:
        self.exact: dict[str, tuple[str, ...]] = {}
        self.per_study: list[tuple[str, str, tuple[str, ...]]] = []


class _Raw(NamedTuple):
    """The files of a mappings directory as read, before a site profile is applied."""

    systems: dict[str, str]
    parsed: dict[str, Any]
    ordinals: dict[str, OrdinalAnswer]


def _assemble(root: Path, site: SiteProfile) -> MappingPack:
    raw = _raw_at(root)
    project: ProjectFile = raw.parsed["project"]
    unknown = sorted(set(site.superseded.identifier_systems) - set(project.identifier_systems) - {"mrn"})
    if unknown:
        where = site.source or "the site profile"
        raise MappingError(f"{where}: superseded.identifier_systems names unknown systems {', '.join(unknown)}")
    systems_of = {**project.identifier_systems, **site.identifier_systems}
    applied = project.model_copy(
        update={
            "canonical_base": site.canonical_base,
            "identifier_systems": systems_of,
            "superseded_identifier_systems": superseded_systems(
                systems_of, project.superseded_identifier_systems, site
            ),
        }
    )
    systems = {short: uri.replace("{base}", site.canonical_base) for short, uri in raw.systems.items()}
    return MappingPack(
        root=root, systems=systems, ordinals=raw.ordinals, site=site, **{**raw.parsed, "project": applied}
    )


@functools.lru_cache(maxsize=8)
def _raw_at(root: Path) -> _Raw:
    term = root / "terminology"
    files: dict[str, tuple[type[BaseModel], Path]] = {
        "project": (ProjectFile, root / "project.yaml"),
        "labs": (LabCatalogueFile, term / "labs.yaml"),
        "units": (UnitsFile, term / "units.yaml"),
        "codesystem": (ProjectCodeSystemFile, term / "project-codesystem.yaml"),
    }
    parsed: dict[str, Any] = {key: parse_model(model, path, read_yaml(path)) for key, (model, path) in files.items()}
    systems_path = term / "systems.yaml"
    systems = read_yaml(systems_path)
    if not isinstance(systems, dict):
        raise MappingError(f"{systems_path}: expected a mapping of short name -> URI")
    ordinals_path = term / "ordinals.yaml"
    ordinals = {
        str(key).lower(): parse_model(OrdinalAnswer, ordinals_path, value)
        for key, value in (read_yaml(ordinals_path) or {}).items()
    }
    return _Raw({str(k): str(v) for k, v in systems.items()}, parsed, ordinals)
