"""Push memory benchmark: peak RSS of a push as it grows, this tree against an older one (issue 25, item 6).

Each push is one child process (its own VmHWM, bench_memory.PEAK_WRAPPER) against a fresh fake server of
tests/fakefhir.py served on loopback (``served(FakeFhir())``) in another child, so the server's store is not
counted. The resources are synthesized, not mapped (a million through the mappers and validation takes hours on
two cores, and the push is what is measured): one Organization, then subjects of one Patient and
``--per-subject - 1`` Observations each, pushed by ``push_resources`` as a trial streams (``ResourceGroups``,
lazily), and the audit digest made as ``push_trial`` makes it (``PushReport.content_digest``; in a tree before it,
``digest_of(PushReport.content_hashes)``). Batch bundles: the fake copies its whole store to roll back a
transaction, which a million resources make quadratic; the push's memory is the same either way.

``--old DIR``: a checkout of the tree to compare with (``git worktree add --detach DIR main``). Sizes run
smallest first, the two trees alternating, each push in a new process; prints one Markdown row per size.

    .venv/bin/python bench/bench_push_memory.py --sizes 10000,100000,1000000 --old /tmp/fhir-lupus-main
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import PEAK_WRAPPER, vm_hwm_mib

REPO = Path(__file__).resolve().parents[1]

SERVER = """
import re, sys
from urllib.parse import parse_qsl
sys.path.insert(0, sys.argv[1])
from fakefhir import FakeFhir, _subset, served

class Lean(FakeFhir):
    '''The fake as it is, but searches by identifier from an index (the fake scans every resource of the type
    for each search: a million make it quadratic) and no history log (pull's tests read it; a million copies
    would only fill this process).'''

    index = {}

    def _store(self, resource, resource_id):
        stored = super()._store(resource, resource_id)
        self.log.clear()
        kind = resource["resourceType"]
        for identifier in resource.get("identifier", []):
            self.index[kind, f"{identifier['system']}|{identifier['value']}"] = resource
        return stored

    def _searchset(self, resource_type, query):
        params = dict(parse_qsl(query))
        elements = params.pop("_elements", None)
        params.pop("_count", None)
        if set(params) != {"identifier"}:
            return super()._searchset(resource_type, query)
        wanted = {v.replace("\\\\,", ",") for v in re.split(r"(?<!\\\\),", params["identifier"])}
        found = [self.index[resource_type, key] for key in wanted if (resource_type, key) in self.index]
        entries = [{"resource": _subset(m, elements), "search": {"mode": "match"}} for m in found]
        return {"resourceType": "Bundle", "type": "searchset", "link": [], "entry": entries}

with served(Lean()) as url:
    print(url, flush=True)
    sys.stdin.read()  # until the bench closes it
"""

PUSH = """
import sys
from pathlib import Path
from fhir_lupus.audit import digest_of
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.push import PushOptions, ResourceGroups, push_resources

url, total, per_subject, journal_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
if sys.argv[5] == "off":  # the one Provenance of the push lists every target: measured apart (--provenance)
    import fhir_lupus.push._runner as runner
    runner._write_provenances = lambda *args, **kwargs: None
SYS = "urn:bench"

def res(kind, rid, **fields):
    return {"resourceType": kind, "id": rid, "identifier": [{"system": SYS, "value": rid}], **fields}

def groups():
    yield [res("Organization", "org", name="bench")]
    made, subject = 1, 0
    while made < total:
        size = min(per_subject, total - made)
        patient = res("Patient", f"p{subject}", managingOrganization={"reference": "Organization/org"})
        labs = [
            res("Observation", f"o{subject}-{n}", status="final", subject={"reference": f"Patient/p{subject}"},
                code={"coding": [{"system": SYS, "code": "lab"}]}, valueQuantity={"value": n % 97, "unit": "g/L"})
            for n in range(size - 1)
        ]
        yield [patient, *labs]
        made, subject = made + size, subject + 1

with FhirClient(url) as client, Journal(journal_path) as journal:
    report = push_resources(
        ResourceGroups(groups(), total), client, journal, source="bench", mapping_version="bench",
        options=PushOptions(strategy="batch"),
    )
    digest = getattr(report, "content_digest", None) or digest_of(report.content_hashes)
print(report.summary())
print("digest", digest)
print("tree", Path(sys.modules["fhir_lupus"].__file__).parent.parent)
"""


@contextmanager
def fake_server(work: Path) -> Iterator[str]:
    """A fresh fake FHIR server in its own process; yields its base URL."""
    script = work / "server.py"
    script.write_text(SERVER)
    process = subprocess.Popen(
        [sys.executable, str(script), str(REPO / "tests")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(60)


def push_once(tree: Path, size: int, per_subject: int, work: Path, provenance: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, the push's summary and digest) of one push of ``size`` resources."""
    script, journal, log = work / "push.py", work / f"journal-{size}.sqlite", work / f"push-{size}.log"
    script.write_text(PUSH)
    journal.unlink(missing_ok=True)
    with fake_server(work) as url, log.open("wb") as output:
        started = time.perf_counter()
        arguments = [url, str(size), str(per_subject), str(journal), provenance]
        code = subprocess.call(
            [sys.executable, "-c", PEAK_WRAPPER, str(script), *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(tree)},
            cwd=work,  # not a checkout: python -c puts the working directory first on sys.path, before PYTHONPATH
        )
        wall = time.perf_counter() - started
    text = log.read_text(errors="replace")
    if code != 0:
        raise RuntimeError(f"push of {size} in {tree} failed ({code}): see {log}")
    peak = vm_hwm_mib(log)
    lines = [line for line in text.splitlines() if line.startswith(("digest", f"{size} resources"))]
    return wall, peak or 0.0, "; ".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma list of resource counts")
    parser.add_argument("--per-subject", type=int, default=1000, help="resources of one subject (a window)")
    parser.add_argument("--old", type=Path, help="a checkout of the tree to compare with")
    parser.add_argument("--trees", default="this,old", help="comma list of this, old: the trees measured")
    parser.add_argument(
        "--provenance", choices=("on", "off"), default="off", help="off: the push's Provenance is not made or sent"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/fhir-lupus-bench-push-memory"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    trees = [("this tree", REPO)] + ([("old", args.old.resolve())] if args.old else [])
    trees = [(name, tree) for name, tree in trees if name.split()[0] in args.trees.split(",")]
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {platform.platform()} {os.cpu_count()} CPUs")
    print(f"# Provenance {args.provenance}, {args.per_subject} resources a subject")
    print("| resources | tree | peak RSS | wall time | load (1 min) | digest |")
    print("|---|---|---|---|---|---|")
    for number, size in enumerate(int(text) for text in args.sizes.split(",")):
        order = trees if number % 2 == 0 else trees[::-1]  # alternating: neither tree always runs on a warm disk
        for name, tree in order:
            load = os.getloadavg()[0]
            wall, peak, said = push_once(tree, size, args.per_subject, args.work, args.provenance)
            digest = said.rsplit("digest ", 1)[-1][:12]
            print(f"| {size:,} | {name} | {peak:.0f} MiB | {wall:.0f} s | {load:.2f} | {digest}… |", flush=True)


if __name__ == "__main__":
    main()
