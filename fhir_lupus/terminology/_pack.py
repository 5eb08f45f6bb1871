"""Loading of mappings/: the data that says what every code, unit and study setting is.

The contract is frozen pydantic with ``extra="forbid"``: a misspelt key in a YAML file fails when the pack is
loaded, before any data moves.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fhir_lupus.errors import MappingError

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
    canonical_base: str
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
    systems: dict[str, str]
    project: ProjectFile
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


def read_yaml(path: Path) -> Any:
    """Read one YAML file, turning a parse error into a MappingError naming the file."""
    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise MappingError(f"{path}: mapping file missing") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {exc}") from None


def parse_model(model: type[M], path: Path, data: Any) -> M:
    """Validate YAML data against its contract; the error names the file and the key path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise MappingError(f"{path}: {problems}") from None


def checkout_mappings_dir() -> Path | None:
    """The repository's top-level mappings/ when the package runs from a checkout (beside pyproject.toml)."""
    root = Path(__file__).resolve().parents[2]
    return root / "mappings" if (root / "pyproject.toml").is_file() and (root / "mappings").is_dir() else None


def packaged_mappings_dir() -> Path:
    """The copy of mappings/ that a wheel carries as package data (fhir_lupus/_mappings, see setup.py)."""
    packaged = importlib.resources.files("fhir_lupus") / "_mappings"
    if not isinstance(packaged, Path):  # imported from a zip: the loaders read files by path
        raise MappingError(
            f"the bundled mappings ({packaged}) are not on the file system; pass --mappings DIR or set "
            "FHIR_LUPUS_MAPPINGS"
        )
    return packaged


def default_mappings_dir() -> Path:
    """FHIR_LUPUS_MAPPINGS when set, else the checkout's mappings/ when running from a checkout, else the copy
    installed with the package (read through importlib.resources). ``--mappings DIR`` overrides all three."""
    env = os.environ.get("FHIR_LUPUS_MAPPINGS")
    if env:
        return Path(env)
    return checkout_mappings_dir() or packaged_mappings_dir()


def _resolved_root(root: Path | None) -> Path:
    """The mappings directory a call means, resolved: packs are kept by it, never by ``None``, so a process that
    changes FHIR_LUPUS_MAPPINGS between calls (a test, a notebook, a service serving two packs) never gets the
    pack it read first."""
    if root is not None:
        return root.resolve()
    return _default_root(os.environ.get("FHIR_LUPUS_MAPPINGS"), os.getcwd())


@functools.lru_cache(maxsize=8)
def _default_root(env: str | None, cwd: str) -> Path:
    """The default directory, resolved once per FHIR_LUPUS_MAPPINGS value and working directory (a relative
    value depends on it): resolving it takes a dozen system calls."""
    return default_mappings_dir().resolve()


def _parse_file(model: type[M], path: Path) -> M:
    return parse_model(model, path, read_yaml(path))


def load_pack(root: Path | None = None) -> MappingPack:
    """Load and check mappings/ once per process and directory (the files are small and read-only); ``None``:
    the default directory (``default_mappings_dir``)."""
    return _pack_at(_resolved_root(root))


@functools.lru_cache(maxsize=8)
def _pack_at(root: Path) -> MappingPack:
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
    return MappingPack(root=root, systems=systems, ordinals=ordinals, **parsed)
