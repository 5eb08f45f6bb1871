"""The flare definitions of mappings/signals/flares.yaml, read under a frozen contract that fails at load time.

A ``descriptor_change`` definition names a SLEDAI-2K descriptor and nothing else: its thresholds are the
descriptor's ``derive`` rule in mappings/scoring/sledai2k.yaml, so the two never disagree. A ``rise_from_nadir``
definition carries the guideline's numbers in the guideline's unit; the loader checks that each analyte it reads
is in the lab catalogue and that the descriptor it names exists and is lab-based. A ``score_rise`` definition
tests SLEDAI-2K totals against the subject's previous assessment (``rise_by`` points or more, or a total that
goes ``above`` a level the previous one was not above).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_lupus.errors import MappingError
from fhir_lupus.scoring import load_sledai_definition
from fhir_lupus.terminology import MappingPack

__all__ = ["Band", "FlareDefinition", "FlareDefinitions", "Source", "load_flare_definitions"]

PATH = "signals/flares.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Source(_Frozen):
    citation: str
    year: int
    url: str
    says: str


class Band(_Frozen):
    """One row of a guideline's table: which nadirs it covers and the rise that makes a flare from them."""

    nadir_below: float | None = None
    nadir_at_most: float | None = None
    rise_to: float | None = Field(default=None, gt=0)
    rise_by: float | None = Field(default=None, gt=0)
    rise_factor: float | None = Field(default=None, gt=1)

    @model_validator(mode="after")
    def _one_of_each(self) -> Band:
        if self.nadir_below is not None and self.nadir_at_most is not None:
            raise ValueError("a band takes nadir_below or nadir_at_most, not both")
        if sum(x is not None for x in (self.rise_to, self.rise_by, self.rise_factor)) != 1:
            raise ValueError("a band takes exactly one of rise_to, rise_by, rise_factor")
        return self

    def covers(self, nadir: float) -> bool:
        if self.nadir_below is not None:
            return nadir < self.nadir_below
        if self.nadir_at_most is not None:
            return nadir <= self.nadir_at_most
        return True

    def needed(self, nadir: float) -> float:
        """The value (in the definition's unit) at or above which a value is a flare from ``nadir``."""
        if self.rise_to is not None:
            return self.rise_to
        if self.rise_by is not None:
            return nadir + self.rise_by
        assert self.rise_factor is not None
        return nadir * self.rise_factor


class FlareDefinition(_Frozen):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    kind: Literal["descriptor_change", "rise_from_nadir", "score_rise"]
    source: Source
    choices: tuple[str, ...] = ()
    descriptor: str | None = None  # descriptor_change
    analytes: tuple[str, ...] = ()  # rise_from_nadir
    unit: str | None = None
    read_as: dict[str, str] = Field(default_factory=dict)
    bands: tuple[Band, ...] = ()
    score: str | None = None  # score_rise: what the total is called in a signal (its "analyte")
    rise_by: int | None = Field(default=None, gt=0)  # score_rise: points above the previous total
    above: int | None = Field(default=None, ge=0)  # score_rise: a total above this, the previous one not

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> FlareDefinition:
        scored = self.score is not None or self.rise_by is not None or self.above is not None
        if self.kind == "score_rise":
            if not self.score or (self.rise_by is None) == (self.above is None):
                raise ValueError("a score_rise names its score and exactly one of rise_by, above")
            if self.descriptor is not None or self.analytes or self.bands or self.unit:
                raise ValueError("a score_rise names no descriptor, analytes, unit or bands")
            return self
        if scored:
            raise ValueError("score, rise_by and above belong to a score_rise")
        if self.kind == "descriptor_change":
            if self.descriptor is None or self.analytes or self.bands or self.unit:
                raise ValueError("a descriptor_change names a descriptor and no analytes, unit or bands")
        elif self.descriptor is not None or not self.analytes or not self.bands or not self.unit:
            raise ValueError("a rise_from_nadir names analytes, a unit and bands, and no descriptor")
        if set(self.read_as) - set(self.analytes):
            raise ValueError("read_as names an analyte the definition does not read")
        if self.bands and (self.bands[-1].nadir_below is not None or self.bands[-1].nadir_at_most is not None):
            raise ValueError("the last band covers every nadir (no nadir_below / nadir_at_most)")
        return self


class DetectedIssueFields(_Frozen):
    status: Literal["final", "amended", "corrected", "preliminary"]
    provisional_status: Literal["preliminary"]  # a signal judged on a series with a doubtful row
    severity: Literal["high", "moderate", "low"]


class FlareDefinitions(_Frozen):
    version: Literal[1]
    system: str
    detected_issue: DetectedIssueFields
    definitions: tuple[FlareDefinition, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _ids_unique(self) -> FlareDefinitions:
        ids = [d.id for d in self.definitions]
        if len(set(ids)) != len(ids):
            raise ValueError("definition ids repeat")
        return self

    def definition(self, definition_id: str) -> FlareDefinition:
        for definition in self.definitions:
            if definition.id == definition_id:
                return definition
        raise KeyError(definition_id)


def load_flare_definitions(pack: MappingPack) -> FlareDefinitions:
    """mappings/signals/flares.yaml, checked against the SLEDAI-2K definition and the lab catalogue: MappingError
    names the file and the definition when a descriptor or an analyte is unknown."""
    definitions = pack.load(FlareDefinitions, PATH)
    sledai = load_sledai_definition(pack)
    known = set(pack.labs.analytes)
    for definition in definitions.definitions:
        if definition.descriptor is not None:
            try:
                descriptor = sledai.descriptor(definition.descriptor)
            except KeyError:
                raise MappingError(
                    f"{PATH}: {definition.id}: no SLEDAI-2K descriptor {definition.descriptor!r}"
                ) from None
            if descriptor.derive is None:
                raise MappingError(f"{PATH}: {definition.id}: descriptor {descriptor.key!r} has no lab rule")
        unknown = sorted(set(definition.analytes) - known)
        if unknown:
            raise MappingError(f"{PATH}: {definition.id}: analytes not in the lab catalogue: {', '.join(unknown)}")
    pack.system_uri(definitions.system)  # MappingError when systems.yaml does not name it
    return definitions
