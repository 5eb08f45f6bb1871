"""Units: reported unit -> UCUM code, and conversions done by a UCUM library (ucumvert on pint).

No factor table lives here. Mass <-> substance conversions multiply by the molecule's molar mass, which is
data (mappings/terminology/labs.yaml). Arbitrary units ([IU], [HPF], [LPF]) have no defined relation to
anything else, so they convert only into themselves.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from decimal import Decimal
from typing import Any

from fhir_lupus.errors import UnitError
from fhir_lupus.terminology._pack import MappingPack

__all__ = ["UnitConverter", "unit_annotations", "warm_up"]

_ANNOTATION = re.compile(r"\{[^}]*\}")


def unit_annotations(ucum: str) -> tuple[str, ...]:
    """The ``{...}`` annotations of a UCUM code, in order (``mL/min/{1.73_m2}`` -> ``("{1.73_m2}",)``)."""
    return tuple(_ANNOTATION.findall(ucum))


_REGISTRY: Any = None
_REGISTRY_LOCK = threading.Lock()


def _registry() -> Any:
    """The UCUM-aware pint registry; built once (about a second of CPU), by whichever thread asks first."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            from ucumvert import PintUcumRegistry

            _REGISTRY = PintUcumRegistry()
        return _REGISTRY


def warm_up() -> None:
    """Build the registry in a thread of its own, unless built: a bulk pull starts it while the export is made.

    A search pull does not: results in the catalogue's own units (the usual case) are decided without UCUM
    (``commensurable``, ``convert``), and building it cost a pull through the CLI about a second of CPU that
    held the interpreter's lock while the searches' answers waited to be read (issue 25)."""
    if _REGISTRY is None:
        threading.Thread(target=_registry, name="ucum-registry", daemon=True).start()


class UnitConverter:
    """Unit look-up and conversion bound to one mapping pack's aliases and display names."""

    def __init__(self, pack: MappingPack) -> None:
        self._aliases = pack.units.aliases
        self._arbitrary = pack.units.arbitrary_markers
        self._display = pack.units.display
        self._molar_mass = pack.units.molar_mass
        self._commensurable: dict[tuple[str, str], bool] = {}  # a trial repeats a handful of unit pairs

    def to_ucum(self, reported: str) -> str:
        """The UCUM code for a unit as a lab wrote it; UnitError if UCUM cannot parse it."""
        text = reported.strip()
        if not text:
            raise UnitError("unit is empty")
        code = self._aliases.get(text, text)
        self._parse(code)
        return code

    def display(self, ucum: str) -> str:
        """A human-readable form for Quantity.unit (UCUM code itself when no nicer form is listed)."""
        return self._display.get(ucum, ucum)

    def is_arbitrary(self, ucum: str) -> bool:
        return any(marker in ucum for marker in self._arbitrary)

    def commensurable(self, ucum_a: str, ucum_b: str) -> bool:
        """True when a value in ``ucum_a`` can be expressed in ``ucum_b`` without extra data.

        UCUM counts an annotation (``{1.73_m2}``) as 1, so ``mL/min`` and ``mL/min/{1.73_m2}`` have one
        dimension; but a rate per 1.73 m2 of body surface and a raw rate are different quantities, so units
        whose annotations differ are never commensurable.
        """
        known = self._commensurable.get((ucum_a, ucum_b))
        if known is None:
            if ucum_a == ucum_b:  # the usual case, without UCUM (``ucum_b``, the catalogue's, parses: test_catalogue)
                known = True
            elif self.is_arbitrary(ucum_a) or self.is_arbitrary(ucum_b):
                known = ucum_a == ucum_b
            elif unit_annotations(ucum_a) != unit_annotations(ucum_b):
                known = False
            else:
                known = bool(self._parse(ucum_a).dimensionality == self._parse(ucum_b).dimensionality)
            self._commensurable[(ucum_a, ucum_b)] = known
        return known

    def convert(
        self,
        value: Decimal | float,
        from_ucum: str,
        to_ucum: str,
        *,
        molar_mass: float | None = None,
    ) -> float:
        """Convert ``value`` between UCUM units; ``molar_mass`` (in units.yaml ``molar_mass``, g/mol) bridges
        substance and mass.

        Raises UnitError for arbitrary units (other than identity) and for dimensions that do not match.
        """
        if from_ucum == to_ucum:
            return float(value)
        if self.is_arbitrary(from_ucum) or self.is_arbitrary(to_ucum):
            raise UnitError(f"arbitrary unit: {from_ucum!r} cannot be converted to {to_ucum!r}")
        if unit_annotations(from_ucum) != unit_annotations(to_ucum):
            raise UnitError(
                f"{from_ucum!r} and {to_ucum!r} differ in annotation: different quantities, never converted"
            )
        quantity = float(value) * self._parse(from_ucum)
        target = self._parse(to_ucum)
        candidates = [quantity]
        if molar_mass is not None:
            per_mol = molar_mass * self._parse(self._molar_mass)
            candidates += [quantity * per_mol, quantity / per_mol]
        for candidate in candidates:
            if candidate.dimensionality == target.dimensionality:
                # A parsed unit may carry a factor (g/(24.h) is 1/24 g/h): divide it out.
                result = float(candidate.to(target.units).magnitude / target.magnitude)
                if not math.isfinite(result):
                    raise UnitError(f"{value} {from_ucum} has no finite value in {to_ucum}")
                return float(f"{result:.12g}")  # drop binary noise: 1.2000000000000002 -> 1.2
        hint = "" if molar_mass is not None else " (a molar mass is needed between mass and substance)"
        raise UnitError(f"cannot convert {from_ucum!r} to {to_ucum!r}{hint}")

    @staticmethod
    @functools.lru_cache(maxsize=512)
    def _parse(ucum: str) -> Any:
        """A pint quantity of 1 in the given UCUM unit; cached, units repeat a lot."""
        try:
            return _registry().from_ucum(ucum)
        except Exception as exc:  # ucumvert raises lark and pint errors of several kinds
            raise UnitError(f"{ucum!r} is not a UCUM unit ({type(exc).__name__})") from None
