"""Build a de-identified registry package of a trial and, optionally, submit it: a script to adapt.

    export FHIR_LUPUS_REGISTRY_KEY=...          # or put the key in a file only you can read (chmod 600)
    python examples/registry_submission.py examples/nct00698191 out/registry [--key-file FILE] [--server URL]

The package (one NDJSON file per resource type, manifest.json, validation.json) is what the registry receives;
out/registry.link.csv (pseudonym <-> subject id, and each subject's date shift) stays at the site. What is
removed, re-keyed, shifted and generalised is data: mappings/registry/deidentification.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.registry import load_key, package_trial, submit_package
from fhir_lupus.source import TrialSource


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="trial CSV directory (docs/csv-layout.md)")
    parser.add_argument("package_dir", type=Path, help="where the package is written")
    parser.add_argument("--key-file", type=Path, help="registry key file (mode 600); else $FHIR_LUPUS_REGISTRY_KEY")
    parser.add_argument("--server", help="submit the package to this FHIR base URL")
    parser.add_argument("--journal", type=Path, default=Path("registry-journal.sqlite"))
    args = parser.parse_args()

    key = load_key(args.key_file)  # refuses a key file others can read; the key is never written anywhere
    with TrialSource.directory(args.data_dir) as trial:  # loaded, checked and screened a chunk at a time
        report = trial.check()
        if report.rejects:
            for reject in report.rejects:
                print(f"rejected {reject}", file=sys.stderr)
            return 1
        made = package_trial(trial, args.package_dir, key)
    print(f"package {made.directory}: {made.manifest['resources']} resources, key id {key.key_id}")
    print(f"link table (keep it at the site): {made.link_table}")
    if made.problems:
        print(f"{len(made.problems)} resources do not validate: see validation.json", file=sys.stderr)
        return 1
    if args.server:
        with FhirClient(args.server) as client, Journal(args.journal) as journal:
            submitted = submit_package(args.package_dir, client, journal)
        print(submitted.report.summary())
        return 0 if submitted.report.complete else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
