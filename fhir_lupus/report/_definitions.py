"""The report's definitions (mappings/report/report.yaml) as a frozen pydantic contract.

Series, display units, summary months and responder rules are data so that an investigator can read, cite and
change them without touching the engine; this module only checks that the file is coherent.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_lupus.errors import MappingError
from fhir_lupus.terminology import MappingPack, load_adverse_event_terms, load_pack

__all__ = [
    "AdverseEventLabels",
    "Category",
    "Criterion",
    "Outcome",
    "ReportDefinition",
    "ResponseDefinition",
    "SeriesDefinition",
    "XAxis",
    "load_report_definition",
]

Op = Literal["<", "<=", ">", ">="]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class XAxis(_Frozen):
    anchor: Literal["msc_infusion", "baseline"]
    days_per_month: float = Field(gt=0)
    label: str


class SeriesDefinition(_Frozen):
    key: str
    title: str
    source: Literal["labs", "sledai"]
    analyte: str | None = None  # lab catalogue key, for source labs
    unit: str  # UCUM code every value is converted into
    display_unit: str

    @model_validator(mode="after")
    def _analyte_for_labs(self) -> SeriesDefinition:
        if (self.source == "labs") != (self.analyte is not None):
            raise ValueError("`analyte` is required for source labs and only for it")
        return self


class Criterion(_Frozen):
    series: str
    measure: Literal["value", "percent_change"]
    op: Op
    limit: float

    def describe(self, series: SeriesDefinition) -> str:
        """The criterion in words, for the page: ``eGFR: change from baseline >= -15 %``."""
        if self.measure == "percent_change":
            return f"{series.title}: change from baseline {self.op} {self.limit:g} %"
        return f"{series.title} {self.op} {self.limit:g} {series.display_unit}"


class Category(_Frozen):
    key: str
    label: str
    all_of: tuple[Criterion, ...] = Field(min_length=1)


class Outcome(_Frozen):
    key: str
    label: str


class ResponseDefinition(_Frozen):
    key: str
    title: str
    months: tuple[int, ...] = Field(min_length=1)
    source: str = Field(min_length=1)
    verified: str | None = None
    assumptions: tuple[str, ...] = ()
    categories: tuple[Category, ...] = Field(min_length=1)
    otherwise: Outcome


class AdverseEventLabels(_Frozen):
    """The words the adverse-event summary prints for the keys of mappings/terminology/adverse_events.yaml."""

    grades: dict[int, str]
    severe_grade: int = Field(ge=1, le=5)
    seriousness: dict[Literal["yes", "no"], str]
    related: dict[str, str]  # suspect key -> label
    not_related: str


class ReportDefinition(_Frozen):
    version: int
    x_axis: XAxis
    series: tuple[SeriesDefinition, ...] = Field(min_length=1)
    summary_months: tuple[int, ...] = Field(min_length=1)
    responses: tuple[ResponseDefinition, ...] = ()
    adverse_events: AdverseEventLabels

    @model_validator(mode="after")
    def _references_known(self) -> ReportDefinition:
        keys = [series.key for series in self.series]
        if len(set(keys)) != len(keys):
            raise ValueError("series keys must be unique")
        for response in self.responses:
            for category in response.categories:
                for criterion in category.all_of:
                    if criterion.series not in keys:
                        raise ValueError(f"response {response.key}: unknown series {criterion.series!r}")
        return self

    def series_by_key(self) -> dict[str, SeriesDefinition]:
        return {series.key: series for series in self.series}


REPORT_FILE = "report/report.yaml"


def load_report_definition(pack: MappingPack | None = None) -> ReportDefinition:
    """Read and check mappings/report/report.yaml; MappingError names the file and key when it is wrong, or when
    its adverse-event labels do not name exactly the keys of terminology/adverse_events.yaml."""
    pack = pack or load_pack()
    definition = pack.load(ReportDefinition, REPORT_FILE)
    terms = load_adverse_event_terms(pack)
    labels = definition.adverse_events
    for name, labelled, known in (
        ("grades", labels.grades, terms.grades),
        ("seriousness", labels.seriousness, terms.seriousness),
        ("related", labels.related, terms.suspects),
    ):
        if set(labelled) != set(known):
            expected = ", ".join(str(key) for key in known)
            raise MappingError(
                f"{pack.root / REPORT_FILE}: adverse_events.{name} labels {', '.join(str(k) for k in labelled)}; "
                f"terminology/adverse_events.yaml has {expected}: one label for each"
            )
    return definition
