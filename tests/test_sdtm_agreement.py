"""FHIR and SDTM from the same data agree: `map` writes NDJSON, `sdtm` writes Dataset-JSON, and every lab result is
the same in both, row for row: the code, the value and unit as reported, the date, the visit and the verdict."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import example_subset
from typer.testing import CliRunner

from fhir_lupus.cli import app
from fhir_lupus.model import load_study
from fhir_lupus.sdtm import load_sdtm_terms
from fhir_lupus.settings import Settings
from fhir_lupus.terminology import load_fhir_codes

runner = CliRunner()


def ndjson(directory: Path, resource_type: str) -> Iterator[dict[str, Any]]:
    for path in directory.glob(f"{resource_type}*.ndjson"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)


def dataset(path: Path) -> list[dict[str, Any]]:
    document = json.loads(path.read_text(encoding="utf-8"))
    names = [column["name"] for column in document["columns"]]
    assert document["records"] == len(document["rows"])
    return [dict(zip(names, row, strict=True)) for row in document["rows"]]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("agreement")
    data = example_subset(root / "trial", 2)
    mapped = runner.invoke(app, ["map", str(data), "-o", str(root / "fhir"), "--format", "ndjson"])
    assert mapped.exit_code == 0, mapped.output
    written = runner.invoke(app, ["sdtm", str(data), "-o", str(root / "sdtm"), "--format", "json"])
    assert written.exit_code == 0, written.output
    return root / "fhir", root / "sdtm"


def test_every_lab_result_agrees_row_for_row(outputs: tuple[Path, Path]) -> None:
    fhir, sdtm = outputs
    pack = Settings.default().pack
    lab_system = pack.identifier_system("lab_result", study="NCT00698191")
    visit_system = pack.identifier_system("visit", study="NCT00698191")
    encounters = {
        f"Encounter/{e['id']}": i["value"].split("/")[-1]
        for e in ndjson(fhir, "Encounter")
        for i in e.get("identifier", [])
        if i["system"] == visit_system
    }
    observations = {
        i["value"]: o
        for o in ndjson(fhir, "Observation")
        for i in (o.get("identifier") or [])
        if i.get("system") == lab_system
    }
    records = {r["LBREFID"]: r for r in dataset(sdtm / "lb.json")}
    treg_system = pack.identifier_system("treg", study="NCT00698191")
    tregs = {
        i["value"]: o
        for o in ndjson(fhir, "Observation")
        for i in (o.get("identifier") or [])
        if i.get("system") == treg_system
    }
    assert observations and tregs and set(observations) | set(tregs) == set(records)
    for refid, observation in tregs.items():
        assert records[refid]["LBSTRESN"] == observation["valueQuantity"]["value"], refid
        assert records[refid]["LBDTC"] == observation["effectiveDateTime"][:16], refid
    terms = load_sdtm_terms(pack)
    codes = load_fhir_codes(pack).interpretation
    verdicts = {ref.code: name for name, ref in codes}
    visit_names = {visit.code: visit.name for visit in load_study("NCT00698191").visits()}
    for refid, observation in observations.items():
        record = records[refid]
        loinc = next(c["code"] for c in observation["code"]["coding"] if c["system"] == "http://loinc.org")
        assert record["LBLOINC"] == loinc, refid
        assert record["LBDTC"] == observation["effectiveDateTime"][:16], refid
        quantity = observation.get("valueQuantity")
        if quantity is not None:
            comparator = quantity.get("comparator", "")
            assert record["LBORRES"].replace(" ", "") == f"{comparator}{quantity['value']}" or float(
                record["LBORRES"].lstrip("<>=")
            ) == float(quantity["value"]), refid
            assert record["LBORRESU"] == terms.cdisc_unit(quantity["code"]).value, refid
            flags = [c["code"] for x in observation.get("interpretation", []) for c in x["coding"]]
            expected = terms.term_for("NRIND", verdicts[flags[0]]).value if flags else ""
            assert record["LBNRIND"] == expected, refid
        else:
            value = observation.get("valueString") or observation["valueCodeableConcept"]["text"]
            assert record["LBORRES"] == value, refid
        visit_code = encounters[observation["encounter"]["reference"]]
        assert record["VISIT"] == visit_names[visit_code], refid
