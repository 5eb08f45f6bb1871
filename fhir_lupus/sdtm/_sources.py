"""The facts each domain's rows are made of, read from the checked trial (``TrialData``), one dict per record.

SDTM is built from the trial model, not from FHIR on a server: the trial's own records are what a sponsor submits,
every value keeps its source row, and the FHIR resources are made from the same model, so the two agree (docs/sdtm.md).
A row source names its facts; mappings/sdtm/domains/*.yaml says which variable each becomes. With a registry key,
USUBJID is the subject's keyed pseudonym and every date moves by the subject's keyed offset, as in `registry package`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from fhir_lupus.model import LoadReport, TreatmentProcedure, TrialData, load_lifecycle_rules
from fhir_lupus.registry import RegistryKey, date_shift, load_rules
from fhir_lupus.sdtm._spec import TrialDesign
from fhir_lupus.terminology import MappingPack

__all__ = ["GIVEN", "Row", "SdtmContext", "arm_code", "dm_rows", "first_exposures", "given_treatments"]

Row = dict[str, Any]


@dataclass
class SdtmContext:
    """The trial, its mappings, and how subjects are named and dated in the datasets (plain, or keyed)."""

    trial: TrialData
    pack: MappingPack
    key: RegistryKey | None = None
    report: LoadReport | None = None  # the load's: what it refused makes a derived value preliminary
    _shifts: dict[str, int] = field(default_factory=dict)

    @property
    def study_id(self) -> str:
        return self.trial.study.nct_id

    @functools.cached_property
    def enrolled(self) -> frozenset[str]:
        """The subjects SDTM holds: those of an enrolled status (mappings/fhir/lifecycle.yaml), as `registry package`
        keeps them; a candidate who never enrolled is in no dataset."""
        statuses = load_lifecycle_rules(self.pack).enrolled
        return frozenset(s.record.subject_id for s in self.trial.subjects if s.record.status in statuses)

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


GIVEN = "completed"  # the only procedures.csv status that is an exposure: what EX holds, what RFXSTDTC counts


def given_treatments(trial: TrialData) -> list[TreatmentProcedure]:
    """The study treatments actually given (procedures.csv, status completed), in the order they started: the
    one rule DM's reference dates, EX, the epochs and the last-before-exposure flags all read."""
    return sorted((p.record for p in trial.procedures if p.record.status == GIVEN), key=lambda p: p.started_at)


def first_exposures(trial: TrialData) -> dict[str, datetime]:
    """Each subject's first completed study treatment (RFXSTDTC), as recorded (not shifted)."""
    firsts: dict[str, datetime] = {}
    for procedure in given_treatments(trial):
        firsts.setdefault(procedure.subject_id, procedure.started_at)
    return firsts


def dm_rows(ctx: SdtmContext) -> Iterator[Row]:
    """One row per enrolled subject: reference dates from treatment (procedures.csv) and the timeline, consent and
    age from screening.csv, the site from the site profile."""
    trial = ctx.trial
    screening = {s.record.subject_id: s.record for s in trial.screening}
    exposures: dict[str, list[tuple[datetime, datetime]]] = {}
    for procedure in given_treatments(trial):
        end = procedure.ended_at or procedure.started_at
        exposures.setdefault(procedure.subject_id, []).append((procedure.started_at, end))
    visits: dict[str, list[date]] = {}
    for visit in trial.visits:
        visits.setdefault(visit.record.subject_id, []).append(visit.record.visit_date)
    site = ctx.pack.site
    design = ctx.pack.load(TrialDesign, "sdtm/trial.yaml")
    for located in trial.subjects:
        subject = located.record
        sid = subject.subject_id
        if sid not in ctx.enrolled:
            continue
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
            "died": True if died is not None else None,  # DTHFL is Y or null (SDTMIG 3.4 DM)
            "site": site.location.key,
            "country": _alpha3(site.location.country, ctx),
            "age": _age(subject.birth_date, _day(consent) or subject.enrolled_on),
            "sex": subject.sex,
            "arm": subject.arm,
            "armcd": arm_code(subject.arm, ctx),
            # SDTMIG 3.4 DM: a subject never given study treatment has no actual arm, and ARMNRS says why
            "actarm": subject.arm if exposed else "",
            "actarmcd": arm_code(subject.arm, ctx) if exposed else "",
            "armnrs": "" if exposed else design.not_treated.armnrs,
            "race": "",
        }


def _alpha3(alpha2: str, ctx: SdtmContext) -> str:
    """DM COUNTRY is ISO 3166-1 alpha-3 (SDTMIG 3.4); the site profile holds alpha-2."""
    return ctx.pack.load(TrialDesign, "sdtm/trial.yaml").countries.get(alpha2, alpha2)


def arm_code(arm: str, ctx: SdtmContext) -> str:
    arms = ctx.pack.load(TrialDesign, "sdtm/trial.yaml").arms
    return arms.get(arm, arm.upper()[:20])
