"""`fhir-lupus sdtm`: the trial as SDTM datasets, written whole or not at all.

The trial is loaded whole (SDTM datasets are one file per domain, sorted by subject: a trial of this size fits in
memory, the FHIR paths stream), each domain of mappings/sdtm/trial.yaml built from its row source and mapping
(``_engine``), and the files written into a private directory beside the output, which then replaces the output in
one rename: a run that fails leaves the previous output as it was. Beside the datasets: define.xml (``_define``)
and reviewers-guide.md (``_guide``). Rows refused by the loader stop it (nothing written) unless
``allow_rejects``; then the reviewer's guide names them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from fhir_lupus._scratch import discard, publish, scratch_dir
from fhir_lupus.errors import FhirLupusError, RejectedRows
from fhir_lupus.registry import RegistryKey
from fhir_lupus.sdtm._check import check_values
from fhir_lupus.sdtm._codelists import terminology
from fhir_lupus.sdtm._dataset_json import write_dataset_json
from fhir_lupus.sdtm._define import DefineStudy, write_define
from fhir_lupus.sdtm._engine import Dataset, build_dataset
from fhir_lupus.sdtm._guide import GuideFacts, write_guide
from fhir_lupus.sdtm._rows import ROW_SOURCES
from fhir_lupus.sdtm._sources import SdtmContext
from fhir_lupus.sdtm._spec import DomainSpec, TrialDesign
from fhir_lupus.sdtm._terms import load_sdtm_terms
from fhir_lupus.sdtm._xpt import write_xpt
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import MappingPack

__all__ = ["OutputFormat", "SdtmResult", "build_datasets", "sdtm_trial"]

OutputFormat = Literal["xpt", "json", "both"]
OUTPUTS = {".json", ".xpt", ".xml", ".md"}  # what an output directory may hold to be replaced
DEFINE = "define.xml"
GUIDE = "reviewers-guide.md"


@dataclass
class SdtmResult:
    out_dir: Path
    datasets: dict[str, int]  # domain -> records written
    files: list[Path] = field(default_factory=list)
    rejected: int = 0  # rows the loader refused (written only with allow_rejects)


def domain_specs(pack: MappingPack) -> list[DomainSpec]:
    """The domains of mappings/sdtm/trial.yaml, in its order, each read and checked."""
    design = pack.load(TrialDesign, "sdtm/trial.yaml")
    return [pack.load(DomainSpec, f"sdtm/domains/{name}.yaml") for name in design.domains]


def build_datasets(ctx: SdtmContext) -> list[Dataset]:
    """Every domain's dataset; DM first, whose RFSTDTC gives every other domain its study days."""
    built: list[Dataset] = []
    starts: dict[str, str] = {}
    terms = load_sdtm_terms(ctx.pack)
    for spec in domain_specs(ctx.pack):
        try:
            source = ROW_SOURCES[spec.rows]
        except KeyError:
            raise FhirLupusError(
                f"mappings/sdtm/domains/{spec.domain.lower()}.yaml: no row source {spec.rows!r}"
            ) from None
        rows = ({"study": ctx.study_id, **row} for row in source(ctx))
        dataset = build_dataset(spec, rows, starts, terms.submission_value)
        if spec.domain == "DM":
            starts = {str(r["USUBJID"]): str(r.get("RFSTDTC") or "") for r in dataset.records}
        built.append(dataset)
    return built


def sdtm_trial(
    trial: TrialSource,
    out_dir: Path,
    *,
    settings: Settings | None = None,
    output: OutputFormat = "both",
    key: RegistryKey | None = None,
    allow_rejects: bool = False,
    created: datetime | None = None,
) -> SdtmResult:
    """Write the trial's SDTM datasets to ``out_dir`` (Dataset-JSON 1.1 and/or XPT v5), replacing an earlier output.
    RejectedRows when the loader refused rows, unless ``allow_rejects``; with ``key``, USUBJID and dates as
    `registry package` de-identifies them."""
    settings = settings or Settings.default()
    data = trial.whole()
    rejected = sum(trial.report.rejected.values())
    if rejected and not allow_rejects:
        raise RejectedRows(rejected, "SDTM datasets not written")
    ctx = SdtmContext(data, settings.pack, key, trial.report)
    datasets = build_datasets(ctx)
    _refuse_wrong_values(datasets, ctx)
    created = created or datetime.now(UTC)
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = scratch_dir(out_dir.parent, out_dir.name)
    try:
        files = list(_write(datasets, staging, output, ctx, created))
        files += _describe(datasets, staging, output, ctx, created, rejected)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        publish(staging, out_dir)
    finally:
        discard(staging)
    return SdtmResult(out_dir, {d.name: len(d.records) for d in datasets}, [out_dir / f.name for f in files], rejected)


def _write(
    datasets: Iterable[Dataset], directory: Path, output: OutputFormat, ctx: SdtmContext, created: datetime
) -> Iterable[Path]:
    for dataset in datasets:
        name = dataset.name.lower()
        if output in ("json", "both"):
            originator = ctx.pack.site.organization.name
            yield write_dataset_json(
                dataset, directory / f"{name}.json", study_oid=ctx.study_id, created=created, originator=originator
            )
        if output in ("xpt", "both"):
            yield write_xpt(dataset, directory / f"{name}.xpt")


def _describe(
    datasets: list[Dataset], directory: Path, output: OutputFormat, ctx: SdtmContext, created: datetime, rejected: int
) -> list[Path]:
    """reviewers-guide.md and define.xml, whose dataset leaf is the XPT file when one is written (the format FDA
    takes), else the Dataset-JSON file."""
    terms = terminology(ctx.pack)
    suffixes = {"xpt": [".xpt"], "json": [".json"], "both": [".xpt", ".json"]}[output]
    files = {d.name: [f"{d.name.lower()}{suffix}" for suffix in suffixes] for d in datasets}
    study = ctx.trial.study
    facts = GuideFacts(study, created, files, keyed=ctx.key is not None, rejected=rejected)
    guide = write_guide(datasets, directory / GUIDE, facts, terms, ctx.pack)
    described = DefineStudy(
        ctx.study_id,
        study.title,
        ctx.pack.site.organization.name,
        created,
        {name: names[0] for name, names in files.items()},
        guide=GUIDE,
    )
    return [guide, write_define(datasets, directory / DEFINE, described, terms)]


def _refuse_wrong_values(datasets: Iterable[Dataset], ctx: SdtmContext) -> None:
    """The project's own check of what CORE does not check (a value outside its codelist, a unit that is not a
    CDISC UNIT term, a date that is not ISO 8601: ``check_values``), before anything is written: a dataset that
    fails it is a bug of a mapping, never published."""
    terms = load_sdtm_terms(ctx.pack)
    problems = [problem for d in datasets for problem in check_values(d.name, d.records, terms=terms)]
    if problems:
        shown = "; ".join(str(problem) for problem in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise FhirLupusError(f"SDTM datasets not written: {len(problems)} value(s) fail mappings/sdtm: {shown}{more}")


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to replace a directory that holds anything but an earlier SDTM output (nothing is lost)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FhirLupusError(f"{out_dir}: exists and is not a directory")
    foreign = [p.name for p in out_dir.iterdir() if p.suffix not in OUTPUTS and not p.name.startswith("core-report")]
    if foreign:
        raise FhirLupusError(
            f"{out_dir}: holds files that are not SDTM output ({', '.join(sorted(foreign)[:3])}); choose another -o"
        )
