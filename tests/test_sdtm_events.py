"""SDTM AE, CM and EX from adverse_events.csv, medications.csv and procedures.csv: enrolled subjects only, the
seriousness flags, an ongoing event's or course's end relative to the reference period, study days on both sides
of RFSTDTC, only given treatments as exposures, keyed output, and every project key with its SDTM value."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import EXAMPLE, REPO
from test_adverse_events import ae
from test_screening import med_row

from fhir_lupus.errors import MappingError
from fhir_lupus.model import TrialData, load_lifecycle_rules
from fhir_lupus.registry import RegistryKey, date_shift, load_rules
from fhir_lupus.sdtm import build_datasets, sdtm_trial
from fhir_lupus.sdtm._engine import Value
from fhir_lupus.sdtm._sources import SdtmContext
from fhir_lupus.sdtm._sources_events import EventTerms, load_event_terms
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import load_adverse_event_terms, load_medication_catalogue, load_pack

Rows = dict[str, list[dict[str, str]]]
Records = list[dict[str, Value]]
UNSUSPECTED = dict(related_to="none", causality="")  # no study treatment suspected


def _events_trial(rows: Rows) -> None:
    """MSC-001 (treated 2008-01-06) with a serious, an ongoing and a pre-treatment event, prior courses and a
    not-done second infusion; MSC-002 (withdrawn, never treated) with an ongoing event and a course."""
    rows["adverse_events.csv"] = [
        ae(
            event_id="AE1",
            onset_on="2008-01-20",
            resolved_on="2008-02-02",
            term="pneumonia",
            ctcae_term="Lung infection",
            grade="3",
            serious="yes",
            seriousness_criteria="hospitalization;life_threatening",
            related_to="cyclophosphamide",
        ),
        ae(event_id="AE2", onset_on="2008-01-30", resolved_on="", outcome="not_recovered", term="high blood pressure")
        | UNSUSPECTED,
        ae(event_id="AE3", onset_on="2008-01-04", resolved_on="2008-01-08", term="headache") | UNSUSPECTED,
        ae(event_id="AE4", subject_id="MSC-002", onset_on="2008-02-10", resolved_on="", outcome="recovering")
        | UNSUSPECTED,
    ]
    rows["medications.csv"] = [
        med_row("M1", "MSC-001", "cyclophosphamide", "0.5", "g/m2", "q2w", "intravenous", "2006-03-01", "2006-09-01"),
        med_row("M2", "MSC-001", "prednisone", "40", "mg", "qd", "oral", "2006-03-01", ""),
        med_row("M3", "MSC-002", "cyclophosphamide", "0.5", "g/m2", "q2w", "intravenous", "2006-03-01", ""),
    ]
    rows["procedures.csv"].append(
        rows["procedures.csv"][1]
        | dict(procedure_id="P3", status="not-done", started_at="2008-02-07T08:00:00+08:00", ended_at="")
    )


def _not_enrolled(rows: Rows) -> None:
    """MSC-002 only eligible: a person considered for the study, never a subject of it."""
    _events_trial(rows)
    rows["subjects.csv"][1] |= dict(status="eligible", off_study_on="", off_study_reason="")


def _load(directory: Path) -> tuple[TrialData, Settings]:
    settings = Settings.default()
    source = TrialSource.directory(directory, settings=settings)
    data = source.whole()
    assert not source.report.rejected, source.report.rejected
    return data, settings


def _domains(data: TrialData, settings: Settings, key: RegistryKey | None = None) -> dict[str, Records]:
    return {d.name: d.records for d in build_datasets(SdtmContext(data, settings.pack, key))}


def _by(records: Records, variable: str) -> dict[Value, dict[str, Value]]:
    return {r[variable]: r for r in records}


def _enrolled(data: TrialData, settings: Settings) -> set[str]:
    statuses = load_lifecycle_rules(settings.pack).enrolled
    return {s.record.subject_id for s in data.subjects if s.record.status in statuses}


class TestAdverseEvents:
    def test_one_record_per_event_of_an_enrolled_subject(self, dataset: Callable[..., Path]) -> None:
        data, settings = _load(dataset(_not_enrolled))
        enrolled = _enrolled(data, settings)
        assert "MSC-002" not in enrolled and any(e.record.event.subject_id == "MSC-002" for e in data.adverse_events)
        records = _domains(data, settings)["AE"]
        assert len(records) == sum(e.record.event.subject_id in enrolled for e in data.adverse_events) == 3
        assert {r["USUBJID"] for r in records} == {f"{data.study.nct_id}-MSC-001"}
        assert [r["AESEQ"] for r in records] == [1, 2, 3]

    def test_a_serious_event_names_each_criterion_and_a_non_serious_one_none(
        self, dataset: Callable[..., Path]
    ) -> None:
        data, settings = _load(dataset(_events_trial))
        events = _by(_domains(data, settings)["AE"], "AETERM")
        flags = list(settings.pack.load(EventTerms, "sdtm/events.yaml").seriousness_flags.values())
        serious = events["pneumonia"]
        assert serious["AESER"] == "Y" and serious["AESHOSP"] == "Y" and serious["AESLIFE"] == "Y"
        assert {f: serious[f] for f in flags if f not in ("AESHOSP", "AESLIFE")} == {
            f: "N" for f in flags if f not in ("AESHOSP", "AESLIFE")
        }
        assert serious["AETOXGR"] == "3" and serious["AEREL"] == "PROBABLY RELATED"
        assert serious["AEDECOD"] == serious["AELLT"] == "Lung infection"
        plain = events["high blood pressure"]
        assert plain["AESER"] == "N" and all(plain[f] == "" for f in flags)
        assert plain["AEREL"] == "NOT RELATED"  # related_to none: no study treatment suspected

    def test_an_ongoing_event_ends_after_the_reference_period(self, dataset: Callable[..., Path]) -> None:
        data, settings = _load(dataset(_events_trial))
        records = _domains(data, settings)["AE"]
        ongoing = _by(records, "AETERM")["high blood pressure"]
        assert ongoing["AEOUT"] == "NOT RECOVERED/NOT RESOLVED" and ongoing["AEENDTC"] == ""
        assert ongoing["AEENRF"] == "AFTER" and ongoing["AEENDY"] is None
        assert _by(records, "AETERM")["pneumonia"]["AEENRF"] == ""  # resolved: its end date says it
        # MSC-002 was never treated: no RFENDTC, so no end relative to the reference period (CORE-000177)
        [untreated] = [r for r in records if str(r["USUBJID"]).endswith("MSC-002")]
        assert untreated["AEOUT"] == "RECOVERING/RESOLVING" and untreated["AEENRF"] == ""

    def test_study_days_count_from_rfstdtc_without_day_zero(self, dataset: Callable[..., Path]) -> None:
        data, settings = _load(dataset(_events_trial))
        domains = _domains(data, settings)
        start = str(_by(domains["DM"], "SUBJID")["MSC-001"]["RFSTDTC"])[:10]
        early = _by(domains["AE"], "AETERM")["headache"]
        assert start == "2008-01-06"
        assert (early["AESTDTC"], early["AESTDY"], early["AEENDTC"], early["AEENDY"]) == (
            "2008-01-04",
            -2,
            "2008-01-08",
            3,
        )

    def test_a_key_gives_the_ctcae_term_for_the_verbatim_text(self, dataset: Callable[..., Path]) -> None:
        data, settings = _load(dataset(_events_trial))
        keyed = _domains(data, settings, RegistryKey(b"k" * 32))["AE"]
        assert {r["AETERM"] for r in keyed} == {"Lung infection", "Fever"}
        assert not {"pneumonia", "high blood pressure", "headache"} & set(json.dumps(keyed).split('"'))


class TestPriorMedications:
    def test_one_record_per_course_of_an_enrolled_subject(self, dataset: Callable[..., Path]) -> None:
        data, settings = _load(dataset(_not_enrolled))
        enrolled = _enrolled(data, settings)
        cm = _domains(data, settings)["CM"]
        assert len(cm) == sum(m.record.subject_id in enrolled for m in data.medications) == 2

    def test_dose_route_frequency_as_cdisc_terms_and_days_before_the_treatment(
        self, dataset: Callable[..., Path]
    ) -> None:
        data, settings = _load(dataset(_events_trial))
        cm = [r for r in _domains(data, settings)["CM"] if str(r["USUBJID"]).endswith("MSC-001")]
        course = _by(cm, "CMTRT")["cyclophosphamide"]
        assert (course["CMDOSE"], course["CMDOSU"], course["CMDOSFRQ"], course["CMROUTE"]) == (
            0.5,
            "g/m2",
            "EVERY 2 WEEKS",
            "INTRAVENOUS",
        )
        assert course["CMCAT"] == "PRIOR LUPUS THERAPY" and course["CMDECOD"] == "cyclophosphamide"
        days = (date(2006, 3, 1) - date(2008, 1, 6)).days
        assert course["CMSTDTC"] == "2006-03-01" and course["CMSTDY"] == days < 0
        assert course["CMENRF"] == ""  # ended_on given: the date says when
        running = _by(cm, "CMTRT")["prednisone"]
        assert (running["CMDOSU"], running["CMDOSFRQ"], running["CMROUTE"]) == ("mg", "QD", "ORAL")
        assert running["CMENDTC"] == "" and running["CMENRF"] == "AFTER"


class TestExposure:
    def test_only_treatments_given_are_exposures(self, dataset: Callable[..., Path]) -> None:
        data, settings = _load(dataset(_events_trial))
        given = [p for p in data.procedures if p.record.status == "completed"]
        assert len(given) < len(data.procedures)  # the not-done infusion is in procedures.csv, not in EX
        ex = _domains(data, settings)["EX"]
        assert len(ex) == len(given) == 2

    def test_doses_as_collected_with_their_units_and_study_days(self, dataset: Callable[..., Path]) -> None:
        data, settings = _load(dataset())
        ex = _by(_domains(data, settings)["EX"], "EXDOSU")
        pretreatment, infusion = ex["mg"], ex["/kg"]
        assert (pretreatment["EXTRT"], pretreatment["EXDOSE"]) == ("CYCLOPHOSPHAMIDE", 1400.0)
        assert (pretreatment["EXSTDTC"], pretreatment["EXENDTC"]) == ("2008-01-06T08:00", "2008-01-06T10:00")
        assert (pretreatment["EXSTDY"], infusion["EXSTDY"]) == (1, 2)  # the infusion is day 2, no day 0
        assert infusion["EXDOSE"] == 1_000_000.0 and infusion["EXLOT"] == "D-2008-01"
        assert {r["EXROUTE"] for r in ex.values()} == {"INTRAVENOUS"}


class TestKeyed:
    def test_every_date_moves_by_the_subjects_offset_and_study_days_stay(self, dataset: Callable[..., Path]) -> None:
        data, settings = _load(dataset(_events_trial))
        key = RegistryKey(b"k" * 32)
        plain, keyed = _domains(data, settings), _domains(data, settings, key)
        shift = timedelta(days=date_shift(key, data.study.nct_id, "MSC-001", load_rules(settings.pack)))
        pseudonym = key.hex(
            "identifier", settings.pack.identifier_system("subject", study=data.study.nct_id), "MSC-001"
        )
        for domain, dtc, dy in (("AE", "AESTDTC", "AESTDY"), ("CM", "CMSTDTC", "CMSTDY"), ("EX", "EXSTDTC", "EXSTDY")):
            before = [r for r in plain[domain] if str(r["USUBJID"]).endswith("MSC-001")]
            after = [r for r in keyed[domain] if r["USUBJID"] == pseudonym]
            assert len(before) == len(after) > 0
            assert sorted(_moved(str(r[dtc]), shift) for r in before) == sorted(str(r[dtc]) for r in after)
            assert sorted(r[dy] for r in before) == sorted(r[dy] for r in after)  # intervals are kept
        lots = {r["EXLOT"] for r in keyed["EX"]} - {""}
        assert lots and "D-2008-01" not in lots


def _moved(dtc: str, shift: timedelta) -> str:
    if "T" in dtc:
        return (datetime.fromisoformat(dtc) + shift).isoformat(timespec="minutes")
    return (date.fromisoformat(dtc) + shift).isoformat()


class TestTerms:
    def test_every_project_key_has_its_sdtm_value(self) -> None:
        pack = load_pack()
        terms, ae = pack.load(EventTerms, "sdtm/events.yaml"), load_adverse_event_terms(pack)
        medications = load_medication_catalogue(pack)
        assert set(terms.outcomes) == set(ae.outcomes)
        assert terms.ongoing_outcomes <= set(ae.outcomes) - ae.resolved_outcomes
        assert set(terms.causality) == set(ae.causality)
        assert set(terms.seriousness_flags) == set(ae.seriousness_criteria)
        assert set(terms.routes) == set(medications.routes)
        assert set(terms.frequencies) == set(medications.frequencies)
        assert set(terms.exposures) == {"cyclophosphamide_pretreatment", "msc_infusion"}  # TreatmentProcedure.kind

    def test_a_key_without_an_sdtm_value_stops_the_run_naming_the_file(
        self, dataset: Callable[..., Path], tmp_path: Path
    ) -> None:
        root = _edited_events(tmp_path, lambda terms: terms["outcomes"].pop("not_recovered"))
        data, _settings = _load(dataset(_events_trial))
        with pytest.raises(MappingError, match=r"sdtm/events\.yaml: outcome 'not_recovered'"):
            build_datasets(SdtmContext(data, load_pack(root)))
        assert load_event_terms(SdtmContext(data, load_pack())).outcomes["not_recovered"]

    def test_a_dose_column_procedures_csv_has_not_is_refused_when_the_file_loads(self, tmp_path: Path) -> None:
        root = _edited_events(tmp_path, lambda terms: terms["exposures"]["msc_infusion"].update(dose="cells"))
        with pytest.raises(MappingError, match=r"'cells' is not a column of procedures\.csv"):
            load_pack(root).load(EventTerms, "sdtm/events.yaml")


def _edited_events(tmp_path: Path, edit: Callable[[dict[str, Any]], object]) -> Path:
    """A copy of mappings/ whose sdtm/events.yaml ``edit`` changed."""
    root = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", root)
    path = root / "sdtm" / "events.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(document)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return root


class TestExample:
    def test_each_domain_holds_the_enrolled_rows_of_its_source(self, tmp_path: Path) -> None:
        settings = Settings.default()
        source = TrialSource.directory(EXAMPLE, settings=settings)
        data = source.whole()
        enrolled = _enrolled(data, settings)
        result = sdtm_trial(source, tmp_path / "sdtm", settings=settings, output="json")
        assert result.datasets["AE"] == sum(e.record.event.subject_id in enrolled for e in data.adverse_events) > 0
        assert result.datasets["CM"] == sum(m.record.subject_id in enrolled for m in data.medications) > 0
        given = [p for p in data.procedures if p.record.status == "completed" and p.record.subject_id in enrolled]
        assert result.datasets["EX"] == len(given) > 0
        assert "PR" not in result.datasets and not (tmp_path / "sdtm" / "pr.json").exists()
        document = json.loads((tmp_path / "sdtm" / "ae.json").read_text(encoding="utf-8"))
        assert document["records"] == result.datasets["AE"]
