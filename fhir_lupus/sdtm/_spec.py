"""The contract of a domain's mapping (mappings/sdtm/domains/<domain>.yaml): the dataset, and variable by variable
where its value comes from, so that the engine that builds the records (``_engine``) stays generic and define.xml
(``_define``) describes exactly what was written.

Each variable takes its value from a fact of the domain's rows (``source``: a key of the dict the row source of
``_sources`` yields, documented by ``from``: the CSV column or FHIR element it is read from), or is a constant
(``value``); ``transform`` turns it into the SDTM form (an ISO 8601 date, a study day, a sequence number).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DomainSpec", "Transform", "TrialDesign", "ValueList", "Variable"]

Transform = Literal["iso_date", "study_day", "seq", "yes_no"]
Origin = Literal["Collected", "Derived", "Assigned", "Protocol"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Variable(_Frozen):
    """One SDTM variable: name and label within SDTM's limits (8 and 40 characters), its type, where it comes from."""

    name: str = Field(pattern=r"^[A-Z][A-Z0-9]{0,7}$")
    label: str = Field(max_length=40)
    type: Literal["text", "integer", "float"] = "text"
    source: str | None = None  # the fact of the row source
    value: str | int | None = None  # a constant
    transform: Transform | None = None
    relative_to: str | None = None  # study_day: the date variable of the same record it counts
    lookup: str | None = None  # a codelist of mappings/sdtm: the fact's value -> its term (UNIT: the UCUM table)
    codelist: str | None = None  # the codelist in mappings/sdtm (for define.xml and the project's own check)
    origin: Origin
    role: str
    core: Literal["Req", "Exp", "Perm"]
    from_: str = Field(alias="from", default="")  # where the value is read: CSV column, FHIR element, derivation

    @model_validator(mode="after")
    def _one_source(self) -> Variable:
        given = [x is not None for x in (self.source, self.value)] + [self.transform == "seq"]
        if sum(given) != 1:
            raise ValueError(f"{self.name}: exactly one of source, value or transform seq")
        if self.transform == "study_day" and not self.relative_to:
            raise ValueError(f"{self.name}: a study day names the date variable it counts (relative_to)")
        return self


class ValueList(_Frozen):
    """Value-level metadata in define.xml: ``variable`` described once for each value of ``by`` (LBORRESU by
    LBTESTCD: each test its own unit and type), the value named by ``label`` (LBTEST) where given."""

    variable: str
    by: str
    label: str | None = None


class DomainSpec(_Frozen):
    """A dataset: its name, label, class, structure, key variables, the row source it is built from."""

    domain: str = Field(pattern=r"^[A-Z]{2}$")
    label: str = Field(max_length=40)
    class_: str = Field(alias="class")
    structure: str
    keys: tuple[str, ...] = Field(min_length=1)
    rows: str  # the name of a row source in fhir_lupus/sdtm/_sources.py
    variables: tuple[Variable, ...] = Field(min_length=1)
    value_lists: tuple[ValueList, ...] = ()  # per-test metadata for define.xml (``_define``)

    @model_validator(mode="after")
    def _keys_are_variables(self) -> DomainSpec:
        names = [v.name for v in self.variables]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.domain}: a variable is listed twice")
        missing = [k for k in self.keys if k not in names]
        if missing:
            raise ValueError(f"{self.domain}: keys {missing} are not variables")
        for variable in self.variables:
            if variable.relative_to and variable.relative_to not in names:
                raise ValueError(f"{variable.name}: relative_to {variable.relative_to} is not a variable")
        for value_list in self.value_lists:
            named = [value_list.variable, value_list.by, *([value_list.label] if value_list.label else [])]
            if unknown := [name for name in named if name not in names]:
                raise ValueError(f"{self.domain}: value list of {value_list.variable}: {unknown} are not variables")
        return self


class TrialDesign(_Frozen):
    """mappings/sdtm/trial.yaml: what SDTM needs of the trial's design that the study file does not hold."""

    countries: dict[str, str]  # ISO 3166-1 alpha-2 (the site profile) -> alpha-3 (DM COUNTRY)
    arms: dict[str, str]  # the study file's arm name -> ARMCD
    domains: tuple[str, ...]  # the domains written, in this order (mappings/sdtm/domains/<name>.yaml)
    not_treated: ArmTerm  # the actual arm of a subject never given study treatment


class ArmTerm(_Frozen):
    armnrs: str = Field(max_length=200)  # DM ARMNRS: why a subject has no actual arm (SDTMIG 3.4)
