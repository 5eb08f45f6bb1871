"""mappings/terminology/adverse_events.yaml: the codes, extensions and rules of adverse events, as a frozen contract.

A misspelt key, a grade outside 1-5 or a rule naming an unknown key fails when the file is loaded (MappingError
naming the file), before any row is read.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_lupus.terminology._pack import MappingPack, load_pack

__all__ = ["AdverseEventTerms", "load_adverse_event_terms"]

Severity = Literal["mild", "moderate", "severe"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Coded(_Frozen):
    system: str
    code: str
    display: str
    r5_code: str | None = None  # when R5's terminology (THO 5.x) spells the code differently


class NciCode(_Frozen):
    code: str = Field(pattern=r"^C\d+$")
    display: str


class Grade(NciCode):
    severity: Severity


class SeverityCodes(_Frozen):
    system: str
    displays: dict[Severity, str]


class Outcome(_Frozen):
    r4: str
    r4_display: str
    nci: str | None = Field(default=None, pattern=r"^C\d+$")
    nci_display: str | None = None
    r5_status: Literal["in-progress", "completed"]


class Causality(_Frozen):
    nci: str = Field(pattern=r"^C\d+$")
    nci_display: str
    who_umc: str | None = None
    who_umc_display: str | None = None
    who_umc_r5: str | None = None  # the WHO-UMC code as R5's terminology (THO 5.x) spells it

    @model_validator(mode="after")
    def _who_umc_whole(self) -> Causality:
        if self.who_umc is None and (self.who_umc_display is not None or self.who_umc_r5 is not None):
            raise ValueError("who_umc_display and who_umc_r5 need who_umc")
        if self.who_umc is not None and self.who_umc_r5 is None:
            raise ValueError(f"who_umc {self.who_umc} needs who_umc_r5, its R5 spelling")
        return self


class Suspect(_Frozen):
    procedure_kind: Literal["cyclophosphamide_pretreatment", "msc_infusion"]
    resources: tuple[Literal["Procedure", "MedicationAdministration"], ...] = Field(min_length=1)


class Extensions(_Frozen):
    grade: str
    seriousness_criteria: str
    resolved_date: str | None = None  # R4 only (R5: AdverseEvent.resolveDate)
    severity: str | None = None  # R5 only (R4: AdverseEvent.severity)


class VersionedExtensions(_Frozen):
    r4: Extensions
    r5: Extensions


class AdverseEventTerms(_Frozen):
    extensions: VersionedExtensions
    grades: dict[int, Grade]
    grade_system: str
    grade_text_with_term: str
    severity: SeverityCodes
    seriousness: dict[Literal["yes", "no"], Coded]
    seriousness_criteria: dict[str, NciCode]
    outcomes: dict[str, Outcome]
    outcome_system: str
    resolved_outcomes: frozenset[str]
    causality: dict[str, Causality]
    causality_system: str
    who_umc_system: str
    related_causality: frozenset[str]
    causality_method: Coded
    suspects: dict[str, Suspect]
    related_to: dict[str, tuple[str, ...]]
    meddra_system: str
    ctcae_system: str

    @model_validator(mode="after")
    def _keys_agree(self) -> AdverseEventTerms:
        if sorted(self.grades) != [1, 2, 3, 4, 5]:
            raise ValueError("grades must list the CTCAE grades 1 to 5")
        if set(self.seriousness) != {"yes", "no"}:
            raise ValueError("seriousness needs 'yes' and 'no'")
        for name, keys in (
            ("resolved_outcomes", self.resolved_outcomes),
            ("related_causality", self.related_causality),
        ):
            known = self.outcomes if name == "resolved_outcomes" else self.causality
            unknown = sorted(set(keys) - set(known))
            if unknown:
                raise ValueError(f"{name} names unknown key(s) {', '.join(unknown)}")
        for key, suspects in self.related_to.items():
            unknown = [s for s in suspects if s not in self.suspects]
            if unknown:
                raise ValueError(f"related_to.{key} names unknown suspect(s) {', '.join(unknown)}")
        if self.causality_method.r5_code is None:
            raise ValueError("causality_method needs r5_code, its R5 spelling")
        if "fatal" not in self.outcomes or "death" not in self.seriousness_criteria:
            raise ValueError("outcomes needs 'fatal' and seriousness_criteria 'death' (grade 5 rules)")
        return self

    def related_keys(self) -> tuple[str, ...]:
        return tuple(self.related_to)

    def r5_codes(self) -> dict[str, dict[str, str]]:
        """System key -> {R4 code: R5 code}, for each code that R5's terminology spells differently."""
        table: dict[str, dict[str, str]] = {}
        for coded in (*self.seriousness.values(), self.causality_method):
            if coded.r5_code:
                table.setdefault(coded.system, {})[coded.code] = coded.r5_code
        for entry in self.causality.values():
            if entry.who_umc and entry.who_umc_r5:
                table.setdefault(self.who_umc_system, {})[entry.who_umc] = entry.who_umc_r5
        return table


def load_adverse_event_terms(pack: MappingPack | None = None) -> AdverseEventTerms:
    return (pack or load_pack()).load(AdverseEventTerms, "terminology/adverse_events.yaml")
