"""Settings: one value carries the mapping pack, the validation path and the connection (fhir_lupus/settings.py).

Pinned here: no ``mappings_dir`` threaded through a signature and no ContextVar left in the library; a pack read
once per ``Settings`` however many operations use it; ``--strict-validation`` reaching map, push and the registry
package through ``Settings``; ``Connection.open`` refusing what it cannot use with today's messages; the
connection options declared once for push, pull and registry submit.
"""

from __future__ import annotations

import ast
import pickle
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakefhir import BASE, FakeFhir
from typer.testing import CliRunner

from fhir_lupus import pipeline, validation
from fhir_lupus.cli import app
from fhir_lupus.client import BearerAuth, Connection, FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pipeline import map_trial
from fhir_lupus.push import push_trial
from fhir_lupus.registry import RegistryKey, package_trial
from fhir_lupus.registry import _package as registry_package
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import _pack, default_mappings_dir, load_fhir_codes, load_pack

PACKAGE = Path(__file__).resolve().parents[1] / "fhir_lupus"
KEY = RegistryKey(b"settings-test-key-0123456789abcdef")
runner = CliRunner()


def _sources() -> Iterator[tuple[Path, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.read_text(encoding="utf-8")


def test_no_parameter_is_named_mappings_dir() -> None:
    """The mappings travel in a Settings (public operations) or a MappingPack (the layers under them)."""
    found = []
    for path, text in _sources():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                arguments = node.args
                names = [a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)]
                if "mappings_dir" in names:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
        if re.search(r"\bmappings_dir\b", text):
            found.append(f"{path.relative_to(PACKAGE)}: mentions mappings_dir")
    assert found == []


def test_no_context_variable_carries_settings() -> None:
    assert [path.name for path, text in _sources() if re.search(r"\bContextVar\b|\bcontextvars\b", text)] == []


@pytest.fixture
def own_pack(tmp_path: Path) -> Path:
    """A copy of the mappings no other test has read: what is read from it, this test reads."""
    root = tmp_path / "mappings"
    shutil.copytree(default_mappings_dir(), root)
    return root


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every mapping file read (YAML), by path."""
    counts: Counter[str] = Counter()
    real = _pack.read_yaml

    def counted(path: Path) -> Any:
        counts[str(path)] += 1
        return real(path)

    for module in (_pack, validation):
        monkeypatch.setattr(module, "read_yaml", counted)
    monkeypatch.setattr("fhir_lupus.registry._rules.read_yaml", counted)
    return counts


def test_a_pack_is_read_once_per_settings_however_often_it_is_used(
    own_pack: Path, reads: Counter[str], dataset: Callable[..., Path], tmp_path: Path
) -> None:
    settings = Settings.from_mappings(own_pack)
    for number in range(2):
        trial = TrialSource.directory(dataset(), command="map", settings=settings)
        map_trial(trial, settings=settings)
        package_trial(trial, tmp_path / f"package{number}", KEY, settings=settings)
    mine = {path: count for path, count in reads.items() if path.startswith(str(own_pack.resolve()))}
    assert len(mine) > 10 and set(mine.values()) == {1}, mine
    assert Settings.from_mappings(own_pack).pack is settings.pack  # and once per process and directory


def test_a_hot_load_is_a_dictionary_look_up(own_pack: Path, reads: Counter[str]) -> None:
    pack = load_pack(own_pack)
    first = load_fhir_codes(pack)
    assert all(load_fhir_codes(pack) is first for _ in range(100))
    assert reads[str(own_pack.resolve() / "fhir" / "codes.yaml")] == 1


def test_a_pack_pickles_without_what_it_read(own_pack: Path) -> None:
    """A chunk kept on disk, a Spark task: the pack goes without the files it has parsed, and is the same pack."""
    pack = load_pack(own_pack)
    load_fhir_codes(pack)
    again = pickle.loads(pickle.dumps(pack))
    assert again == pack and load_fhir_codes(again) == load_fhir_codes(pack)


def test_default_settings_follow_the_environment(own_pack: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FHIR_LUPUS_MAPPINGS", raising=False)
    checkout = Settings.default()
    assert Settings.default() is checkout and checkout.validation == "fast" and checkout.connection is None
    monkeypatch.setenv("FHIR_LUPUS_MAPPINGS", str(own_pack))
    assert Settings.default().pack.root == own_pack.resolve()
    monkeypatch.delenv("FHIR_LUPUS_MAPPINGS")
    assert Settings.default() is checkout


def test_a_validation_that_is_no_path_is_refused() -> None:
    with pytest.raises(ValueError, match="fast"):
        Settings(validation="quick")  # type: ignore[arg-type]


@pytest.fixture
def modes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The validation path of every validate_resource call of the map (pipeline) and of the registry package."""
    seen: list[str] = []
    real = validation.validate_resource

    def spy(resource: dict[str, Any], version: Any = "R4", **options: Any) -> None:
        seen.append(options["validation"])
        real(resource, version, **options)

    monkeypatch.setattr(pipeline, "validate_resource", spy)
    monkeypatch.setattr(registry_package, "validate_resource", spy)
    return seen


@pytest.mark.parametrize("mode", ["fast", "strict"])
def test_the_validation_of_the_settings_reaches_map_push_and_registry(
    mode: str, modes: list[str], fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path
) -> None:
    settings = Settings(validation=mode)  # type: ignore[arg-type]
    map_trial(TrialSource.directory(dataset()), settings=settings)
    mapped = len(modes)
    with FhirClient(BASE) as client, Journal(tmp_path / "journal.sqlite") as journal:
        push_trial(TrialSource.directory(dataset()), client, journal, source="test", settings=settings)
    pushed = len(modes) - mapped
    package_trial(TrialSource.directory(dataset()), tmp_path / "package", KEY, settings=settings)
    assert mapped > 0 and pushed == mapped and len(modes) > 3 * mapped
    assert set(modes) == {mode}


class TestConnection:
    def test_incomplete_smart_settings_name_the_options(self) -> None:
        with pytest.raises(ValueError, match="needs --smart-client-id and --smart-key"):
            Connection("https://fhir.test/r4", smart_client_id="lupus").open()

    def test_an_unknown_algorithm_is_refused(self, tmp_path: Path) -> None:
        key = tmp_path / "k.pem"
        key.write_text("not read before the algorithm is checked")
        with pytest.raises(ValueError, match="--smart-alg must be RS384 or ES384"):
            Connection("https://fhir.test/r4", smart_client_id="lupus", smart_key=key, smart_alg="HS256").open()

    def test_the_key_file_is_read_when_the_client_is_made(self, tmp_path: Path) -> None:
        missing = tmp_path / "missing.pem"
        connection = Connection("https://fhir.test/r4", smart_client_id="lupus", smart_key=missing)
        with pytest.raises(ValueError, match=f"--smart-key {re.escape(str(missing))}: No such file"):
            connection.open()

    def test_a_server_that_is_not_http_is_refused(self) -> None:
        with pytest.raises(ValueError, match="base URL must be http"):
            Connection("ftp://fhir.test/r4").open()

    def test_secrets_stay_out_of_its_repr_and_a_token_is_sent_as_bearer(self) -> None:
        connection = Connection("https://fhir.test/r4", token="s3cret-token", basic="user:s3cret-password")
        assert "s3cret" not in repr(connection)
        with connection.open() as client:
            assert client.base_url == "https://fhir.test/r4/"
            assert isinstance(client._http.auth, BearerAuth)

    def test_the_cli_exits_2_with_the_message(self, tmp_path: Path) -> None:
        result = runner.invoke(
            app,
            ["pull", "--server", "https://fhir.test/r4", "-o", str(tmp_path / "l.csv"), "--smart-client-id", "x"],
        )
        assert result.exit_code == 2
        assert "needs --smart-client-id and --smart-key" in " ".join(result.output.split())


CONNECTION_OPTIONS = (
    "--server",
    "--token",
    "--basic",
    "--smart-client-id",
    "--smart-key",
    "--smart-token-url",
    "--smart-alg",
    "--smart-kid",
    "--ca-bundle",
    "--timeout",
)


def _options(command: list[str]) -> dict[str, str]:
    """Each connection option of ``command``'s --help, with the help text and default that follow it (the lines
    it is wrapped over joined: the help wraps to the terminal's width)."""
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    entries: list[str] = []
    for line in result.output.splitlines():
        if re.match(r"\s{2}(\* )?-", line) or not entries or not line.startswith("   "):
            entries.append(line)
        else:
            entries[-1] += " " + line
    found = {}
    for entry in (" ".join(entry.replace("│", " ").split()) for entry in entries):
        for option in CONNECTION_OPTIONS:
            if re.match(rf"(\* )?{option}\b", entry):
                found[option] = entry
    return found


def test_push_pull_and_registry_submit_offer_the_same_connection_options() -> None:
    push, pull, submit = (_options(command) for command in (["push"], ["pull"], ["registry", "submit"]))
    assert sorted(push) == sorted(CONNECTION_OPTIONS)
    assert push == pull == submit
