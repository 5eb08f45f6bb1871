"""Subject lifecycle: status_history.csv against mappings/fhir/lifecycle.yaml and subjects.csv, the ResearchSubject
it gives in R4 and R5, and pull skipping people who never were subjects of the study."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, get_args

import pytest
from fakefhir import BASE, FakeFhir
from support import REPO

from fhir_lupus import load_trial, map_trial, write_quarantine
from fhir_lupus.client import FhirClient, RetryPolicy
from fhir_lupus.errors import MappingError
from fhir_lupus.journal import Journal
from fhir_lupus.mappers._context import MappingContext
from fhir_lupus.mappers._r5 import to_r5
from fhir_lupus.mappers._research_subject import map_research_subject
from fhir_lupus.model import LoadReport, Located, TrialData
from fhir_lupus.model._entities import StatusChange, SubjectStatus
from fhir_lupus.model._lifecycle import STATUS_HISTORY, LifecycleRules, _first_problem, load_lifecycle_rules
from fhir_lupus.pull import pull_study
from fhir_lupus.push import push_trial
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import load_pack
from fhir_lupus.validation import validate_resource

Rows = dict[str, list[dict[str, str]]]
HISTORY_URL = "https://fhir-lupus.example.org/fhir/StructureDefinition/research-subject-status-history"

# base_rows: MSC-001 enrolled 2008-01-02, MSC infusion 2008-01-07, in follow-up; MSC-002 enrolled 2008-02-01,
# withdrawn 2008-04-01 ("moved away") before any infusion.
MSC_001 = [
    ("candidate", "2007-12-15", ""),
    ("eligible", "2007-12-28", ""),
    ("on-study", "2008-01-02", ""),
    ("on-study-intervention", "2008-01-07", ""),
    ("follow-up", "2008-01-10", ""),
]
MSC_002 = [
    ("candidate", "2008-01-10", ""),
    ("eligible", "2008-01-30", ""),
    ("on-study", "2008-02-01", ""),
    ("withdrawn", "2008-04-01", "moved away"),
]


def with_history(
    msc_001: list[tuple[str, str, str]] = MSC_001, msc_002: list[tuple[str, str, str]] = MSC_002
) -> Callable[[Rows], None]:
    def edit(rows: Rows) -> None:
        rows[STATUS_HISTORY] = [
            {"subject_id": subject, "status": status, "on": on, "reason": reason}
            for subject, history in (("MSC-001", msc_001), ("MSC-002", msc_002))
            for status, on, reason in history
        ]

    return edit


def load(dataset: Callable[..., Path], edit: Callable[[Rows], None]) -> tuple[TrialData, LoadReport]:
    return load_trial(dataset(edit))


def rejects(report: LoadReport) -> list[tuple[str, int, str | None]]:
    return [(r.file, r.line, r.column) for r in report.rejects]


def fault(report: LoadReport) -> tuple[str, int, str | None, str]:
    """The one refused row that broke a rule (the subject's other rows are refused naming it)."""
    (row,) = [r for r in report.rejects if r.column]
    return row.file, row.line, row.column, row.reason


def kinds(report: LoadReport) -> list[str]:
    return [f.kind for f in report.findings if f.kind.startswith(("status-history", "no-status-history"))]


@pytest.fixture(scope="module")
def rules() -> LifecycleRules:
    return load_lifecycle_rules()


# -- the transition table -------------------------------------------------------------------------------------


def located(history: list[tuple[str, str]]) -> list[Located[StatusChange]]:
    return [
        Located(
            StatusChange(subject_id="S", status=status, on=date(2008, 1, 1 + i), reason="why"),
            STATUS_HISTORY,
            i + 2,
            {},
        )  # type: ignore[arg-type]
        for i, (status, _) in enumerate(history)
    ]


def path_to(status: str, rules: LifecycleRules) -> list[str] | None:
    """The shortest allowed history ending in ``status`` (None: no history reaches it)."""
    paths = [[first] for first in sorted(rules.first)]
    while paths:
        path = paths.pop(0)
        if path[-1] == status:
            return path
        paths += [[*path, nxt] for nxt in sorted(rules.allowed_after(path[-1])) if nxt not in path]
    return None


STATUSES = sorted(get_args(SubjectStatus))
REACHED = [(s, path) for s in STATUSES if (path := path_to(s, load_lifecycle_rules())) is not None]


def test_the_issue_s_transitions_are_allowed(rules: LifecycleRules) -> None:
    for before, after in [
        ("candidate", "eligible"),
        ("candidate", "ineligible"),
        ("eligible", "on-study-intervention"),
        ("on-study-intervention", "follow-up"),
        ("follow-up", "off-study"),
        ("eligible", "withdrawn"),
        ("on-study", "withdrawn"),
        ("on-study-intervention", "withdrawn"),
        ("follow-up", "withdrawn"),
    ]:
        assert after in rules.allowed_after(before), (before, after)
    assert rules.first == {"candidate"} and rules.reason_required == {"ineligible", "off-study", "withdrawn"}


@pytest.mark.parametrize(
    ("before", "path", "after"),
    [(before, path, after) for (before, path), after in itertools.product(REACHED, STATUSES)],
)
def test_every_transition_is_allowed_or_refused_naming_the_row(
    before: str, path: list[str], after: str, rules: LifecycleRules
) -> None:
    """From every status a history can reach, to each of the 13 codes."""
    rows = located([(status, "") for status in [*path, after]])
    problem = _first_problem(rows, rules)
    if after in rules.allowed_after(before):
        assert problem is None
    else:
        assert problem is not None
        row, column, reason = problem
        assert (row.line, column) == (len(path) + 2, "status")
        assert f"{before} -> {after} is not an allowed transition" in reason


def test_a_history_starts_with_candidate(rules: LifecycleRules) -> None:
    problem = _first_problem(located([("eligible", "")]), rules)
    assert problem is not None and problem[1:] == ("status", "a history starts with candidate, not eligible")


# -- status_history.csv through the loader ---------------------------------------------------------------------


def test_a_consistent_history_is_accepted(dataset: Callable[..., Path]) -> None:
    data, report = load(dataset, with_history())
    assert report.rejects == [] and kinds(report) == []
    assert [c.status for c in data.status_history["MSC-001"]] == [s for s, _, _ in MSC_001]
    assert data.status_history["MSC-002"][-1].reason == "moved away"


def test_without_the_file_the_current_status_alone_is_used(dataset: Callable[..., Path]) -> None:
    data, report = load(dataset, lambda rows: None)
    assert data.status_history == {} and kinds(report) == []


def test_a_subject_without_history_keeps_its_status_and_is_reported(dataset: Callable[..., Path]) -> None:
    data, report = load(dataset, with_history(msc_002=[]))
    assert report.rejects == [] and set(data.status_history) == {"MSC-001"}
    assert [f.message for f in report.findings if f.kind == "no-status-history"] == [
        "MSC-002 has no history: its status is subjects.csv's withdrawn alone"
    ]


def refused(dataset: Callable[..., Path], history: list[tuple[str, str, str]]) -> tuple[TrialData, LoadReport]:
    data, report = load(dataset, with_history(history))
    assert "MSC-001" not in data.status_history and "MSC-002" in data.status_history
    (finding,) = [f for f in report.findings if f.kind == "status-history-refused"]
    assert finding.message.startswith("MSC-001: history not used (status_history.csv:")
    assert finding.message.endswith("the subject keeps its subjects.csv status follow-up (subjects.csv:2)")
    # the whole history of MSC-001 is quarantined: the row at fault with its reason, the others naming it
    assert sorted(r.line for r in report.rejects) == list(range(2, 2 + len(history)))
    return data, report


def test_a_forbidden_transition_is_refused_naming_the_row(dataset: Callable[..., Path]) -> None:
    skip_eligibility = [MSC_001[0], *MSC_001[3:]]  # candidate -> on-study-intervention
    data, report = refused(dataset, skip_eligibility)
    (fault,) = [r for r in report.rejects if r.column]
    assert (fault.file, fault.line, fault.column) == (STATUS_HISTORY, 3, "status")
    assert "candidate -> on-study-intervention is not an allowed transition (line 2; after candidate: " in str(fault)
    others = [r.reason for r in report.rejects if not r.column]
    assert others == ["the history of MSC-001 is refused whole: status_history.csv:3 was refused"] * 2
    # the subject keeps its subjects.csv status: the ResearchSubject is as without a history
    subject = next(
        r for r in map_trial(TrialSource.loaded(data, report)).resources if r["resourceType"] == "ResearchSubject"
    )
    assert subject["status"] == "follow-up" and "extension" not in subject


def test_a_date_going_backwards_is_refused(dataset: Callable[..., Path]) -> None:
    backwards = [*MSC_001[:4], ("follow-up", "2008-01-06", "")]
    _, report = refused(dataset, backwards)
    (fault,) = [r for r in report.rejects if r.column]
    assert (fault.line, fault.column) == (6, "on")
    assert "date goes backwards: 2008-01-06 is before on-study-intervention on 2008-01-07 (line 5)" in fault.reason


def test_a_missing_reason_is_refused(dataset: Callable[..., Path]) -> None:
    _, report = load(dataset, with_history(msc_002=[*MSC_002[:3], ("withdrawn", "2008-04-01", "")]))
    assert fault(report) == (STATUS_HISTORY, 10, "reason", "withdrawn needs a reason")


@pytest.mark.parametrize(
    ("history", "line", "column", "reason"),
    [
        (MSC_001[:4], 5, "status", "the history ends with on-study-intervention, subjects.csv:2 says follow-up"),
        (
            [*MSC_001[:2], ("on-study", "2008-01-03", ""), *MSC_001[3:]],
            4,
            "on",
            "the first on-study status (on-study on 2008-01-03) is not enrolled_on 2008-01-02 of subjects.csv:2",
        ),
    ],
)
def test_a_history_disagreeing_with_subjects_csv_is_refused(
    dataset: Callable[..., Path], history: list[tuple[str, str, str]], line: int, column: str, reason: str
) -> None:
    _, report = load(dataset, with_history(history))
    fault = next(r for r in report.rejects if r.column)
    assert (fault.file, fault.line, fault.column, fault.reason) == (STATUS_HISTORY, line, column, reason)


@pytest.mark.parametrize(
    ("last", "column", "reason"),
    [
        (("withdrawn", "2008-04-02", "moved away"), "on", "withdrawn on 2008-04-02, subjects.csv:3 says off_study_on"),
        (("withdrawn", "2008-04-01", "adverse event"), "reason", "says off_study_reason 'moved away'"),
    ],
)
def test_leaving_the_study_must_agree_with_subjects_csv(
    dataset: Callable[..., Path], last: tuple[str, str, str], column: str, reason: str
) -> None:
    data, report = load(dataset, with_history(msc_002=[*MSC_002[:3], last]))
    assert fault(report)[:3] == (STATUS_HISTORY, 10, column) and reason in fault(report)[3]
    assert "MSC-002" not in data.status_history


def test_off_study_on_without_a_leaving_status_is_refused(dataset: Callable[..., Path]) -> None:
    def edit(rows: Rows) -> None:
        with_history()(rows)
        rows["subjects.csv"][0].update(off_study_on="2009-01-01")

    _, report = load(dataset, edit)
    assert fault(report) == (
        STATUS_HISTORY,
        6,
        "status",
        "subjects.csv:2 gives off_study_on 2009-01-01, the history ends with follow-up",
    )


def test_the_history_fills_what_subjects_csv_leaves_empty(dataset: Callable[..., Path]) -> None:
    def edit(rows: Rows) -> None:
        with_history()(rows)
        rows["subjects.csv"][1].update(off_study_on="", off_study_reason="")

    data, report = load(dataset, edit)
    assert report.rejects == []
    subject = [
        r for r in map_trial(TrialSource.loaded(data, report)).resources if r["resourceType"] == "ResearchSubject"
    ][1]
    assert subject["period"] == {"start": "2008-02-01", "end": "2008-04-01"}
    assert subject["extension"][0]["valueString"] == "moved away"


def test_history_of_an_unknown_subject_and_a_bad_cell(dataset: Callable[..., Path]) -> None:
    def edit(rows: Rows) -> None:
        with_history()(rows)
        rows[STATUS_HISTORY].append({"subject_id": "MSC-099", "status": "candidate", "on": "2008-01-01", "reason": ""})
        rows[STATUS_HISTORY][1]["status"] = "enrolled"  # not a research-subject-status code

    data, report = load(dataset, edit)
    assert (STATUS_HISTORY, 11, "subject_id") in rejects(report)
    assert (STATUS_HISTORY, 3, "status") in rejects(report)
    # MSC-001 lost a row: its history is refused whole, naming the refused row
    assert "MSC-001" not in data.status_history
    assert "status_history.csv:3 was refused" in report.rejects[-1].reason


def test_the_infusion_is_cross_checked_with_procedures(dataset: Callable[..., Path]) -> None:
    moved = [*MSC_001[:3], ("on-study-intervention", "2008-01-08", ""), MSC_001[4]]
    data, report = load(dataset, with_history(moved))
    assert report.rejects == [] and "MSC-001" in data.status_history  # a finding, the history is kept
    (finding,) = [f for f in report.findings if f.kind == "status-history-infusion"]
    assert (finding.file, finding.line) == (STATUS_HISTORY, 5)
    assert finding.message == (
        "MSC-001: on-study-intervention on 2008-01-08, the MSC infusion started on 2008-01-07 (procedures.csv:3)"
    )


def test_an_infusion_the_history_does_not_show_is_reported(dataset: Callable[..., Path]) -> None:
    def edit(rows: Rows) -> None:
        with_history()(rows)
        rows["procedures.csv"].append(dict(rows["procedures.csv"][1], procedure_id="P3", subject_id="MSC-002"))

    _, report = load(dataset, edit)
    messages = [f.message for f in report.findings if f.kind == "status-history-infusion"]
    assert messages == [
        "MSC-002: MSC infusion on 2008-01-07 (procedures.csv:4), the history has no on-study-intervention"
    ]


def test_refused_history_rows_are_quarantined(dataset: Callable[..., Path], tmp_path: Path) -> None:
    _, report = load(dataset, with_history(msc_002=[*MSC_002[:3], ("withdrawn", "2008-04-01", "")]))
    paths = write_quarantine(report.rejects, tmp_path / "q")
    (path,) = [p for p in paths if p.name == "status_history.csv.rejected.csv"]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "subject_id,status,on,reason,_line,_column,_reason" and len(lines) == 5


def test_a_status_that_is_not_a_fhir_code_fails_when_the_rules_load(tmp_path: Path) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", root)
    path = root / "fhir" / "lifecycle.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("follow-up: [off-study", "followup: [off-study"))
    with pytest.raises(MappingError, match=r"lifecycle\.yaml: transitions\.followup"):
        load_lifecycle_rules(load_pack(root))


# -- ResearchSubject, R4 and R5 ----------------------------------------------------------------------------------


def test_r4_keeps_the_history_in_extensions_and_r5_in_progress(
    dataset: Callable[..., Path], ctx: MappingContext
) -> None:
    data, _ = load(dataset, with_history())
    subject = data.subjects[1].record
    r4 = map_research_subject(subject, ctx, data.status_history["MSC-002"])
    validate_resource(r4, "R4")
    assert r4["status"] == "withdrawn" and r4["period"] == {"start": "2008-02-01", "end": "2008-04-01"}
    history = [e for e in r4["extension"] if e["url"] == HISTORY_URL]
    assert [
        {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in e["extension"]} for e in history
    ] == [
        {"status": "candidate", "date": "2008-01-10"},
        {"status": "eligible", "date": "2008-01-30"},
        {"status": "on-study", "date": "2008-02-01"},
        {"status": "withdrawn", "date": "2008-04-01", "reason": "moved away"},
    ]

    r5 = to_r5(r4, ctx)
    validate_resource(r5, "R5")
    assert r5["status"] == "active" and "extension" not in r5
    progress: list[dict[str, Any]] = r5["progress"]
    assert [p["subjectState"]["coding"][0]["code"] for p in progress] == [
        "candidate",
        "eligible",
        "on-study",
        "withdrawn",
    ]
    assert {p["type"]["coding"][0]["code"] for p in progress} == {"Enrollment"}
    assert {p["subjectState"]["coding"][0]["system"] for p in progress} == {
        "http://terminology.hl7.org/CodeSystem/research-subject-state"
    }
    assert [(p["startDate"], p.get("endDate")) for p in progress] == [
        ("2008-01-10", "2008-01-30"),
        ("2008-01-30", "2008-02-01"),
        ("2008-02-01", "2008-04-01"),
        ("2008-04-01", None),
    ]
    assert [p.get("milestone", {}).get("coding", [{}])[0].get("code") for p in progress] == [
        "SignedUp",
        "Screened",
        None,
        None,
    ]
    assert progress[-1]["reason"] == {"text": "moved away"}


def test_without_history_r5_has_one_progress_entry(dataset: Callable[..., Path], ctx: MappingContext) -> None:
    data, _ = load_trial(dataset())
    r5 = to_r5(map_research_subject(data.subjects[1].record, ctx), ctx)
    validate_resource(r5, "R5")
    (state,) = r5["progress"]
    assert state["subjectState"]["coding"][0]["code"] == "withdrawn" and state["reason"] == {"text": "moved away"}
    assert (state["startDate"], state["endDate"], state["type"]["coding"][0]["code"]) == (
        "2008-02-01",
        "2008-04-01",
        "Enrollment",
    )


def test_the_whole_trial_maps_in_r4_and_r5(dataset: Callable[..., Path]) -> None:
    data, report = load(dataset, with_history())
    for version in ("R4", "R5"):
        result = map_trial(TrialSource.loaded(data, report), fhir_version=version)  # type: ignore[arg-type]
        assert report.rejects == [] and result.counts["ResearchSubject"] == 2


# -- pull: only enrolled subjects ---------------------------------------------------------------------------------


def test_pull_skips_research_subjects_that_are_not_enrolled(
    fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(dataset())
    with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as fhir, Journal(tmp_path / "j.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test")
        study = {"reference": f"ResearchStudy/{fake.all('ResearchStudy')[0]['id']}"}
        # a screened person another system (or the screening log) wrote: ineligible, eligible, an R5 candidate
        for status in ("ineligible", "eligible"):
            patient = fake.add({"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": status}]})
            fake.add(
                {
                    "resourceType": "ResearchSubject",
                    "status": status,
                    "study": study,
                    "individual": {"reference": f"Patient/{patient['id']}"},
                }
            )
        candidate = fake.add({"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "c"}]})
        fake.add(
            {
                "resourceType": "ResearchSubject",
                "status": "active",
                "study": study,
                "subject": {"reference": f"Patient/{candidate['id']}"},
                "progress": [{"subjectState": {"coding": [{"code": "candidate"}]}, "startDate": "2008-01-01"}],
            }
        )
        fake.requests.clear()
        pulled = pull_study(fhir, journal, data.study, since=None)
    assert pulled.subjects == 2 and pulled.skipped_subjects == {"candidate": 1, "eligible": 1, "ineligible": 1}
    assert pulled.total_rows == len(data.labs) + len(data.treg)
    skipped = {candidate["id"], *(p["id"] for p in fake.all("Patient") if p["identifier"][0]["system"] == "urn:t")}
    asked = [path for _, path in fake.requests if path.startswith(("Observation?", "Encounter?", "Procedure?"))]
    assert asked and not [path for path in asked if any(f"Patient/{pid}" in path for pid in skipped)]


def test_pull_tells_how_many_it_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    from fhir_lupus.cli._sync_report import render_pull
    from fhir_lupus.pull._runner import PullResult

    render_pull(PullResult(subjects=2, skipped_subjects={"eligible": 1, "ineligible": 2}))
    assert "skipped 3 ResearchSubjects not enrolled (eligible 1, ineligible 2)" in capsys.readouterr().err
