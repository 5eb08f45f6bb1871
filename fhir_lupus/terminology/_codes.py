"""The codes and units the mappers write on their own (mappings/fhir/codes.yaml), under a frozen contract.

They were Python literals once, and push and pull could drift apart: the mappers wrote the lab category while
pull searched for its own copy. Both now read one entry here (``lab_category``), and a test keeps the literals
from coming back (tests/test_mappings_data.py).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator

from fhir_lupus.errors import MappingError
from fhir_lupus.terminology._pack import CodeRef, MappingPack, load_pack

__all__ = ["EncounterClasses", "FhirCodes", "FixedUnits", "Interpretation", "load_fhir_codes"]

CODES_FILE = "fhir/codes.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Interpretation(_Frozen):
    """Observation.interpretation: a value above, below or within the reference range."""

    high: CodeRef
    low: CodeRef
    normal: CodeRef


class EncounterClasses(_Frozen):
    """Encounter.class codes (one system), with the class of a visit whose schedule entry names none."""

    system: str
    default: str
    display: dict[str, str]

    @model_validator(mode="after")
    def _default_is_listed(self) -> EncounterClasses:
        if self.default not in self.display:
            raise ValueError(f"default {self.default!r} is not one of the classes ({', '.join(self.display)})")
        return self

    def of(self, code: str | None) -> CodeRef:
        """The class ``code`` (a study file's ``encounter_class``; None: the default) as a CodeRef."""
        chosen = code or self.default
        try:
            return CodeRef(system=self.system, code=chosen, display=self.display[chosen])
        except KeyError:
            raise MappingError(f"encounter class {chosen!r} is not in mappings/{CODES_FILE}") from None


class FixedUnits(_Frozen):
    """UCUM codes of the quantities whose unit an input column or the schedule of activities fixes."""

    day: str
    month: str
    dose_mg: str
    dose_mg_per_m2: str
    cells_per_kg: str
    percent: str


class FhirCodes(_Frozen):
    lab_category: CodeRef
    assessment_category: CodeRef
    interpretation: Interpretation
    normal_range: CodeRef
    encounter_class: EncounterClasses
    sponsor_role: CodeRef
    units: FixedUnits


def load_fhir_codes(pack: MappingPack | None = None) -> FhirCodes:
    """mappings/fhir/codes.yaml of ``pack`` (default: ``load_pack()``), read and checked once per pack: mappers and
    pull's reverse mapping ask once per resource, and a later call is a dictionary look-up."""
    return (pack or load_pack()).load(FhirCodes, CODES_FILE)
