"""The fast validation path gives the strict path's verdicts: same rejections, same rule keys, same acceptances.

The corpus: the mapped resources of one example subject (R4 and R5), every one of which both paths must
accept, and mutants of them that break each invariant of mappings/fhir/invariants.yaml on purpose, drop each
top-level element, empty an element (ele-1), or carry what the fast predicates leave to fhirpathpy (primitive
extensions, nulls, date-times of mixed precision or offset). For each, check_invariants and validate_resource
must answer exactly the same in "fast" and "strict" mode. The corpus must break every rule key at least once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakefhir
import pytest
from support import example_subset
from typer.testing import CliRunner

from fhir_lupus.cli import app
from fhir_lupus.errors import FhirLupusError, ResourceInvalidError
from fhir_lupus.model import load_trial
from fhir_lupus.pipeline import map_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import default_mappings_dir, read_yaml
from fhir_lupus.validation import (
    FhirVersion,
    Validation,
    _invariants,
    check_invariants,
    validate_resource,
)

Resource = dict[str, Any]
Mutation = Callable[[Resource], Resource | None]  # None: does not apply to this resource


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return example_subset(tmp_path_factory.mktemp("differential"), 1)


@pytest.fixture(scope="module")
def originals(directory: Path) -> dict[FhirVersion, list[Resource]]:
    mapped: dict[FhirVersion, list[Resource]] = {}
    for version in ("R4", "R5"):
        data, report = load_trial(directory)
        mapped[version] = map_trial(
            TrialSource.loaded(data, report),
            fhir_version=version,
            settings=Settings.from_mappings(None, validation="strict"),
        ).resources
    return mapped


def _outcome(resource: Resource, version: FhirVersion, validation: Validation) -> tuple[list[str], str]:
    before = copy.deepcopy(resource)
    broken = check_invariants(resource, version, validation=validation)
    try:
        validate_resource(resource, version, validation=validation)
        verdict = "accepted"
    except ResourceInvalidError as exc:
        verdict = str(exc)
    assert resource == before, f"{validation} validation changed the resource"
    return broken, verdict


def _samples(resources: list[Resource]) -> list[Resource]:
    """One resource of each type, and of each Observation kind (lab with contained Specimen, SLEDAI, other)."""
    seen: dict[tuple[str, bool, bool], Resource] = {}
    for resource in resources:
        kind = (resource["resourceType"], "contained" in resource, "component" in resource)
        seen.setdefault(kind, resource)
    return list(seen.values())


def _lab(resource: Resource) -> bool:
    return resource["resourceType"] == "Observation" and "contained" in resource


def _edit(applies: Callable[[Resource], bool], change: Callable[[Resource], object]) -> Mutation:
    def mutate(resource: Resource) -> Resource | None:
        if not applies(resource):
            return None
        mutant = copy.deepcopy(resource)
        change(mutant)
        return mutant

    return mutate


def _is(resource_type: str) -> Callable[[Resource], bool]:
    return lambda resource: resource["resourceType"] == resource_type


def _has(*keys: str) -> Callable[[Resource], bool]:
    return lambda resource: all(key in resource for key in keys)


def _period_key(resource: Resource) -> str | None:
    return next((k for k in ("performedPeriod", "period", "actualPeriod", "effectivePeriod") if k in resource), None)


def _set_period(start: str, end: str, extra: Resource | None = None) -> Mutation:
    def mutate(resource: Resource) -> Resource | None:
        key = _period_key(resource)
        if key is None or not isinstance(resource[key], dict):
            return None
        mutant = copy.deepcopy(resource)
        mutant[key] = {"start": start, "end": end, **(extra or {})}
        return mutant

    return mutate


def _bundle_edit(change: Callable[[Resource], object]) -> Mutation:
    def mutate(resource: Resource) -> Resource | None:
        if not _lab(resource):
            return None
        entry = {
            "fullUrl": f"urn:uuid:{resource['id']}",
            "resource": copy.deepcopy(resource),
            "request": {"method": "PUT", "url": f"Observation/{resource['id']}"},
        }
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
        change(bundle)
        return bundle

    return mutate


def _same_code_component(resource: Resource) -> None:
    resource["component"][0]["code"] = copy.deepcopy(resource["code"])


def _duplicate_entry(bundle: Resource) -> None:
    bundle["entry"].append(copy.deepcopy(bundle["entry"][0]))


def _codesystem_duplicate(resource: Resource) -> None:
    resource["concept"].append(copy.deepcopy(resource["concept"][0]))


# (the rule the mutation means to break, or "" for an edge case either verdict may have, the mutation)
MUTATIONS: list[tuple[str, Mutation]] = [
    # dom-2 .. dom-5: the contained Specimen of a lab Observation
    ("dom-2", _edit(_lab, lambda r: r["contained"][0].update(contained=[{"resourceType": "Specimen", "id": "x"}]))),
    ("dom-3", _edit(_lab, lambda r: r.pop("specimen"))),
    ("dom-3", _edit(_lab, lambda r: r["contained"][0].update(id="other"))),
    ("dom-3", _edit(_lab, lambda r: r["contained"].append({"resourceType": "Specimen", "id": "spare"}))),
    ("", _edit(_lab, lambda r: r["contained"][0].pop("id"))),
    ("", _edit(_lab, lambda r: r.update(note=[{"text": "see", "authorReference": {"reference": "#specimen"}}]))),
    ("", _edit(_lab, lambda r: r["specimen"].update(_reference={"extension": [{"url": "urn:x", "valueString": "y"}]}))),
    ("dom-4", _edit(_lab, lambda r: r["contained"][0].update(meta={"versionId": "1"}))),
    ("dom-4", _edit(_lab, lambda r: r["contained"][0].update(meta={"lastUpdated": "2009-01-01T00:00:00Z"}))),
    ("dom-5", _edit(_lab, lambda r: r["contained"][0].update(meta={"security": [{"code": "R"}]}))),
    # ext-1: resource, component and modifier extensions
    (
        "ext-1",
        _edit(_has("extension"), lambda r: r["extension"][0].update(extension=[{"url": "u", "valueString": "v"}])),
    ),
    ("ext-1", _edit(_has("extension"), lambda r: r["extension"].append({"url": "urn:no-value"}))),
    ("ext-1", _edit(_has("component"), lambda r: r["component"][0].update(extension=[{"url": "urn:no-value"}]))),
    ("ext-1", _edit(_lab, lambda r: r.update(modifierExtension=[{"url": "urn:x"}]))),
    ("", _edit(_lab, lambda r: r.update(modifierExtension=[{"url": "urn:x", "valueString": "y"}]))),
    ("", _edit(_has("extension"), lambda r: r["extension"][0].update(_valueString={"id": "x"}))),
    ("", _edit(_has("extension"), lambda r: r["extension"].append(None))),
    # per-1: end before start, in every form the fast path decides and the ones it leaves to fhirpathpy
    ("per-1", _set_period("2009-02-01T10:00:00+08:00", "2009-02-01T09:00:00+08:00")),
    ("per-1", _set_period("2009-02-01", "2009-01-31")),
    ("per-1", _set_period("2009-02-01T10:00:00+08:00", "2009-02-01T01:00:00Z")),
    ("", _set_period("2009-02-01T10:00:00+08:00", "2009-02-01T03:00:00Z")),
    ("", _set_period("2009-02-01T10:00:00+08:00", "2009-02-01")),
    ("", _set_period("2009-02-01", "2009-02-01T10:00:00+08:00")),
    ("", _set_period("2009-02-01T10:00:00+08:00", "2009-02-01T10:00:00+08:00")),
    ("", _set_period("2009-02-01T10:00:00.5+08:00", "2009-02-01T10:00:00+08:00")),
    ("", _set_period("2009-02", "2009-01-31")),
    ("", _set_period("2009-02-01", "2009-01-31", {"_end": {"extension": [{"url": "urn:x", "valueString": "y"}]}})),
    (
        "per-1",
        _edit(_is("Observation"), lambda r: r.update(effectivePeriod={"start": "2009-02-02", "end": "2009-02-01"})),
    ),
    # Observation rules
    ("obs-3", _edit(_has("referenceRange"), lambda r: r.update(referenceRange=[{"appliesTo": [{"text": "adults"}]}]))),
    ("obs-6", _edit(_is("Observation"), lambda r: r.update(dataAbsentReason={"text": "lost"}))),
    ("", _edit(_is("Observation"), lambda r: r.update(dataAbsentReason={"text": "lost"}, _valueString={"id": "x"}))),
    ("obs-7", _edit(_has("component"), _same_code_component)),
    ("", _edit(_has("component"), lambda r: r["component"][0]["code"]["coding"].append(r["code"]["coding"][0]))),
    ("qty-3", _edit(_has("valueQuantity"), lambda r: r["valueQuantity"].pop("system"))),
    ("qty-3", _edit(_has("referenceRange"), lambda r: r.update(valueQuantity={"value": 1, "code": "g/L"}))),
    # Group, Patient, CodeSystem
    ("", _edit(_is("Group"), lambda r: (r.pop("actual", None), r.update(member=[{"entity": {"reference": "P/1"}}])))),
    ("", _edit(_is("Group"), lambda r: r.update(actual="true", member=[{"entity": {"reference": "Patient/1"}}]))),
    ("grp-1", _edit(_is("Group"), lambda r: r.update(actual=False, member=[{"entity": {"reference": "Patient/1"}}]))),
    ("pat-1", _edit(_is("Patient"), lambda r: r.update(contact=[{"gender": "female"}]))),
    ("", _edit(_is("Patient"), lambda r: r.update(contact=[{"name": {"text": "Kin"}}, {"gender": "male"}]))),
    ("csd-1", _edit(_has("concept"), _codesystem_duplicate)),
    # Bundle rules (fhirpathpy in both paths: a Bundle is validated once per write)
    ("bdl-1", _bundle_edit(lambda b: b.update(total=1))),
    ("bdl-2", _bundle_edit(lambda b: b["entry"][0].update(search={"mode": "match"}))),
    ("bdl-3", _bundle_edit(lambda b: b.update(type="collection"))),
    ("bdl-4", _bundle_edit(lambda b: b["entry"][0].update(response={"status": "201"}))),
    ("bdl-5", _bundle_edit(lambda b: b["entry"].append({"fullUrl": "urn:uuid:1"}))),
    ("bdl-7", _bundle_edit(_duplicate_entry)),
    ("bdl-8", _bundle_edit(lambda b: b["entry"][0].update(fullUrl="http://x.org/fhir/Observation/1/_history/2"))),
    # ele-1: an element with neither a value nor children
    ("ele-1", _edit(_is("Observation"), lambda r: r.update(note=[{}]))),
    ("ele-1", _edit(_is("Observation"), lambda r: r["identifier"][0].update(value=""))),
    ("ele-1", _edit(_is("Observation"), lambda r: r.update(identifier=[]))),
    ("ele-1", _edit(_lab, lambda r: r["contained"][0].update(note=None))),
]


def _drops(resource: Resource) -> list[Resource]:
    """The resource without each of its top-level elements in turn (required ones fail the model)."""
    return [{k: v for k, v in resource.items() if k != key} for key in resource if key not in ("resourceType", "id")]


def test_valid_originals_pass_both_paths(originals: dict[FhirVersion, list[Resource]]) -> None:
    for version, resources in originals.items():
        for resource in resources:
            assert check_invariants(resource, version, validation="fast") == [], resource["id"]
            assert check_invariants(resource, version, validation="strict") == [], resource["id"]


def test_mutants_get_the_same_verdicts(originals: dict[FhirVersion, list[Resource]]) -> None:
    rejected_for: set[str] = set()
    cases = 0
    for version, resources in originals.items():
        samples = _samples(resources)
        for meant, mutate in MUTATIONS:
            applied = 0
            for original in samples:
                mutant = mutate(original)
                if mutant is None:
                    continue
                applied += 1
                strict = _outcome(mutant, version, "strict")
                assert _outcome(mutant, version, "fast") == strict, (meant, version, mutant.get("id"))
                rejected_for.update(entry.split(":", 1)[0] for entry in strict[0])
                if meant:
                    assert any(entry.startswith(f"{meant}:") for entry in strict[0]), (meant, version, strict)
                cases += 1
            assert applied, f"mutation for {meant or 'an edge case'} applies to no {version} sample"
        for original in samples:
            for mutant in _drops(original):
                assert _outcome(mutant, version, "fast") == _outcome(mutant, version, "strict"), mutant["id"]
                cases += 1
    keys = {
        entry["key"]
        for entries in read_yaml(default_mappings_dir() / "fhir" / "invariants.yaml").values()
        for entry in entries
    }
    assert keys | {"ele-1"} <= rejected_for, f"no mutant breaks {sorted(keys | {'ele-1'} - rejected_for)}"
    assert cases > 200


def test_fast_forms_cover_the_rules_resources_break_in_bulk() -> None:
    """A changed expression in invariants.yaml silently falls back to fhirpathpy: this says which rules did."""
    fast = {rule.key for rules in _invariants().values() for rule in rules if rule.fast is not None}
    assert " ".join(sorted(fast)) == "dom-2 dom-3 dom-4 dom-5 ext-1 grp-1 obs-3 obs-6 obs-7 pat-1 per-1 qty-3"


def test_mode_defaults_to_fast_and_a_block_can_ask_for_strict() -> None:
    resource = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": 1}
    assert check_invariants(resource) == []
    strict = check_invariants({**resource, "dataAbsentReason": {"text": "x"}}, validation="strict")
    assert strict[0].startswith("obs-6:")
    with pytest.raises(ValueError, match="fast"):
        check_invariants(resource, validation="quick")  # type: ignore[arg-type]


def test_strict_map_and_fast_map_give_the_same_resources(
    directory: Path, originals: dict[FhirVersion, list[Resource]]
) -> None:
    data, report = load_trial(directory)
    fast = Settings.from_mappings(None, validation="fast")
    assert map_trial(TrialSource.loaded(data, report), settings=fast).resources == originals["R4"]


def test_fast_forms_decide_every_mapped_resource(originals: dict[FhirVersion, list[Resource]]) -> None:
    """No fhirpathpy fallback on what the mappers emit: otherwise the fast path is fast only on paper."""
    rules = _invariants()
    for version, resources in originals.items():
        for resource in resources:
            for rule in (*rules.get("*", ()), *rules.get(resource["resourceType"], ())):
                if rule.fast is not None and version in rule.versions:
                    assert rule.fast(resource) is True, (rule.key, version, resource["id"])


def test_cli_strict_validation_writes_the_same_bundle(dataset: Callable[..., Path], tmp_path: Path) -> None:
    data_dir = dataset()
    outputs = []
    for extra in ([], ["--strict-validation"]):
        out = tmp_path / f"bundle{len(extra)}.json"
        result = CliRunner().invoke(app, ["map", str(data_dir), "-o", str(out), *extra])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_cli_strict_validation_reaches_push_and_registry_package(
    dataset: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Any
) -> None:
    seen: list[str] = []

    def push_trial(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["settings"].validation)
        raise FhirLupusError("stopped by the test")

    def package_trial(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["settings"].validation)
        raise FhirLupusError("stopped by the test")

    monkeypatch.setattr("fhir_lupus.cli._sync.push_trial", push_trial)
    monkeypatch.setattr("fhir_lupus.cli._registry.package_trial", package_trial)  # streams (issue 12, item 1)
    key = tmp_path / "registry.key"
    key.write_text("test-secret-0123456789")
    key.chmod(0o600)
    data_dir = dataset()
    for extra in ([], ["--strict-validation"]):
        # a server that answers (the fake): push asks it first, before it reads the trial (issue 22)
        server = ["--server", fakefhir.BASE, "--journal", str(tmp_path / "journal.sqlite")]
        CliRunner().invoke(app, ["push", str(data_dir), *server, *extra])
        package = ["registry", "package", str(data_dir), "-o", str(tmp_path / "pkg"), "--key-file", str(key)]
        CliRunner().invoke(app, [*package, *extra])
    assert seen == ["fast", "fast", "strict", "strict"]
