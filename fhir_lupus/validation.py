"""Validation of every emitted resource: its FHIR version's fhir.resources model, then FHIRPath invariants.

The models check structure, cardinality and primitive formats; the invariants (mappings/fhir/invariants.yaml,
evaluated with fhirpathpy) check the rules the models do not, such as obs-6 and obs-7. A failure is a
ResourceInvalidError that names the resource and every broken rule.

Two paths give the same verdicts. "strict" evaluates every invariant with fhirpathpy, as the reference.
"fast" (the default) uses the plain-Python form of a rule where fhir_lupus._fastinvariants has one for
exactly that expression, and fhirpathpy where it has none or is not sure; tests/test_validation_differential.py
holds the two paths to the same verdicts. Both validate the model the same way. The path is chosen per call
(``validation=``); map, push and the registry package take it from their ``Settings`` (fhir_lupus/settings.py),
which is how ``--strict-validation`` reaches all three. The invariants are those of the mapping pack a call
names (default: ``load_pack()``), compiled once per pack.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from pydantic import ValidationError

from fhir_lupus._fastinvariants import Predicate, fast_predicate
from fhir_lupus.errors import MappingError, ResourceInvalidError
from fhir_lupus.terminology import MappingPack, load_pack, read_yaml

__all__ = ["FhirVersion", "Validation", "check_invariants", "check_validation", "validate_resource"]

FhirVersion = Literal["R4", "R5"]
Validation = Literal["fast", "strict"]
INVARIANTS_FILE = "fhir/invariants.yaml"


def check_validation(validation: str) -> Validation:
    """``validation`` itself when it names a path; ValueError otherwise (a typo must not pick one silently)."""
    if validation not in get_args(Validation):
        raise ValueError(f"validation must be 'fast' or 'strict', not {validation!r}")
    return cast(Validation, validation)


@dataclass(frozen=True)
class _Invariant:
    key: str
    human: str
    versions: tuple[str, ...]
    when_present: tuple[str, ...]
    check: Callable[[dict[str, Any], dict[str, Any]], list[Any]]
    fast: Predicate | None  # the plain-Python form of exactly this expression, if there is one


def _invariants(pack: MappingPack | None = None) -> dict[str, tuple[_Invariant, ...]]:
    """The pack's invariants (default: ``load_pack()``), compiled once per pack and kept by it."""
    pack = pack or load_pack()
    return pack.derive(INVARIANTS_FILE, lambda: _compile(pack.root / INVARIANTS_FILE))


def _compile(path: Path) -> dict[str, tuple[_Invariant, ...]]:
    from fhirpathpy import compile as compile_fhirpath
    from fhirpathpy.models import models

    compiled: dict[str, tuple[_Invariant, ...]] = {}
    for resource_type, entries in (read_yaml(path) or {}).items():
        items = []
        for entry in entries:
            try:
                versions = tuple(entry.get("versions", ("R4", "R5")))
                check = compile_fhirpath(entry["expression"], models["r4"])
                when_present = tuple(entry.get("when_present", ()))
                fast = fast_predicate(entry["key"], entry["expression"], resource_type)
                items.append(_Invariant(entry["key"], entry["human"], versions, when_present, check, fast))
            except Exception as exc:
                raise MappingError(f"{path}: invariant {entry.get('key')!r} does not compile: {exc}") from None
        compiled[resource_type] = tuple(items)
    return compiled


def check_invariants(
    resource: dict[str, Any],
    version: FhirVersion = "R4",
    *,
    validation: Validation = "fast",
    pack: MappingPack | None = None,
) -> list[str]:
    """The keys and texts of the invariants a resource breaks (empty list when it passes); ``pack``: whose
    mappings/fhir/invariants.yaml (default: ``load_pack()``)."""
    fast = check_validation(validation) == "fast"
    rules = _invariants(pack)
    broken = []
    if not fast or _has_empty(resource):
        broken = [f"ele-1: All FHIR elements must have a @value or children ({p})" for p in _empty_elements(resource)]
    context = {"resource": resource, "rootResource": resource}
    for invariant in (*rules.get("*", ()), *rules.get(resource["resourceType"], ())):
        if version not in invariant.versions:
            continue
        if invariant.when_present and not any(name in resource for name in invariant.when_present):
            continue  # the rule is about an element the resource does not have: it holds vacuously
        if fast and invariant.fast is not None:
            verdict = invariant.fast(resource)
            if verdict is not None:
                if not verdict:
                    broken.append(f"{invariant.key}: {invariant.human}")
                continue
        try:
            result = invariant.check(resource, context)
        except Exception as exc:  # fhirpathpy raises bare Exceptions for unsupported functions
            raise MappingError(f"invariant {invariant.key} cannot be evaluated: {exc}") from None
        if result != [True]:
            broken.append(f"{invariant.key}: {invariant.human}")
    return broken


def _has_empty(node: Any) -> bool:
    """Whether ``_empty_elements`` finds anything; the same test without building paths (the fast path).

    Exact JSON types are tested by type (a third of the cost of ``==``); anything else by the general rule.
    """
    kind = type(node)
    if kind is dict:
        return not node or any(_has_empty(value) for value in node.values())
    if kind is list:
        return not node or any(_has_empty(value) for value in node)
    if kind is str:
        return not node
    if kind is int or kind is float or kind is bool:
        return False
    if node is None or node == "" or node == {} or node == []:
        return True
    if isinstance(node, dict):
        return any(_has_empty(value) for value in node.values())
    if isinstance(node, list):
        return any(_has_empty(value) for value in node)
    return False


def _empty_elements(node: Any, path: str = "") -> list[str]:
    """Paths of elements with neither a value nor children: "", {}, [] or null (ele-1)."""
    if node is None or node == "" or node == {} or node == []:
        return [path or "<root>"]
    if isinstance(node, dict):
        return [hit for key, value in node.items() for hit in _empty_elements(value, f"{path}.{key}" if path else key)]
    if isinstance(node, list):
        return [hit for index, value in enumerate(node) for hit in _empty_elements(value, f"{path}[{index}]")]
    return []


@functools.lru_cache(maxsize=64)
def _model(version: FhirVersion, resource_type: str) -> Any:
    _look_up_contained_models_once()
    if version == "R4":
        from fhir.resources.R4B import get_fhir_model_class as r4b_model

        return r4b_model(resource_type)
    from fhir.resources import get_fhir_model_class as r5_model

    return r5_model(resource_type)


@functools.cache
def _look_up_contained_models_once() -> None:
    """Make fhir_core find the model of a contained resource once per type, not once per resource.

    fhir_core validates each element of ``contained`` (every lab's Specimen) by resolving the model class from its
    dotted path with pydantic's ``import_string`` on every call: an import machinery round trip per resource,
    about a tenth of ``model_validate`` for the example. The answer for a path never changes in a process (the
    module is imported once), so the look-up fhir_core makes is kept per path; the models, and so the verdicts
    and the error texts, are the same objects as before. Done at the first model look-up, once per process.
    """
    import fhir_core.types as fhir_types

    fhir_types.import_string = functools.cache(fhir_types.import_string)  # type: ignore[attr-defined]


def validate_resource(
    resource: dict[str, Any],
    version: FhirVersion = "R4",
    *,
    validation: Validation = "fast",
    pack: MappingPack | None = None,
) -> None:
    """Raise ResourceInvalidError unless the resource passes its model and its invariants.

    ``validation``: "fast" or "strict" (see the module docstring); ``pack``: as for ``check_invariants``.
    """
    resource_type = resource.get("resourceType")
    label = f"{resource_type}/{resource.get('id', '?')}"
    try:
        model = _model(version, str(resource_type))
    except Exception:
        raise ResourceInvalidError(f"{label}: unknown resource type for FHIR {version}") from None
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:5])
        raise ResourceInvalidError(f"{label}: FHIR {version} model: {problems}") from None
    broken = check_invariants(resource, version, validation=validation, pack=pack)
    if broken:
        raise ResourceInvalidError(f"{label}: FHIRPath invariants broken: {'; '.join(broken)}")
