"""The codelists define.xml and the reviewer's guide describe: for each codelist a variable names (``codelist:`` in
mappings/sdtm/domains/*.yaml), the values the datasets actually hold, each a CDISC CT term with its NCI code or a
sponsor-defined value, as the terminology says, never guessed.

The terms live in mappings/sdtm/terms.yaml, lab_terms.yaml and units.yaml (CDISC CT of the package the CORE cache
holds, and the values the project defines itself, read by ``_terms``); define.xml asks them only two questions
through ``Terminology`` (which package, which codelist), so the files' layout can change without touching
define.xml. A value its codelist does not list stops the run: define.xml never calls a value a CT term, or
sponsor-defined, without being told so. Without a terminology (``NO_TERMINOLOGY``, a test's choice) the values are
written without NCI codes and the guide says they were not checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from fhir_lupus.errors import FhirLupusError
from fhir_lupus.sdtm._engine import Dataset
from fhir_lupus.sdtm._terms import SdtmTerms, load_sdtm_terms
from fhir_lupus.terminology import MappingPack

__all__ = [
    "NO_TERMINOLOGY",
    "CtCodelist",
    "StaticTerminology",
    "Terminology",
    "UsedCodelist",
    "UsedTerm",
    "terminology",
    "terms_view",
    "used_codelists",
]

TermKind = Literal["ct", "sponsor", "unchecked"]


@dataclass(frozen=True)
class CtCodelist:
    """One codelist as the terms file gives it: ``code`` is its NCI code (None for a sponsor-defined codelist);
    ``terms`` maps each submission value to its NCI code, or to None for a sponsor-defined value."""

    name: str  # the CDISC short name, e.g. NY
    label: str  # e.g. No Yes Response
    code: str | None
    extensible: bool = False
    terms: Mapping[str, str | None] = field(default_factory=dict)
    decodes: Mapping[str, str] = field(default_factory=dict)  # submission value -> NCI preferred term
    reasons: Mapping[str, str] = field(default_factory=dict)  # sponsor-defined value -> why it has no CT term


class Terminology(Protocol):
    """What define.xml asks of the controlled terminology."""

    @property
    def package(self) -> str:
        """The CT package, e.g. ``sdtmct-2015-12-18``; empty when none is loaded."""
        ...

    def codelist(self, name: str) -> CtCodelist | None:
        """The codelist of that short name, None when the terminology does not hold it."""
        ...


@dataclass(frozen=True)
class StaticTerminology:
    """A terminology held in memory (the terms file once read, or a test's own)."""

    package: str
    codelists: Mapping[str, CtCodelist] = field(default_factory=dict)

    def codelist(self, name: str) -> CtCodelist | None:
        return self.codelists.get(name)


NO_TERMINOLOGY = StaticTerminology("")


def terminology(pack: MappingPack) -> Terminology:
    """The terminology of ``pack``: mappings/sdtm/terms.yaml, lab_terms.yaml and units.yaml as ``_terms`` reads them."""
    return terms_view(load_sdtm_terms(pack))


def terms_view(terms: SdtmTerms) -> StaticTerminology:
    """``SdtmTerms`` as define.xml asks for it: each codelist with its NCI code and the NCI code (or, sponsor-defined,
    the reason) of each term."""
    return StaticTerminology(
        terms.package,
        {
            key: CtCodelist(
                name=key,
                label=codelist.name,
                code=codelist.code,
                extensible=codelist.extensible,
                terms={term.value: term.code for term in codelist.terms},
                decodes={term.value: term.preferred for term in codelist.terms if term.preferred},
                reasons={term.value: term.sponsor for term in codelist.terms if term.sponsor},
            )
            for key, codelist in terms.codelists.items()
        },
    )


@dataclass(frozen=True)
class UsedTerm:
    value: str
    kind: TermKind  # a CDISC CT term, a sponsor-defined value, or not checked (no terminology loaded)
    code: str | None = None  # the NCI code of a CT term
    decode: str | None = None
    why: str | None = None  # a sponsor-defined value: why it has no CT term


@dataclass(frozen=True)
class UsedCodelist:
    """A codelist as the datasets use it: the terms they hold, the variables (``DM.SEX``) that hold them."""

    name: str
    codelist: CtCodelist | None
    data_type: str  # text, integer or float: the type of the variables it controls
    terms: tuple[UsedTerm, ...]
    variables: tuple[str, ...]

    @property
    def oid(self) -> str:
        return codelist_oid(self.name)

    @property
    def is_ct(self) -> bool:
        return self.codelist is not None and self.codelist.code is not None


def codelist_oid(name: str) -> str:
    return f"CL.{name}"


def used_codelists(datasets: Iterable[Dataset], terms: Terminology) -> list[UsedCodelist]:
    """Every codelist a variable of ``datasets`` names and holds a value of, by name; a codelist whose variables
    are all empty is left out (define.xml has no empty codelist: those variables carry no CodeListRef)."""
    values: dict[str, set[str]] = {}
    where: dict[str, list[str]] = {}
    types: dict[str, set[str]] = {}
    for dataset in datasets:
        for variable in dataset.spec.variables:
            if variable.codelist is None:
                continue
            held = {_text(r[variable.name]) for r in dataset.records} - {""}
            if held:
                values.setdefault(variable.codelist, set()).update(held)
                where.setdefault(variable.codelist, []).append(f"{dataset.name}.{variable.name}")
                types.setdefault(variable.codelist, set()).add(variable.type)
    used: list[UsedCodelist] = []
    for name in sorted(values):
        codelist = terms.codelist(name)
        if codelist is None and terms.package:
            raise FhirLupusError(
                f"{', '.join(where[name])}: codelist {name} is not in the terminology ({terms.package})"
            )
        found = tuple(_term(codelist, value, where[name]) for value in sorted(values[name], key=_order))
        data_type = next(iter(types[name])) if len(types[name]) == 1 else "text"
        used.append(UsedCodelist(name, codelist, data_type, found, tuple(where[name])))
    return used


def _term(codelist: CtCodelist | None, value: str, where: list[str]) -> UsedTerm:
    if codelist is None:
        return UsedTerm(value, "unchecked")
    if value not in codelist.terms:
        raise FhirLupusError(
            f"{', '.join(where)}: {value!r} is not a term of codelist {codelist.name}: add it to the terminology, as "
            "its CDISC CT term with the NCI code or as a sponsor-defined value"
        )
    code, decode, why = codelist.terms[value], codelist.decodes.get(value), codelist.reasons.get(value)
    if codelist.code is not None and code is not None:
        return UsedTerm(value, "ct", code, decode)
    if codelist.code is not None and not codelist.extensible:
        raise FhirLupusError(
            f"{', '.join(where)}: {value!r} is sponsor-defined, but CDISC codelist {codelist.name} is not extensible"
        )
    return UsedTerm(value, "sponsor", None, decode, why)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _order(value: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then text."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)
