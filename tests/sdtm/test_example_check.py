"""The example trial's SDTM output passes the conformance check: CDISC CORE reads every dataset with the record count
written, every rule executes, and every issue it reports is explained in mappings/sdtm/explained.yaml."""

from __future__ import annotations

from pathlib import Path

from support import REPO

from fhir_lupus.sdtm import CoreSetup, check_output, sdtm_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource


def test_the_example_passes_with_every_issue_explained(core_setup: CoreSetup, tmp_path: Path) -> None:
    settings = Settings.default()
    out = tmp_path / "sdtm"
    written = sdtm_trial(
        TrialSource.directory(REPO / "examples" / "nct00698191", settings=settings), out, output="json"
    )
    verdict = check_output(core_setup, out, written.datasets, settings.pack, out / "define.xml")
    assert verdict.report.datasets == written.datasets, verdict.count_problems
    assert verdict.count_problems == []
    assert [f"{i.rule} {i.dataset}: {i.message}" for i in verdict.unexplained] == []
    assert verdict.not_executed == []
    assert verdict.passed
