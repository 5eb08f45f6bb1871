"""Benchmark: load + map + bundle the example dataset; prints seconds per stage and peak memory.

Run on demand (`make bench`); results are recorded in bench/README.md, never asserted in tests.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from fhir_lupus import dumps, load_trial, map_trial, transaction_bundle
from fhir_lupus.validation import _model, check_invariants

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nct00698191"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir", nargs="?", type=Path, default=EXAMPLE)
    parser.add_argument("--fhir-version", choices=["R4", "R5"], default="R4")
    parser.add_argument("--validation", choices=["fast", "strict"], default="fast", help="strict: fhirpathpy only")
    args = parser.parse_args()

    started = time.perf_counter()
    data, report = load_trial(args.data_dir)
    loaded = time.perf_counter()
    result = map_trial(data, report, fhir_version=args.fhir_version, validation=args.validation)
    mapped = time.perf_counter()
    # the parts of map + validate, each timed again alone on the mapped resources
    for item in result.resources:
        _model(args.fhir_version, item["resourceType"]).model_validate(item)
    models = time.perf_counter()
    for item in result.resources:
        check_invariants(item, args.fhir_version, validation=args.validation)
    invariants = time.perf_counter()
    model_s, invariants_s = models - mapped, invariants - models
    text = dumps(transaction_bundle(result.resources))
    bundled = time.perf_counter()
    rows = sum(report.read.values())
    resources = len(result.resources)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows read          {rows}")
    print(f"resources          {resources} (FHIR {args.fhir_version})")
    print(f"load + check       {loaded - started:6.2f} s")
    print(f"map + validate     {mapped - loaded:6.2f} s  ({resources / (mapped - loaded):.0f} resources/s)")
    print(f"  model_validate   {model_s:6.2f} s  ({resources / model_s:.0f} resources/s alone)")
    print(f"  invariants       {invariants_s:6.2f} s  ({args.validation})")
    print(f"  mappers, rest    {mapped - loaded - model_s - invariants_s:6.2f} s")
    print(f"bundle + JSON      {bundled - mapped:6.2f} s  ({len(text) / 1e6:.1f} MB)")
    print(f"peak RSS           {peak_mib:6.0f} MiB")


if __name__ == "__main__":
    main()
