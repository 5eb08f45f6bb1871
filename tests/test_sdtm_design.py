"""SDTM trial design (TS, TA, TE, TV), subject visits (SV) and disposition (DS): visits numbered alike everywhere,
every subject's EPOCH from its own records, one disposition per subject whose participation ended, with its CDISC
term, and the trial summary's parameters each once."""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, get_args

import pytest
from support import EXAMPLE

from fhir_lupus.errors import MappingError, RejectedRows
from fhir_lupus.model import TrialData, load_lifecycle_rules
from fhir_lupus.registry import RegistryKey, date_shift, load_rules
from fhir_lupus.sdtm import Dataset, SdtmContext, build_datasets, check_values, sdtm_trial
from fhir_lupus.sdtm._design import (
    Derivation,
    SdtmDesign,
    TsParameter,
    TsValue,
    epochs,
    load_design,
    plus_days,
    visit_numbers,
)
from fhir_lupus.sdtm._sources_ts import DERIVATIONS
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import load_pack

REPO = Path(__file__).resolve().parents[1]
Rows = dict[str, list[dict[str, str]]]
Records = list[dict[str, Any]]
# TS parameters SDTMIG 3.4 and the FDA Technical Conformance Guide ask for, each once (or, for those below, more)
REQUIRED_TS = {
    "TITLE", "TPHASE", "STYPE", "TTYPE", "INTMODEL", "INTTYPE", "RANDOM", "TBLIND", "TCNTRL", "PLANSUB", "ACTSUB",
    "SEXPOP", "AGEMIN", "AGEMAX", "TRT", "PCLAS", "REGID", "SPONSOR", "SSTDTC", "SENDTC", "ADDON", "INDIC",
    "TDIGRP", "TINDTP", "HLTSUBJI", "OBJPRIM", "OUTMSPRI", "LENGTH", "NARMS", "FCNTRY", "SDTIGVER", "SDTMVER",
}  # fmt: skip
REPEATABLE_TS = {"TTYPE", "INDIC", "TDIGRP", "OUTMSPRI", "OUTMSSEC"}


def trial(path: Path) -> tuple[TrialData, Settings]:
    settings = Settings.default()
    return TrialSource.directory(path, settings=settings).whole(), settings


def built(path: Path, key: RegistryKey | None = None) -> dict[str, Records]:
    data, settings = trial(path)
    return {d.name: d.records for d in build_datasets(SdtmContext(data, settings.pack, key))}


def with_screening(rows: Rows) -> None:
    """screening.csv for both subjects of the tiny trial (consent on enrolment) and MSC-002's status history."""
    base = dict(consent_signed="yes", acr_criteria_met="yes", contraception_agreed="yes")
    rows["screening.csv"] = [
        dict(base, subject_id="MSC-001", screened_on="2007-12-20", consent_on="2008-01-02", sex="female"),
        dict(base, subject_id="MSC-002", screened_on="2008-01-10", consent_on="2008-02-01", sex="male"),
    ]
    rows["status_history.csv"] = [
        dict(subject_id="MSC-002", status=status, on=on, reason=reason, reason_code="")
        for status, on, reason in (
            ("candidate", "2008-01-10", ""),
            ("eligible", "2008-01-30", ""),
            ("on-study", "2008-02-01", ""),
            ("withdrawn", "2008-04-01", "moved away"),
        )
    ]


def died(rows: Rows, *, coded: bool = True, off_on: str = "2008-02-12") -> None:
    """MSC-001 dies on 2008-02-12 (a grade 5 event); its off-study reason code says so unless not ``coded``."""
    rows["adverse_events.csv"] = [
        dict(
            event_id="AE-1", subject_id="MSC-001", term="pulmonary haemorrhage", meddra_code="", ctcae_term="",
            ctcae_code="", grade="5", serious="yes", seriousness_criteria="death", outcome="fatal",
            onset_on="2008-02-10", resolved_on="2008-02-12", related_to="none", causality="", reporter="WJ",
            recorded_on="2008-02-10",
        )
    ]  # fmt: skip
    rows["subjects.csv"][0].update(
        status="off-study", off_study_on=off_on, off_study_reason="died" if coded else "completed 24-month protocol"
    )
    for row in rows["subjects.csv"]:
        row["off_study_reason_code"] = ""
    if coded:
        rows["subjects.csv"][0]["off_study_reason_code"] = "death"


class TestVisits:
    def test_tv_lists_every_planned_visit_in_schedule_order(self, dataset: Callable[..., Path]) -> None:
        data, _ = trial(dataset())
        tv = built(dataset())["TV"]
        planned = data.study.visits()
        assert [r["VISIT"] for r in tv] == [v.name for v in planned]
        numbers = [r["VISITNUM"] for r in tv]
        assert numbers == sorted(set(numbers)) and len(numbers) == len(planned)
        days = [r["VISITDY"] for r in tv]
        assert days[:3] == [-1, 30, 60] and days == sorted(days)  # BL the day before day 1, month n at 30 n
        assert all(r["TVSTRL"] and r["ARMCD"] == "ALLOMSC" for r in tv)
        assert "+/- 7 days" in tv[1]["TVSTRL"] and "1 x 30 days after the baseline visit" in tv[1]["TVSTRL"]

    @pytest.mark.parametrize(
        ("day", "days", "expected"), [(-1, 30, 30), (-1, 1, 1), (2, 30, 32), (-5, 2, -3), (1, 0, 1), (3, -3, -1)]
    )
    def test_planned_days_skip_day_zero(self, day: int, days: int, expected: int) -> None:
        assert plus_days(day, days) == expected

    def test_calendar_months_have_no_planned_day_and_the_infusion_anchor_counts_from_day_2(
        self, dataset: Callable[..., Path]
    ) -> None:
        data, settings = trial(dataset())
        protocol = data.study.protocol
        for rule, anchor, month_1 in (("calendar", "baseline", None), ("30-day", "msc_infusion", 32)):
            months = protocol.visit_months.model_copy(update={"rule": rule, "anchor": anchor})
            study = data.study.model_copy(update={"protocol": protocol.model_copy(update={"visit_months": months})})
            planned = visit_numbers(SdtmContext(dataclasses.replace(data, study=study), settings.pack))
            assert planned["M01"].study_day == month_1
        assert "1 calendar months after the MSC infusion" not in planned["M01"].start_rule
        assert "after the MSC infusion" in planned["M01"].start_rule

    def test_sv_has_one_record_per_visit_held_numbered_as_tv(self, dataset: Callable[..., Path]) -> None:
        datasets = built(dataset())
        tv = {r["VISITNUM"]: r for r in datasets["TV"]}
        sv = datasets["SV"]
        assert [(r["USUBJID"], r["VISIT"], r["SVSTDTC"]) for r in sv] == [
            ("NCT00698191-MSC-001", "Baseline (pre-treatment admission)", "2008-01-05"),
            ("NCT00698191-MSC-001", "Month 1", "2008-02-04"),
            ("NCT00698191-MSC-002", "Baseline (pre-treatment admission)", "2008-02-03"),
        ]
        for record in sv:
            assert tv[record["VISITNUM"]]["VISIT"] == record["VISIT"]
            assert tv[record["VISITNUM"]]["VISITDY"] == record["VISITDY"]
            assert (record["SVPRESP"], record["SVOCCUR"], record["SVENDTC"]) == ("Y", "Y", record["SVSTDTC"])
        # MSC-001's RFSTDTC is the pretreatment on 2008-01-06: BL the day before is day -1; MSC-002 was never treated
        assert [r["SVSTDY"] for r in sv] == [-1, 30, None]

    def test_a_refused_visit_has_no_record_and_the_others_keep_their_numbers(
        self, dataset: Callable[..., Path], tmp_path: Path
    ) -> None:
        def spoil(rows: Rows) -> None:
            rows["visits.csv"][1]["visit_date"] = "yesterday"

        source = TrialSource.directory(dataset(spoil))
        with pytest.raises(RejectedRows):
            sdtm_trial(source, tmp_path / "refused", output="json")
        result = sdtm_trial(TrialSource.directory(dataset(spoil)), tmp_path / "out", output="json", allow_rejects=True)
        assert result.rejected >= 1 and result.datasets["SV"] == 2
        sv = built(dataset(spoil))["SV"]
        assert [(r["USUBJID"][-7:], r["VISITNUM"]) for r in sv] == [("MSC-001", 1), ("MSC-002", 1)]

    def test_a_key_moves_visit_dates_by_the_subject_s_offset(self, dataset: Callable[..., Path]) -> None:
        key = RegistryKey(b"k" * 32)
        plain, keyed = built(dataset())["SV"], built(dataset(), key)["SV"]
        shift = date_shift(key, "NCT00698191", "MSC-001", load_rules(Settings.default().pack))
        moved = date.fromisoformat(plain[0]["SVSTDTC"]) + timedelta(days=shift)
        assert moved.isoformat() in {r["SVSTDTC"] for r in keyed}
        assert Counter(r["SVSTDY"] for r in keyed) == Counter(r["SVSTDY"] for r in plain)  # days count alike
        assert not any("MSC-001" in str(r["USUBJID"]) for r in keyed)

    def test_the_example_s_visits_are_all_in_sv(self) -> None:
        data, settings = trial(EXAMPLE)
        datasets = {d.name: d for d in build_datasets(SdtmContext(data, settings.pack))}
        assert len(datasets["SV"].records) == len(data.visits)
        assert {r["VISITNUM"] for r in datasets["SV"].records} <= {r["VISITNUM"] for r in datasets["TV"].records}


class TestEveryDataset:
    def test_the_example_s_visits_and_epochs_agree_across_datasets(self) -> None:
        data, settings = trial(EXAMPLE)
        datasets = {d.name: d.records for d in build_datasets(SdtmContext(data, settings.pack))}
        tv = {(r["VISITNUM"], r["VISIT"]) for r in datasets["TV"]}
        sv = {(r["USUBJID"], r["VISITNUM"]) for r in datasets["SV"]}
        assert {(r["VISITNUM"], r["VISIT"]) for r in datasets["LB"]} <= tv
        assert {(r["USUBJID"], r["VISITNUM"]) for r in datasets["LB"]} <= sv
        epochs_of_ta = {r["EPOCH"] for r in datasets["TA"]}
        for name in ("LB", "AE", "EX", "DS", "SE"):
            assert {r["EPOCH"] for r in datasets[name]} <= epochs_of_ta, name
            assert all(r["EPOCH"] for r in datasets[name]), name  # every one from screening on
        baseline = [r for r in datasets["LB"] if r["VISITNUM"] == 1]
        assert baseline and {r["EPOCH"] for r in baseline} == {"SCREENING"}  # BL: the day before the pretreatment
        assert {r["EPOCH"] for r in datasets["EX"]} == {"TREATMENT"}
        assert {r["EPOCH"] for r in datasets["CM"]} == {""}  # prior therapies, begun before screening

    def test_the_project_s_value_check_finds_nothing(self, dataset: Callable[..., Path]) -> None:
        for path in (EXAMPLE, dataset(died)):
            data, settings = trial(path)
            for built_dataset in build_datasets(SdtmContext(data, settings.pack)):
                assert check_values(built_dataset.name, built_dataset.records) == [], built_dataset.name


class TestEpochs:
    def test_an_observation_is_in_the_element_its_date_falls_in(self, dataset: Callable[..., Path]) -> None:
        data, settings = trial(dataset())
        subject = epochs(SdtmContext(data, settings.pack))
        cst = timezone(timedelta(hours=8))
        cases = [
            (date(2007, 12, 1), ""),  # before screening (enrolment on 2008-01-02, BL on 2008-01-05)
            (date(2008, 1, 5), "SCREENING"),
            (datetime(2008, 1, 6, 7, 0, tzinfo=cst), "SCREENING"),  # pretreatment starts 08:00 local
            (date(2008, 1, 6), "TREATMENT"),  # a day without a time: the element that starts that day
            (datetime(2008, 1, 7, 8, 30, tzinfo=cst), "TREATMENT"),  # during the MSC infusion (08:00-09:00)
            (datetime(2008, 1, 7, 9, 30), "FOLLOW-UP"),
            (date(2008, 1, 7), "TREATMENT"),
            (date(2009, 12, 31), "FOLLOW-UP"),
            # M24 not held: the long-term follow-up starts after its window, BL + 720 days + 7
            (date(2010, 1, 1), "FOLLOW-UP"),
            (date(2010, 1, 2), "LONG-TERM FOLLOW-UP"),
        ]
        assert [subject.epoch("MSC-001", at) for at, _ in cases] == [epoch for _, epoch in cases]
        assert subject.epoch("MSC-002", date(2008, 3, 1)) == "SCREENING"  # never treated
        assert subject.epoch("MSC-001", None) == "" and subject.epoch("MSC-404", date(2008, 3, 1)) == ""

    def test_the_held_month_24_visit_closes_the_monthly_follow_up(self, dataset: Callable[..., Path]) -> None:
        def m24(rows: Rows) -> None:
            rows["visits.csv"].append(dict(subject_id="MSC-001", visit_code="M24", visit_date="2009-12-20"))

        data, settings = trial(dataset(m24))
        subject = epochs(SdtmContext(data, settings.pack))
        assert subject.epoch("MSC-001", date(2009, 12, 20)) == "FOLLOW-UP"
        assert subject.epoch("MSC-001", date(2009, 12, 21)) == "LONG-TERM FOLLOW-UP"

    def test_se_gives_each_subject_s_elements_up_to_its_last_contact(self, dataset: Callable[..., Path]) -> None:
        se = built(dataset())["SE"]
        spans = [(r["USUBJID"][-7:], r["ETCD"], r["EPOCH"], r["SESTDTC"], r["SEENDTC"]) for r in se]
        assert spans == [
            ("MSC-001", "SCRN", "SCREENING", "2008-01-02", "2008-01-06T08:00"),  # enrolled: no screening.csv
            ("MSC-001", "CYC", "TREATMENT", "2008-01-06T08:00", "2008-01-07T08:00"),
            ("MSC-001", "MSC", "TREATMENT", "2008-01-07T08:00", "2008-01-07T09:00"),
            ("MSC-001", "FU", "FOLLOW-UP", "2008-01-07T09:00", ""),  # on study: open; long-term follow-up not yet
            ("MSC-002", "SCRN", "SCREENING", "2008-02-01", "2008-04-01"),  # withdrawn before any treatment
        ]
        assert [r["SESEQ"] for r in se] == [1, 2, 3, 4, 1] and [r["SESTDY"] for r in se][:2] == [-4, 1]

    def test_ta_lists_the_elements_and_every_epoch_used_is_one_of_ta(self, dataset: Callable[..., Path]) -> None:
        datasets = built(dataset(with_screening))
        ta, te = datasets["TA"], datasets["TE"]
        assert [r["TAETORD"] for r in ta] == list(range(1, len(ta) + 1))
        assert [r["EPOCH"] for r in ta] == ["SCREENING", "TREATMENT", "TREATMENT", "FOLLOW-UP", "LONG-TERM FOLLOW-UP"]
        assert {r["ETCD"] for r in ta} == {r["ETCD"] for r in te}
        assert all(r["TESTRL"] and (r["TEENRL"] or r["TEDUR"]) for r in te)
        assert {r["ARMCD"] for r in ta} == {r["ARMCD"] for r in datasets["DM"]}
        assert {r["EPOCH"] for r in datasets["DS"]} <= {r["EPOCH"] for r in ta}


class TestDisposition:
    def test_milestones_and_one_disposition_per_subject_who_left(self, dataset: Callable[..., Path]) -> None:
        datasets = built(dataset(with_screening))
        ds, dm = datasets["DS"], {r["USUBJID"]: r for r in datasets["DM"]}
        by_subject: dict[str, Records] = {}
        for record in ds:
            by_subject.setdefault(record["USUBJID"], []).append(record)
        first, second = by_subject["NCT00698191-MSC-001"], by_subject["NCT00698191-MSC-002"]
        assert [(r["DSDECOD"], r["DSCAT"]) for r in first] == [("INFORMED CONSENT OBTAINED", "PROTOCOL MILESTONE")]
        assert [(r["DSDECOD"], r["DSCAT"], r["DSSTDTC"], r["DSSEQ"]) for r in second] == [
            ("ELIGIBILITY CRITERIA MET", "PROTOCOL MILESTONE", "2008-01-30", 1),
            ("INFORMED CONSENT OBTAINED", "PROTOCOL MILESTONE", "2008-02-01", 2),
            ("LOST TO FOLLOW-UP", "DISPOSITION EVENT", "2008-04-01", 3),  # "moved away": SDTMIG's own example
        ]
        assert second[-1]["DSTERM"] == "moved away" and second[-1]["EPOCH"] == "SCREENING"
        for usubjid, records in by_subject.items():
            consent = [r for r in records if r["DSDECOD"] == "INFORMED CONSENT OBTAINED"]
            assert [r["DSSTDTC"] for r in consent] == [dm[usubjid]["RFICDTC"]]

    @pytest.mark.parametrize(
        ("reason", "code", "decod"),
        [
            ("moved away", "adverse_event", "ADVERSE EVENT"),  # the code wins over the free text
            ("Withdrew consent ", "", "WITHDRAWAL BY SUBJECT"),  # design.yaml verbatim_reasons, case ignored
            ("went abroad for work", "", "OTHER"),  # neither coded nor listed
        ],
    )
    def test_the_reason_code_gives_the_ncomplt_term(
        self, dataset: Callable[..., Path], reason: str, code: str, decod: str
    ) -> None:
        def edit(rows: Rows) -> None:
            for row in rows["subjects.csv"]:
                row["off_study_reason_code"] = ""
            rows["subjects.csv"][1].update(off_study_reason=reason, off_study_reason_code=code)

        [record] = [r for r in built(dataset(edit))["DS"] if r["DSCAT"] == "DISPOSITION EVENT"]
        assert (record["DSDECOD"], record["DSTERM"], record["DSSTDTC"]) == (decod, reason.strip(), "2008-04-01")
        ncomplt = {reason.cdisc for reason in load_lifecycle_rules(Settings.default().pack).off_study_reasons.values()}
        assert record["DSDECOD"] in ncomplt

    def test_a_death_is_the_disposition_dated_as_dm(self, dataset: Callable[..., Path]) -> None:
        datasets = built(dataset(died))
        [death] = [
            r for r in datasets["DS"] if r["USUBJID"] == "NCT00698191-MSC-001" and r["DSCAT"] != "PROTOCOL MILESTONE"
        ]
        [dm] = [r for r in datasets["DM"] if r["USUBJID"] == "NCT00698191-MSC-001"]
        assert (death["DSDECOD"], death["DSCAT"], death["DSTERM"]) == ("DEATH", "DISPOSITION EVENT", "died")
        assert death["DSSTDTC"] == dm["DTHDTC"] == "2008-02-12" and dm["DTHFL"] == "Y"
        assert death["EPOCH"] == "FOLLOW-UP"

    def test_a_death_after_leaving_is_an_other_event(self, dataset: Callable[..., Path]) -> None:
        records = built(dataset(lambda rows: died(rows, coded=False, off_on="2008-02-11")))["DS"]
        mine = [(r["DSDECOD"], r["DSCAT"], r["DSSTDTC"]) for r in records if r["USUBJID"].endswith("MSC-001")]
        assert mine == [("COMPLETED", "DISPOSITION EVENT", "2008-02-11"), ("DEATH", "OTHER EVENT", "2008-02-12")]

    def test_a_key_drops_the_free_text_reason_as_the_registry_package_does(self, dataset: Callable[..., Path]) -> None:
        plain = built(dataset(with_screening))["DS"]
        keyed = built(dataset(with_screening), RegistryKey(b"k" * 32))["DS"]
        assert "moved away" in {r["DSTERM"] for r in plain}
        [left] = [r for r in keyed if r["DSCAT"] == "DISPOSITION EVENT"]
        assert left["DSTERM"] == left["DSDECOD"] == "LOST TO FOLLOW-UP"
        assert "moved away" not in str(keyed)

    def test_the_example_gives_one_disposition_per_subject_who_left(self) -> None:
        data, settings = trial(EXAMPLE)
        ds = next(d for d in build_datasets(SdtmContext(data, settings.pack)) if d.name == "DS").records
        ended = {f"NCT00698191-{sid}" for sid, t in data.timelines.items() if t.ended}
        dispositions = Counter(r["USUBJID"] for r in ds if r["DSCAT"] == "DISPOSITION EVENT")
        assert set(dispositions) == ended and set(dispositions.values()) == {1} and len(ended) == 8
        assert Counter(r["DSDECOD"] for r in ds if r["DSCAT"] == "DISPOSITION EVENT") == {
            "COMPLETED": 5,
            "LOST TO FOLLOW-UP": 2,
            "WITHDRAWAL BY SUBJECT": 1,
        }


class TestTrialSummary:
    def test_every_required_parameter_once_with_a_value_or_a_null_flavor(self, dataset: Callable[..., Path]) -> None:
        ts = built(dataset(with_screening))["TS"]
        counts = Counter(r["TSPARMCD"] for r in ts)
        assert set(counts) >= REQUIRED_TS
        assert {p for p, n in counts.items() if n > 1} <= REPEATABLE_TS
        for record in ts:
            assert bool(record["TSVAL"]) != bool(record["TSVALNF"]), record
            assert len(record["TSPARM"]) <= 40 and len(record["TSVAL"]) <= 200
            if record["TSVCDREF"] == "CDISC":
                assert record["TSVALCD"].startswith("C") and record["TSVCDVER"] == "2015-12-18"
        seqs = Counter((r["TSPARMCD"], r["TSSEQ"]) for r in ts)
        assert set(seqs.values()) == {1}

    def test_values_come_from_the_study_file_and_the_trial(self, dataset: Callable[..., Path]) -> None:
        datasets = built(dataset(with_screening))
        value = {r["TSPARMCD"]: r for r in datasets["TS"] if r["TSSEQ"] == 1}
        assert (value["AGEMIN"]["TSVAL"], value["AGEMAX"]["TSVAL"]) == ("P15Y", "P70Y")
        assert value["ACTSUB"]["TSVAL"] == str(len(datasets["DM"]))
        assert value["SSTDTC"]["TSVAL"] == min(r["RFICDTC"] for r in datasets["DM"]) == "2008-01-02"
        assert value["SENDTC"]["TSVALNF"] == "NAV"  # MSC-001 is still in follow-up
        assert (value["TPHASE"]["TSVAL"], value["TPHASE"]["TSVALCD"]) == ("PHASE I TRIAL", "C15600")
        assert (value["REGID"]["TSVAL"], value["REGID"]["TSVCDREF"]) == ("NCT00698191", "ClinicalTrials.gov")
        assert (value["INDIC"]["TSVALCD"], value["INDIC"]["TSVCDREF"]) == ("55464009", "SNOMED")
        assert value["FCNTRY"]["TSVAL"] == "CHN"

    def test_the_study_ends_when_every_subject_s_participation_ended(self, dataset: Callable[..., Path]) -> None:
        def ended(rows: Rows) -> None:
            rows["subjects.csv"][0].update(status="off-study", off_study_on="2008-05-02", off_study_reason="done")

        [end] = [r for r in built(dataset(ended))["TS"] if r["TSPARMCD"] == "SENDTC"]
        assert (end["TSVAL"], end["TSVALNF"]) == ("2008-05-02", "")

    def test_a_study_value_without_a_translation_is_refused(self, dataset: Callable[..., Path]) -> None:
        data, settings = trial(dataset())
        study = data.study.model_copy(update={"phase": "early-phase-1"})
        with pytest.raises(MappingError, match=r"'early-phase-1' has no TPHASE term in mappings/sdtm: .*phase 0"):
            build_datasets(SdtmContext(dataclasses.replace(data, study=study), settings.pack))

    def test_every_named_derivation_exists(self) -> None:
        assert set(DERIVATIONS) == set(get_args(Derivation))


class TestDesignFile:
    def test_the_shipped_design_loads(self) -> None:
        design = load_design(Settings.default().pack)
        assert isinstance(design, SdtmDesign) and design.elements[0].epoch == "SCREENING"

    @pytest.mark.parametrize(
        ("old", "new", "match"),
        [
            ("epoch: LONG-TERM FOLLOW-UP", "epoch: LATE FOLLOW-UP", "'LATE FOLLOW-UP' is not a term of codelist EPOCH"),
            ("milestones: [eligible]", "milestones: [eligible, on-study]", "enrolment is RFSTDTC in DM"),
            ("{parmcd: ADAPT,", "{parmcd: ADAPTIVE,", "'ADAPTIVE' is not a term of codelist TSPARMCD"),
            ('values: [TREATMENT]', 'values: [CURE]', "'CURE' is not a term of codelist TINDTP"),
            ("withdrew consent: withdrawal_by_subject", "moved away: moved", "'moved' has no NCOMPLT term"),
        ],
    )  # fmt: skip
    def test_a_value_terms_yaml_does_not_hold_stops_the_run(
        self, dataset: Callable[..., Path], tmp_path: Path, old: str, new: str, match: str
    ) -> None:
        root = tmp_path / "mappings"
        shutil.copytree(REPO / "mappings", root)
        path = root / "sdtm" / "design.yaml"
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        data, _ = trial(dataset(with_screening))
        with pytest.raises(MappingError, match=match):
            build_datasets(SdtmContext(data, load_pack(root)))

    def test_a_ts_parameter_has_one_origin(self) -> None:
        with pytest.raises(ValueError, match="one of"):
            TsParameter.model_validate({"parmcd": "ADAPT", "values": ["N"], "null_flavor": "NA", "source": "s"})

    def test_a_ts_value_is_a_value_or_a_null_flavor(self) -> None:
        for bad in ({}, {"value": "Y", "null_flavor": "NA"}, {"value": "Y", "code": "C1"}):
            with pytest.raises(ValueError):
                TsValue.model_validate(bad)

    def test_every_required_variable_is_filled(self, dataset: Callable[..., Path]) -> None:
        data, settings = trial(dataset(with_screening))
        for built_dataset in build_datasets(SdtmContext(data, settings.pack)):
            required = [v.name for v in built_dataset.spec.variables if v.core == "Req"]
            _all_filled(built_dataset, required)


def _all_filled(dataset: Dataset, names: list[str]) -> None:
    for record in dataset.records:
        empty = [n for n in names if record.get(n) in (None, "")]
        assert not empty, f"{dataset.name}: {empty} empty in {record}"
