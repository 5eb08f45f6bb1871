"""define.xml and reviewers-guide.md beside the SDTM datasets: every dataset and variable described once under the
OIDs of the Dataset-JSON files, every reference resolving, the Define-XML 2.1 schema satisfied, codelists holding
the terms used (CT terms with their NCI codes, sponsor-defined ones marked, none invented), value-level metadata,
and a guide that lists every dataset with its count and every sponsor-defined choice."""

from __future__ import annotations

import json
import pickle
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import EXAMPLE, REPO

from fhir_lupus.errors import ExtraMissing, FhirLupusError
from fhir_lupus.model import StudyDefinition
from fhir_lupus.registry import RegistryKey
from fhir_lupus.sdtm import Dataset, DomainSpec, TrialDesign, load_sdtm_terms, sdtm_trial
from fhir_lupus.sdtm._codelists import NO_TERMINOLOGY, CtCodelist, StaticTerminology, Terminology, terminology
from fhir_lupus.sdtm._conformance import EXPLAINED, Explanations
from fhir_lupus.sdtm._define import DefineStudy, _dtc_type, define_xml
from fhir_lupus.sdtm._guide import GuideFacts, reviewers_guide
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import MappingPack

ODM = "{http://www.cdisc.org/ns/odm/v1.3}"
DEF = "{http://www.cdisc.org/ns/def/v2.1}"
XLINK = "{http://www.w3.org/1999/xlink}"
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
CT_PACKAGE = REPO.parent / "shared" / "cdisc-core" / "cache" / "sdtmct-2015-12-18.pkl"

# CDISC CT 2015-12-18 codes of the few terms these tests use (SEX C66731, ROUTE C66729 extensible)
TERMS = StaticTerminology(
    "sdtmct-2015-12-18",
    {
        "SEX": CtCodelist("SEX", "Sex", "C66731", False, {"F": "C16576", "M": "C20197", "U": "C17998"}),
        "ROUTE": CtCodelist(
            "ROUTE",
            "Route of Administration",
            "C66729",
            True,
            {"INTRAVENOUS": "C38276", "ORAL": "C38288", "BY DRIP": None},
            reasons={"BY DRIP": "the site's wording; no ROUTE term says it"},
        ),
        "KIND": CtCodelist("KIND", "Kind", None, True, {"small": None}, reasons={"small": "the trial's own"}),
    },
)


def _variable(name: str, **fields: Any) -> dict[str, Any]:
    base = {"name": name, "label": name.title(), "origin": "Collected", "role": "Record Qualifier", "core": "Perm"}
    return {**base, "source": name.lower(), **fields}


def _spec(domain: str = "XX", *more: dict[str, Any], **fields: Any) -> DomainSpec:
    variables = [
        _variable("STUDYID", role="Identifier", core="Req", origin="Assigned", **{"from": "study file"}),
        _variable("USUBJID", role="Identifier", core="Req", origin="Derived", **{"from": "STUDYID-SUBJID"}),
        {
            "name": f"{domain}SEQ",
            "label": "Sequence Number",
            "type": "integer",
            "origin": "Derived",
            "role": "Identifier",
            "core": "Req",
            "transform": "seq",
        },
        *more,
    ]
    return DomainSpec.model_validate(
        {
            "domain": domain,
            "label": "Things",
            "class": "FINDINGS",
            "structure": "One record per thing per subject",
            "keys": ["STUDYID", "USUBJID", f"{domain}SEQ"],
            "rows": "things",
            "variables": variables,
            **fields,
        }
    )


def _dataset(spec: DomainSpec, *rows: dict[str, Any]) -> Dataset:
    records = []
    for number, row in enumerate(rows, start=1):
        record = {v.name: row.get(v.name, "" if v.type == "text" else None) for v in spec.variables}
        records.append(
            {**record, "STUDYID": "NCT00698191", "USUBJID": row.get("USUBJID", "S-1"), f"{spec.domain}SEQ": number}
        )
    return Dataset(spec, records)


def _define(*datasets: Dataset, terms: Terminology = TERMS) -> ET.Element:
    study = DefineStudy(
        "NCT00698191", "A trial", "A hospital", CREATED, {d.name: f"{d.name.lower()}.xpt" for d in datasets}, "g.md"
    )
    return ET.fromstring(define_xml(list(datasets), study, terms).encode("utf-8"))


def _by_oid(root: ET.Element, tag: str) -> dict[str, ET.Element]:
    found = root.iter(tag)
    elements = [(e.get("OID") or e.get("ID") or "", e) for e in found]
    assert len({oid for oid, _ in elements}) == len(elements), f"an OID of {tag} is given twice"
    return dict(elements)


def _attribute(element: ET.Element, child: str, name: str) -> str | None:
    """``name`` of the first ``child`` of ``element`` (which must be there)."""
    found = element.find(child)
    assert found is not None, f"no {child} in {element.get('OID')}"
    return found.get(name)


def _terms(codelist: ET.Element) -> list[ET.Element]:
    """The items of a codelist (EnumeratedItem or CodeListItem), without its own Alias."""
    return [item for item in codelist if item.get("CodedValue") is not None]


def _written(out: Path) -> tuple[ET.Element, dict[str, dict[str, Any]]]:
    documents = {
        p.stem.upper(): json.loads(p.read_text(encoding="utf-8")) for p in out.glob("*.json") if p.stem != "core-report"
    }
    return ET.parse(out / "define.xml").getroot(), documents


@pytest.fixture
def written(dataset: Callable[..., Path], tmp_path: Path) -> Path:
    out = tmp_path / "sdtm"
    sdtm_trial(TrialSource.directory(dataset()), out, output="both", created=CREATED)
    return out


class TestDefineOfTheOutput:
    def test_every_dataset_and_variable_is_described_once_under_the_dataset_json_oids(self, written: Path) -> None:
        root, documents = _written(written)
        groups = _by_oid(root, f"{ODM}ItemGroupDef")
        items = _by_oid(root, f"{ODM}ItemDef")
        assert set(groups) == {document["itemGroupOID"] for document in documents.values()} and documents
        [version] = root.iter(f"{ODM}MetaDataVersion")
        for name, document in documents.items():
            group = groups[document["itemGroupOID"]]
            assert group.get("Name") == group.get("Domain") == name == document["name"]
            assert document["metaDataVersionOID"] == version.get("OID")
            refs = [ref.get("ItemOID") for ref in group.iter(f"{ODM}ItemRef")]
            assert refs == [column["itemOID"] for column in document["columns"]]
            for column in document["columns"]:
                item = items[column["itemOID"]]
                assert item.get("Name") == column["name"] and column["itemOID"] == f"IT.{name}.{column['name']}"
                assert item.findtext(f"{ODM}Description/{ODM}TranslatedText") == column["label"]
                if item.get("DataType") == "text":
                    assert int(item.get("Length") or 0) == column["length"]
        lists = [*groups.values(), *root.iter(f"{DEF}ValueListDef")]  # datasets, and value lists (per test)
        all_refs = Counter(ref.get("ItemOID") for listed in lists for ref in listed.iter(f"{ODM}ItemRef"))
        assert set(all_refs) == set(items) and set(all_refs.values()) == {1}  # none missing, none twice

    def test_every_reference_resolves(self, written: Path) -> None:
        root, _ = _written(written)
        leaves = {leaf.get("ID"): leaf.get(f"{XLINK}href") for leaf in root.iter(f"{DEF}leaf")}
        codelists = _by_oid(root, f"{ODM}CodeList")
        methods = _by_oid(root, f"{ODM}MethodDef")
        assert codelists and methods
        for ref in root.iter(f"{ODM}CodeListRef"):
            assert ref.get("CodeListOID") in codelists
        for ref in root.iter(f"{ODM}ItemRef"):
            assert ref.get("MethodOID") is None or ref.get("MethodOID") in methods
        for ref in root.iter(f"{DEF}DocumentRef"):
            assert ref.get("leafID") in leaves
        for group in root.iter(f"{ODM}ItemGroupDef"):
            href = leaves[group.get(f"{DEF}ArchiveLocationID")]
            assert href == f"{group.get('Name', '').lower()}.xpt" and (written / str(href)).is_file()
        assert leaves["LF.ReviewersGuide"] == "reviewers-guide.md" and (written / "reviewers-guide.md").is_file()
        used = {ref.get("CodeListOID") for ref in root.iter(f"{ODM}CodeListRef")}
        assert used == set(codelists)  # no codelist nobody uses

    def test_the_define_xml_2_1_schema_accepts_it(self, written: Path) -> None:
        xmlschema = pytest.importorskip("xmlschema", reason="the schema check needs odmlib's xmlschema")
        schema_manager = pytest.importorskip("odmlib.schema_manager", reason="odmlib ships the Define-XML 2.1 XSD")
        schema = xmlschema.XMLSchema(schema_manager.get_schema_path("define", "2.1"))
        schema.validate(str(written / "define.xml"))
        root, _ = _written(written)
        assert root.get("ODMVersion") == "1.3.2" and root.get(f"{DEF}Context") == "Submission"
        [version] = root.iter(f"{ODM}MetaDataVersion")
        assert str(version.get(f"{DEF}DefineVersion")).startswith("2.1.")
        standards = {(s.get("Name"), s.get("Version")) for s in root.iter(f"{DEF}Standard")}
        assert ("SDTMIG", "3.4") in standards

    def test_items_follow_their_mapping(self, written: Path) -> None:
        pack = Settings.default().pack
        dm = pack.load(DomainSpec, "sdtm/domains/dm.yaml")
        root, _ = _written(written)
        group = _by_oid(root, f"{ODM}ItemGroupDef")["IG.DM"]
        items = _by_oid(root, f"{ODM}ItemDef")
        methods = _by_oid(root, f"{ODM}MethodDef")
        assert group.get("Repeating") == "No" and group.get("Purpose") == "Tabulation"
        assert _attribute(group, f"{DEF}Class", "Name") == dm.class_
        refs = {ref.get("ItemOID"): ref for ref in group.iter(f"{ODM}ItemRef")}
        for order, variable in enumerate(dm.variables, start=1):
            ref, item = refs[f"IT.DM.{variable.name}"], items[f"IT.DM.{variable.name}"]
            assert ref.get("OrderNumber") == str(order) and ref.get("Role") == variable.role
            assert ref.get("Mandatory") == ("Yes" if variable.core == "Req" else "No")
            key = dm.keys.index(variable.name) + 1 if variable.name in dm.keys else None
            assert ref.get("KeySequence") == (str(key) if key else None)
            origin = item.find(f"{DEF}Origin")
            assert origin is not None and origin.get("Type") == variable.origin
            if variable.origin == "Derived":
                method = methods[str(ref.get("MethodOID"))]
                assert method.findtext(f"{ODM}Description/{ODM}TranslatedText") == variable.from_
            elif variable.from_:
                assert origin.findtext(f"{ODM}Description/{ODM}TranslatedText") == variable.from_
        assert items["IT.DM.RFSTDTC"].get("DataType") in {"datetime", "date", "partialDatetime"}
        assert items["IT.DM.RFSTDTC"].get("Length") is None and items["IT.DM.AGE"].get("DataType") == "integer"

    def test_the_example(self, tmp_path: Path) -> None:
        out = tmp_path / "sdtm"
        result = sdtm_trial(TrialSource.directory(EXAMPLE), out, output="json", created=CREATED)
        root, documents = _written(out)
        assert {g.get("Name") for g in root.iter(f"{ODM}ItemGroupDef")} == set(result.datasets) == set(documents)
        assert {out / "define.xml", out / "reviewers-guide.md"} <= set(result.files)
        leaves = {leaf.get(f"{XLINK}href") for leaf in root.iter(f"{DEF}leaf")}
        assert {f"{name.lower()}.json" for name in result.datasets} <= leaves


class TestCodelists:
    def _things(self) -> Dataset:
        spec = _spec(
            "XX",
            _variable("SEX", codelist="SEX"),
            _variable("XXROUTE", codelist="ROUTE"),
            _variable("XXKIND", codelist="KIND"),
            _variable("XXNONE", codelist="SEX"),
        )
        return _dataset(
            spec,
            {"SEX": "F", "XXROUTE": "INTRAVENOUS", "XXKIND": "small"},
            {"SEX": "F", "XXROUTE": "BY DRIP"},
            {"SEX": "M", "XXROUTE": "INTRAVENOUS"},
        )

    def test_only_the_terms_used_with_their_nci_codes(self) -> None:
        root = _define(self._things())
        codelists = _by_oid(root, f"{ODM}CodeList")
        sex = codelists["CL.SEX"]
        assert [i.get("CodedValue") for i in _terms(sex)] == ["F", "M"]  # U is in the codelist, not in the data
        assert [[a.get("Name") for a in i.findall(f"{ODM}Alias")] for i in _terms(sex)] == [["C16576"], ["C20197"]]
        assert sex.get(f"{DEF}StandardOID") is not None
        assert [a.get("Name") for a in sex.findall(f"{ODM}Alias")] == ["C66731"]

    def test_the_ct_package_is_the_standard_core_reads_back(self) -> None:
        standards = {s.get("Type"): s for s in _define(self._things()).iter(f"{DEF}Standard")}
        ct = standards["CT"]
        assert f"{str(ct.get('PublishingSet')).lower()}ct-{ct.get('Version')}" == TERMS.package
        assert all(
            c.get(f"{DEF}StandardOID") in (None, ct.get("OID")) for c in _define(self._things()).iter(f"{ODM}CodeList")
        )
        with pytest.raises(FhirLupusError, match="CT package 'latest'"):
            _define(self._things(), terms=StaticTerminology("latest", TERMS.codelists))

    def test_sponsor_defined_values_are_marked_and_get_no_code(self) -> None:
        codelists = _by_oid(_define(self._things()), f"{ODM}CodeList")
        route = {i.get("CodedValue"): i for i in _terms(codelists["CL.ROUTE"])}
        assert route["BY DRIP"].get(f"{DEF}ExtendedValue") == "Yes" and route["BY DRIP"].find(f"{ODM}Alias") is None
        assert route["INTRAVENOUS"].get(f"{DEF}ExtendedValue") is None
        kind = codelists["CL.KIND"]  # a sponsor-defined codelist: no CT standard, no code, nothing "extended"
        assert kind.get(f"{DEF}StandardOID") is None and kind.find(f"{ODM}Alias") is None
        assert [(i.get("CodedValue"), i.get(f"{DEF}ExtendedValue")) for i in _terms(kind)] == [("small", None)]

    def test_a_variable_without_values_has_no_codelist(self) -> None:
        items = _by_oid(_define(self._things()), f"{ODM}ItemDef")
        assert items["IT.XX.XXNONE"].find(f"{ODM}CodeListRef") is None
        assert _attribute(items["IT.XX.SEX"], f"{ODM}CodeListRef", "CodeListOID") == "CL.SEX"

    def test_a_value_the_terminology_does_not_hold_stops_it(self) -> None:
        spec = _spec("XX", _variable("SEX", codelist="SEX"))
        with pytest.raises(FhirLupusError, match="'FEMALE' is not a term of codelist SEX"):
            _define(_dataset(spec, {"SEX": "FEMALE"}))
        unknown = _spec("XX", _variable("XXOTHER", codelist="OTHER"))
        with pytest.raises(FhirLupusError, match="codelist OTHER is not in the terminology"):
            _define(_dataset(unknown, {"XXOTHER": "x"}))

    def test_a_sponsor_value_in_a_closed_codelist_stops_it(self) -> None:
        closed = StaticTerminology("p", {"SEX": CtCodelist("SEX", "Sex", "C66731", False, {"X": None})})
        with pytest.raises(FhirLupusError, match="not extensible"):
            _define(_dataset(_spec("XX", _variable("SEX", codelist="SEX")), {"SEX": "X"}), terms=closed)

    def test_without_a_terminology_no_code_is_written(self) -> None:
        root = _define(self._things(), terms=NO_TERMINOLOGY)
        assert not [a for a in root.iter(f"{ODM}Alias")]
        assert not [s for s in root.iter(f"{DEF}Standard") if s.get("Type") == "CT"]

    def test_every_variable_the_terms_control_names_its_codelist(self) -> None:
        """A variable mappings/sdtm's terms assign to a codelist names it in its mapping, or define.xml would give
        it no CodeListRef (and the check of its values would not reach define.xml)."""
        pack = Settings.default().pack
        controlled = load_sdtm_terms(pack).variable_codelists()
        design = pack.load(TrialDesign, "sdtm/trial.yaml")
        unnamed = [
            (spec.domain, v.name, controlled[v.name])
            for spec in (pack.load(DomainSpec, f"sdtm/domains/{d}.yaml") for d in design.domains)
            for v in spec.variables
            if v.name in controlled and len(controlled[v.name]) == 1 and v.codelist not in controlled[v.name]
        ]  # DSDECOD takes one of two codelists by DSCAT: value-level codelists, not yet described
        assert unnamed == []

    @pytest.mark.skipif(not CT_PACKAGE.is_file(), reason="the CT package of ../shared/cdisc-core is not here")
    def test_the_codes_of_the_example_are_those_of_the_ct_package(self, tmp_path: Path) -> None:
        assert terminology(Settings.default().pack).package == CT_PACKAGE.stem
        with CT_PACKAGE.open("rb") as handle:
            package = pickle.load(handle)  # the CORE cache's own file, trusted like the engine that reads it
        codes = {
            c["submissionValue"]: (c["conceptId"], {t["submissionValue"]: t["conceptId"] for t in c["terms"]})
            for c in package["codelists"]
        }
        out = tmp_path / "sdtm"
        sdtm_trial(TrialSource.directory(EXAMPLE), out, output="json", created=CREATED)
        root, _ = _written(out)
        checked = 0
        for codelist in root.iter(f"{ODM}CodeList"):
            if codelist.get(f"{DEF}StandardOID") is None:
                continue
            code = _attribute(codelist, f"{ODM}Alias", "Name")
            [(name, (_, terms_of))] = [(n, c) for n, c in codes.items() if c[0] == code]
            for item in _terms(codelist):
                alias = item.find(f"{ODM}Alias")
                if alias is not None:
                    assert terms_of[str(item.get("CodedValue"))] == alias.get("Name"), (name, item.get("CodedValue"))
                    checked += 1
                else:
                    assert item.get("CodedValue") not in terms_of  # sponsor-defined: truly not in the package
        assert checked


class TestValueLists:
    def test_one_item_per_test_with_its_where_clause(self) -> None:
        spec = _spec(
            "LB",
            _variable("LBTESTCD", role="Topic"),
            _variable("LBTEST", role="Synonym Qualifier"),
            _variable("LBORRES", role="Result Qualifier"),
            _variable("LBORRESU", role="Variable Qualifier", codelist="ROUTE"),
            value_lists=[
                {"variable": "LBORRES", "by": "LBTESTCD", "label": "LBTEST"},
                {"variable": "LBORRESU", "by": "LBTESTCD"},
            ],
        )
        rows = [
            {"LBTESTCD": "ALB", "LBTEST": "Albumin", "LBORRES": "35.5", "LBORRESU": "ORAL"},
            {"LBTESTCD": "ALB", "LBTEST": "Albumin", "LBORRES": "4", "LBORRESU": "ORAL"},
            {"LBTESTCD": "C3", "LBTEST": "Complement C3", "LBORRES": "0.123456", "LBORRESU": ""},
        ]
        root = _define(_dataset(spec, *rows))
        lists = _by_oid(root, f"{DEF}ValueListDef")
        wheres = _by_oid(root, f"{DEF}WhereClauseDef")
        items = _by_oid(root, f"{ODM}ItemDef")
        assert set(lists) == {"VL.LB.LBORRES", "VL.LB.LBORRESU"} and set(wheres) == {
            "WC.LB.LBTESTCD.ALB",
            "WC.LB.LBTESTCD.C3",
        }
        refs = list(lists["VL.LB.LBORRES"].iter(f"{ODM}ItemRef"))
        assert [r.get("ItemOID") for r in refs] == ["IT.LB.LBORRES.ALB", "IT.LB.LBORRES.C3"]
        assert [_attribute(r, f"{DEF}WhereClauseRef", "WhereClauseOID") for r in refs] == list(wheres)
        check = wheres["WC.LB.LBTESTCD.C3"].find(f"{ODM}RangeCheck")
        assert check is not None and check.get(f"{DEF}ItemOID") == "IT.LB.LBTESTCD" and check.get("Comparator") == "EQ"
        assert check.findtext(f"{ODM}CheckValue") == "C3"
        assert items["IT.LB.LBORRES.ALB"].get("Length") == "4" and items["IT.LB.LBORRES.C3"].get("Length") == "8"
        assert "Albumin" in str(items["IT.LB.LBORRES.ALB"].findtext(f"{ODM}Description/{ODM}TranslatedText"))
        assert _attribute(items["IT.LB.LBORRES"], f"{DEF}ValueListRef", "ValueListOID") == "VL.LB.LBORRES"
        units = {r.get("ItemOID"): r.get("Mandatory") for r in lists["VL.LB.LBORRESU"].iter(f"{ODM}ItemRef")}
        assert units == {"IT.LB.LBORRESU.ALB": "Yes", "IT.LB.LBORRESU.C3": "No"}

    def test_lb_describes_the_units_of_each_test(self, pack: MappingPack) -> None:
        lb = pack.load(DomainSpec, "sdtm/domains/lb.yaml")
        rows = [
            {"LBTESTCD": "ALB", "LBTEST": "Albumin", "LBORRESU": "g/dL", "LBSTRESU": "g/L"},
            {"LBTESTCD": "WBC", "LBTEST": "Leukocytes", "LBORRESU": "10^9/L", "LBSTRESU": "10^9/L"},
        ]
        lists = _by_oid(_define(_dataset(lb, *rows), terms=NO_TERMINOLOGY), f"{DEF}ValueListDef")
        for variable in ("LBORRESU", "LBSTRESU"):
            refs = [r.get("ItemOID") for r in lists[f"VL.LB.{variable}"].iter(f"{ODM}ItemRef")]
            assert refs == [f"IT.LB.{variable}.ALB", f"IT.LB.{variable}.WBC"]

    def test_a_value_list_names_variables_of_its_domain(self) -> None:
        with pytest.raises(ValueError, match="not variables"):
            _spec("LB", _variable("LBORRES"), value_lists=[{"variable": "LBORRES", "by": "LBTESTCD"}])


class TestShapes:
    @pytest.mark.parametrize(
        ("values", "kind"),
        [
            (["2008-01-06", ""], "date"),
            (["2008-01-06T08:00", "2008-01-07T10:00:30"], "datetime"),
            (["2008-01-06T08:00", "2008-01-07"], "partialDatetime"),
            (["2008-01", "2008-01-07"], "partialDate"),
            (["", ""], "datetime"),
        ],
    )
    def test_iso_8601_types(self, values: list[str], kind: str) -> None:
        assert _dtc_type(values) == kind

    def test_floats_have_their_significant_digits(self) -> None:
        spec = _spec("XX", _variable("XXVAL", type="float"))
        items = _by_oid(_define(_dataset(spec, {"XXVAL": 1.5}, {"XXVAL": 0.125})), f"{ODM}ItemDef")
        assert items["IT.XX.XXVAL"].get("SignificantDigits") == "3" and items["IT.XX.XXVAL"].get("DataType") == "float"

    def test_a_mapping_define_xml_cannot_express_is_refused(self) -> None:
        spec = _spec("XX", _variable("XXVAL")).model_copy(update={"class_": "Findings"})  # not a Define-XML class
        with pytest.raises(FhirLupusError, match="schema refuses"):
            _define(_dataset(spec, {"XXVAL": "a"}))

    def test_a_derived_variable_must_say_how(self) -> None:
        spec = _spec("XX", _variable("XXVAL", origin="Derived"))
        with pytest.raises(FhirLupusError, match="XXVAL is derived: say how"):
            _define(_dataset(spec, {"XXVAL": "a"}))

    def test_without_odmlib_the_message_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "odmlib.define_2_1.model", None)
        with pytest.raises(ExtraMissing, match=r"fhir-lupus\[sdtm\]"):
            _define(_dataset(_spec("XX")))


class TestGuide:
    def _guide(self, pack: MappingPack, study: StudyDefinition, *datasets: Dataset, **facts: Any) -> str:
        files = {d.name: [f"{d.name.lower()}.xpt"] for d in datasets}
        return reviewers_guide(list(datasets), GuideFacts(study, CREATED, files, **facts), TERMS, pack)

    def test_every_dataset_with_its_count(self, written: Path) -> None:
        guide = (written / "reviewers-guide.md").read_text(encoding="utf-8")
        _, documents = _written(written)
        for name, document in documents.items():
            files = f"{name.lower()}.xpt, {name.lower()}.json"
            assert f"| {name} | {document['label']} |" in guide
            assert f"| {document['records']} | {files} |" in guide.split(f"| {name} |")[1].splitlines()[0]
        assert "cdisc-rules-engine 0.17.1" in guide and "fhir-lupus sdtm DATA_DIR -o DIR --check" in guide

    def test_sponsor_defined_values_and_derivations(self, pack: MappingPack, study: StudyDefinition) -> None:
        guide = self._guide(pack, study, TestCodelists()._things())
        assert "| XX.XXROUTE | ROUTE | BY DRIP | the site's wording; no ROUTE term says it |" in guide
        assert "| XX.XXKIND | KIND | small | the trial's own |" in guide
        assert "INTRAVENOUS" not in guide  # a CT term is no sponsor choice
        assert "| XX.USUBJID | STUDYID-SUBJID |" in guide
        assert "| XX.XXSEQ | 1, 2, ... over each subject's records in the order of STUDYID, USUBJID, XXSEQ |" in guide
        assert "| VS |" in guide and "no vital signs" in guide  # mappings/sdtm/reviewers-guide.yaml

    def test_the_core_issues_left_with_their_reasons(self, pack: MappingPack, study: StudyDefinition) -> None:
        explained = pack.load(Explanations, EXPLAINED).issues
        lb = next(e for e in explained if e.dataset == "LB")
        guide = self._guide(pack, study, _dataset(_spec("LB")))
        assert f"| {lb.rule} | LB | {' '.join(lb.why.split())} |" in guide
        other = {e.dataset for e in explained} - {"LB", "*"}
        assert other and not any(f"| {name} |" in guide for name in other)  # only the datasets written

    def test_day_one_and_de_identification(self, pack: MappingPack, study: StudyDefinition) -> None:
        plain = self._guide(pack, study, _dataset(_spec("XX")))
        assert "there is no day 0" in plain and f"anchor: {study.protocol.visit_months.anchor}" in plain
        assert "None: USUBJID is STUDYID-SUBJID" in plain and "refused" not in plain
        keyed = self._guide(pack, study, _dataset(_spec("XX")), keyed=True, rejected=3)
        assert "keyed pseudonym" in keyed and "-180 to 180 days" in keyed
        assert "3 input rows were refused" in keyed

    def test_a_domain_both_written_and_listed_as_not_written_stops_it(
        self, pack: MappingPack, study: StudyDefinition
    ) -> None:
        with pytest.raises(FhirLupusError, match="VS written, yet listed under not_written"):
            self._guide(pack, study, _dataset(_spec("VS")))

    def test_a_keyed_output_says_so(self, dataset: Callable[..., Path], tmp_path: Path) -> None:
        out = tmp_path / "sdtm"
        sdtm_trial(TrialSource.directory(dataset()), out, output="json", key=RegistryKey(b"k" * 32), created=CREATED)
        guide = (out / "reviewers-guide.md").read_text(encoding="utf-8")
        assert "keyed pseudonym" in guide and "MSC-001" not in guide + (out / "define.xml").read_text("utf-8")
