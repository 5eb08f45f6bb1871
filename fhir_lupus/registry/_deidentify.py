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

import json
import re
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fhir_lupus._resource import Resource
from fhir_lupus.errors import DeidentificationError, MappingError
from fhir_lupus.registry._key import RegistryKey
from fhir_lupus.registry._rules import RULES_FILE, DeidentificationRules
from fhir_lupus.registry._tree import (
    FHIR_DATE,
    drop_path,
    prune,
    references_in,
    shift_dates,
    strings_in,
    walk_identifiers,
)
from fhir_lupus.terminology import MappingPack

__all__ = ["DeidentificationError", "Deidentified", "LinkRow", "deidentify", "keyed_id"]

_MIN_GUARDED_TOKEN = 5  # shorter subject identifiers cannot be told from values in a text search


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
        walk_identifiers(clean, lambda i: systems.replace(i, key))
        if clean["resourceType"] == "Patient" and owner is not None:
            pseudonym = [{"system": systems.registry("subject"), "value": pseudonyms[owner]}]
            head = {"resourceType": "Patient", "id": clean["id"], "identifier": pseudonym}
            clean = head | {k: v for k, v in clean.items() if k not in head}
            _generalise_birth_date(clean, rules, last_years.get(owner))
        _rewritereferences_in(clean, ids)
        clean["id"] = ids[f"{resource['resourceType']}/{resource['id']}"].split("/", 1)[1]
        if owner is not None:
            shift_dates(clean, shifts[owner])
        clean = prune(clean)
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
    for ref in references_in(resource):
        if ref.startswith("Patient/"):
            if ref not in owners:
                raise DeidentificationError(f"{resource['resourceType']} refers to a Patient without ResearchSubject")
            return owners[ref]
    return None


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
        if FHIR_DATE.match(str(resource.get("birthDate", ""))):
            guards[subject].add(str(resource["birthDate"])[:10])
    return {s: {t for t in tokens if len(t) >= _MIN_GUARDED_TOKEN} for s, tokens in guards.items()}


def _last_years(kept: list[tuple[Resource, str | None]]) -> dict[str, int]:
    """Per subject, the year of their latest date (for the over-89 rule)."""
    years: dict[str, int] = {}
    for resource, owner in kept:
        if owner is None:
            continue
        for value in strings_in(resource):
            match = FHIR_DATE.match(value)
            if match:
                years[owner] = max(years.get(owner, 0), int(match.group(1)))
    return years


def _strip(resource: Resource, rules: DeidentificationRules, systems: _Systems) -> None:
    for path in (*rules.drop.get("*", ()), *rules.drop.get(resource["resourceType"], ())):
        drop_path(resource, path.split("."))
    for contained in resource.get("contained") or []:
        if isinstance(contained, dict) and "resourceType" in contained:
            _strip(contained, rules, systems)
    _filter_codings_and_extensions(resource, systems)


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


def _generalise_birth_date(patient: Resource, rules: DeidentificationRules, last_year: int | None) -> None:
    born = str(patient.get("birthDate") or "")
    if not born:
        return
    year = int(born[:4])
    if rules.birth_date == "drop" or last_year is None or last_year - year > rules.max_age_years:
        del patient["birthDate"]  # Safe Harbor: ages over 89 are aggregated, so no year either
    else:
        patient["birthDate"] = born[:4]


def _rewritereferences_in(node: Any, ids: dict[str, str]) -> None:
    if isinstance(node, list):
        for item in node:
            _rewritereferences_in(item, ids)
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
            _rewritereferences_in(value, ids)


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
