"""docs/benchmarks.md from bench/run_all.py's results: the targets of issue 25, then one section per step.

Every figure is a median of the run's rounds; a ratio is this tree's rate over its peer's or limit's (above 1:
this tree is faster). A step not run is left out of the page (its target reads "not measured"), so a partial
run never shows an old figure as new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ANALYSIS = Path(__file__).resolve().parent / "analysis.md"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def page(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `bench/run_all.py` (do not edit by hand; the last section comes from `bench/analysis.md`).",
        "",
        "- Runs: " + "; ".join(results.get("history", [])),
        f"- Machine: {m['host']}",
        f"- Python {m['python']}; {m['packages']}",
        "- Servers, started by the bench on loopback: HAPI FHIR JPA 8.8.0 (servers/hapi, H2 in memory), "
        "Medplum 5.2.13 (servers/medplum, in memory)",
        "- Every figure is a median; a ratio is this tree's rate over the other's (above 1: this tree is faster).",
        "",
    ]
    targets: list[tuple[str, str, str]] = []
    sections: list[str] = []
    for part in (_map, _push, _pull, _push_memory, _scale):
        part(results, targets, sections)
    lines += ["## Targets (issue 25)", "", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {status} |" for name, value, status in targets]
    lines += ["", *sections]
    if ANALYSIS.exists():
        lines += ["", ANALYSIS.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def _load(results: dict[str, Any], step: str) -> str:
    return str(results.get("loads", {}).get(step, "?"))


def _map(results: dict[str, Any], targets: list[tuple[str, str, str]], sections: list[str]) -> None:
    if "map" not in results or "cli" not in results["map"]:
        return
    r = results["map"]
    cli, parts = r["cli"], r["parts"]
    wall = cli["wall"]
    gain = wall["baseline"] / wall["workers"]
    pooled = parts["model_validate_s"] / parts["map_validate_workers_s"]
    alone_rate = parts["resources"] / parts["model_validate_s"]
    targets += [
        (
            f"map: `fhir-lupus map` end to end at 1.4x the tree of {r['baseline']}",
            f"{gain:.2f}x",
            verdict(gain >= 1.4),
        ),
        ("map: map + validate (workers) at 1.0x `model_validate` alone", f"{pooled:.2f}x", verdict(pooled >= 1.0)),
    ]
    sections += [
        "## 1. Map and validate (item 3)",
        "",
        f"`bench/bench_map_cli.py`: `fhir-lupus map` of the example ({parts['resources']:.0f} resources) end to end, "
        f"a child process each, rotating, {len(cli['runs']['workers'])} rounds; baseline = commit {r['baseline']} "
        f"(`git archive`, the same virtualenv). Load average (1 min) before each round and after: "
        + ", ".join(f"{x:.2f}" for x in cli["loads"])
        + ".",
        "",
        "| | wall | CPU (with workers) | of which the parent | ratio to the baseline |",
        "|---|---|---|---|---|",
    ]
    for name in wall:
        sections.append(
            f"| {name} | {wall[name]:.2f} s | {cli['cpu'][name]:.2f} s | {cli['parent'][name]:.2f} s "
            f"| {wall['baseline'] / wall[name]:.2f} |"
        )
    sections += [
        "",
        f"The outputs are {'byte-identical' if cli['same_bytes'] else '**different**'}.",
        "",
        "In process (`bench/bench_map.py`, a child each round), on the same resources:",
        "",
        "| stage | seconds | rate |",
        "|---|---|---|",
        f"| load + check | {parts['load_s']:.2f} s | |",
        f"| map + validate, in process | {parts['map_validate_s']:.2f} s "
        f"| {parts['resources'] / parts['map_validate_s']:.0f}/s |",
        f"| map + validate, {parts['workers']:.0f} workers | {parts['map_validate_workers_s']:.2f} s "
        f"| {parts['resources'] / parts['map_validate_workers_s']:.0f}/s |",
        f"| `model_validate` alone, in process | {parts['model_validate_s']:.2f} s | {alone_rate:.0f}/s |",
        f"| bundle + JSON ({parts['bundle_mb']:.1f} MB) | {parts['bundle_s']:.2f} s | |",
        "",
        "Map + validate with workers against `model_validate` alone, each round: "
        + ", ".join(f"{x:.2f}x" for x in r["pool_ratios"])
        + ".",
        "",
    ]


def _push(results: dict[str, Any], targets: list[tuple[str, str, str]], sections: list[str]) -> None:
    import bench_push  # the bench's own tables (their columns are its writers')

    rows = results.get("push") or []
    limited = [row for row in [*rows, *results.get("push_medplum", [])] if "limit_s" in row]
    for row in limited:
        ratio = row["limit_s"] / row["push_s"]
        where = row.get("server", "HAPI (fresh)").split(" ")[0]
        name = f"push {where} {row['subjects']} subjects: 0.9x the server's limit"
        targets.append((name, f"{ratio:.2f}x", verdict(ratio >= 0.9)))
    if rows and all("fhirpy_s" in row for row in rows):
        sections += [
            "## 2. Push into a fresh HAPI JPA (item 1)",
            "",
            "`bench/bench_push.py`: each writer on a HAPI started empty for it; load average at the start: "
            + _load(results, "push")
            + ".",
            "",
            bench_push.table(rows),
            "",
        ]
    if limited:
        sections += [
            "## 2. Push against the server's own limit (item 1)",
            "",
            "`bench/bench_push.py`'s limit writer: the client already knows everything, plain `PUT Type/id` in "
            "transactions, the study first, then three subjects' groups at a time; each measurement in a new process, "
            "on a HAPI started empty for it; Medplum: one started for the step, every round under systems and ids of "
            "its own.",
            "",
            bench_push.limit_table(limited),
            "",
        ]
    again = results.get("repush") or []
    for row in again:
        med = row["medians"]
        share = row["second_over_first"]
        targets.append(
            (
                f"push {row['subjects']} subjects: no-change push through the CLI under 10% of the first",
                f"{share:.1%}",
                verdict(share < 0.1),
            )
        )
        if row["subjects"] >= 20:
            targets.append(
                (
                    f"push {row['subjects']} subjects: no-change push through the CLI under 2 s",
                    f"{med['second']:.2f} s",
                    verdict(med["second"] < 2),
                )
            )
    if again:
        sections += [
            "## 2b. A push with nothing changed, through the CLI (item 2)",
            "",
            "`bench/bench_repush.py`: one HAPI started for the step; each round pushes the example cut to N subjects "
            "under systems of its own with `python -m fhir_lupus.cli push` (first push, empty journal), then again "
            "with the same journal; wall time includes start-up, imports, load and checks.",
            "",
            "| subjects | first push | second push | second / first | rounds (second) | load |",
            "|---|---|---|---|---|---|",
        ]
        sections += [
            f"| {row['subjects']} | {row['medians']['first']:.2f} s | {row['medians']['second']:.2f} s "
            f"| {row['second_over_first']:.1%} | {_seconds(row['runs'], 'second')} "
            f"| {row['load_before']:.2f} to {row['load_after']:.2f} |"
            for row in again
        ]
        sections.append("")


def _seconds(runs: list[dict[str, float]], name: str) -> str:
    return ", ".join(f"{run[name]:.2f}" for run in runs)


def _pull(results: dict[str, Any], targets: list[tuple[str, str, str]], sections: list[str]) -> None:
    rows = results.get("pull_cli")
    if not rows:
        return
    sections += [
        "## 3. Pull through the CLI against fhirpy's loop (item 4)",
        "",
        "`bench/bench_pull.py --cli`: 20 subjects pushed once, then rounds rotating a new process each: "
        "`fhir-lupus pull --since all` (fresh journal), fhirpy's loop in a child, and in this process "
        "(ResearchSubjects, then `Observation?subject=…&category=laboratory&_count=1000`, `fetch_all`).",
        "",
        "| server | labs | CLI pull | fhirpy in a child | fhirpy in process | ratio (in process / CLI) | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        med = row["medians"]
        ratio = row["ratio_in_process"]
        targets.append(
            (
                f"pull {row['server']} 20 subjects: CLI at 1.2x fhirpy's loop in process",
                f"{ratio:.2f}x",
                verdict(ratio >= 1.2),
            )
        )
        sections.append(
            f"| {row['server']} | {row['labs']:,} | {med['cli']:.2f} s | {med['fhirpy_child']:.2f} s "
            f"| {med['fhirpy_in_process']:.2f} s | {ratio:.2f} | {row['load_before']:.2f} to {row['load_after']:.2f} |"
        )
    sections.append("")


def _push_memory(results: dict[str, Any], targets: list[tuple[str, str, str]], sections: list[str]) -> None:
    rows = results.get("push_memory")
    if not rows:
        return
    off = [row for row in rows if row["provenance"] == "off"]
    growth = off[-1]["peak_mib"] - off[0]["peak_mib"]
    targets.append(
        (
            f"push memory flat ({off[0]['resources']:,} to {off[-1]['resources']:,} resources, audit digest)",
            f"+{growth:.0f} MiB",
            verdict(growth < 0.1 * off[0]["peak_mib"] + 10),
        )
    )
    sections += [
        "## 4. Push memory (item 6)",
        "",
        "`bench/bench_push_memory.py`: synthesized resources (1,000 a subject) pushed to the fake server in a child "
        "process each, peak RSS its VmHWM; with and without the push's Provenance.",
        "",
        "| resources | Provenance | peak RSS | wall | load |",
        "|---|---|---|---|---|",
    ]
    sections += [
        f"| {row['resources']:,} | {row['provenance']} | {row['peak_mib']:.0f} MiB | {row['seconds']:.0f} s "
        f"| {row['load']:.2f} |"
        for row in rows
    ]
    sections.append("")


def _scale(results: dict[str, Any], targets: list[tuple[str, str, str]], sections: list[str]) -> None:
    scale = results.get("scale")
    if not scale:
        return
    worst = max(row["peak_mib"] for row in scale)
    targets.append(("map memory: under 500 MB at every scale", f"{worst:.0f} MiB at most", verdict(worst < 500)))
    sections += [
        "## 5. Scale: `fhir-lupus map --format ndjson` as the trial grows",
        "",
        "`bench/bench_memory.py` (`bench/scale_example.py` makes the data): one child process each, peak RSS its "
        "VmHWM (`/proc/self/status`, printed at exit).",
        "",
        "| case | size | wall time | peak RSS | resources/s | load avg |",
        "|---|---|---|---|---|---|",
    ]
    for row in scale:
        count = int(str(row["size"]).split(", ")[1].split(" ")[0].replace(",", ""))
        sections.append(
            f"| {row['case']} | {row['size']} | {row['seconds']:.1f} s | {row['peak_mib']:.0f} MiB "
            f"| {count / row['seconds']:.0f} (Observations) | {row['load']:.1f} |"
        )
    sections.append("")
