"""The facts each domain's rows are made of, read from the checked trial (``TrialData``), one dict per record.

SDTM is built from the trial model, not from FHIR on a server: the trial's own records are what a sponsor submits,
every value keeps its source row, and the FHIR resources are made from the same model, so the two agree (docs/sdtm.md).
A row source names its facts; mappings/sdtm/domains/*.yaml says which variable each becomes. With a registry key,
USUBJID is the subject's keyed pseudonym and every date moves by the subject's keyed offset, as in `registry package`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from fhir_lupus.model import TrialData
from fhir_lupus.registry import RegistryKey, date_shift, load_rules
from fhir_lupus.sdtm._sources_design import ds_rows, se_rows, sv_rows, ta_rows, te_rows, tv_rows
from fhir_lupus.sdtm._sources_ts import ts_rows
from fhir_lupus.sdtm._spec import TrialDesign
from fhir_lupus.terminology import MappingPack

__all__ = ["ROW_SOURCES", "SdtmContext"]

Row = dict[str, Any]


@dataclass
class SdtmContext:
    """The trial, its mappings, and how subjects are named and dated in the datasets (plain, or keyed)."""

    trial: TrialData
    pack: MappingPack
    key: RegistryKey | None = None
    _shifts: dict[str, int] = field(default_factory=dict)

    @property
    def study_id(self) -> str:
        return self.trial.study.nct_id

    def usubjid(self, subject_id: str) -> str:
        """STUDYID-SUBJID, or with a key the pseudonym `registry package` gives the subject (the same HMAC)."""
        if self.key is None:
            return f"{self.study_id}-{subject_id}"
        system = self.pack.identifier_system("subject", study=self.study_id)
        return self.key.hex("identifier", system, subject_id)

    def subjid(self, subject_id: str) -> str:
        return subject_id if self.key is None else self.usubjid(subject_id)[:12]

    def dated(self, subject_id: str, value: date | datetime | None) -> date | datetime | None:
        """``value`` moved by the subject's keyed offset (none without a key)."""
        if value is None or self.key is None:
            return value
        if subject_id not in self._shifts:
            rules = load_rules(self.pack)
            self._shifts[subject_id] = date_shift(self.key, self.study_id, subject_id, rules)
        return value + timedelta(days=self._shifts[subject_id])


def _day(value: date | datetime | None) -> date | None:
    return value.date() if isinstance(value, datetime) else value


def _age(birth: str | None, on: date | None) -> int | None:
    if not birth or len(birth) < 10 or on is None:
        return None
    born = date.fromisoformat(birth[:10])
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def dm_rows(ctx: SdtmContext) -> Iterator[Row]:
    """One row per enrolled subject: reference dates from treatment (procedures.csv) and the timeline, consent and
    age from screening.csv, the site from the site profile."""
    trial = ctx.trial
    screening = {s.record.subject_id: s.record for s in trial.screening}
    exposures: dict[str, list[tuple[datetime, datetime]]] = {}
    for done in trial.procedures:
        procedure = done.record
        if procedure.status == "completed":
            end = procedure.ended_at or procedure.started_at
            exposures.setdefault(procedure.subject_id, []).append((procedure.started_at, end))
    visits: dict[str, list[date]] = {}
    for visit in trial.visits:
        visits.setdefault(visit.record.subject_id, []).append(visit.record.visit_date)
    site = ctx.pack.site
    for located in trial.subjects:
        subject = located.record
        sid = subject.subject_id
        timeline = trial.timelines.get(sid)
        exposed = sorted(exposures.get(sid, []))
        first = exposed[0][0] if exposed else None
        last = max((end for _, end in exposed), default=None)
        screened = screening.get(sid)
        consent = screened.consent_on if screened else None
        ended = timeline.end.day if timeline is not None and timeline.end is not None else None
        last_contact = max(visits.get(sid, []), default=None)
        died = timeline.died if timeline is not None else None
        yield {
            "subject_id": sid,
            "usubjid": ctx.usubjid(sid),
            "subjid": ctx.subjid(sid),
            "first_exposure": ctx.dated(sid, first),
            "last_exposure": ctx.dated(sid, last),
            "consent": ctx.dated(sid, consent),
            "participation_end": ctx.dated(sid, ended or last_contact),
            "death": ctx.dated(sid, died.day) if died is not None and died.exact else None,
            "died": "Y" if died is not None else "",
            "site": site.location.key,
            "country": _alpha3(site.location.country, ctx),
            "age": _age(subject.birth_date, _day(consent) or subject.enrolled_on),
            "sex": {"male": "M", "female": "F"}.get(subject.sex, "U"),
            "arm": subject.arm,
            "armcd": _arm_code(subject.arm, ctx),
            # SDTMIG 3.4 DM assumption 5: a subject never given study treatment is "Not Treated", NOTTRT
            "actarm": subject.arm if exposed else "Not Treated",
            "actarmcd": _arm_code(subject.arm, ctx) if exposed else "NOTTRT",
            "race": "",
        }


def _alpha3(alpha2: str, ctx: SdtmContext) -> str:
    """DM COUNTRY is ISO 3166-1 alpha-3 (SDTMIG 3.4); the site profile holds alpha-2."""
    return ctx.pack.load(TrialDesign, "sdtm/trial.yaml").countries.get(alpha2, alpha2)


def _arm_code(arm: str, ctx: SdtmContext) -> str:
    arms = ctx.pack.load(TrialDesign, "sdtm/trial.yaml").arms
    return arms.get(arm, arm.upper()[:20])


ROW_SOURCES: dict[str, Callable[[SdtmContext], Iterator[Row]]] = {
    "subjects": dm_rows,
    "trial_summary": ts_rows,
    "trial_arms": ta_rows,
    "trial_elements": te_rows,
    "trial_visits": tv_rows,
    "subject_elements": se_rows,
    "subject_visits": sv_rows,
    "disposition": ds_rows,
}
