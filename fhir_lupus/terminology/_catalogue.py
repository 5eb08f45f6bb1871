"""The lab catalogue: which LOINC code a reported result gets, and how its value is read.

The rule is data (mappings/terminology/labs.yaml): the first code whose ``when`` fits the value kind, specimen,
unit (dimension and annotation) and method wins, so a creatinine in umol/L and one in mg/dL get different codes.
A form listed under ``refused`` (no verified code exists) is refused with the reason written beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from fhir_lupus.errors import TerminologyError, UnitError
from fhir_lupus.terminology._pack import CodeChoice, CodeWhen, LabAnalyte, MappingPack, OrdinalAnswer
from fhir_lupus.terminology._units import UnitConverter

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

    def resolve(
        self,
        analyte_key: str,
        value: LabValue,
        unit: str | None,
        method: str | None,
        specimen: str | None = None,
    ) -> ResolvedLab:
        """Choose the code for a result; TerminologyError or UnitError says why none fits.

        ``specimen`` is the specimen the lab reported on; every code names the specimens it is made for and a
        result on another one is refused (None skips the check: a pulled result's code already fixes it).
        """
        analyte = self.analyte(analyte_key)
        ucum: str | None = None
        if value.kind == "quantity":
            if not unit:
                raise UnitError(f"a numeric {analyte_key} result needs a unit")
            ucum = self.units.to_ucum(unit)
        elif unit and unit.strip():
            raise UnitError(f"a {value.kind} result takes no unit (got {unit!r})")
        for choice in analyte.codes:
            if self._fits(choice.when, value.kind, ucum, method, specimen):
                return ResolvedLab(analyte=analyte_key, code=choice, ucum=ucum)
        got = (
            f"{value.kind}"
            + (f" in {ucum}" if ucum else "")
            + (f", method {method}" if method else ", no method stated")
            + (f", specimen {specimen}" if specimen else "")
        )
        for refused in analyte.refused:
            if self._fits(refused.when, value.kind, ucum, method, specimen):
                raise TerminologyError(
                    f"{analyte_key} reported as {got} is refused: {refused.reason}", refused.blame or "refused"
                )
        field = "specimen" if specimen and self._fits_but_specimen(analyte, value.kind, ucum, method) else None
        accepted = "; ".join(_describe(choice) for choice in analyte.codes)
        raise TerminologyError(f"no code for {analyte_key} reported as {got}; catalogue accepts: {accepted}", field)

    def _fits(self, when: CodeWhen, kind: str, ucum: str | None, method: str | None, specimen: str | None) -> bool:
        if when.value_kind != kind:
            return False
        if specimen is not None and specimen not in when.specimen:
            return False
        if when.method is not None and method not in when.method:
            return False
        return when.unit_like is None or (ucum is not None and self.units.commensurable(ucum, when.unit_like))

    def _fits_but_specimen(self, analyte: LabAnalyte, kind: str, ucum: str | None, method: str | None) -> bool:
        return any(self._fits(choice.when, kind, ucum, method, None) for choice in analyte.codes)

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
    parts: list[str] = [when.value_kind, "specimen " + "/".join(when.specimen)]
    if when.unit_like:
        parts.append(f"unit like {when.unit_like}")
    if when.method:
        parts.append("method " + "/".join(m or "(none stated)" for m in when.method))
    return f"{choice.code} ({', '.join(parts)})"
