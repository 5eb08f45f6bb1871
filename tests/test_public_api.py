"""The public surface: ``fhir_lupus.__all__`` is exactly what docs/api.md lists, and its three examples run.

As httpx's test_exported_members does, the names are pinned: adding or removing one is a decision that
docs/api.md records. The examples are executed against the in-memory FHIR server (tests/fakefhir.py), with
their first assignment line (where the data, the server and the work folder are) replaced by the test's own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fakefhir import BASE, FakeFhir

import fhir_lupus

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _documented_names() -> list[str]:
    text = API_DOC.read_text(encoding="utf-8")
    table = text[text.index("## The names") :]
    return sorted({name for row in table.splitlines()[3:] for name in re.findall(r"`([A-Za-z_]+)`", row.split("|")[2])})


def _examples() -> dict[str, str]:
    text = API_DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^## (.+?)\n.*?```python\n(.*?)```", text, re.S | re.M)
    return {title: code for title, code in blocks}


def test_all_is_sorted_and_equal_to_the_documented_names() -> None:
    assert fhir_lupus.__all__ == sorted(fhir_lupus.__all__, key=lambda n: (n[0].islower(), n))
    assert sorted(fhir_lupus.__all__) == _documented_names()


def test_every_name_is_importable_from_the_package_itself() -> None:
    namespace: dict[str, object] = {}
    exec("from fhir_lupus import *", namespace)
    assert sorted(name for name in namespace if not name.startswith("__")) == sorted(fhir_lupus.__all__)


def test_the_three_uses_have_an_example_of_ten_lines_or_so() -> None:
    examples = _examples()
    assert [title.split()[0] for title in examples] == ["Push", "Pull", "Build"]
    for code in examples.values():
        assert len([line for line in code.splitlines() if line.strip()]) <= 14
        assert re.search(r"^from fhir_lupus import (.+)$", code, re.M), "each example imports from fhir_lupus only"
        imported = re.findall(r"^from fhir_lupus import (.+)$", code, re.M)[0].split(", ")
        assert set(imported) <= set(fhir_lupus.__all__)


def _run(code: str, where: str, namespace: dict[str, object]) -> dict[str, object]:
    lines = code.splitlines()
    at = next(i for i, line in enumerate(lines) if re.match(r"^[A-Z_, ]+ = ", line))
    lines[at] = where
    exec(compile("\n".join(lines), str(API_DOC), "exec"), namespace)
    return namespace


def test_the_examples_push_pull_and_package_on_a_fhir_server(
    fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, work = dataset(), tmp_path / "work"
    work.mkdir()
    key_file = tmp_path / "key"
    key_file.write_text("a registry key long enough for the test, not a real one\n", encoding="utf-8")
    os.chmod(key_file, 0o600)
    examples = list(_examples().values())

    pushed = _run(
        examples[0], "DATA_DIR, SERVER, WORK = DATA, BASE, WORK_DIR", {"DATA": data_dir, "BASE": BASE, "WORK_DIR": work}
    )
    assert pushed["pushed"].complete and pushed["pushed"].created > 0  # type: ignore[attr-defined]
    assert fake.all("Patient") and fake.all("Observation")

    pulled = _run(examples[1], "SERVER, WORK = BASE, WORK_DIR", {"BASE": BASE, "WORK_DIR": work})
    labs = pulled["pulled"]
    assert labs.subjects > 0 and labs.rows and (work / "labs.csv").is_file()  # type: ignore[attr-defined]

    made = _run(
        examples[2],
        "DATA_DIR, REGISTRY, KEY_FILE, WORK = DATA, BASE, KEY, WORK_DIR",
        {"DATA": data_dir, "BASE": BASE, "KEY": key_file, "WORK_DIR": work},
    )
    assert made["made"].manifest["resources"] > 0  # type: ignore[attr-defined]
    assert made["submitted"].report.complete  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert "subjects" in out and "resources; the link table stays at the site" in out
