"""Trial entities, one pydantic model per input file.

Field names are the CSV column names (docs/csv-layout.md), so a validation error's location is the column
to report. Values stay as reported where the reporting matters (a lab value and unit are kept verbatim and
interpreted by the lab catalogue, which knows the analyte).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "LabResult",
    "SledaiAssessment",
    "StatusChange",
    "Subject",
    "TreatmentProcedure",
    "TregMeasurement",
    "Visit",
]

_KEY = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_PARTIAL_DATE = re.compile(r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$")

Sex = Literal["male", "female", "other", "unknown"]
# FHIR R4 research-subject-status (http://hl7.org/fhir/research-subject-status)
SubjectStatus = Literal[
    "candidate",
    "eligible",
    "follow-up",
    "ineligible",
    "not-registered",
    "off-study",
    "on-study",
    "on-study-intervention",
    "on-study-observation",
    "pending-on-study",
    "potential-candidate",
    "screening",
    "withdrawn",
]
EventStatus = Literal["preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error"]


class _Entity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def _require_offset(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("date-time needs a UTC offset (e.g. +08:00) so it means one instant")
    return value


class Subject(_Entity):
    subject_id: str = Field(pattern=_KEY)
    mrn: str | None = Field(default=None, pattern=_KEY)
    pseudonym: str | None = Field(default=None, pattern=_KEY)
    sex: Sex
    birth_date: str
    enrolled_on: date
    status: SubjectStatus
    off_study_on: date | None = None
    off_study_reason: str | None = None
    # a key of off_study_reasons in mappings/fhir/lifecycle.yaml (``death`` among them): the timeline reads the
    # code, never the free text
    off_study_reason_code: str | None = None
    arm: str

    @field_validator("birth_date")
    @classmethod
    def _partial_date(cls, value: str) -> str:
        if not _PARTIAL_DATE.match(value):
            raise ValueError("birth_date must be YYYY, YYYY-MM or YYYY-MM-DD")
        return value

    @model_validator(mode="after")
    def _identified_and_ordered(self) -> Subject:
        if not self.mrn and not self.pseudonym:
            raise ValueError("a subject needs an mrn or a pseudonym to identify the patient")
        if self.off_study_on and self.off_study_on < self.enrolled_on:
            raise ValueError("off_study_on is before enrolled_on")
        if self.birth_date[:10] > self.enrolled_on.isoformat():
            raise ValueError("birth_date is after enrolled_on")
        return self


class Visit(_Entity):
    subject_id: str = Field(pattern=_KEY)
    visit_code: str = Field(pattern=_KEY)
    visit_date: date


class LabResult(_Entity):
    result_id: str = Field(pattern=_KEY)
    subject_id: str = Field(pattern=_KEY)
    visit_code: str = Field(pattern=_KEY)
    analyte: str
    value: str = Field(min_length=1)
    unit: str | None = None
    ref_low: Decimal | None = None
    ref_high: Decimal | None = None
    method: str | None = None
    specimen: Literal["serum", "plasma", "blood", "urine", "urine-24h"]
    collected_at: datetime
    lab: str | None = None
    local_code: str | None = None

    _offset = field_validator("collected_at")(_require_offset)

    @model_validator(mode="after")
    def _range_ordered(self) -> LabResult:
        if self.ref_low is not None and self.ref_high is not None and self.ref_low > self.ref_high:
            raise ValueError("ref_low is above ref_high")
        return self


class SledaiAssessment(_Entity):
    subject_id: str = Field(pattern=_KEY)
    visit_code: str = Field(pattern=_KEY)
    assessed_on: date
    descriptors: tuple[str, ...] = ()
    not_attributed: tuple[str, ...] = ()
    window_days: int | None = None
    reported_total: int | None = Field(default=None, ge=0, le=105)
    assessor: str | None = None

    @field_validator("descriptors", "not_attributed", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(";") if part.strip())
        return value

    @field_validator("descriptors", "not_attributed")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        keys = [part.split(":", 1)[0].strip() for part in value]
        if len(set(keys)) != len(keys):
            raise ValueError("a descriptor is listed twice")
        return value

    @model_validator(mode="after")
    def _attribution_is_one_answer(self) -> SledaiAssessment:
        both = set(self.descriptors) & set(self.not_attribution_causes)
        if both:
            raise ValueError(f"{', '.join(sorted(both))} listed both as due to lupus and as not attributed")
        return self

    @property
    def not_attribution_causes(self) -> dict[str, str]:
        """``not_attributed`` entries (``key`` or ``key:cause``) as descriptor key -> cause ("" if unstated)."""
        causes = {}
        for part in self.not_attributed:
            key, _, cause = part.partition(":")
            causes[key.strip()] = cause.strip()
        return causes


class TregMeasurement(_Entity):
    measurement_id: str = Field(pattern=_KEY)
    subject_id: str = Field(pattern=_KEY)
    visit_code: str = Field(pattern=_KEY)
    measured_at: datetime
    percent: Decimal = Field(ge=0, le=100)
    lab: str | None = None

    _offset = field_validator("measured_at")(_require_offset)


class TreatmentProcedure(_Entity):
    procedure_id: str = Field(pattern=_KEY)
    subject_id: str = Field(pattern=_KEY)
    kind: Literal["cyclophosphamide_pretreatment", "msc_infusion"]
    status: EventStatus
    started_at: datetime
    ended_at: datetime | None = None
    dose_mg: Decimal | None = Field(default=None, gt=0)
    dose_mg_per_m2: Decimal | None = Field(default=None, gt=0)
    cells_per_kg: Decimal | None = Field(default=None, gt=0)
    route: Literal["intravenous"]
    donor_id: str | None = None

    _offset = field_validator("started_at", "ended_at")(
        lambda value: value if value is None else _require_offset(value)
    )

    @model_validator(mode="after")
    def _dose_fits_kind(self) -> TreatmentProcedure:
        if self.ended_at and self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        if self.status == "completed":
            if self.kind == "cyclophosphamide_pretreatment" and self.dose_mg is None:
                raise ValueError("a completed cyclophosphamide pretreatment needs dose_mg")
            if self.kind == "msc_infusion" and (self.cells_per_kg is None or not self.donor_id):
                raise ValueError("a completed MSC infusion needs cells_per_kg and donor_id")
        if self.kind == "msc_infusion" and self.dose_mg is not None:
            raise ValueError("dose_mg is for cyclophosphamide; an MSC infusion takes cells_per_kg")
        if self.kind == "cyclophosphamide_pretreatment" and self.cells_per_kg is not None:
            raise ValueError("cells_per_kg is for the MSC infusion")
        return self


class StatusChange(_Entity):
    """One row of status_history.csv: the subject entered ``status`` on ``on`` (the transition rules are data:
    mappings/fhir/lifecycle.yaml, checked by fhir_lupus/model/_lifecycle.py)."""

    subject_id: str = Field(pattern=_KEY)
    status: SubjectStatus
    on: date
    reason: str | None = None
    reason_code: str | None = None  # as subjects.csv off_study_reason_code
