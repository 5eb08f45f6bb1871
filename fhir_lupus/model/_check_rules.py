"""The edit checks as data: mappings/checks/*.yaml read into frozen models (a misspelt key fails at load).

``checks.yaml`` names every check with its severity and source, and holds the parameters of the checks that
have some; ``lab_limits.yaml`` the physical and plausible limits of each analyte; ``inputs.yaml`` which files a
command needs. The engines that apply them are fhir_lupus/model/_edit_checks.py, timeline.py and inputs.py.
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_lupus.errors import MappingError
from fhir_lupus.terminology import MappingPack, load_pack

__all__ = [
    "CheckRules",
    "Contradiction",
    "DoseLimit",
    "InputRules",
    "LabLimit",
    "LabLimits",
    "Limits",
    "Severity",
    "load_check_rules",
    "load_input_rules",
    "load_lab_limits",
]

Severity = Literal["reject", "query", "note"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckDefinition(_Frozen):
    severity: Severity
    what: str
    source: str


class Contradiction(_Frozen):
    """A row of ``file`` whose cells match every value of ``when`` must not have any value of ``forbid``."""

    file: str
    when: dict[str, tuple[Any, ...]]
    forbid: dict[str, tuple[Any, ...]]
    reason: str
    source: str


class DoseLimit(_Frozen):
    unit: str
    max: Decimal
    reason: str


class LabDelta(_Frozen):
    ratio: Decimal = Field(gt=1)


class SledaiJump(_Frozen):
    max_change: int = Field(gt=0)


class CheckRules(_Frozen):
    """mappings/checks/checks.yaml."""

    checks: dict[str, CheckDefinition]
    lab_delta: LabDelta
    sledai_jump: SledaiJump
    contradictions: tuple[Contradiction, ...] = ()
    medication_doses: dict[str, tuple[DoseLimit, ...]] = {}

    def severity(self, check: str) -> Severity:
        """The severity of ``check``; MappingError when checks.yaml does not declare it (every check is data)."""
        try:
            return self.checks[check].severity
        except KeyError:
            raise MappingError(f"mappings/checks/checks.yaml declares no check {check!r}") from None


class Limits(_Frozen):
    """Inclusive bounds; a value below ``min`` or above ``max`` breaks them."""

    min: Decimal | None = None
    max: Decimal | None = None

    @functools.cached_property
    def _floats(self) -> tuple[float, float]:
        return (
            -math.inf if self.min is None else float(self.min),
            math.inf if self.max is None else float(self.max),
        )

    def broken_by(self, value: float) -> str | None:
        """``below <min>`` / ``above <max>`` when ``value`` is outside, else None."""
        low, high = self._floats
        if value < low:
            return f"below {self.min:g}"
        if value > high:
            return f"above {self.max:g}"
        return None


class LabLimit(_Frozen):
    unit: str
    physical: Limits
    plausible: Limits
    floor: Decimal = Decimal(0)
    reason: str

    @model_validator(mode="after")
    def _plausible_within_physical(self) -> LabLimit:
        low, high = self.physical.min, self.physical.max
        if low is not None and self.plausible.min is not None and self.plausible.min < low:
            raise ValueError("plausible.min is below physical.min")
        if high is not None and self.plausible.max is not None and self.plausible.max > high:
            raise ValueError("plausible.max is above physical.max")
        return self


class LabLimits(_Frozen):
    """mappings/checks/lab_limits.yaml."""

    analytes: dict[str, LabLimit]


class InputRules(_Frozen):
    """mappings/checks/inputs.yaml: the files each command needs, and what each file is for."""

    commands: dict[str, tuple[str, ...]]
    stages: dict[Literal["enrolled", "screening"], tuple[str, ...]]  # what `validate` needs, by the data's stage
    files: dict[str, str]

    @model_validator(mode="after")
    def _files_are_known(self) -> InputRules:
        for command, needed in [*self.commands.items(), *self.stages.items()]:
            unknown = [name for name in needed if name not in self.files]
            if unknown:
                raise ValueError(f"{command} needs {', '.join(unknown)}, which `files` does not list")
        return self


def load_check_rules(pack: MappingPack | None = None) -> CheckRules:
    return (pack or load_pack()).load(CheckRules, "checks/checks.yaml")


def load_lab_limits(pack: MappingPack | None = None) -> LabLimits:
    return (pack or load_pack()).load(LabLimits, "checks/lab_limits.yaml")


def load_input_rules(pack: MappingPack | None = None) -> InputRules:
    return (pack or load_pack()).load(InputRules, "checks/inputs.yaml")
