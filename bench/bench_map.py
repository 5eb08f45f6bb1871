"""Benchmark: load + map + bundle the example dataset; prints seconds per stage and peak memory.

Map + validate is timed twice: in process (``workers=1``) and with validation in worker processes
(``--workers``, default one per CPU), which is what the issue compares with ``model_validate`` alone on the same
resources in one process. Run on demand (`make bench`); results are recorded in bench/README.md, never
asserted in tests. bench/bench_map_cli.py times ``fhir-lupus map`` end to end against another tree.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

from fhir_lupus import dumps, load_trial, map_trial, transaction_bundle
from fhir_lupus._workers import available_cpus
from fhir_lupus.model import LoadReport
from fhir_lupus.pipeline import stream_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.validation import _model, check_invariants

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nct00698191"


def run(
    data_dir: Path = EXAMPLE, fhir_version: str = "R4", validation: str = "fast", workers: int | None = None
) -> dict[str, float]:
    """One load + map + bundle of ``data_dir``, each stage timed; map + validate again with ``workers`` (None: one
    per CPU); then ``model_validate`` and the invariants alone on the mapped resources (the parts of map +
    validate, and the rate the issue compares with)."""
    workers = workers or available_cpus()
    version: Any = fhir_version
    started = time.perf_counter()
    data, report = load_trial(data_dir)
    loaded = time.perf_counter()
    settings = Settings.from_mappings(None, validation=validation)  # type: ignore[arg-type]
    result = map_trial(TrialSource.loaded(data, report), fhir_version=version, settings=settings)
    mapped = time.perf_counter()
    source = TrialSource.loaded(data, LoadReport())  # the same entities, a report of its own
    pooled = list(stream_trial(source, fhir_version=version, settings=settings, workers=workers))
    pooled_at = time.perf_counter()
    assert sum(len(batch.items) for batch in pooled) == len(result.resources)
    for item in result.resources:
        _model(version, item["resourceType"]).model_validate(item)
    models = time.perf_counter()
    for item in result.resources:
        check_invariants(item, version, validation=settings.validation)
    invariants = time.perf_counter()
    text = dumps(transaction_bundle(result.resources))
    bundled = time.perf_counter()
    return {
        "rows": sum(report.read.values()),
        "resources": len(result.resources),
        "load_s": loaded - started,
        "map_validate_s": mapped - loaded,
        "workers": workers,
        "map_validate_workers_s": pooled_at - mapped,
        "model_validate_s": models - pooled_at,
        "invariants_s": invariants - models,
        "bundle_s": bundled - invariants,
        "bundle_mb": len(text) / 1e6,
        "end_to_end_s": loaded - started + mapped - loaded + bundled - invariants,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir", nargs="?", type=Path, default=EXAMPLE)
    parser.add_argument("--fhir-version", choices=["R4", "R5"], default="R4")
    parser.add_argument("--validation", choices=["fast", "strict"], default="fast", help="strict: fhirpathpy only")
    parser.add_argument("--workers", type=int, default=None, help="for the second map + validate (default: CPUs)")
    parser.add_argument("--json", action="store_true", help="print the timings as one JSON object (run_all.py)")
    args = parser.parse_args()
    r = run(args.data_dir, args.fhir_version, args.validation, args.workers)
    if args.json:
        print(json.dumps(r))
        return
    resources = r["resources"]
    rest = r["map_validate_s"] - r["model_validate_s"] - r["invariants_s"]
    print(f"rows read          {r['rows']:.0f}")
    print(f"resources          {resources:.0f} (FHIR {args.fhir_version})")
    print(f"load + check       {r['load_s']:6.2f} s")
    print(f"map + validate     {r['map_validate_s']:6.2f} s  ({resources / r['map_validate_s']:.0f} resources/s)")
    alone = resources / r["model_validate_s"]
    print(f"  model_validate   {r['model_validate_s']:6.2f} s  ({alone:.0f} resources/s alone)")
    print(f"  invariants       {r['invariants_s']:6.2f} s  ({args.validation})")
    print(f"  mappers, rest    {rest:6.2f} s")
    pooled, workers = r["map_validate_workers_s"], r["workers"]
    print(f"map + validate     {pooled:6.2f} s  ({resources / pooled:.0f} resources/s, {workers:.0f} workers)")
    print(f"  vs model_validate alone: {r['model_validate_s'] / pooled:.2f}x")
    print(f"bundle + JSON      {r['bundle_s']:6.2f} s  ({r['bundle_mb']:.1f} MB)")
    print(f"peak RSS           {r['peak_mib']:6.0f} MiB")


if __name__ == "__main__":
    main()
