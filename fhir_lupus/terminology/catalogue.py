"""The lab catalogue: which LOINC code a reported result gets, and how its value is read.

The rule is data (mappings/terminology/labs.yaml): the first code whose ``when`` fits the value kind, unit
dimension and method wins, so a creatinine in umol/L and one in mg/dL get different codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from fhir_lupus.errors import TerminologyError, UnitError
from fhir_lupus.terminology._pack import CodeChoice, LabAnalyte, MappingPack, OrdinalAnswer
from fhir_lupus.terminology.units import UnitConverter

__all__ = ["LabCatalogue", "LabValue", "ResolvedLab", "parse_lab_value"]

ValueKind = Literal["quantity", "ordinal", "titer"]
_TITER = re.compile(r"^\s*1\s*:\s*(\d+)\s*$")
_NUMBER = re.compile(r"^\s*(<=|>=|<|>)?\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*$")


@dataclass(frozen=True)
class LabValue:
    """A reported value, read once: a number (with comparator), an ordinal answer, or a titer 1:N."""

    kind: ValueKind
    raw: str
    number: Decimal | None = None
    comparator: str | None = None
    ordinal: str | None = None
    titer: int | None = None


def parse_lab_value(raw: str, ordinals: dict[str, OrdinalAnswer]) -> LabValue:
    """Read a value cell; ValueError names what was expected when it fits no form."""
    text = raw.strip()
    if match := _TITER.match(text):
        dilution = int(match.group(1))
        if dilution < 1:
            raise ValueError(f"titer {raw!r} has a zero dilution")
        return LabValue(kind="titer", raw=text, titer=dilution)
    if match := _NUMBER.match(text):
        try:
            number = Decimal(match.group(2))
        except InvalidOperation:  # pragma: no cover - the regex admits only decimals
            raise ValueError(f"{raw!r} is not a number") from None
        return LabValue(kind="quantity", raw=text, number=number, comparator=match.group(1))
    if text.lower() in ordinals:
        return LabValue(kind="ordinal", raw=text, ordinal=text.lower())
    expected = ", ".join(sorted(ordinals))
    raise ValueError(f"{raw!r} is neither a number, a titer (1:N) nor an ordinal ({expected})")


@dataclass(frozen=True)
class ResolvedLab:
    """What the catalogue decided for one result: the LOINC code and the UCUM unit (quantities only)."""

    analyte: str
    code: CodeChoice
    ucum: str | None


class LabCatalogue:
    """Analyte look-up, code choice and unit normalisation over one mapping pack."""

    def __init__(self, pack: MappingPack, units: UnitConverter | None = None) -> None:
        self.pack = pack
        self.units = units or UnitConverter(pack)

    def analyte(self, key: str) -> LabAnalyte:
        try:
            return self.pack.labs.analytes[key]
        except KeyError:
            raise TerminologyError(f"analyte {key!r} is not in the lab catalogue") from None

    def resolve(self, analyte_key: str, value: LabValue, unit: str | None, method: str | None) -> ResolvedLab:
        """Choose the LOINC code for a result; TerminologyError or UnitError says why none fits."""
        analyte = self.analyte(analyte_key)
        ucum: str | None = None
        if value.kind == "quantity":
            if not unit:
                raise UnitError(f"a numeric {analyte_key} result needs a unit")
            ucum = self.units.to_ucum(unit)
        elif unit and unit.strip():
            raise UnitError(f"a {value.kind} result takes no unit (got {unit!r})")
        for choice in analyte.codes:
            when = choice.when
            if when.value_kind != value.kind:
                continue
            if when.method is not None and method not in when.method:
                continue
            if when.unit_like is not None and (ucum is None or not self.units.commensurable(ucum, when.unit_like)):
                continue
            return ResolvedLab(analyte=analyte_key, code=choice, ucum=ucum)
        accepted = "; ".join(_describe(choice) for choice in analyte.codes)
        got = f"{value.kind}" + (f" in {ucum}" if ucum else "") + (f", method {method}" if method else "")
        raise TerminologyError(f"no LOINC code for {analyte_key} reported as {got}; catalogue accepts: {accepted}")

    def normalise(self, analyte_key: str, number: Decimal | float, ucum: str) -> tuple[float, str]:
        """Express a value in the analyte's trial unit (identity when it has none)."""
        analyte = self.analyte(analyte_key)
        target = analyte.trial_unit or ucum
        return self.units.convert(number, ucum, target, molar_mass=analyte.molar_mass), target

    def convert_across(self, from_analyte: str, to_analyte: str, number: Decimal | float, ucum: str) -> float:
        """Convert between two analytes that measure one molecule (urea mmol/L -> BUN mg/dL)."""
        for conv in self.pack.labs.cross_conversions:
            if conv.from_ == from_analyte and conv.to == to_analyte:
                target = self.analyte(to_analyte).trial_unit
                if target is None:
                    raise TerminologyError(f"{to_analyte} has no trial unit to convert into")
                return self.units.convert(number, ucum, target, molar_mass=conv.mass_per_mol)
        raise TerminologyError(f"no conversion from {from_analyte} to {to_analyte} in the lab catalogue")


def _describe(choice: CodeChoice) -> str:
    when = choice.when
    parts: list[str] = [when.value_kind]
    if when.unit_like:
        parts.append(f"unit like {when.unit_like}")
    if when.method:
        parts.append("method " + "/".join(str(m) for m in when.method))
    return f"{choice.loinc} ({', '.join(parts)})"
