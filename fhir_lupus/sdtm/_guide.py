"""reviewers-guide.md: what a reviewer needs beside define.xml to read the datasets, in one short README: the
datasets and their record counts, every sponsor-defined choice (values no CDISC codelist holds, how each derived
variable is computed, the domains not written and why), how study day 1 relates to the project's day 0, the
de-identification, and how to rerun the conformance check.

Everything is read from what was written and the mappings that wrote it (mappings/sdtm/domains/, the terminology),
except what no mapping holds: mappings/sdtm/reviewers-guide.yaml (the domains not written, the check's command).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fhir_lupus._scratch import write_atomic
from fhir_lupus._version import __version__
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model import StudyDefinition
from fhir_lupus.registry import load_rules
from fhir_lupus.sdtm._codelists import Terminology, used_codelists
from fhir_lupus.sdtm._conformance import EXPLAINED, Explanations
from fhir_lupus.sdtm._define import method_text
from fhir_lupus.sdtm._engine import Dataset
from fhir_lupus.terminology import MappingPack

__all__ = ["GuideFacts", "GuideText", "reviewers_guide", "write_guide"]

GUIDE_FILE = "sdtm/reviewers-guide.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Conformance(_Frozen):
    command: str
    engine: str
    standard: str
    ct_package: str


class GuideText(_Frozen):
    """mappings/sdtm/reviewers-guide.yaml."""

    not_written: dict[str, str] = {}
    conformance: Conformance


@dataclass(frozen=True)
class GuideFacts:
    """What the run knows that the datasets do not say: when, the files of each dataset, whether a key
    de-identified them, how many rows the loader refused (written only with allow_rejects)."""

    study: StudyDefinition
    created: datetime
    files: dict[str, list[str]]  # domain -> its files
    keyed: bool = False
    rejected: int = 0


def write_guide(
    datasets: Sequence[Dataset], path: Path, facts: GuideFacts, terms: Terminology, pack: MappingPack
) -> Path:
    write_atomic(path, reviewers_guide(datasets, facts, terms, pack))
    return path


def reviewers_guide(datasets: Sequence[Dataset], facts: GuideFacts, terms: Terminology, pack: MappingPack) -> str:
    """The guide's Markdown text."""
    text = pack.load(GuideText, GUIDE_FILE)
    written = {d.name for d in datasets}
    if both := sorted(written & set(text.not_written)):
        raise FhirLupusError(f"mappings/{GUIDE_FILE}: {', '.join(both)} written, yet listed under not_written")
    study = facts.study
    ct = terms.package or "none loaded"
    lines = [
        f"# Reviewer's guide: {study.nct_id} SDTM datasets",
        "",
        f"{study.title}. Written by fhir-lupus {__version__} on {facts.created.isoformat(timespec='seconds')} from "
        f"the trial's checked records; {text.conformance.standard}, controlled terminology {ct}. define.xml "
        "(Define-XML 2.1) describes every dataset, variable, codelist and origin.",
        "",
        "## Datasets",
        "",
        "| dataset | label | class | records | files |",
        "|---|---|---|---|---|",
    ]
    for dataset in datasets:
        spec = dataset.spec
        files = ", ".join(facts.files.get(dataset.name, []))
        lines.append(_row(spec.domain, spec.label, spec.class_, str(len(dataset.records)), files))
    lines += ["", *_terms_section(datasets, terms), "", *_derived_section(datasets)]
    lines += ["", "## Domains not written", ""]
    if text.not_written:
        lines += ["| domain | why |", "|---|---|"]
        lines += [_row(domain, why) for domain, why in sorted(text.not_written.items())]
    else:
        lines.append("None listed.")
    lines += ["", *_days_section(study), "", *_identity_section(facts, pack)]
    if facts.rejected:
        lines += [
            "",
            "## Rows refused by the loader",
            "",
            f"{facts.rejected} input rows were refused and are not in the datasets (written with --allow-rejects); "
            "the loader's quarantine lists them.",
        ]
    check = text.conformance
    lines += [
        "",
        "## Rerunning the conformance check",
        "",
        "```sh",
        check.command,
        "```",
        "",
        f"runs CDISC CORE ({check.engine}) with the {check.standard} rules and CT package {check.ct_package} on the "
        "datasets and define.xml, and writes its report beside them (core-report). Read its rule outcomes "
        "(issues, skipped, execution errors) and check that it lists every dataset above with its record count.",
        "",
        *_explained_section(written, pack),
    ]
    return "\n".join(lines)


def _terms_section(datasets: Sequence[Dataset], terms: Terminology) -> list[str]:
    codelists = used_codelists(datasets, terms)
    lines = ["## Sponsor-defined terms", ""]
    if not codelists:
        return [*lines, "No variable holds a coded value."]
    sponsor = [(c, t) for c in codelists for t in c.terms if t.kind == "sponsor"]
    unchecked = [(c, t) for c in codelists for t in c.terms if t.kind == "unchecked"]
    if sponsor:
        lines += [
            "Values no codelist of the CT package holds: in define.xml without an NCI code (def:ExtendedValue where "
            "the CDISC codelist is extensible).",
            "",
            "| variables | codelist | value | why |",
            "|---|---|---|---|",
        ]
        lines += [_row(", ".join(c.variables), c.name, t.value, t.why or "") for c, t in sponsor]
    if unchecked:
        lines += [
            *([""] if sponsor else []),
            "No controlled terminology was loaded: these coded values were not checked against it, and define.xml "
            "gives them no NCI code.",
            "",
            "| variables | codelist | value |",
            "|---|---|---|",
        ]
        lines += [_row(", ".join(c.variables), c.name, t.value) for c, t in unchecked]
    if not sponsor and not unchecked:
        lines.append("None: every coded value is a CDISC CT term (define.xml gives each its NCI code).")
    return lines


def _explained_section(written: set[str], pack: MappingPack) -> list[str]:
    """The issues CORE reports that the project knowingly leaves (mappings/sdtm/explained.yaml), for the datasets
    written: the check fails on any other."""
    explanations = pack.load(Explanations, EXPLAINED)
    issues = [e for e in explanations.issues if e.dataset in written or e.dataset == "*"]
    lines = ["### Issues CORE reports that are left, and why", ""]
    if not issues and not explanations.not_executed:
        return [*lines, "None: any issue CORE reports is one to fix.", ""]
    lines += ["| rule | dataset | why |", "|---|---|---|"]
    lines += [_row(e.rule, e.dataset, e.why) for e in issues]
    lines += [_row(e.rule, e.dataset, f"not executed: {e.why}") for e in explanations.not_executed]
    return [*lines, ""]


def _derived_section(datasets: Sequence[Dataset]) -> list[str]:
    lines = ["## Derived variables", "", "| variable | derivation |", "|---|---|"]
    for dataset in datasets:
        for variable in dataset.spec.variables:
            if variable.origin == "Derived":
                lines.append(_row(f"{dataset.name}.{variable.name}", method_text(dataset.spec, variable)))
    return lines


def _days_section(study: StudyDefinition) -> list[str]:
    protocol = study.protocol
    anchor = {
        "baseline": "the BL visit",
        "msc_infusion": "the MSC infusion (the BL visit for a subject without one)",
    }[protocol.visit_months.anchor]
    window = protocol.pretreatment_to_infusion_hours
    return [
        "## Study days and the project's day 0",
        "",
        "Study days (--DY) follow SDTMIG 3.4 section 4.4.4: day 1 is the date of the subject's DM.RFSTDTC, the day "
        "before it day -1; there is no day 0. RFSTDTC is the first study treatment given, the cyclophosphamide "
        f"pretreatment, {window.min:g} to {window.max:g} hours before the MSC infusion, so the infusion usually "
        "falls on study day 2. The project's own day 0, from which protocol months and visit windows count (VISIT, "
        f"VISITNUM), is {anchor} (study file protocol.visit_months.anchor: {protocol.visit_months.anchor}).",
    ]


def _identity_section(facts: GuideFacts, pack: MappingPack) -> list[str]:
    lines = ["## De-identification", ""]
    if not facts.keyed:
        lines.append("None: USUBJID is STUDYID-SUBJID and dates are as recorded.")
        return lines
    shift = load_rules(pack).date_shift_days
    lines.append(
        "Written with a registry key, as `fhir-lupus registry package` de-identifies: USUBJID is the subject's keyed "
        "pseudonym (the same as in the registry package, so the two join), SUBJID its first 12 characters, and "
        f"every date is moved by the subject's keyed offset of {shift.min} to {shift.max} days (never 0; "
        "mappings/registry/deidentification.yaml). Intervals within a subject, and so study days, are unchanged."
    )
    return lines


def _row(*cells: str) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"
