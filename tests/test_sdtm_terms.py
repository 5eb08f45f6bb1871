"""The SDTM terminology of mappings/sdtm/ and the project's own check of dataset values (issue 23).

What must hold for the terms: every analyte of the lab catalogue has a test code and name SDTM accepts, every unit
the project meets has a CDISC unit, every value the trial's files can hold maps to a term (or is listed as having
none), and, when the CT package of ../shared/cdisc-core is there, every code and submission value is the package's.
What must hold for the check: a value CORE lets through (SEX=FEMALE, mmol/l, 2024/01/15) is found, with its place.
"""

from __future__ import annotations

import csv
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import EXAMPLE, REPO

from fhir_lupus.errors import MappingError
from fhir_lupus.sdtm import SdtmTerms, check_values, iso8601_problem, load_sdtm_terms
from fhir_lupus.terminology import MappingPack, load_pack

CT_PACKAGE = REPO.parent / "shared" / "cdisc-core" / "cache" / "sdtmct-2015-12-18.pkl"


@pytest.fixture(scope="module")
def terms() -> SdtmTerms:
    return load_sdtm_terms()


def _yaml(relative: str) -> Any:
    return yaml.safe_load((REPO / "mappings" / relative).read_text(encoding="utf-8"))


def _labs() -> dict[str, Any]:
    labs: dict[str, Any] = _yaml("terminology/labs.yaml")
    return labs


def _whens(labs: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for analyte in labs["analytes"].values():
        yield from (choice["when"] for choice in [*analyte["codes"], *analyte.get("refused", [])])


class TestLabTests:
    def test_every_analyte_has_a_test_code_and_name_sdtm_accepts(self, terms: SdtmTerms) -> None:
        analytes = _labs()["analytes"]
        assert len(analytes) >= 25
        for analyte in analytes:
            test = terms.lab_test(analyte)
            assert 1 <= len(test.testcd) <= 8 and test.testcd == test.testcd.upper(), analyte
            assert 1 <= len(test.test) <= 40, analyte
            assert test.source.startswith("CDISC SDTM CT 2015-12-18") == (test.code is not None), analyte

    def test_the_serology_and_renal_analytes_take_their_ct_tests(self, terms: SdtmTerms) -> None:
        expected = {"creatinine": "CREAT", "c3": "C3", "c4": "C4", "anti_dsdna": "ADSDNA", "ana": "ANA",
                    "albumin": "ALB", "platelets": "PLAT", "wbc": "WBC", "urine_protein_24h": "PROTEXR",
                    "urine_pcr": "PROTCRT", "egfr": "GFRBSCRT"}  # fmt: skip
        assert {analyte: terms.lab_test(analyte).testcd for analyte in expected} == expected
        assert terms.lab_test("creatinine").test == "Creatinine"
        assert terms.lab_test("treg_percent").code is None  # no CT test: sponsor-defined, never an invented code

    def test_every_specimen_and_method_of_the_catalogue_maps(self, terms: SdtmTerms) -> None:
        labs = _labs()
        assert {key: terms.lab_specimen(key).value for key in labs["specimens"]}["urine-24h"] == "URINE"
        methods = {method for when in _whens(labs) for method in when.get("method") or () if method}
        assert {"ifa", "crithidia", "ckd-epi-2009", "clia"} <= methods
        for method in methods:
            assert terms.lab_method("ana", method) is not None, method
        dipstick = terms.lab_method("urine_protein_dipstick", None)
        assert dipstick is not None and dipstick.value == "DIPSTICK"
        assert terms.lab_method("creatinine", None) is None


def _catalogue_units() -> set[str]:
    """Every unit the project meets: the catalogue's standard units, what sites record (units.yaml aliases, the
    example's labs.csv and medications.csv), the fixed units of mappings/fhir/codes.yaml and the checks."""
    labs, units = _labs(), _yaml("terminology/units.yaml")
    found = {analyte["trial_unit"] for analyte in labs["analytes"].values() if analyte.get("trial_unit")}
    found |= {when["unit_like"] for when in _whens(labs) if when.get("unit_like")}
    found |= {*units["aliases"], *units["aliases"].values(), *units["display"], units["molar_mass"]}
    found |= set(_yaml("fhir/codes.yaml")["units"].values())
    found |= {limit["unit"] for limit in _yaml("checks/lab_limits.yaml")["analytes"].values()}
    for name, column in (("labs.csv", "unit"), ("medications.csv", "dose_unit")):
        with (EXAMPLE / name).open(encoding="utf-8") as handle:
            found |= {row[column] for row in csv.DictReader(handle) if row[column]}
    return found


class TestUnits:
    def test_every_unit_the_project_uses_has_a_cdisc_unit(self, terms: SdtmTerms) -> None:
        units = _catalogue_units()
        assert {"10^9/L", "µmol/L", "g/24h", "mL/min/1.73m2", "[IU]/mL", "%", "g/m2"} <= units
        unit_terms = {term.value for term in terms.codelist(terms.unit_key).terms}
        for unit in units:
            assert terms.cdisc_unit(unit).value in unit_terms, unit

    @pytest.mark.parametrize(
        ("unit", "cdisc"),
        [("10*9/L", "10^9/L"), ("umol/L", "umol/L"), ("µmol/L", "umol/L"), ("mg/dL", "mg/dL"), ("g/L", "g/L"),
         ("g/(24.h)", "g/day"), ("mL/min/{1.73_m2}", "mL/min/1.73m2"), ("[IU]/mL", "IU/mL"), ("%", "%"),
         ("{cells}/kg", "/kg")],
    )  # fmt: skip
    def test_ucum_to_cdisc(self, terms: SdtmTerms, unit: str, cdisc: str) -> None:
        found = terms.cdisc_unit(unit)
        assert found.value == cdisc and found.code and found.source.endswith("codelist C71620")

    def test_a_unit_missing_from_the_table_is_refused(self, terms: SdtmTerms) -> None:
        with pytest.raises(MappingError, match=r"\[fur_us\]/min.*units\.yaml"):
            terms.cdisc_unit("[fur_us]/min")


class TestProjectValuesMap:
    """Every value the trial's files can hold has a term, or is listed as having none (with the reason)."""

    def test_lifecycle_reasons_are_the_ncomplt_terms_they_name(self, terms: SdtmTerms) -> None:
        reasons = _yaml("fhir/lifecycle.yaml")["off_study_reasons"]
        assert {key: terms.term_for("NCOMPLT", key).value for key in reasons} == {
            key: reason["cdisc"] for key, reason in reasons.items()
        }
        assert terms.term_for("NCOMPLT", "ineligible").value == "SCREEN FAILURE"

    def test_adverse_event_and_medication_values(self, terms: SdtmTerms) -> None:
        events, medications = _yaml("terminology/adverse_events.yaml"), _yaml("terminology/medications.yaml")
        for grade in events["grades"]:
            assert terms.term_for("TOXGRV4", str(grade)).value == str(grade)
            terms.term_for("AESEV", str(grade))
        assert terms.term_for("OUT", "not_recovered").value == "NOT RECOVERED/NOT RESOLVED"
        for key in events["outcomes"]:
            terms.term_for("OUT", key)
        for key in events["causality"]:
            assert terms.term_for("AEREL", key).sponsor_defined  # SDTMIG gives AEREL no CT codelist
        for key in medications["routes"]:
            terms.term_for("ROUTE", key)
        for key in medications["frequencies"]:
            terms.term_for("FREQ", key)

    def test_sex_maps_and_other_is_refused_with_its_reason(self, terms: SdtmTerms) -> None:
        assert [terms.term_for("SEX", sex).value for sex in ("female", "male", "unknown")] == ["F", "M", "U"]
        with pytest.raises(MappingError, match="UNDIFFERENTIATED"):
            terms.term_for("SEX", "other")

    def test_the_study_file_values_map(self, terms: SdtmTerms) -> None:
        study = _yaml("studies/NCT00698191.yaml")
        assert terms.term_for("TPHASE", study["phase"]).value == "PHASE I TRIAL"
        assert terms.term_for("STYPE", study["study_type"]).value == "INTERVENTIONAL"
        assert terms.term_for("INTMODEL", study["design"]).value == "SINGLE GROUP"
        assert terms.term_for("SEXPOP", study["sex"]).value == "BOTH"
        assert terms.term_for("COUNTRY", _yaml("site/example-site.yaml")["location"]["country"]).value == "CHN"

    def test_every_ts_value_codelist_exists(self, terms: SdtmTerms) -> None:
        parameters = terms.codelist("TSPARMCD").terms
        assert {"TPHASE", "TTYPE", "SEXPOP", "REGID", "TITLE", "PLANSUB"} <= {p.value for p in parameters}
        for parameter in parameters:
            if parameter.value_codelist:
                terms.codelist(parameter.value_codelist)


class TestCheckValues:
    def test_a_spoiled_value_of_each_kind_is_found_where_it_is(self, terms: SdtmTerms) -> None:
        dm = [{"DOMAIN": "DM", "SEX": "F", "AGEU": "YEARS", "RFSTDTC": "2007-03-30"},
              {"DOMAIN": "DM", "SEX": "FEMALE", "AGEU": "YEARS", "RFSTDTC": "2007-03-30"}]  # fmt: skip
        lb = [{"LBTESTCD": "CREAT", "LBTEST": "Creatinine", "LBSTRESU": "umol/L", "LBDTC": "2007-03-28T08:57"},
              {"LBTESTCD": "CREAT", "LBTEST": "Creatinine", "LBSTRESU": "mmol/l", "LBDTC": "2024/01/15"}]  # fmt: skip
        problems = check_values("DM", dm, terms=terms) + check_values("LB", lb, terms=terms)
        assert [(p.dataset, p.row, p.variable, p.value) for p in problems] == [
            ("DM", 2, "SEX", "FEMALE"),
            ("LB", 2, "LBSTRESU", "mmol/l"),
            ("LB", 2, "LBDTC", "2024/01/15"),
        ]
        sex, unit, date = (p.why for p in problems)
        assert "C66731" in sex and "not extensible" in sex and "'F'" in sex
        assert "not a CDISC UNIT term" in unit and "'mmol/L'" in unit  # the site spelling's term is suggested
        assert "ISO 8601" in date
        assert str(problems[0]).startswith("DM row 2 SEX='FEMALE'")

    def test_the_given_variables_only_and_any_of_several_codelists(self, terms: SdtmTerms) -> None:
        rows = [{"DSDECOD": "INFORMED CONSENT OBTAINED", "SEX": "FEMALE"}, {"DSDECOD": "COMPLETED"},
                {"DSDECOD": "FINISHED"}]  # fmt: skip
        problems = check_values("DS", rows, {"DSDECOD": ("NCOMPLT", "PROTMLST")}, terms=terms)
        assert [(p.row, p.variable) for p in problems] == [(3, "DSDECOD")]
        assert "NCOMPLT" in problems[0].why and "PROTMLST" in problems[0].why
        with pytest.raises(MappingError, match="no codelist 'NOPE'"):
            check_values("DS", rows, {"DSDECOD": "NOPE"}, terms=terms)

    def test_a_name_must_go_with_its_code(self, terms: SdtmTerms) -> None:
        rows = [{"LBTESTCD": "CREAT", "LBTEST": "Albumin"}, {"LBTESTCD": "CREAT", "LBTEST": "Creatine"}]
        problems = check_values("LB", rows, terms=terms)
        assert [(p.row, p.variable) for p in problems] == [(1, "LBTEST"), (2, "LBTEST")]
        assert "does not go with CREAT" in problems[0].why and "not a term of CDISC LBTEST" in problems[1].why

    def test_a_ts_value_is_checked_against_its_parameters_codelist(self, terms: SdtmTerms) -> None:
        rows = [{"TSPARMCD": "TPHASE", "TSPARM": "Trial Phase Classification", "TSVAL": "PHASE I TRIAL"},
                {"TSPARMCD": "TPHASE", "TSVAL": "Phase 1"},
                {"TSPARMCD": "TITLE", "TSVAL": "Anything at all"}, {"TSPARMCD": "SSTDTC", "TSVAL": "2007-03"},
                {"TSPARMCD": "SSTDTC", "TSVAL": "March 2007"}]  # fmt: skip
        problems = check_values("TS", rows, terms=terms)
        assert [(p.row, p.variable) for p in problems] == [(2, "TSVAL"), (5, "TSVAL")]
        assert "TPHASE" in problems[0].why and "ISO 8601" in problems[1].why

    def test_empty_values_are_left_to_core(self, terms: SdtmTerms) -> None:
        assert check_values("DM", [{"SEX": "", "RFENDTC": None, "AGEU": float("nan")}], terms=terms) == []

    @pytest.mark.parametrize(
        "value",
        ["2007", "2007-03", "2007-03-28", "2007-03-28T08", "2007-03-28T08:57", "2007-03-28T08:57:09",
         "2007-03-28T08:57:09.5", "2007-03-28T08:57:00+08:00", "2008-02-29", "2003---15", "--12-15",
         "-----T07:15"],
    )  # fmt: skip
    def test_iso8601_values_sdtm_allows(self, value: str) -> None:
        assert iso8601_problem(value) is None

    @pytest.mark.parametrize(
        "value",
        ["2024/01/15", "15.01.2024", "2007-3-28", "2007-13-01", "2007-02-29", "2007-04-31", "2007-03-28 08:57",
         "2007-03-28T24:00", "2007-03-28T08:60", "20070328", "-", "---", 20070328],
    )  # fmt: skip
    def test_iso8601_values_refused(self, value: object) -> None:
        assert iso8601_problem(value)


class TestTheFilesAreChecked:
    """SDTM's rules on terminology are checked when the files load, before any dataset is written."""

    @pytest.mark.parametrize(
        ("file", "old", "new", "match"),
        [
            ("terms.yaml", "{value: U, code: C17998, preferred: Unknown, from: [unknown]}",
             "{value: UNKNOWN, from: [unknown], sponsor: why not}", "not extensible"),
            ("lab_terms.yaml", "{value: CSTOT,", "{value: CASTSTOTAL,", "at most 8"),
            ("terms.yaml", "value_codelist: TPHASE", "value_codelist: PHASES", "PHASES"),
            ("lab_terms.yaml", "code: C64547, preferred", "preferred", "either its CT `code`"),
            ("units.yaml", "basis: synonym, synonym: mg/g", "basis: synonym", "synonym"),
        ],
    )  # fmt: skip
    def test_a_broken_rule_fails_at_load_time(self, tmp_path: Path, file: str, old: str, new: str, match: str) -> None:
        root = tmp_path / "mappings"
        shutil.copytree(REPO / "mappings", root)
        path = root / "sdtm" / file
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        with pytest.raises(MappingError, match=match):
            load_sdtm_terms(load_pack(root))

    def test_the_terms_are_read_once_per_pack(self, pack: MappingPack) -> None:
        assert load_sdtm_terms(pack) is load_sdtm_terms(pack)


@pytest.fixture(scope="module")
def ct() -> dict[str, dict[str, Any]]:
    """The CT package's codelists by NCI code (plain Python data: no engine class is needed to read it)."""
    with CT_PACKAGE.open("rb") as handle:
        package = pickle.load(handle)
    assert package["package"] == load_sdtm_terms().package
    return {codelist["conceptId"]: codelist for codelist in package["codelists"]}


@pytest.mark.skipif(not CT_PACKAGE.is_file(), reason=f"the CT package is not here ({CT_PACKAGE})")
class TestAgainstTheCtPackage:
    """Every code, submission value, preferred term, name and flag of mappings/sdtm is the CT package's: a typo in a
    term code fails here."""

    def test_codelists_and_terms(self, terms: SdtmTerms, ct: dict[str, dict[str, Any]]) -> None:
        checked = 0
        for key, codelist in terms.codelists.items():
            if codelist.code is None:
                continue
            cdisc = ct[codelist.code]
            assert (key, codelist.name, codelist.extensible) == (
                cdisc["submissionValue"], cdisc["name"], cdisc["extensible"]
            ), key  # fmt: skip
            by_code = {term["conceptId"]: term for term in cdisc["terms"]}
            values = {term["submissionValue"] for term in cdisc["terms"]}
            for term in codelist.terms:
                if term.code is None:
                    assert term.value not in values, f"{key} {term.value}: a CT term, not a sponsor-defined one"
                    continue
                found = by_code[term.code]
                assert (term.value, term.preferred) == (found["submissionValue"], found["preferredTerm"]), key
                checked += 1
            if codelist.complete:
                assert {term.value for term in codelist.terms if term.code} == values, key
        assert checked > 150

    def test_paired_names_are_the_name_codelists_values(self, terms: SdtmTerms, ct: dict[str, dict[str, Any]]) -> None:
        for codelist in terms.codelists.values():
            if codelist.paired is None:
                continue
            names = {term["conceptId"]: term["submissionValue"] for term in ct[codelist.paired.code]["terms"]}
            assert ct[codelist.paired.code]["submissionValue"] == codelist.paired.key
            for term in codelist.terms:
                if term.code is not None:
                    assert names[term.code] == term.name, term.value
                else:
                    assert term.name not in names.values(), term.value

    def test_units_are_unit_terms_and_their_synonyms_are_cdiscs(
        self, terms: SdtmTerms, ct: dict[str, dict[str, Any]]
    ) -> None:
        unit = terms.codelist(terms.unit_key)
        by_code = {term["conceptId"]: term for term in ct[str(unit.code)]["terms"]}
        for ucum, entry in terms.units.items():
            assert entry.code is not None, ucum  # every unit the project uses has a CDISC term in this package
            found = by_code[entry.code]
            assert (entry.cdisc, entry.preferred) == (found["submissionValue"], found["preferredTerm"]), ucum
            if entry.synonym:
                assert entry.synonym in found["synonyms"], ucum
