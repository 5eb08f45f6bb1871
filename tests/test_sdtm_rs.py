"""SDTM RS: every SLEDAI-2K assessment as its 24 descriptors and its totals (the CRF's and the computed one), a
preliminary total never written as final, and the renal response exactly as the investigator report classifies it."""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model import LoadReport, TrialData
from fhir_lupus.registry import RegistryKey
from fhir_lupus.report import load_report_definition, report_statistics
from fhir_lupus.report._stats import Incomplete, Reading, classify
from fhir_lupus.scoring import LabEvidence, load_sledai_definition, score_sledai
from fhir_lupus.sdtm import build_datasets, check_values, load_sdtm_terms, sdtm_trial
from fhir_lupus.sdtm._design import visit_numbers
from fhir_lupus.sdtm._sources import SdtmContext
from fhir_lupus.sdtm._sources_rs import ResponseTerms
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import LabValue, UnitConverter, load_pack

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "nct00698191"
Rows = dict[str, list[dict[str, str]]]
Record = dict[str, Any]


def _load(path: Path, settings: Settings | None = None) -> tuple[TrialData, LoadReport, Settings]:
    settings = settings or Settings.default()
    source = TrialSource.directory(path, settings=settings)
    return source.whole(), source.report, settings


def _rs(data: TrialData, report: LoadReport, settings: Settings, key: RegistryKey | None = None) -> list[Record]:
    """RS's records, each with the visit code of its VISITNUM as ``code`` (for the tests to find them)."""
    [rs] = [d for d in build_datasets(SdtmContext(data, settings.pack, key, report)) if d.name == "RS"]
    codes = {number: code for code, (number, _) in _numbers(data).items()}
    return [{**record, "code": codes[record["VISITNUM"]]} for record in rs.records]


def _numbers(data: TrialData) -> dict[str, tuple[float, str]]:
    """VISITNUM and VISIT by visit code, as the trial design (TV) numbers them."""
    planned = visit_numbers(SdtmContext(data, Settings.default().pack))
    return {code: (float(visit.number), visit.name) for code, visit in planned.items()}


def _code(key: str) -> str:
    """RSTESTCD of a descriptor key, a total or the renal response (mappings/sdtm/terms.yaml)."""
    return load_sdtm_terms().term_for("RSTESTCD", key).value


def _category(key: str) -> str:
    return load_sdtm_terms().term_for("RSCAT", key).value


def _terms() -> ResponseTerms:
    return load_pack().load(ResponseTerms, "sdtm/responses.yaml")


def _by_visit(records: list[Record], category: str) -> dict[tuple[Any, Any], dict[str, Record]]:
    grouped: dict[tuple[Any, Any], dict[str, Record]] = defaultdict(dict)
    for record in records:
        if record["RSCAT"] == category:
            assert record["RSTESTCD"] not in grouped[record["USUBJID"], record["code"]], "a test twice at one visit"
            grouped[record["USUBJID"], record["code"]][record["RSTESTCD"]] = record
    return grouped


def _refused_lab(rows: Rows, analyte: str = "urine_rbc", **cells: str) -> None:
    """A labs.csv row the loader refuses (its value cannot be read), for MSC-001 at baseline unless told."""
    row = dict(rows["labs.csv"][0])
    row.update(result_id="L99", analyte=analyte, value="lots", unit="/HPF", ref_low="", ref_high="", specimen="urine")
    row.update(cells)
    rows["labs.csv"].append(row)


class TestSledai:
    def test_each_assessment_has_its_24_descriptors_and_its_totals(self, dataset: Callable[..., Path]) -> None:
        data, report, settings = _load(dataset())
        descriptors = {_code(d.key) for d in load_sledai_definition().descriptors}
        grouped = _by_visit(_rs(data, report, settings), _category("sledai"))
        assert len(grouped) == len(data.sledai) == 2
        for located in data.sledai:
            scored = located.record
            tests = grouped[f"NCT00698191-{scored.assessment.subject_id}", scored.assessment.visit_code]
            totals = {_code("computed_total")} | ({_code("crf_total")} if scored.score.total_from_crf else set())
            assert set(tests) == descriptors | totals
            parts = [tests[code]["RSSTRESN"] for code in descriptors]
            assert sum(parts) == tests[_code("computed_total")]["RSSTRESN"] == scored.score.computed_total
            assert all(r["RSDTC"] == scored.assessment.assessed_on.isoformat() for r in tests.values())

    def test_a_descriptor_scores_its_weight_and_says_whether_the_crf_or_the_labs_found_it(
        self, dataset: Callable[..., Path]
    ) -> None:
        data, report, settings = _load(dataset())
        definition = load_sledai_definition()
        baseline = _by_visit(_rs(data, report, settings), _category("sledai"))["NCT00698191-MSC-001", "BL"]
        arthritis = baseline[_code("arthritis")]  # sledai.csv descriptors
        assert arthritis["RSORRES"] == arthritis["RSSTRESC"] == str(definition.descriptor("arthritis").weight)
        assert (arthritis["RSDRVFL"], arthritis["RSEVAL"]) == ("", "INVESTIGATOR")
        low = baseline[_code("low_complement")]  # C3 0.45 g/L below its limit 0.9
        assert low["RSSTRESN"] == definition.descriptor("low_complement").weight
        assert (low["RSDRVFL"], low["RSEVAL"]) == ("Y", "")
        seizure = baseline[_code("seizure")]
        assert (seizure["RSORRES"], seizure["RSSTRESN"], seizure["RSSTAT"]) == ("0", 0, "")
        total = baseline[_code("computed_total")]
        assert (total["RSDRVFL"], total["RSEVAL"]) == ("Y", "")

    def test_the_crf_total_and_the_computed_total_are_two_records(self, dataset: Callable[..., Path]) -> None:
        """The CRF says 0 at M01; a platelet count of 50 that day meets thrombocytopenia, which the CRF left out."""

        def low_platelets(rows: Rows) -> None:
            row = dict(rows["labs.csv"][8])  # L9, platelets
            row.update(result_id="L12", visit_code="M01", value="50", collected_at="2008-02-04T08:00:00+08:00")
            rows["labs.csv"].append(row)

        data, report, settings = _load(dataset(low_platelets))
        month1 = _by_visit(_rs(data, report, settings), _category("sledai"))["NCT00698191-MSC-001", "M01"]
        crf, computed = month1[_code("crf_total")], month1[_code("computed_total")]
        assert (crf["RSORRES"], crf["RSSTRESN"], crf["RSDRVFL"], crf["RSEVAL"]) == ("0", 0, "", "INVESTIGATOR")
        weight = load_sledai_definition().descriptor("thrombocytopenia").weight
        assert (computed["RSORRES"], computed["RSSTRESN"], computed["RSDRVFL"]) == (str(weight), weight, "Y")
        found = month1[_code("thrombocytopenia")]
        assert (found["RSSTRESN"], found["RSDRVFL"]) == (weight, "Y")

    def test_a_not_attributed_descriptor_scores_zero_as_the_clinician_said(self, dataset: Callable[..., Path]) -> None:
        def not_lupus(rows: Rows) -> None:
            rows["sledai.csv"][0]["not_attributed"] = "thrombocytopenia:cyclophosphamide"
            rows["sledai.csv"][1]["not_attributed"] = ""

        data, report, settings = _load(dataset(not_lupus))
        baseline = _by_visit(_rs(data, report, settings), _category("sledai"))["NCT00698191-MSC-001", "BL"]
        record = baseline[_code("thrombocytopenia")]
        assert (record["RSSTRESN"], record["RSEVAL"], record["RSDRVFL"]) == (0, "INVESTIGATOR", "")

    def test_a_preliminary_total_is_a_lower_bound_never_a_final_number(self, dataset: Callable[..., Path]) -> None:
        """A refused urine RBC row in the window: hematuria cannot be judged, the total is at least what counted."""
        data, report, settings = _load(dataset(_refused_lab))
        [scored] = [s.record.score for s in data.sledai if s.record.assessment.visit_code == "BL"]
        assert not scored.final  # the scoring's mark, which the FHIR Observation publishes as preliminary
        terms = _terms()
        baseline = _by_visit(_rs(data, report, settings), _category("sledai"))["NCT00698191-MSC-001", "BL"]
        total = baseline[_code("computed_total")]
        assert total["RSORRES"] == total["RSSTRESC"] == f">={scored.total}"
        assert total["RSSTRESN"] is None
        hematuria = baseline[_code("hematuria")]
        assert (hematuria["RSORRES"], hematuria["RSSTRESN"], hematuria["RSSTAT"]) == ("", None, terms.not_done)
        assert "labs.csv:13 was refused" in str(hematuria["RSREASND"])
        assert len(str(hematuria["RSREASND"]).encode()) <= 200

    def test_beside_a_crf_total_the_computed_total_is_still_a_lower_bound(self, dataset: Callable[..., Path]) -> None:
        """The CRF total is the score and final; the computed total beside it waits for the refused row."""

        def crf_total(rows: Rows) -> None:
            rows["sledai.csv"][0]["reported_total"] = "8"
            _refused_lab(rows)

        data, report, settings = _load(dataset(crf_total))
        [scored] = [s.record.score for s in data.sledai if s.record.assessment.visit_code == "BL"]
        assert scored.final and not scored.computed_final
        baseline = _by_visit(_rs(data, report, settings), _category("sledai"))["NCT00698191-MSC-001", "BL"]
        assert baseline[_code("crf_total")]["RSSTRESN"] == 8
        computed = baseline[_code("computed_total")]
        assert (computed["RSSTRESC"], computed["RSSTRESN"]) == (f">={scored.computed_total}", None)

    def test_the_scoring_keeps_what_it_could_not_judge_beside_a_crf_total(self, units: UnitConverter) -> None:
        definition = load_sledai_definition()
        no_limit = LabEvidence(
            "L1", "c3", datetime(2008, 1, 5, 8), LabValue("quantity", "0.5", Decimal("0.5")), "g/L", None, None
        )
        kwargs: dict[str, Any] = dict(flagged=("rash",), labs=[no_limit], assessed_on=date(2008, 1, 5))
        alone = score_sledai(definition, window_days=None, units=units, **kwargs)
        beside = score_sledai(definition, window_days=None, units=units, reported_total=2, **kwargs)
        assert [d.key for d in alone.undecided] == [d.key for d in alone.unjudged] == ["low_complement"]
        assert beside.final and beside.undecided == () and [d.key for d in beside.unjudged] == ["low_complement"]
        assert not beside.computed_final

    def test_the_last_result_before_the_first_treatment_is_flagged(self, dataset: Callable[..., Path]) -> None:
        """BL (2008-01-05) precedes the pretreatment (2008-01-06), M01 follows it; a test NOT DONE at BL has no
        result to flag."""
        data, report, settings = _load(dataset(_refused_lab))
        grouped = _by_visit(_rs(data, report, settings), _category("sledai"))
        baseline, month1 = grouped["NCT00698191-MSC-001", "BL"], grouped["NCT00698191-MSC-001", "M01"]
        hematuria = _code("hematuria")
        assert {code for code, r in baseline.items() if r["RSLOBXFL"] == "Y"} == set(baseline) - {hematuria}
        assert all(r["RSLOBXFL"] == "" for r in month1.values())

    def test_dates_move_with_the_key_and_study_days_do_not(self, dataset: Callable[..., Path]) -> None:
        data, report, settings = _load(dataset())
        plain = _rs(data, report, settings)
        keyed = _rs(data, report, settings, RegistryKey(b"k" * 32))
        assert [r["RSDY"] for r in plain] == [r["RSDY"] for r in keyed]
        assert [r["RSDTC"] for r in plain] != [r["RSDTC"] for r in keyed]

    def test_visit_numbers_follow_the_schedule(self, dataset: Callable[..., Path]) -> None:
        data, report, settings = _load(dataset())
        numbers = _numbers(data)
        assert [(code, name) for code, (_, name) in numbers.items()] == [(v.code, v.name) for v in data.study.visits()]
        assert [number for number, _ in numbers.values()] == list(range(1, len(numbers) + 1))
        records = _rs(data, report, settings)
        assert {r["code"] for r in records} == {"BL", "M01", "M06", "M12", "M24"}
        for record in records:
            assert (record["VISITNUM"], record["VISIT"]) == numbers[record["code"]]

    def test_a_descriptor_without_its_test_is_refused(self, tmp_path: Path, dataset: Callable[..., Path]) -> None:
        root = tmp_path / "mappings"
        shutil.copytree(load_pack().root, root)
        path = root / "sdtm" / "terms.yaml"
        text = path.read_text(encoding="utf-8")
        fever = "      - {value: SLEDAI22, from: [fever], sponsor: no CT test for it}\n"
        assert fever in text
        path.write_text(text.replace(fever, ""), encoding="utf-8")
        settings = Settings.from_mappings(root)
        data, report, _ = _load(dataset(), settings)
        with pytest.raises(FhirLupusError, match="'fever' has no RSTESTCD term"):
            _rs(data, report, settings)

    def test_every_value_is_a_term_of_its_codelist(self, dataset: Callable[..., Path]) -> None:
        """check_values (what CORE does not check): RSTESTCD, RSTEST, RSCAT, RSSTAT, RSEVAL, the flags, RSDTC."""
        data, report, settings = _load(dataset(_refused_lab))
        records = [{k: v for k, v in r.items() if k != "code"} for r in _rs(data, report, settings)]
        assert {r["RSSTAT"] for r in records} == {"", "NOT DONE"}
        assert check_values("RS", records) == []
        spoiled = [dict(records[0], RSEVAL="DOCTOR", RSCAT="SLEDAI")]
        assert {p.variable for p in check_values("RS", spoiled)} == {"RSEVAL", "RSCAT"}


def _month_six(rows: Rows, *, egfr: str = "94") -> None:
    """MSC-001 seen at M06: 24-h urine protein 0.3 g/24 h (baseline 1.8) and eGFR ``egfr`` (baseline 95)."""
    rows["visits.csv"].append(dict(subject_id="MSC-001", visit_code="M06", visit_date="2008-07-07"))
    at = "2008-07-07T08:00:00+08:00"
    protein = dict(rows["labs.csv"][5], result_id="L20", visit_code="M06", value="0.3", collected_at=at)
    gfr = dict(rows["labs.csv"][7], result_id="L21", visit_code="M06", value=egfr, collected_at=at)
    rows["labs.csv"] += [protein, gfr]


def _month_six_response(records: list[Record], category: str) -> Record:
    [record] = [r for r in records if (r["RSCAT"], r["USUBJID"], r["code"]) == (category, "NCT00698191-MSC-001", "M06")]
    return record


class TestRenalResponse:
    def test_the_renal_response_is_the_reports_for_every_subject_and_month(self) -> None:
        data, report, settings = _load(EXAMPLE)
        terms = _terms().renal
        records = [r for r in _rs(data, report, settings) if r["RSCAT"] == _category(terms.response)]
        stats = report_statistics(data, pack=settings.pack, report=report)
        months = {visit.month: visit.code for visit in data.study.visits()}
        shown = {
            (f"NCT00698191-{c.subject_id}", months[tally.month]): c
            for tally in stats.tallies[terms.response]
            for c in tally.classifications
        }
        written = {(r["USUBJID"], r["code"]): r for r in records}
        assert set(written) == set(shown) and len(records) == len(shown)
        for where, found in shown.items():
            record = written[where]
            assert record["RSTESTCD"] == _code(terms.response) and record["RSDRVFL"] == "Y"
            if found.preliminary:
                assert (record["RSORRES"], record["RSSTAT"]) == ("", "NOT DONE")
            else:
                assert (record["RSORRES"], record["RSSTRESC"]) == (
                    found.label,
                    load_sdtm_terms().submission_value(terms.results, found.category),
                )
        assert {r["RSSTRESC"] for r in records} >= {"COMPLETE RESPONSE", "PARTIAL RESPONSE"}

    def test_a_response_decided_on_complete_inputs_is_written(self, dataset: Callable[..., Path]) -> None:
        data, report, settings = _load(dataset(_month_six))
        terms = _terms().renal
        record = _month_six_response(_rs(data, report, settings), _category(terms.response))
        assert (record["RSSTRESC"], record["RSSTAT"], record["RSDTC"]) == ("COMPLETE RESPONSE", "", "2008-07-07")

    def test_a_response_waiting_for_a_refused_row_is_not_done_never_final(self, dataset: Callable[..., Path]) -> None:
        """The M06 eGFR row is refused: the report cannot tell complete from no response, nor can RS."""
        data, report, settings = _load(dataset(lambda rows: _month_six(rows, egfr="lots")))
        terms = _terms()
        stats = report_statistics(data, pack=settings.pack, report=report)
        [shown] = [
            c
            for t in stats.tallies[terms.renal.response]
            if t.month == 6
            for c in t.classifications
            if c.subject_id == "MSC-001"
        ]
        assert shown.preliminary
        record = _month_six_response(_rs(data, report, settings), _category(terms.renal.response))
        assert (record["RSORRES"], record["RSSTRESC"], record["RSSTAT"]) == ("", "", terms.not_done)
        assert str(record["RSREASND"]).startswith("inputs incomplete: ") and "egfr" in str(record["RSREASND"])

    def test_written_with_allow_rejects_the_response_still_waits(
        self, dataset: Callable[..., Path], tmp_path: Path
    ) -> None:
        """The command's path: the load's refusals reach RS, whose files say NOT DONE, not a response."""
        out = tmp_path / "sdtm"
        sdtm_trial(
            TrialSource.directory(dataset(lambda rows: _month_six(rows, egfr="lots"))),
            out,
            output="json",
            allow_rejects=True,
        )
        document = json.loads((out / "rs.json").read_text(encoding="utf-8"))
        names = [column["name"] for column in document["columns"]]
        records = [dict(zip(names, row, strict=True)) for row in document["rows"]]
        month6 = {
            r["USUBJID"]: r for r in records if r["RSTESTCD"] == _code(_terms().renal.response) and r["VISITNUM"] == 7
        }
        assert (month6["NCT00698191-MSC-001"]["RSSTRESC"], month6["NCT00698191-MSC-001"]["RSSTAT"]) == ("", "NOT DONE")
        assert month6["NCT00698191-MSC-002"]["RSSTRESC"] == "NOT EVALUABLE"  # no M06 data: final, not waiting

    def test_a_refused_input_makes_the_classification_preliminary_a_missing_one_does_not(self) -> None:
        kdigo = next(r for r in load_report_definition().responses if r.key == "kdigo_2024_renal")
        readings = {"proteinuria": {0: Reading(1.8), 6: Reading(0.3)}, "egfr": {0: Reading(95.0)}}
        missing = classify(kdigo, "S1", readings, 6)
        refused = classify(kdigo, "S1", readings, 6, {"egfr": Incomplete(frozenset({("S1", 6)}))})
        assert missing.category == refused.category == "not_evaluable"
        assert not missing.preliminary and refused.preliminary
        assert classify(kdigo, "S1", {**readings, "egfr": {0: Reading(95.0), 6: Reading(94.0)}}, 6).category == (
            "complete"
        )


def test_the_example_writes_rs_with_one_record_per_descriptor(tmp_path: Path) -> None:
    result = sdtm_trial(TrialSource.directory(EXAMPLE), tmp_path / "sdtm", output="json")
    document = json.loads((tmp_path / "sdtm" / "rs.json").read_text(encoding="utf-8"))
    names = [column["name"] for column in document["columns"]]
    records = [dict(zip(names, row, strict=True)) for row in document["rows"]]
    assert document["records"] == len(records) == result.datasets["RS"]
    data, _, _ = _load(EXAMPLE)
    terms = _terms()
    per_visit: Counter[tuple[str, float]] = Counter(
        (r["USUBJID"], r["VISITNUM"]) for r in records if r["RSCAT"] == _category("sledai")
    )
    expected = Counter(
        {
            (f"NCT00698191-{a.subject_id}", _numbers(data)[a.visit_code][0]): 24 + 1 + s.score.total_from_crf
            for s in (located.record for located in data.sledai)
            for a in (s.assessment,)
        }
    )
    assert per_visit == expected
    assert any(r["RSCAT"] == _category(terms.renal.response) for r in records)
    assert check_values("RS", records) == []
