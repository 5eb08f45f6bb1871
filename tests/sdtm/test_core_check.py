"""CDISC CORE on small hand-written Dataset-JSON 1.1 files: a valid DM/LB/EX set passes the full SDTMIG 3.4
rule set, and the same set, spoiled, is caught by the same run, so the check cannot pass vacuously.

The files are written with plain json, following the engine's own schema
(../shared/cdisc-core/engine/resources/schema/dataset.schema.json). EX is there because CORE-000739 flags any
study without it. Two full runs (about 50 s each on two cores) serve every test of the module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus.sdtm import CoreReport, CoreSetup, run_core

# the rules that read define.xml: without -dxp they end as execution errors (../shared/cdisc-core/README.md)
DEFINE_RULES = {"CORE-000929", "CORE-001081"}

S, INT, F, D = "string", "integer", "double", "date"
COLUMNS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "DM": (
        "Demographics",
        [
            ("STUDYID", "Study Identifier", S),
            ("DOMAIN", "Domain Abbreviation", S),
            ("USUBJID", "Unique Subject Identifier", S),
            ("SUBJID", "Subject Identifier for the Study", S),
            ("RFSTDTC", "Subject Reference Start Date/Time", D),
            ("RFENDTC", "Subject Reference End Date/Time", D),
            ("RFXSTDTC", "Date/Time of First Study Treatment", D),
            ("RFXENDTC", "Date/Time of Last Study Treatment", D),
            ("RFICDTC", "Date/Time of Informed Consent", D),
            ("RFPENDTC", "Date/Time of End of Participation", D),
            ("DTHDTC", "Date/Time of Death", D),
            ("DTHFL", "Subject Death Flag", S),
            ("SITEID", "Study Site Identifier", S),
            ("AGE", "Age", INT),
            ("AGEU", "Age Units", S),
            ("SEX", "Sex", S),
            ("RACE", "Race", S),
            ("ETHNIC", "Ethnicity", S),
            ("ARMCD", "Planned Arm Code", S),
            ("ARM", "Description of Planned Arm", S),
            ("ACTARMCD", "Actual Arm Code", S),
            ("ACTARM", "Description of Actual Arm", S),
            ("ARMNRS", "Reason Arm and/or Actual Arm is Null", S),
            ("ACTARMUD", "Description of Unplanned Actual Arm", S),
            ("COUNTRY", "Country", S),
        ],
    ),
    "LB": (
        "Laboratory Test Results",
        [
            ("STUDYID", "Study Identifier", S),
            ("DOMAIN", "Domain Abbreviation", S),
            ("USUBJID", "Unique Subject Identifier", S),
            ("LBSEQ", "Sequence Number", INT),
            ("LBTESTCD", "Lab Test or Examination Short Name", S),
            ("LBTEST", "Lab Test or Examination Name", S),
            ("LBCAT", "Category for Lab Test", S),
            ("LBORRES", "Result or Finding in Original Units", S),
            ("LBORRESU", "Original Units", S),
            ("LBORNRLO", "Normal Range Lower Limit in Orig Unit", S),
            ("LBORNRHI", "Normal Range Upper Limit in Orig Unit", S),
            ("LBSTRESC", "Character Result/Finding in Std Format", S),
            ("LBSTRESN", "Numeric Result/Finding in Standard Units", F),
            ("LBSTRESU", "Standard Units", S),
            ("LBSTNRLO", "Normal Range Lower Limit-Std Units", F),
            ("LBSTNRHI", "Normal Range Upper Limit-Std Units", F),
            ("LBNRIND", "Reference Range Indicator", S),
            ("LBSPEC", "Specimen Type", S),
            ("LBLOBXFL", "Last Observation Before Exposure Flag", S),
            ("VISITNUM", "Visit Number", F),
            ("VISIT", "Visit Name", S),
            ("EPOCH", "Epoch", S),
            ("LBDTC", "Date/Time of Specimen Collection", D),
            ("LBDY", "Study Day of Specimen Collection", INT),
        ],
    ),
    "EX": (
        "Exposure",
        [
            ("STUDYID", "Study Identifier", S),
            ("DOMAIN", "Domain Abbreviation", S),
            ("USUBJID", "Unique Subject Identifier", S),
            ("EXSEQ", "Sequence Number", INT),
            ("EXTRT", "Name of Treatment", S),
            ("EXDOSE", "Dose", F),
            ("EXDOSU", "Dose Units", S),
            ("EXDOSFRM", "Dose Form", S),
            ("EXROUTE", "Route of Administration", S),
            ("EPOCH", "Epoch", S),
            ("EXSTDTC", "Start Date/Time of Treatment", D),
            ("EXENDTC", "End Date/Time of Treatment", D),
            ("EXSTDY", "Study Day of Start of Treatment", INT),
            ("EXENDY", "Study Day of End of Treatment", INT),
        ],
    ),
}


def dm(subject: int, start: str = "2008-03-01", end: str = "2009-03-01") -> dict[str, Any]:
    arm = {"ARMCD": "MSC", "ARM": "Mesenchymal stem cells", "ACTARMCD": "MSC", "ACTARM": "Mesenchymal stem cells"}
    return {
        **{"STUDYID": "STUDY1", "DOMAIN": "DM", "USUBJID": f"STUDY1-{subject:03d}", "SUBJID": f"{subject:03d}"},
        **{"RFSTDTC": start, "RFENDTC": end, "RFXSTDTC": start, "RFXENDTC": start, "RFICDTC": "2008-02-20"},
        **{"RFPENDTC": end, "SITEID": "01", "AGE": 30 + subject, "AGEU": "YEARS", "SEX": "F", "RACE": "ASIAN"},
        **{"ETHNIC": "NOT HISPANIC OR LATINO", **arm, "COUNTRY": "CHN"},
    }


def lb(subject: int, seq: int, testcd: str = "ALB", test: str = "Albumin") -> dict[str, Any]:
    return {
        **{"STUDYID": "STUDY1", "DOMAIN": "LB", "USUBJID": f"STUDY1-{subject:03d}", "LBSEQ": seq},
        **{"LBTESTCD": testcd, "LBTEST": test, "LBCAT": "CHEMISTRY", "LBORRES": "35", "LBORRESU": "g/L"},
        **{"LBORNRLO": "35", "LBORNRHI": "50", "LBSTRESC": "35", "LBSTRESN": 35.0, "LBSTRESU": "g/L"},
        **{"LBSTNRLO": 35.0, "LBSTNRHI": 50.0, "LBNRIND": "NORMAL", "LBSPEC": "SERUM", "LBLOBXFL": "Y"},
        **{"VISITNUM": 1.0, "VISIT": "BASELINE", "EPOCH": "SCREENING", "LBDTC": "2008-02-28", "LBDY": -2},
    }


def ex(subject: int) -> dict[str, Any]:
    return {
        **{"STUDYID": "STUDY1", "DOMAIN": "EX", "USUBJID": f"STUDY1-{subject:03d}", "EXSEQ": 1},
        **{"EXTRT": "MESENCHYMAL STEM CELLS", "EXDOSE": 1.0, "EXDOSU": "10^6/kg", "EXDOSFRM": "SUSPENSION"},
        **{"EXROUTE": "INTRAVENOUS", "EPOCH": "TREATMENT", "EXSTDTC": "2008-03-01", "EXENDTC": "2008-03-01"},
        **{"EXSTDY": 1, "EXENDY": 1},
    }


def dataset_json(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A Dataset-JSON 1.1 document: the required top-level members, columns with itemOID, rows as arrays."""
    label, columns = COLUMNS[name]
    return {
        "datasetJSONCreationDateTime": "2024-01-01T00:00:00",
        "datasetJSONVersion": "1.1.0",
        "fileOID": f"www.example.org/STUDY1/{name}",
        "studyOID": "STUDY1",
        "metaDataVersionOID": "MDV.1",
        "itemGroupOID": f"IG.{name}",
        "records": len(rows),
        "name": name,
        "label": label,
        "columns": [
            {"itemOID": f"IT.{name}.{column}", "name": column, "label": text, "dataType": kind}
            for column, text, kind in columns
        ],
        "rows": [[row.get(column) for column, _, _ in columns] for row in rows],
    }


def write(folder: Path, documents: dict[str, dict[str, Any]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, document in documents.items():
        path = folder / f"{name.lower()}.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        paths.append(path)
    return paths


def valid() -> dict[str, list[dict[str, Any]]]:
    return {"DM": [dm(1), dm(2)], "LB": [lb(1, 1), lb(2, 1)], "EX": [ex(1), ex(2)]}


ORPHAN = "STUDY1-009"  # in LB, not in DM
LONG_TESTCD = "ALBUMINXX"  # 9 characters: --TESTCD is at most 8
REVERSED = "STUDY1-003"  # RFSTDTC after RFENDTC


def broken() -> dict[str, list[dict[str, Any]]]:
    rows = valid()
    rows["DM"].append(dm(3, start="2009-05-01", end="2009-01-01"))
    rows["LB"] += [lb(9, 1), lb(1, 2, testcd=LONG_TESTCD, test="Albumin, spoiled")]
    return rows


@pytest.fixture(scope="module")
def valid_run(core_setup: CoreSetup, tmp_path_factory: pytest.TempPathFactory) -> CoreReport:
    folder = tmp_path_factory.mktemp("valid")
    paths = write(folder / "sdtm", {name: dataset_json(name, rows) for name, rows in valid().items()})
    return run_core(core_setup, paths, folder / "sdtm")


@pytest.fixture(scope="module")
def broken_run(core_setup: CoreSetup, tmp_path_factory: pytest.TempPathFactory) -> CoreReport:
    """The spoiled set, plus a VS file the engine's schema refuses (no label, which Dataset-JSON requires)."""
    folder = tmp_path_factory.mktemp("broken")
    documents = {name: dataset_json(name, rows) for name, rows in broken().items()}
    malformed = {**dataset_json("LB", [lb(1, 1)]), "name": "VS", "itemGroupOID": "IG.VS"}
    del malformed["label"]
    return run_core(core_setup, write(folder / "sdtm", {**documents, "VS": malformed}), folder / "sdtm")


def counts(rows: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    return {name: len(records) for name, records in rows.items()}


class TestValidDatasets:
    def test_every_dataset_is_read_with_its_record_count(self, valid_run: CoreReport) -> None:
        assert valid_run.datasets == counts(valid()) == {"DM": 2, "LB": 2, "EX": 2}
        assert valid_run.problems(counts(valid())) == []
        assert valid_run.path is not None and valid_run.path.name == "core-report.json"

    def test_no_issue_and_only_the_define_rules_fail_to_run(self, valid_run: CoreReport) -> None:
        assert valid_run.issues == ()
        assert valid_run.rules_not_executed == DEFINE_RULES
        assert all("define.xml" in error.detail for error in valid_run.execution_errors)

    def test_the_whole_rule_set_was_considered(self, valid_run: CoreReport) -> None:
        assert valid_run.engine_version == "0.17.1" and valid_run.standard == "SDTMIG V3.4"
        assert valid_run.ct_version == "sdtmct-2015-12-18"
        statuses = set(valid_run.rule_status.values())
        assert len(valid_run.rule_status) > 400 and statuses == {"SUCCESS", "SKIPPED", "EXECUTION ERROR"}
        assert sum(status == "SUCCESS" for status in valid_run.rule_status.values()) > 100


class TestBrokenDatasetsAreCaught:
    def test_exactly_the_spoiled_records_are_flagged(self, broken_run: CoreReport) -> None:
        flagged = {(issue.rule, issue.dataset): issue.count for issue in broken_run.issues}
        assert flagged == {("CORE-000201", "LB"): 1, ("CORE-000220", "LB"): 1, ("CORE-000711", "DM"): 1}

    def test_a_usubjid_missing_from_dm(self, broken_run: CoreReport) -> None:
        (issue,) = [i for i in broken_run.issues if i.rule == "CORE-000201"]
        assert [example.usubjid for example in issue.examples] == [ORPHAN]
        assert issue.examples[0].values == {"USUBJID": ORPHAN} and issue.examples[0].row == 3

    def test_a_testcd_over_eight_characters(self, broken_run: CoreReport) -> None:
        (issue,) = [i for i in broken_run.issues if i.rule == "CORE-000220"]
        assert issue.variables == ("LBTESTCD",) and issue.examples[0].values == {"LBTESTCD": LONG_TESTCD}
        assert (issue.examples[0].usubjid, issue.examples[0].seq) == ("STUDY1-001", 2)

    def test_a_reference_start_after_its_end(self, broken_run: CoreReport) -> None:
        (issue,) = [i for i in broken_run.issues if i.rule == "CORE-000711"]
        assert issue.examples[0].usubjid == REVERSED
        assert issue.examples[0].values == {"RFSTDTC": "2009-05-01", "RFENDTC": "2009-01-01"}

    def test_a_file_the_schema_refuses_shows_only_through_problems(self, broken_run: CoreReport) -> None:
        expected = {**counts(broken()), "VS": 1}
        assert broken_run.datasets == counts(broken()) and broken_run.unnamed == 1
        assert broken_run.problems(expected) == [
            "VS: not in the report, 1 record(s) written",
            "1 dataset file(s) the engine read as nameless and empty (schema refused?)",
        ]
        assert broken_run.problems(counts(broken())) == [  # every other count agrees
            "1 dataset file(s) the engine read as nameless and empty (schema refused?)"
        ]
