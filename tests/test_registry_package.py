"""Registry packages: the key, de-identification rules on hand-built resources, the package of the example
data (no source identifier, date or recomputable id anywhere in it), the link table, idempotence, submission."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakefhir import BASE, FakeFhir
from support import EXAMPLE, example_subset
from typer.testing import CliRunner

from fhir_lupus.cli import app
from fhir_lupus.client import FhirClient, RetryPolicy
from fhir_lupus.journal import Journal
from fhir_lupus.mappers._context import Resource
from fhir_lupus.model import load_trial
from fhir_lupus.pipeline import map_trial
from fhir_lupus.registry import (
    KEY_ENV,
    DeidentificationError,
    RegistryConfigError,
    RegistryKey,
    deidentify,
    load_key,
    load_rules,
    read_package,
    shift_date,
    submit_package,
    write_package,
)
from fhir_lupus.registry._deidentify import keyed_id
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import MappingPack

KEY = RegistryKey(b"registry-test-key-0123456789")
OTHER_KEY = RegistryKey(b"another-registry-key-9876543210")
MADE_AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NCT = "NCT00698191"


# -- the key ------------------------------------------------------------------------------------------------


def test_key_from_env_or_private_file_and_never_shown(tmp_path: Path) -> None:
    assert (
        load_key(environ={KEY_ENV: "environment-secret-0123"}).key_id == RegistryKey(b"environment-secret-0123").key_id
    )
    path = tmp_path / "registry.key"
    path.write_text("file-secret-0123456789\n")
    path.chmod(0o600)
    key = load_key(path, environ={})
    assert key.key_id == RegistryKey(b"file-secret-0123456789").key_id != KEY.key_id
    assert "file-secret" not in repr(key) + str(key) and key.key_id in repr(key)
    assert re.fullmatch(r"[0-9a-f]{16}", key.key_id)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "registry.key"
    path.write_text("file-secret-0123456789")
    path.chmod(mode)
    with pytest.raises(RegistryConfigError, match="chmod 600") as caught:
        load_key(path, environ={})
    assert "file-secret" not in str(caught.value)


def test_missing_or_short_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryConfigError, match=KEY_ENV):
        load_key(environ={})
    with pytest.raises(RegistryConfigError, match="too short"):
        load_key(environ={KEY_ENV: "short"})
    with pytest.raises(RegistryConfigError, match="cannot read"):
        load_key(tmp_path / "absent.key", environ={})


def test_cli_refuses_an_open_key_file_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "registry.key"
    path.write_text("cli-secret-0123456789")
    path.chmod(0o644)
    result = CliRunner().invoke(
        app, ["registry", "package", str(EXAMPLE), "-o", str(tmp_path / "pkg"), "--key-file", str(path)]
    )
    assert result.exit_code == 2, result.output
    assert "chmod 600" in result.output and "cli-secret" not in result.output
    assert not (tmp_path / "pkg").exists()


# -- dates --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("2007-03-28", 10, "2007-04-07"),
        ("2007-03-28T08:57:00+08:00", -28, "2007-02-28T08:57:00+08:00"),
        ("2008-02-28T23:59:59.123Z", 1, "2008-02-29T23:59:59.123Z"),  # leap day
        ("2007-12-31", 1, "2008-01-01"),
        ("2007-03", 10, None),  # partial dates are not moved (birth dates are generalised first)
        ("1955", 10, None),
        ("L-MSC-001-BL-C3", 10, None),
        ("2007-02-30", 1, None),
    ],
)
def test_shift_date(value: str, days: int, expected: str | None) -> None:
    assert shift_date(value, days) == expected


# -- de-identification of hand-built resources ------------------------------------------------------------


def _resources(pack: MappingPack, *, birth: str = "1955-08-08") -> list[Resource]:
    subject_system = pack.identifier_system("subject", study=NCT)
    lab_system = pack.identifier_system("lab_result", study=NCT)
    return [
        {
            "resourceType": "ResearchStudy",
            "id": "study-1",
            "identifier": [{"system": pack.identifier_system("study", study=NCT), "value": NCT}],
            "status": "active",
        },
        {
            "resourceType": "Patient",
            "id": "pat-1",
            "text": {"status": "generated", "div": "<div xmlns='http://www.w3.org/1999/xhtml'>Wang Li</div>"},
            "identifier": [{"system": "https://hospital.example/mrn", "value": "DT2067885"}],
            "name": [{"family": "Wang", "given": ["Li"]}],
            "gender": "female",
            "birthDate": birth,
        },
        {
            "resourceType": "ResearchSubject",
            "id": "rs-1",
            "identifier": [{"system": subject_system, "value": "MSC-001"}],
            "status": "off-study",
            "period": {"start": "2007-03-17", "end": "2009-03-20"},
            "study": {"reference": "ResearchStudy/study-1"},
            "individual": {"reference": "Patient/pat-1", "display": "Wang Li"},
            "extension": [
                {"url": pack.extension_url("off_study_reason"), "valueString": "moved to Shanghai"},
                {
                    "url": pack.extension_url("status_history"),
                    "extension": [
                        {"url": "status", "valueCode": "off-study"},
                        {"url": "date", "valueDate": "2009-03-20"},
                        {"url": "reason", "valueString": "moved to Shanghai"},
                    ],
                },
            ],
        },
        {
            "resourceType": "Observation",
            "id": "obs-1",
            "identifier": [
                {"system": lab_system, "value": "L-MSC-001-BL-C3"},
                {"system": "https://hospital.example/lis", "value": "LIS-778"},
            ],
            "status": "final",
            "code": {
                "coding": [
                    {"system": "http://loinc.org", "code": "4485-9"},
                    {"system": pack.identifier_system("hospital_local_code", study=NCT), "code": "DT-C3"},
                ],
                "text": "Complement C3",
            },
            "subject": {"reference": "Patient/pat-1"},
            "effectiveDateTime": "2007-03-28T08:57:00+08:00",
            "performer": [{"display": "Drum Tower Hospital Central Laboratory"}],
            "note": [{"text": "called Dr Zhang"}],
            "valueQuantity": {"value": 0.53, "unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"},
            "contained": [
                {"resourceType": "Specimen", "id": "specimen", "collection": {"collectedDateTime": "2007-03-28"}}
            ],
            "specimen": {"reference": "#specimen"},
        },
    ]


def _by_type(resources: list[Resource]) -> dict[str, Resource]:
    return {r["resourceType"]: r for r in resources}


def test_deidentify_removes_rekeys_shifts_and_generalises(pack: MappingPack) -> None:
    source = _resources(pack)
    before = json.dumps(source)
    result = deidentify(source, KEY, pack=pack, study=NCT, rules=load_rules())
    assert json.dumps(source) == before  # the input is not changed
    out = _by_type(result.resources)
    [link] = result.links
    assert link.subject_id == "MSC-001" and link.date_shift_days != 0 and -180 <= link.date_shift_days <= 180
    days = link.date_shift_days
    registry_subject = pack.project.identifier_systems["registry"].format(
        base=pack.project.canonical_base, study=NCT, kind="subject"
    )

    patient = out["Patient"]
    assert patient["identifier"] == [{"system": registry_subject, "value": link.pseudonym}]
    assert patient["birthDate"] == "1955" and "name" not in patient and "text" not in patient
    subject = out["ResearchSubject"]
    assert subject["identifier"] == [{"system": registry_subject, "value": link.pseudonym}]
    assert subject["individual"] == {"reference": f"Patient/{patient['id']}"}  # display (a name) dropped
    assert subject["study"] == {"reference": f"ResearchStudy/{out['ResearchStudy']['id']}"}
    assert subject["period"] == {"start": shift_date("2007-03-17", days), "end": shift_date("2009-03-20", days)}
    [history] = subject["extension"]  # the free-text off-study reason is gone, and the history's reason
    assert [e["url"] for e in history["extension"]] == ["status", "date"]
    assert history["extension"][1]["valueDate"] == shift_date("2009-03-20", days)

    observation = out["Observation"]
    [identifier] = observation["identifier"]  # the LIS identifier of an unknown system is removed
    assert identifier["system"].endswith("/lab-result") and identifier["value"] != "L-MSC-001-BL-C3"
    assert observation["code"]["coding"] == [{"system": "http://loinc.org", "code": "4485-9"}]
    assert "performer" not in observation and "note" not in observation
    assert observation["effectiveDateTime"] == shift_date("2007-03-28T08:57:00+08:00", days)
    assert observation["contained"][0]["collection"]["collectedDateTime"] == shift_date("2007-03-28", days)
    assert observation["specimen"] == {"reference": "#specimen"}
    assert observation["subject"] == {"reference": f"Patient/{patient['id']}"}

    assert out["ResearchStudy"]["identifier"] == source[0]["identifier"]  # public: kept
    ids = {r["id"] for r in result.resources}
    assert not ids & {"study-1", "pat-1", "rs-1", "obs-1"}
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", i) for i in ids)


def test_birth_year_dropped_over_89(pack: MappingPack) -> None:
    result = deidentify(_resources(pack, birth="1915-01-02"), KEY, pack=pack, study=NCT, rules=load_rules())
    assert "birthDate" not in _by_type(result.resources)["Patient"]  # 2009 - 1915 > 89 (Safe Harbor)


def test_not_enrolled_subjects_are_left_out(pack: MappingPack) -> None:
    result = deidentify(_resources(pack), KEY, pack=pack, study=NCT, rules=load_rules(), enrolled=set())
    assert [r["resourceType"] for r in result.resources] == ["ResearchStudy"] and result.excluded == 3


def test_a_reference_outside_the_package_is_refused(pack: MappingPack) -> None:
    source = _resources(pack)
    source[3]["encounter"] = {"reference": "Encounter/not-mapped"}
    with pytest.raises(DeidentificationError, match="not in the package"):
        deidentify(source, KEY, pack=pack, study=NCT, rules=load_rules())


def test_a_subject_identifier_left_in_free_text_is_refused(pack: MappingPack) -> None:
    source = _resources(pack)
    source[3]["code"]["text"] = "C3 of DT2067885"  # an element the rules do not remove
    with pytest.raises(DeidentificationError, match="still holds") as caught:
        deidentify(source, KEY, pack=pack, study=NCT, rules=load_rules())
    assert "DT2067885" not in str(caught.value)


# -- the example package: no leak -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_resources() -> list[Resource]:
    data, report = load_trial(EXAMPLE)
    assert report.rejects == []
    return map_trial(TrialSource.loaded(data, report)).resources


@pytest.fixture(scope="module")
def example_package(example_resources: list[Resource], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("registry") / "package"
    result = write_package(example_resources, out, KEY, study=NCT, enrolled=None, made_at=MADE_AT)
    assert result.problems == [] and result.manifest["resources"] == len(example_resources)
    return out


def _csv(name: str) -> list[dict[str, str]]:
    with (EXAMPLE / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _forbidden(resources: list[Resource], pack: MappingPack) -> dict[str, set[str]]:
    """Everything from the source that must not reach the registry, by kind."""
    subjects = _csv("subjects.csv")
    labs = _csv("labs.csv")
    # Full birth dates must not appear anywhere. Other real dates can: one subject's shifted date may be another
    # subject's real one (test_every_date_is_shifted_by_its_subjects_offset checks each resource instead).
    births = {s["birth_date"] for s in subjects if len(s["birth_date"]) == 10}
    public = {pack.identifier_system(kind, study=NCT) for kind in load_rules().identifiers.keep}
    business = set()
    for resource in resources:
        found = resource.get("identifier") or []
        for identifier in [found] if isinstance(found, dict) else found:
            if identifier["system"] not in public and not identifier["system"].startswith("http"):
                raise AssertionError(identifier)
            if identifier["system"] not in public and "clinicaltrials" not in identifier["system"]:
                business.add(identifier["value"])
    return {
        "subject id": {s["subject_id"] for s in subjects},
        "MRN": {s["mrn"] for s in subjects if s["mrn"]},
        "pseudonym": {s["pseudonym"] for s in subjects if s["pseudonym"]},
        "birth date": births,
        "business identifier": business,
        "resource id": {r["id"] for r in resources},
        "local code": {row["local_code"] for row in labs if row["local_code"]},
        "lab name": {row["lab"] for row in labs + _csv("treg.csv") if row["lab"]},
        "donor": {row["donor_id"] for row in _csv("procedures.csv") if row["donor_id"]},
    }


def test_no_source_identifier_date_or_id_in_the_package(
    example_package: Path, example_resources: list[Resource], pack: MappingPack
) -> None:
    forbidden = _forbidden(example_resources, pack)
    assert len(forbidden["subject id"]) == 20 and len(forbidden["MRN"]) + len(forbidden["pseudonym"]) == 20
    assert len(forbidden["birth date"]) == 20 and len(forbidden["resource id"]) == len(example_resources)
    files = sorted(example_package.iterdir())
    assert {p.name for p in files} >= {"manifest.json", "validation.json", "Patient.ndjson", "Observation.ndjson"}
    text = "\n".join(path.read_text(encoding="utf-8") for path in files)
    # every JSON string, every word and every UUID of the package; the short lists are also searched as substrings
    strings = set(re.findall(r'"([^"\\]*)"', text))
    words = set(re.findall(r"[A-Za-z0-9][A-Za-z0-9\-:./+]*[A-Za-z0-9]", text))
    uuids = set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text))
    for kind, tokens in forbidden.items():
        leaked = sorted(tokens & (strings | words | uuids))
        if len(tokens) < 200:
            leaked += sorted(t for t in tokens if t in text)
        assert leaked == [], f"{kind} leaked: {leaked[:5]}"
    assert not list(example_package.glob("*.csv")) and "link" not in text


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:T[0-9:.]+(?:Z|[+-]\d{2}:\d{2}))?")


def test_every_date_is_shifted_by_its_subjects_offset(example_package: Path, example_resources: list[Resource]) -> None:
    """Each subject resource's dates, in order, are its source's dates moved by the subject's (non-zero) offset."""
    with (example_package.parent / "package.link.csv").open(encoding="utf-8", newline="") as handle:
        shifts = {r["subject_id"]: int(r["date_shift_days"]) for r in csv.DictReader(handle)}
    assert 0 not in shifts.values() and len(set(shifts.values())) > 10
    packaged = {
        json.loads(line)["id"]: line
        for path in example_package.glob("*.ndjson")
        for line in path.read_text(encoding="utf-8").splitlines()
    }
    owners = {
        r["individual"]["reference"]: r["identifier"][0]["value"]
        for r in example_resources
        if r["resourceType"] == "ResearchSubject"
    }
    checked = 0
    for resource in example_resources:
        patient = f"Patient/{resource['id']}" if resource["resourceType"] == "Patient" else None
        patient = patient or (resource.get("subject") or resource.get("individual") or {}).get("reference")
        if patient not in owners:
            continue
        source = json.dumps({k: v for k, v in resource.items() if k != "birthDate"}, separators=(",", ":"))
        moved = [shift_date(d, shifts[owners[patient]]) for d in _DATE.findall(source)]
        assert _DATE.findall(packaged[keyed_id(KEY, resource["resourceType"], resource["id"])]) == moved
        checked += len(moved)
    assert checked > 9000


def test_link_table_maps_pseudonyms_back(example_package: Path) -> None:
    link = example_package.parent / "package.link.csv"
    assert os.stat(link).st_mode & 0o777 == 0o600
    with link.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["subject_id"] for r in rows} == {s["subject_id"] for s in _csv("subjects.csv")}
    by_pseudonym = {r["pseudonym"]: r for r in rows}
    registry_patients = [json.loads(line) for line in (example_package / "Patient.ndjson").read_text().splitlines()]
    assert {p["identifier"][0]["value"] for p in registry_patients} == set(by_pseudonym)
    # the shift recovers the real dates: MSC-001's baseline visit (2007-03-28) is at BL + shift in the package
    msc001 = next(r for r in rows if r["subject_id"] == "MSC-001")
    shifted = shift_date("2007-03-28", int(msc001["date_shift_days"]))
    encounters = (example_package / "Encounter.ndjson").read_text()
    assert f'"start":"{shifted}"' in encounters


def test_manifest_checks_every_file(example_package: Path, example_resources: list[Resource]) -> None:
    manifest = json.loads((example_package / "manifest.json").read_text())
    assert manifest["key_id"] == KEY.key_id and manifest["fhir_version"] == "4.0.1"
    assert manifest["mapping_version"] and manifest["made_at"] == MADE_AT.isoformat(timespec="seconds")
    assert sum(f["count"] for f in manifest["files"]) == len(example_resources)
    assert json.loads((example_package / "validation.json").read_text())["validated"] == len(example_resources)
    assert len(read_package(example_package).resources) == len(example_resources)


# -- idempotence and keys (a 2-subject subset) -------------------------------------------------------------


@pytest.fixture(scope="module")
def subset_resources(tmp_path_factory: pytest.TempPathFactory) -> list[Resource]:
    data, report = load_trial(example_subset(tmp_path_factory.mktemp("subset"), 2))
    return map_trial(TrialSource.loaded(data, report)).resources


def _package(resources: list[Resource], out: Path, key: RegistryKey, made_at: datetime = MADE_AT) -> dict[str, bytes]:
    write_package(resources, out, key, study=NCT, enrolled=None, made_at=made_at)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_same_key_same_bytes_other_key_nothing_shared(subset_resources: list[Resource], tmp_path: Path) -> None:
    first = _package(subset_resources, tmp_path / "a", KEY)
    again = _package(subset_resources, tmp_path / "b", KEY, made_at=datetime(2027, 1, 1, tzinfo=UTC))
    assert first.keys() == again.keys()
    assert {n for n in first if first[n] != again[n]} == {"manifest.json"}
    differ = [line for line in first["manifest.json"].splitlines() if line not in again["manifest.json"].splitlines()]
    assert [line.split(b":")[0].strip() for line in differ] == [b'"made_at"']

    other = _package(subset_resources, tmp_path / "c", OTHER_KEY)

    def values(files: dict[str, bytes]) -> tuple[set[str], set[str], set[str]]:
        resources = [json.loads(x) for n, c in files.items() if n.endswith(".ndjson") for x in c.splitlines()]
        subject_bound = [r for r in resources if r["resourceType"] not in ("ResearchStudy", "Group", "CodeSystem")]
        ids = {r["id"] for r in resources}
        keyed = {i["value"] for r in subject_bound for i in _identifiers(r) if "/sid/registry/" in i["system"]}
        dates = {d for r in subject_bound for d in re.findall(r"\d{4}-\d{2}-\d{2}", json.dumps(r))}
        return ids, keyed, dates

    ids, keyed, dates = values(first)
    other_ids, other_keyed, other_dates = values(other)
    assert ids.isdisjoint(other_ids) and keyed.isdisjoint(other_keyed) and keyed
    assert dates != other_dates
    assert (tmp_path / "a.link.csv").read_text() != (tmp_path / "c.link.csv").read_text()


def _identifiers(resource: Resource) -> list[dict[str, Any]]:
    found = resource.get("identifier") or []
    return [found] if isinstance(found, dict) else list(found)


def test_link_table_never_inside_the_package(subset_resources: list[Resource], tmp_path: Path) -> None:
    with pytest.raises(RegistryConfigError, match="must not be inside"):
        write_package(
            subset_resources, tmp_path / "p", KEY, study=NCT, enrolled=None, link_table=tmp_path / "p" / "l.csv"
        )


# -- submission (in-memory server) ------------------------------------------------------------------------


@pytest.fixture
def client() -> Iterator[FhirClient]:
    with FhirClient(BASE, retry=RetryPolicy(attempts=2, sleep=lambda _: None)) as fhir:
        yield fhir


def test_submit_twice_writes_once_and_a_changed_package_is_refused(
    subset_resources: list[Resource], tmp_path: Path, fake: FakeFhir, client: FhirClient
) -> None:
    fake.search_params["AdverseEvent"] = ("_id",)  # as on HAPI and Medplum: read and written by id
    out = tmp_path / "package"
    write_package(subset_resources, out, KEY, study=NCT, enrolled=None, made_at=MADE_AT)
    with Journal(tmp_path / "journal.sqlite") as journal:
        first = submit_package(out, client, journal)
        assert first.report.complete and first.report.created == len(subset_resources), first.report.summary()
        second = submit_package(out, client, journal)
        assert second.report.written == 0 and second.report.unchanged == len(subset_resources)
    log = Path(first.audit).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["kind"] for line in log] == ["registry-submit", "registry-submit"]
    assert "MSC-001" not in "".join(log)
    patients = fake.all("Patient")
    assert len(patients) == 2 and all("/sid/registry/" in p["identifier"][0]["system"] for p in patients)

    observations = out / "Observation.ndjson"
    observations.write_text(observations.read_text().replace('"final"', '"amended"', 1))
    with Journal(tmp_path / "journal.sqlite") as journal, pytest.raises(RegistryConfigError, match="sha256"):
        submit_package(out, client, journal)
