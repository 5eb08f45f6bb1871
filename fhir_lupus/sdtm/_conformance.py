"""The conformance check of a written SDTM output: CDISC CORE run on its files (``_core``), read against what was
written and against the explanations the project gives for what it knowingly does not meet.

A check passes only when CORE read every dataset with the record count written (a file its schema refuses reads as
an empty dataset and CORE still exits 0), no rule failed to execute, and every issue is explained in
mappings/sdtm/explained.yaml (rule, dataset, why: what the reviewer's guide says). Explanations are data, each
bound to a rule and dataset, so a new issue is never hidden by an old reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fhir_lupus.sdtm._core import CoreIssue, CoreReport, CoreSetup, run_core
from fhir_lupus.terminology import MappingPack

__all__ = ["Conformance", "Explanations", "check_output"]

EXPLAINED = "sdtm/explained.yaml"


class Explanation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    rule: str
    dataset: str
    why: str


class Explanations(BaseModel):
    """mappings/sdtm/explained.yaml: the issues CORE reports that the project knowingly leaves, with the reason."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    issues: tuple[Explanation, ...] = ()
    not_executed: tuple[Explanation, ...] = ()  # rules CORE cannot run on this output, and why


@dataclass
class Conformance:
    report: CoreReport
    explained: list[tuple[CoreIssue, str]] = field(default_factory=list)
    unexplained: list[CoreIssue] = field(default_factory=list)
    not_executed: list[str] = field(default_factory=list)  # rules that failed to execute, unexplained
    count_problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.unexplained or self.not_executed or self.count_problems)


def check_output(
    setup: CoreSetup, out_dir: Path, written: dict[str, int], pack: MappingPack, define: Path | None = None
) -> Conformance:
    """Run CORE on the datasets in ``out_dir`` (Dataset-JSON when written, else XPT) and judge its report."""
    datasets = [out_dir / f"{name.lower()}.json" for name in written]
    if not all(path.exists() for path in datasets):
        datasets = [out_dir / f"{name.lower()}.xpt" for name in written]
    report = run_core(setup, datasets, out_dir, define if define is not None and define.exists() else None)
    explanations = pack.load(Explanations, EXPLAINED)
    known = {(e.rule, e.dataset): e.why for e in explanations.issues}
    result = Conformance(report, count_problems=report.problems(written))
    for issue in report.issues:
        why = known.get((issue.rule, issue.dataset)) or known.get((issue.rule, "*"))
        if why:
            result.explained.append((issue, why))
        else:
            result.unexplained.append(issue)
    allowed = {e.rule for e in explanations.not_executed}
    result.not_executed = sorted(report.rules_not_executed - allowed)
    return result
