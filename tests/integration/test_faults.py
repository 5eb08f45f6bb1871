"""Faults between the client and a real server: nothing lost, nothing duplicated, the journal agrees.

A fault-injecting proxy (tests/faultproxy.py) sits between fhir_lupus and the real server and fails one
exchange at a chosen point: a 503, a 429 with Retry-After, an answer slower than the client's timeout, the
connection reset after the server committed a transaction. The push is also killed with SIGKILL midway. After
a re-run every business key is on the server exactly once, under the id the journal holds, with the content
the journal hashed (the dry run finds everything unchanged). The counts are printed at the end of the run.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy, Request

from fhir_lupus import load_trial
from fhir_lupus.bundle import business_key, identifiers
from fhir_lupus.client import FhirClient, RetryPolicy
from fhir_lupus.journal import Journal
from fhir_lupus.pipeline import map_trial
from fhir_lupus.pull import pull_study
from fhir_lupus.pull._roundtrip import compare_round_trip
from fhir_lupus.push import PushOptions, dry_run_trial, push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import LabCatalogue, load_pack

pytestmark = pytest.mark.integration
TIMEOUT = 8.0  # the client's per-request timeout behind the proxy (a loaded machine's HAPI needs the margin)


def nth_transaction(n: int) -> Callable[[Request], bool]:
    """Matches the n-th transaction POST (counting from 1) and every one after it, until the rule is used up."""
    seen = {"count": 0}

    def match(request: Request) -> bool:
        if request.method != "POST" or request.path.rstrip("/") != "/fhir":
            return False
        seen["count"] += 1
        return seen["count"] >= n

    return match


def nth_lab_search(n: int) -> Callable[[Request], bool]:
    """Matches the n-th Observation search (a pull's page), and the ones after it until the rule is used up."""
    seen = {"count": 0}

    def match(request: Request) -> bool:
        if request.method != "GET" or not request.path.startswith("/fhir/Observation"):
            return False
        seen["count"] += 1
        return seen["count"] >= n

    return match


Where = Callable[[Request], bool]
FAULTS: dict[str, Callable[[FaultProxy, Where], Any]] = {
    "503 twice": lambda proxy, where: proxy.respond(503, body=b"maintenance", where=where, times=2),
    "429 Retry-After 1": lambda proxy, where: proxy.respond(429, {"Retry-After": "1"}, where=where),
    "answer slower than the timeout": lambda proxy, where: proxy.delay(TIMEOUT + 3, where=where),
    "reset after the server committed": lambda proxy, where: proxy.reset_after_forward(where=where),
}


@pytest.fixture
def proxy(server_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(server_url.rsplit("/fhir", 1)[0]) as running:
        yield running


def census(client: FhirClient, resources: list[dict[str, Any]], journal: Journal) -> tuple[int, int, int]:
    """(lost, duplicated, journal disagreeing) over every resource's business key, asked of the server itself.

    A type the server cannot search by its key (AdverseEvent has no ``identifier`` parameter) is asked by ``_id``:
    push writes such a type by PUT to our id, so that id is where it must be, once.
    """
    wanted: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        wanted.setdefault(resource["resourceType"], []).append(resource)
    caps = client.capabilities()
    found: dict[tuple[str, str], list[str]] = {}
    for resource_type, group in wanted.items():
        parameter = "url" if resource_type == "CodeSystem" else "identifier"
        if not caps.searches(resource_type, parameter):
            parameter = "_id"
        for start in range(0, len(group), 40):
            chunk = group[start : start + 40]
            part = {business_key(r) for r in chunk}
            values = [r["id"] for r in chunk] if parameter == "_id" else sorted(part)
            for match in client.search(resource_type, {parameter: ",".join(values), "_count": "200"}):
                carried = (
                    [match.get("url")]
                    if parameter == "url"
                    else [f"{i.get('system')}|{i.get('value')}" for i in identifiers(match)]
                )
                for key in set(carried) & part:
                    found.setdefault((resource_type, key), []).append(match["id"])
    counts = Counter(len(found.get((r["resourceType"], business_key(r)), [])) for r in resources)
    recorded = journal.entries(client.base_url)
    disagreeing = sum(
        1
        for r in resources
        if (entry := recorded.get((r["resourceType"], business_key(r)))) is None
        or found.get((r["resourceType"], business_key(r))) != [entry.server_id]
    )
    return counts[0], sum(n for size, n in counts.items() if size > 1), disagreeing


@pytest.mark.parametrize("fault", list(FAULTS))
def test_push_and_pull_through_a_fault(
    fault: str,
    proxy: FaultProxy,
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
    fault_result: Callable[[str], None],
) -> None:
    data, report = load_trial(subset(1), pack=isolated_settings.pack)
    resources = map_trial(TrialSource.loaded(data, report), settings=isolated_settings).resources
    rule = FAULTS[fault](proxy, nth_transaction(2))
    retry = RetryPolicy(attempts=4, base_delay=0.2, max_delay=2.0)
    with (
        Journal(tmp_path / "journal.sqlite") as journal,
        FhirClient(proxy.base + "/fhir", timeout=TIMEOUT, retry=retry) as faulty,
    ):
        pushed = push_trial(
            TrialSource.loaded(data, report),
            faulty,
            journal,
            source="test",
            options=PushOptions(chunk_size=50),
            settings=isolated_settings,
        )
        assert rule.fired >= 1, f"the fault never fired: {proxy.events[-3:]}"
        assert pushed.problems == [] and pushed.provenance
        again = push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        assert again.written == 0 and again.unchanged == len(resources)
        lost, duplicated, disagreeing = census(client, resources, journal)
        state = dry_run_trial(TrialSource.loaded(data, report), client, settings=isolated_settings)
        fault_result(
            f"{client.base_url} push, {fault}: fired {rule.fired}x; {len(resources)} resources: "
            f"lost {lost}, duplicated {duplicated}, journal disagreeing {disagreeing}"
        )
        assert (lost, duplicated, disagreeing) == (0, 0, 0)
        assert state.counts == {"unchanged": len(resources)}
        provenances = list(client.search("Provenance", {"_tag": f"{_push_tag(isolated_mappings)}|{pushed.push_id}"}))
        assert len(provenances) == 1  # the Provenance was not written twice either

        pull_rule = FAULTS[fault](proxy, nth_lab_search(2))
        pulled = pull_study(faulty, journal, data.study, since=None, settings=isolated_settings)
        trip = compare_round_trip(data, pulled.rows, LabCatalogue(load_pack(isolated_mappings)))
        fault_result(
            f"{client.base_url} pull, {fault} on a lab search: fired {pull_rule.fired}x; {len(pulled.rows)} rows: "
            f"missing {len(trip.missing)}, different {len(trip.different)}, extra {len(trip.extra)}"
        )
        assert pull_rule.fired >= 1 and trip.exact and pulled.total_rows == len(data.labs) + len(data.treg)


def test_push_killed_with_sigkill_midway_resumes_without_loss_or_duplicates(
    server_url: str,
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
    fault_result: Callable[[str], None],
) -> None:
    data_dir = subset(1, first=1)
    journal_path = tmp_path / "journal.sqlite"
    command = [
        sys.executable,
        "-m",
        "fhir_lupus.cli",
        "push",
        str(data_dir),
        "--server",
        server_url,
        "--journal",
        str(journal_path),
        "--chunk-size",
        "20",
        "--mappings",
        str(isolated_mappings),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if _journal_rows(journal_path) >= 60:  # a few chunks confirmed: kill it in the middle of the rest
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the push finished before it could be killed"
    data, report = load_trial(data_dir, pack=isolated_settings.pack)
    resources = map_trial(TrialSource.loaded(data, report), settings=isolated_settings).resources
    partial = _journal_rows(journal_path)
    assert 60 <= partial < len(resources)
    with Journal(journal_path) as journal:
        assert [status for _, status, _ in journal.pushes(client.base_url)] == ["running"]
        resumed = push_trial(
            TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings
        )
        assert resumed.complete and resumed.written + resumed.unchanged == len(resources)
        assert resumed.earlier_provenance  # the killed push's writes get their Provenance
        lost, duplicated, disagreeing = census(client, resources, journal)
    fault_result(
        f"{client.base_url} push killed (SIGKILL) after {partial} journaled, resumed: {len(resources)} resources: "
        f"lost {lost}, duplicated {duplicated}, journal disagreeing {disagreeing}"
    )
    assert (lost, duplicated, disagreeing) == (0, 0, 0)


def _push_tag(mappings: Path) -> str:
    return load_pack(mappings).identifier_system("push", study="")


def _journal_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM resource").fetchone()[0])
    except sqlite3.Error:
        return 0
