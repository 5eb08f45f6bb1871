"""The de-identification rules (mappings/registry/deidentification.yaml), checked when they load: what is removed,
which identifiers are kept or re-keyed, how far dates move, how birth dates are generalised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fhir_lupus.errors import MappingError
from fhir_lupus.terminology import MappingPack, load_pack, read_yaml

__all__ = ["RULES_FILE", "DeidentificationRules", "load_rules"]

RULES_FILE = Path("registry") / "deidentification.yaml"


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


def load_rules(pack: MappingPack | None = None) -> DeidentificationRules:
    """The rules of ``pack`` (default: ``load_pack()``), read and checked once per pack."""
    pack = pack or load_pack()
    return pack.derive(RULES_FILE, lambda: _parse(pack.root / RULES_FILE))


def _parse(path: Path) -> DeidentificationRules:
    if not path.is_file():
        raise MappingError(f"{path}: mapping file missing")
    try:
        return DeidentificationRules.model_validate(read_yaml(path))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise MappingError(f"{path}: {problems}") from None
