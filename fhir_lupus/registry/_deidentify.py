"""De-identification of mapped FHIR resources for a registry: pure functions over plain dicts.

The rules are data (mappings/registry/deidentification.yaml); this module applies them to any resource:
1. remove the elements listed for the type (free text, names, performers), the codings of local code systems,
   free-text extensions;
2. replace identifiers: public study identifiers are kept, a subject's identifiers become HMACs under the
   registry system, every other identifier (MRN, a hospital's own) is removed; the Patient keeps only its
   pseudonym;
3. give every resource a new id (UUID-shaped HMAC of its old id) and rewrite every reference to match;
4. move every date of a subject's resources by the subject's keyed offset; birth dates to the year;
5. refuse (DeidentificationError) a resource that still holds one of its subject's identifiers.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fhir_lupus._resource import Resource
from fhir_lupus.errors import DeidentificationError, MappingError
from fhir_lupus.registry._key import RegistryKey
from fhir_lupus.terminology import MappingPack, mappings_root, read_yaml

__all__ = [
    "DeidentificationError",
    "DeidentificationRules",
    "Deidentified",
    "LinkRow",
    "deidentify",
    "load_rules",
    "shift_date",
]

RULES_FILE = Path("registry") / "deidentification.yaml"
# A FHIR date (full precision), dateTime or instant: the lexical forms whose calendar date is moved.
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})((?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2})?)$")
_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")
_MIN_GUARDED_TOKEN = 5  # shorter subject identifiers cannot be told from values in a text search


class _ShiftRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: int
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> _ShiftRange:
        if self.min > self.max or (self.min, self.max) == (0, 0):
            raise ValueError("date_shift_days needs min <= max and some day other than 0")
        return self


class _Identifiers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keep: tuple[str, ...] = ()
    rekey: tuple[str, ...] = ()


class DeidentificationRules(BaseModel):
    """mappings/registry/deidentification.yaml, checked when it loads."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    date_shift_days: _ShiftRange
    birth_date: Literal["year", "drop"]
    max_age_years: int = Field(ge=0)
    identifiers: _Identifiers
    drop_codings: tuple[str, ...] = ()
    drop_extensions: tuple[str, ...] = ()
    drop_sub_extensions: dict[str, tuple[str, ...]] = {}
    drop: dict[str, tuple[str, ...]] = {}

    @model_validator(mode="after")
    def _disjoint(self) -> DeidentificationRules:
        both = set(self.identifiers.keep) & set(self.identifiers.rekey)
        if both:
            raise ValueError(f"identifiers both kept and re-keyed: {sorted(both)}")
        if "subject" not in self.identifiers.rekey:
            raise ValueError("identifiers.rekey must hold subject: its keyed value is the subject's pseudonym")
        return self


def load_rules(mappings_dir: Path | None = None) -> DeidentificationRules:
    return _rules_at(mappings_root(mappings_dir) / RULES_FILE)


@functools.lru_cache(maxsize=4)
def _rules_at(path: Path) -> DeidentificationRules:
    if not path.is_file():
        raise MappingError(f"{path}: mapping file missing")
    try:
        return DeidentificationRules.model_validate(read_yaml(path))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise MappingError(f"{path}: {problems}") from None


@dataclass(frozen=True)
class LinkRow:
    """One line of the link table, kept by the submitting site only."""

    pseudonym: str
    subject_id: str
    date_shift_days: int


@dataclass
class Deidentified:
    resources: list[Resource]
    links: list[LinkRow]
    excluded: int  # resources of subjects who are not enrolled


def shift_date(value: str, days: int) -> str | None:
    """``value`` moved by ``days`` when it is a full FHIR date/dateTime/instant (time and offset kept), else None."""
    match = _DATE.match(value)
    if match is None:
        return None
    year, month, day, rest = match.groups()
    try:
        moved = date(int(year), int(month), int(day)) + timedelta(days=days)
    except ValueError:
        return None
    return moved.isoformat() + rest


def date_shift(key: RegistryKey, study: str, subject_id: str, rules: DeidentificationRules) -> int:
    """The subject's offset in days: keyed, uniform over the rule's range without 0."""
    days = [d for d in range(rules.date_shift_days.min, rules.date_shift_days.max + 1) if d != 0]
    number = int.from_bytes(key.digest("date-shift", study, subject_id)[:8], "big")
    return days[number % len(days)]


def keyed_id(key: RegistryKey, resource_type: str, old_id: str) -> str:
    """A UUID-shaped id from HMAC(key, type, old id): stable for one key, unrelated to the source."""
    return str(uuid.UUID(bytes=key.digest("resource-id", resource_type, old_id)[:16], version=4))


def deidentify(
    resources: Iterable[Resource],
    key: RegistryKey,
    *,
    pack: MappingPack,
    study: str,
    rules: DeidentificationRules,
    enrolled: Collection[str] | None = None,
    known_ids: Mapping[str, str] | None = None,
) -> Deidentified:
    """De-identified copies of ``resources`` (the inputs are not changed), ordered by type and new id.

    ``enrolled``: subject ids whose data may leave; resources of other subjects are left out (None: all).
    ``known_ids``: ``Type/old-id`` -> ``Type/new-id`` of resources de-identified before (the study level), which
    ``resources`` may refer to: a registry package is made a subject at a time (every rule is per resource or
    per subject, so the result is the same as for all resources at once).
    """
    source = list(resources)
    systems = _Systems(pack, study, rules)
    owners = _subject_owners(source, systems.subject)
    kept: list[tuple[Resource, str | None]] = []
    excluded = 0
    for resource in source:
        owner = _owner(resource, owners)
        if owner is not None and enrolled is not None and owner not in enrolled:
            excluded += 1
            continue
        kept.append((resource, owner))
    ids = {
        **(known_ids or {}),
        **{
            f"{r['resourceType']}/{r['id']}": f"{r['resourceType']}/{keyed_id(key, r['resourceType'], r['id'])}"
            for r, _ in kept
        },
    }
    subjects = sorted({owner for _, owner in kept if owner is not None})
    shifts = {s: date_shift(key, study, s, rules) for s in subjects}
    pseudonyms = {s: key.hex("identifier", systems.subject, s) for s in subjects}
    guards = _guards(source, owners)
    last_years = _last_years(kept)
    output = []
    for resource, owner in kept:
        clean = json.loads(json.dumps(resource))  # a deep copy, faster than copy.deepcopy
        _strip(clean, rules, systems)
        _walk_identifiers(clean, lambda i: systems.replace(i, key))
        if clean["resourceType"] == "Patient" and owner is not None:
            pseudonym = [{"system": systems.registry("subject"), "value": pseudonyms[owner]}]
            head = {"resourceType": "Patient", "id": clean["id"], "identifier": pseudonym}
            clean = head | {k: v for k, v in clean.items() if k not in head}
            _generalise_birth_date(clean, rules, last_years.get(owner))
        _rewrite_references(clean, ids)
        clean["id"] = ids[f"{resource['resourceType']}/{resource['id']}"].split("/", 1)[1]
        if owner is not None:
            _shift_dates(clean, shifts[owner])
        clean = _prune(clean)
        if owner is not None:
            _guard(clean, guards.get(owner, ()), pseudonyms[owner])
        output.append(clean)
    output.sort(key=lambda r: (r["resourceType"], r["id"]))
    links = [LinkRow(pseudonyms[s], s, shifts[s]) for s in subjects]
    return Deidentified(resources=output, links=links, excluded=excluded)


class _Systems:
    """The identifier and code systems the rules name, resolved against mappings/project.yaml."""

    def __init__(self, pack: MappingPack, study: str, rules: DeidentificationRules) -> None:
        self.pack, self.study = pack, study
        self.subject = pack.identifier_system("subject", study=study)
        self.keep = {s for kind in rules.identifiers.keep for s in self._all(kind)}
        self.rekey = {s: kind for kind in rules.identifiers.rekey for s in self._all(kind)}
        self.drop_codings = {pack.identifier_system(kind, study=study) for kind in rules.drop_codings}
        self.drop_extensions = {pack.extension_url(k) for k in rules.drop_extensions}
        self.drop_sub = {pack.extension_url(k): set(urls) for k, urls in rules.drop_sub_extensions.items()}
        try:
            self._registry = pack.project.identifier_systems["registry"]
        except KeyError:
            raise MappingError("no identifier system 'registry' in mappings/project.yaml") from None

    def _all(self, kind: str) -> tuple[str, ...]:
        return (
            self.pack.identifier_system(kind, study=self.study),
            *self.pack.superseded_identifier_systems(kind, study=self.study),
        )

    def registry(self, kind: str) -> str:
        try:
            return self._registry.format(
                base=self.pack.project.canonical_base, study=self.study, kind=kind.replace("_", "-")
            )
        except (KeyError, IndexError) as exc:
            raise MappingError(f"identifier system 'registry' of mappings/project.yaml: unknown field {exc}") from None

    def replace(self, identifier: dict[str, Any], key: RegistryKey) -> dict[str, Any] | None:
        system, value = identifier.get("system"), identifier.get("value")
        if system in self.keep:
            return identifier
        kind = self.rekey.get(system or "")
        if kind is None or not value:
            return None  # an MRN, a study-internal pseudonym, a hospital's own identifier: removed
        return {"system": self.registry(kind), "value": key.hex("identifier", str(system), str(value))}


def _subject_owners(resources: list[Resource], subject_system: str) -> dict[str, str]:
    """``Patient/id`` -> subject id, from the ResearchSubjects (R4 individual, R5 subject)."""
    owners: dict[str, str] = {}
    for resource in resources:
        if resource["resourceType"] != "ResearchSubject":
            continue
        subject_ids = [i["value"] for i in _identifier_list(resource) if i.get("system") == subject_system]
        patient = (resource.get("individual") or resource.get("subject") or {}).get("reference")
        if subject_ids and patient:
            owners[patient] = subject_ids[0]
    return owners


def _identifier_list(resource: Resource) -> list[dict[str, Any]]:
    found = resource.get("identifier") or []
    return [found] if isinstance(found, dict) else list(found)


def _owner(resource: Resource, owners: dict[str, str]) -> str | None:
    """The subject whose data a resource is: the Patient itself, or the first Patient it refers to."""
    if resource["resourceType"] == "Patient":
        ref = f"Patient/{resource['id']}"
        if ref not in owners:
            raise DeidentificationError(f"{ref} has no ResearchSubject: its subject is unknown")
        return owners[ref]
    for ref in _references(resource):
        if ref.startswith("Patient/"):
            if ref not in owners:
                raise DeidentificationError(f"{resource['resourceType']} refers to a Patient without ResearchSubject")
            return owners[ref]
    return None


def _references(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _guards(resources: list[Resource], owners: dict[str, str]) -> dict[str, set[str]]:
    """Per subject, the source values that must never appear: subject id, Patient identifiers, birth date."""
    guards: dict[str, set[str]] = {s: {s} for s in owners.values()}
    for resource in resources:
        if resource["resourceType"] != "Patient":
            continue
        subject = owners.get(f"Patient/{resource['id']}")
        if subject is None:
            continue
        guards[subject].update(str(i["value"]) for i in _identifier_list(resource) if i.get("value"))
        if _DATE.match(str(resource.get("birthDate", ""))):
            guards[subject].add(str(resource["birthDate"])[:10])
    return {s: {t for t in tokens if len(t) >= _MIN_GUARDED_TOKEN} for s, tokens in guards.items()}


def _last_years(kept: list[tuple[Resource, str | None]]) -> dict[str, int]:
    """Per subject, the year of their latest date (for the over-89 rule)."""
    years: dict[str, int] = {}
    for resource, owner in kept:
        if owner is None:
            continue
        for value in _strings(resource):
            match = _DATE.match(value)
            if match:
                years[owner] = max(years.get(owner, 0), int(match.group(1)))
    return years


def _strings(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _strip(resource: Resource, rules: DeidentificationRules, systems: _Systems) -> None:
    for path in (*rules.drop.get("*", ()), *rules.drop.get(resource["resourceType"], ())):
        _drop_path(resource, path.split("."))
    for contained in resource.get("contained") or []:
        if isinstance(contained, dict) and "resourceType" in contained:
            _strip(contained, rules, systems)
    _filter_codings_and_extensions(resource, systems)


def _drop_path(node: Any, parts: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _drop_path(item, parts)
    elif isinstance(node, dict):
        if len(parts) == 1:
            node.pop(parts[0], None)
        elif parts[0] in node:
            _drop_path(node[parts[0]], parts[1:])


def _filter_codings_and_extensions(node: Any, systems: _Systems) -> None:
    if isinstance(node, list):
        for item in node:
            _filter_codings_and_extensions(item, systems)
        return
    if not isinstance(node, dict):
        return
    for name in list(node):
        value = node[name]
        if name == "coding" and isinstance(value, list):
            node[name] = [c for c in value if not (isinstance(c, dict) and c.get("system") in systems.drop_codings)]
        elif name in ("extension", "modifierExtension") and isinstance(value, list):
            kept = []
            for extension in value:
                url = extension.get("url") if isinstance(extension, dict) else None
                if url in systems.drop_extensions:
                    continue
                if url in systems.drop_sub and isinstance(extension.get("extension"), list):
                    drop = systems.drop_sub[url]
                    extension["extension"] = [e for e in extension["extension"] if e.get("url") not in drop]
                kept.append(extension)
            node[name] = kept
        _filter_codings_and_extensions(node[name], systems)


def _walk_identifiers(node: Any, replace: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
    """Every Identifier (``identifier``, list or single, and ``valueIdentifier``) through ``replace``."""
    if isinstance(node, list):
        for item in node:
            _walk_identifiers(item, replace)
        return
    if not isinstance(node, dict):
        return
    for name in list(node):
        value = node[name]
        if name in ("identifier", "valueIdentifier"):
            if isinstance(value, dict):
                new = replace(value)
                if new is None:
                    del node[name]
                else:
                    node[name] = new
            elif isinstance(value, list):
                node[name] = [n for n in (replace(i) for i in value if isinstance(i, dict)) if n is not None]
        else:
            _walk_identifiers(value, replace)


def _generalise_birth_date(patient: Resource, rules: DeidentificationRules, last_year: int | None) -> None:
    born = str(patient.get("birthDate") or "")
    if not born:
        return
    year = int(born[:4])
    if rules.birth_date == "drop" or last_year is None or last_year - year > rules.max_age_years:
        del patient["birthDate"]  # Safe Harbor: ages over 89 are aggregated, so no year either
    else:
        patient["birthDate"] = born[:4]


def _rewrite_references(node: Any, ids: dict[str, str]) -> None:
    if isinstance(node, list):
        for item in node:
            _rewrite_references(item, ids)
        return
    if not isinstance(node, dict):
        return
    reference = node.get("reference")
    if isinstance(reference, str) and not reference.startswith("#"):  # "#x": a contained resource, local
        if reference not in ids:
            raise DeidentificationError(
                f"a reference to a {reference.split('/')[0]} that is not in the package (left out or unknown)"
            )
        node["reference"] = ids[reference]
        if reference.startswith("Patient/"):
            node.pop("display", None)  # a person's display is a name
    for name, value in node.items():
        if name != "reference":
            _rewrite_references(value, ids)


def _shift_dates(node: Any, days: int) -> None:
    if isinstance(node, list):
        for index, value in enumerate(node):
            if isinstance(value, str):
                moved = shift_date(value, days)
                if moved is not None:
                    node[index] = moved
            else:
                _shift_dates(value, days)
    elif isinstance(node, dict):
        for name, value in node.items():
            if isinstance(value, str):
                if name != "birthDate":
                    moved = shift_date(value, days)
                    if moved is not None:
                        node[name] = moved
            else:
                _shift_dates(value, days)


def _prune(node: Any) -> Any:
    """Remove what removal left empty (ele-1), and extensions left with a url only (ext-1)."""
    if isinstance(node, dict):
        pruned = {k: _prune(v) for k, v in node.items()}
        pruned = {k: v for k, v in pruned.items() if v not in (None, "", {}, [])}
        return pruned
    if isinstance(node, list):
        items = [_prune(v) for v in node]
        return [v for v in items if v not in (None, "", {}, []) and not _bare_extension(v)]
    return node


def _bare_extension(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"url"}


def _guard(resource: Resource, tokens: Collection[str], pseudonym: str) -> None:
    if not tokens:
        return
    text = json.dumps(resource, ensure_ascii=False)
    for token in tokens:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(token)}(?![A-Za-z0-9])", text):
            raise DeidentificationError(
                f"a de-identified {resource['resourceType']} of subject {pseudonym} still holds one of the "
                "subject's source identifiers or birth date; add the element to `drop` in "
                f"mappings/{RULES_FILE.as_posix()}"
            )
