"""Adverse events: adverse_events.csv checks, the AdverseEvent mapper (R4 and R5), sync keys and the safety summary."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fhir_lupus.bundle import DEPENDENCY_ORDER, business_key, dependency_sorted, transaction_bundle
from fhir_lupus.cli import app
from fhir_lupus.mappers._adverse_event import adverse_event_to_r5, map_adverse_event
from fhir_lupus.mappers._context import MappingContext
from fhir_lupus.model import load_trial
from fhir_lupus.model._adverse_events import ADVERSE_EVENTS, AdverseEventRow, CheckedAdverseEvent
from fhir_lupus.model._entities import Subject
from fhir_lupus.pipeline import map_trial
from fhir_lupus.source import TrialSource
from fhir_lupus.study._safety import NOT_RELATED, summarise_safety
from fhir_lupus.terminology._adverse_events import load_adverse_event_terms
from fhir_lupus.validation import validate_resource

NCI = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
MEDDRA = "https://www.meddra.org"
THO = "http://terminology.hl7.org/CodeSystem/"
BACKPORT = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/"


def ae(**over: str) -> dict[str, str]:
    row = dict(
        event_id="AE1",
        subject_id="MSC-001",
        term="fever after infusion",
        meddra_code="",
        ctcae_term="Fever",
        ctcae_code="",
        grade="1",
        serious="no",
        seriousness_criteria="",
        outcome="recovered",
        onset_on="2008-01-07",
        resolved_on="2008-01-08",
        related_to="msc_infusion",
        causality="probable",
        reporter="WJ",
        recorded_on="2008-01-08",
    )
    if "onset_on" in over:  # the dates that follow the onset move with it unless given
        row["resolved_on"] = row["recorded_on"] = over["onset_on"]
    return row | over


def with_events(*rows: dict[str, str]) -> Callable[[dict[str, list[dict[str, str]]]], None]:
    def edit(tables: dict[str, list[dict[str, str]]]) -> None:
        tables[ADVERSE_EVENTS] = list(rows)

    return edit


SUBJECT = Subject.model_validate(
    dict(
        subject_id="MSC-001",
        mrn="DT0000001",
        sex="female",
        birth_date="1980-05-01",
        enrolled_on="2008-01-02",
        status="follow-up",
        arm="AlloMSC",
    )
)


def checked(suspects: tuple[tuple[str, str], ...] = (("msc_infusion", "P2"),), **over: str) -> CheckedAdverseEvent:
    row = {k: v for k, v in ae(**over).items() if v}
    return CheckedAdverseEvent(AdverseEventRow.model_validate(row), suspects)


def mapped_refs(ctx: MappingContext, *refs: tuple[str, str]) -> set[str]:
    return {ctx.reference(kind, ctx.nct_id, key)["reference"] for kind, key in refs}


ALL_TREATMENTS = (("Procedure", "P1"), ("Procedure", "P2"))


def ext(resource: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in resource.get("extension", []) if e["url"] == BACKPORT + name]


class TestLoading:
    def test_accepted_with_their_suspects(self, dataset: Callable[..., Path]) -> None:
        rows = (
            ae(),
            ae(event_id="AE2", related_to="cyclophosphamide", causality="possible", onset_on="2008-01-20"),
            ae(event_id="AE3", related_to="both", causality="possible", onset_on="2008-02-01"),
            ae(event_id="AE4", related_to="none", causality="", outcome="not_recovered", resolved_on=""),
        )
        data, report = load_trial(dataset(with_events(*rows)))
        assert report.rejects == []
        assert [c.record.suspects for c in data.adverse_events] == [
            (("msc_infusion", "P2"),),
            (("cyclophosphamide", "P1"),),
            (("msc_infusion", "P2"), ("cyclophosphamide", "P1")),
            (),
        ]

    @pytest.mark.parametrize(
        ("over", "column", "reason"),
        [
            (dict(grade="0"), "grade", "greater than or equal to 1"),
            (dict(grade="6"), "grade", "less than or equal to 5"),
            (dict(serious="maybe"), "serious", "'yes' or 'no'"),
            (dict(meddra_code="1001955"), "meddra_code", "pattern"),
            (dict(ctcae_code="10019211"), "ctcae_code", "pattern"),
            (dict(onset_on="2008-13-01"), "onset_on", "date"),
            (dict(resolved_on="2008-01-06"), "resolved_on", "before onset_on"),
            (dict(recorded_on="2008-01-06"), "recorded_on", "before onset_on"),
            (dict(outcome="better"), "outcome", "not one of"),
            (dict(outcome="recovering"), "resolved_on", "has not resolved"),
            (dict(related_to="mmf"), "related_to", "not one of"),
            (dict(causality="certain"), "causality", "not one of"),
            (dict(causality=""), "causality", "needs the causality"),
            (dict(related_to="none"), "causality", "no suspect"),
            (dict(serious="yes"), "seriousness_criteria", "at least one criterion"),
            (dict(seriousness_criteria="hospitalization"), "seriousness_criteria", "non-serious"),
            (dict(serious="yes", seriousness_criteria="hospitalisation"), "seriousness_criteria", "unknown"),
            (dict(grade="5", serious="yes", seriousness_criteria="death"), "outcome", "grade 5"),
            (dict(outcome="fatal", serious="yes", seriousness_criteria="death"), "grade", "grade 5"),
            (dict(grade="5", outcome="fatal", serious="yes", seriousness_criteria="hospitalization"),
             "seriousness_criteria", "criterion death"),
            (dict(onset_on="2007-12-31", resolved_on=""), "onset_on", "before enrolment"),
            (dict(subject_id="MSC-009"), "subject_id", "unknown subject"),
            (dict(onset_on="2008-01-06", resolved_on=""), "related_to", "before the msc_infusion"),
        ],
    )  # fmt: skip
    def test_each_rule_names_its_column(
        self, dataset: Callable[..., Path], over: dict[str, str], column: str, reason: str
    ) -> None:
        data, report = load_trial(dataset(with_events(ae(**over))))
        assert data.adverse_events == []
        assert any(r.file == ADVERSE_EVENTS and r.line == 2 and r.column == column for r in report.rejects), (
            report.rejects
        )
        assert any(reason in r.reason for r in report.rejects), report.rejects

    def test_after_off_study_is_a_safety_follow_up_and_a_missing_suspect_is_refused(
        self, dataset: Callable[..., Path]
    ) -> None:
        rows = (
            ae(event_id="AE8", subject_id="MSC-002", related_to="none", causality="", onset_on="2008-04-02"),
            ae(event_id="AE9", subject_id="MSC-002", onset_on="2008-03-01"),
        )
        data, report = load_trial(dataset(with_events(*rows)))
        by_line = {r.line: (r.column, r.reason) for r in report.rejects}
        assert 2 not in by_line  # an event after the subject left the study is still reported (ICH E2A)
        assert [e.record.event.event_id for e in data.adverse_events] == ["AE8"]
        (note,) = [f for f in report.findings if f.kind == "ae-after-off-study"]
        assert (note.file, note.line, note.severity) == (ADVERSE_EVENTS, 2, "note")
        assert "left the study on 2008-04-01 (subjects.csv:3)" in note.message
        assert by_line[3] == ("related_to", "MSC-002 has no msc_infusion given in procedures.csv")

    def test_duplicate_event_id(self, dataset: Callable[..., Path]) -> None:
        _, report = load_trial(dataset(with_events(ae(), ae())))
        assert [(r.line, r.column) for r in report.rejects] == [(3, "event_id")]


class TestMapper:
    def test_every_field(self, ctx: MappingContext) -> None:
        resource = map_adverse_event(checked(), SUBJECT, ctx, mapped=mapped_refs(ctx, *ALL_TREATMENTS))
        assert resource["identifier"] == {
            "system": "https://fhir-lupus.example.org/fhir/sid/NCT00698191/adverse-event",
            "value": "AE1",
        }
        assert resource["id"] == ctx.resource_id("AdverseEvent", *resource["identifier"].values())
        assert resource["actuality"] == "actual"
        assert resource["event"] == {"text": "fever after infusion"}
        assert resource["subject"]["reference"].startswith("Patient/")
        assert resource["date"] == "2008-01-07" and resource["recordedDate"] == "2008-01-08"
        assert resource["seriousness"]["coding"] == [
            {"system": THO + "adverse-event-seriousness", "code": "Non-serious", "display": "Non-serious"}
        ]
        assert resource["severity"]["coding"][0]["code"] == "mild"
        assert [c["code"] for c in resource["outcome"]["coding"]] == ["resolved"]
        assert resource["recorder"] == {"display": "WJ"}
        assert resource["study"] == [ctx.study_ref()]
        (grade,) = ext(resource, "ae-grade")
        assert grade["valueCodeableConcept"]["coding"] == [
            {"system": NCI, "code": "C41338", "display": "Grade 1 Mild Adverse Event"}
        ]
        assert "CTCAE term: Fever" in grade["valueCodeableConcept"]["text"]
        assert ext(resource, "resolve-date") == [{"url": BACKPORT + "resolve-date", "valueDateTime": "2008-01-08"}]
        (suspect,) = resource["suspectEntity"]
        assert suspect["instance"] == ctx.reference("Procedure", "NCT00698191", "P2")
        (causality,) = suspect["causality"]
        assert causality["assessment"]["coding"] == [
            {"system": NCI, "code": "C53260", "display": "Related"},
            {"system": THO + "adverse-event-causality-assess", "code": "Probably-Likely", "display": "Probably/Likely"},
        ]
        assert causality["method"]["coding"][0]["code"] == "ProbabilityScale"
        validate_resource(resource, "R4")

    def test_codes_only_when_given(self, ctx: MappingContext) -> None:
        refs = mapped_refs(ctx, *ALL_TREATMENTS)
        coded = map_adverse_event(checked(meddra_code="10016558", ctcae_code="C55125"), SUBJECT, ctx, mapped=refs)
        assert coded["event"] == {
            "coding": [{"system": MEDDRA, "code": "10016558"}, {"system": NCI, "code": "C55125", "display": "Fever"}],
            "text": "fever after infusion",
        }
        plain = map_adverse_event(checked(ctcae_term=""), SUBJECT, ctx, mapped=refs)
        assert plain["event"] == {"text": "fever after infusion"}
        assert ext(plain, "ae-grade")[0]["valueCodeableConcept"]["text"] == "Grade 1 Mild Adverse Event"

    @pytest.mark.parametrize(
        ("outcome", "r4", "nci"),
        [
            ("recovered", "resolved", "C49498"),
            ("recovering", "recovering", "C49496"),
            ("not_recovered", "ongoing", "C49494"),
            ("recovered_with_sequelae", "resolvedWithSequelae", "C49495"),
            ("unknown", "unknown", None),
        ],
    )
    def test_outcomes(self, ctx: MappingContext, outcome: str, r4: str, nci: str | None) -> None:
        resolved = "2008-01-09" if outcome.startswith("recovered") else ""
        resource = map_adverse_event(
            checked(outcome=outcome, resolved_on=resolved), SUBJECT, ctx, mapped=mapped_refs(ctx, *ALL_TREATMENTS)
        )
        assert [c["code"] for c in resource["outcome"]["coding"]] == [r4]
        assert bool(ext(resource, "resolve-date")) == bool(resolved)
        validate_resource(resource, "R4")
        r5 = adverse_event_to_r5(resource, ctx)
        assert r5["status"] == ("completed" if resolved else "in-progress")
        assert [c["code"] for c in r5["outcome"][0]["coding"]] == [r4] + ([nci] if nci else [])
        assert r5["occurrencePeriod"] == {"start": "2008-01-07", **({"end": resolved} if resolved else {})}
        validate_resource(r5, "R5")

    def test_serious_fatal_grade_5(self, ctx: MappingContext) -> None:
        row = checked(
            grade="5", outcome="fatal", serious="yes", seriousness_criteria="death;hospitalization", resolved_on=""
        )
        resource = map_adverse_event(row, SUBJECT, ctx, mapped=mapped_refs(ctx, *ALL_TREATMENTS))
        assert resource["seriousness"]["coding"][0]["code"] == "Serious"
        assert adverse_event_to_r5(resource, ctx)["seriousness"]["coding"][0]["code"] == "serious"
        assert resource["severity"]["coding"][0]["code"] == "severe"
        assert [c["code"] for c in resource["outcome"]["coding"]] == ["fatal"]
        assert ext(resource, "ae-grade")[0]["valueCodeableConcept"]["coding"][0]["code"] == "C48275"
        criteria = [e["extension"] for e in ext(resource, "seriousness-criteria")]
        assert [c[0]["valueCodeableConcept"]["coding"][0]["code"] for c in criteria] == ["C48275", "C83052"]
        assert all(c[1] == {"url": "criterionPresent", "valueBoolean": True} for c in criteria)
        validate_resource(resource, "R4")

    @pytest.mark.parametrize(("grade", "severity"), [("2", "moderate"), ("3", "severe"), ("4", "severe")])
    def test_severity_from_grade(self, ctx: MappingContext, grade: str, severity: str) -> None:
        resource = map_adverse_event(checked(grade=grade), SUBJECT, ctx, mapped=mapped_refs(ctx, *ALL_TREATMENTS))
        assert resource["severity"]["coding"][0]["code"] == severity

    def test_cyclophosphamide_points_at_the_medication_administration_when_mapped(self, ctx: MappingContext) -> None:
        row = checked(suspects=(("cyclophosphamide", "P1"),), related_to="cyclophosphamide", causality="definite")
        only_procedure = map_adverse_event(row, SUBJECT, ctx, mapped=mapped_refs(ctx, *ALL_TREATMENTS))
        assert [s["instance"] for s in only_procedure["suspectEntity"]] == [
            ctx.reference("Procedure", "NCT00698191", "P1")
        ]
        refs = mapped_refs(ctx, *ALL_TREATMENTS, ("MedicationAdministration", "P1"))
        both = map_adverse_event(row, SUBJECT, ctx, mapped=refs)
        assert [s["instance"] for s in both["suspectEntity"]] == [
            ctx.reference("MedicationAdministration", "NCT00698191", "P1"),
            ctx.reference("Procedure", "NCT00698191", "P1"),
        ]
        assert both["suspectEntity"][0]["causality"][0]["assessment"]["coding"][1]["code"] == "Certain"
        validate_resource(both, "R4")

    def test_both_treatments_and_none(self, ctx: MappingContext) -> None:
        refs = mapped_refs(ctx, *ALL_TREATMENTS)
        both = map_adverse_event(
            checked(
                suspects=(("msc_infusion", "P2"), ("cyclophosphamide", "P1")), related_to="both", causality="unlikely"
            ),
            SUBJECT,
            ctx,
            mapped=refs,
        )
        assert len(both["suspectEntity"]) == 2
        assert both["suspectEntity"][1]["causality"][0]["assessment"]["coding"][0]["code"] == "C53257"
        none = map_adverse_event(checked(suspects=(), related_to="none", causality=""), SUBJECT, ctx, mapped=refs)
        assert "suspectEntity" not in none
        validate_resource(none, "R4")

    def test_unmapped_suspect_refuses(self, ctx: MappingContext) -> None:
        from fhir_lupus.errors import MappingError

        with pytest.raises(MappingError, match="not mapped"):
            map_adverse_event(checked(), SUBJECT, ctx, mapped=set())

    def test_r5_shape(self, ctx: MappingContext) -> None:
        row = checked(suspects=(("msc_infusion", "P2"), ("cyclophosphamide", "P1")), related_to="both")
        r4 = map_adverse_event(row, SUBJECT, ctx, mapped=mapped_refs(ctx, *ALL_TREATMENTS))
        r5 = adverse_event_to_r5(r4, ctx)
        assert r5["identifier"] == [r4["identifier"]] and r5["code"] == r4["event"]
        assert r5["outcome"][0]["coding"][0] == r4["outcome"]["coding"][0] and len(r5["outcome"]) == 1
        assert "severity" not in r5 and "date" not in r5
        assert r5["suspectEntity"][0]["instanceReference"] == ctx.reference("Procedure", "NCT00698191", "P2")
        assert set(r5["suspectEntity"][0]["causality"]) == {"assessmentMethod", "entityRelatedness"}
        # R5 validates against hl7.terminology 5.x, whose codes are lowercase; R4 keeps R4's spelling
        causality = r5["suspectEntity"][0]["causality"]
        assert causality["assessmentMethod"]["coding"][0]["code"] == "probability-scale"
        assert r4["suspectEntity"][0]["causality"][0]["method"]["coding"][0]["code"] == "ProbabilityScale"
        who_umc = [c["code"] for c in causality["entityRelatedness"]["coding"] if "causality-assess" in c["system"]]
        r4_who_umc = [
            c["code"]
            for c in r4["suspectEntity"][0]["causality"][0]["assessment"]["coding"]
            if "causality-assess" in c["system"]
        ]
        assert who_umc == [r4_who_umc[0].lower()] and who_umc[0] != r4_who_umc[0]
        urls = {e["url"].rsplit("/", 1)[-1]: e for e in r5["extension"]}
        assert set(urls) == {"ae-grade", "ae-severity"}
        assert all(e["url"].startswith("http://hl7.org/fhir/uv/ae-research-ig/") for e in r5["extension"])
        validate_resource(r5, "R5")


class TestPipelineAndBundle:
    @pytest.mark.parametrize("version", ["R4", "R5"])
    def test_map_trial(self, dataset: Callable[..., Path], version: str) -> None:
        rows = (ae(), ae(event_id="AE2", related_to="both", causality="possible", onset_on="2008-01-20"))
        data, report = load_trial(dataset(with_events(*rows)))
        resources = map_trial(TrialSource.loaded(data, report), fhir_version=version).resources  # type: ignore[arg-type]
        assert report.rejects == []
        events = [r for r in resources if r["resourceType"] == "AdverseEvent"]
        assert len(events) == 2

    def test_single_identifier_is_the_key_and_suspects_come_first(
        self, dataset: Callable[..., Path], ctx: MappingContext
    ) -> None:
        data, report = load_trial(dataset(with_events(ae())))
        # the types this test is about (others' resource types are ordered by their own tests)
        resources = [
            r for r in map_trial(TrialSource.loaded(data, report)).resources if r["resourceType"] in DEPENDENCY_ORDER
        ]
        event = next(r for r in resources if r["resourceType"] == "AdverseEvent")
        assert business_key(event) == "https://fhir-lupus.example.org/fhir/sid/NCT00698191/adverse-event|AE1"
        order = [f"{r['resourceType']}/{r['id']}" for r in dependency_sorted(resources)]
        suspect = event["suspectEntity"][0]["instance"]["reference"]
        assert order.index(suspect) < order.index(f"AdverseEvent/{event['id']}")
        bundle = transaction_bundle(resources)
        entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "AdverseEvent")
        assert entry["request"]["url"].startswith("AdverseEvent?identifier=https://")
        assert entry["resource"]["suspectEntity"][0]["instance"]["reference"].startswith("urn:uuid:")


class TestSafetySummary:
    def test_counts(self) -> None:
        def row(**over: str) -> AdverseEventRow:
            return AdverseEventRow.model_validate({k: v for k, v in ae(**over).items() if v})

        events = [
            row(event_id="A", grade="1"),
            row(event_id="B", grade="2", related_to="cyclophosphamide", causality="unlikely"),
            row(event_id="C", grade="3", serious="yes", seriousness_criteria="hospitalization", related_to="both",
                causality="possible"),
            row(event_id="D", subject_id="MSC-002", grade="2", related_to="none", causality=""),
            row(event_id="E", subject_id="MSC-002", grade="5", outcome="fatal", serious="yes",
                seriousness_criteria="death", related_to="cyclophosphamide", causality="definite", resolved_on=""),
        ]  # fmt: skip
        summary = summarise_safety(events, load_adverse_event_terms())
        assert summary.events == 5
        assert summary.by_grade == {1: 1, 2: 2, 3: 1, 4: 0, 5: 1}
        assert summary.by_seriousness == {"yes": 2, "no": 3}
        assert summary.by_relatedness == {"msc_infusion": 2, "cyclophosphamide": 2, NOT_RELATED: 2}
        assert summary.by_causality == {"unlikely": 1, "possible": 1, "probable": 1, "definite": 1, "none assessed": 1}
        first, second = summary.per_subject["MSC-001"], summary.per_subject["MSC-002"]
        assert (first.events, first.serious, first.max_grade) == (3, 1, 3)
        assert (second.events, second.serious, second.max_grade) == (2, 1, 5)
        assert dict(second.related) == {NOT_RELATED: 1, "cyclophosphamide": 1}
        assert [e.event_id for e in summary.serious_events] == ["C", "E"]
        assert {"dimension": "grade", "value": "5", "events": "1"} in summary.rows()

    def test_cli(self, dataset: Callable[..., Path], tmp_path: Path) -> None:
        rows = (ae(), ae(event_id="AE2", serious="yes", seriousness_criteria="hospitalization", grade="3"))
        out = tmp_path / "safety.csv"
        result = CliRunner().invoke(app, ["safety", str(dataset(with_events(*rows))), "--csv", str(out)])
        assert result.exit_code == 0, result.output
        assert "2 adverse event(s)" in result.output and "AE2" in result.output
        assert "serious,yes,1" in out.read_text(encoding="utf-8")

    def test_cli_rejects_exit_1(self, dataset: Callable[..., Path]) -> None:
        result = CliRunner().invoke(app, ["safety", str(dataset(with_events(ae(grade="7"))))])
        assert result.exit_code == 1


def test_example_events_load() -> None:
    data, report = load_trial(Path(__file__).resolve().parents[1] / "examples" / "nct00698191")
    assert not [r for r in report.rejects if r.file == ADVERSE_EVENTS]
    assert 20 <= len(data.adverse_events) <= 30
    assert all(c.record.event.onset_on >= date(2007, 1, 1) for c in data.adverse_events)
