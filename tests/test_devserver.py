"""scripts/fhir-server's servers: ``hapi-subscriptions`` is the HAPI jar with REST-hook subscriptions switched on.

The switch lives in servers/hapi (HAPI_SUBSCRIPTIONS, read by HapiTestServer); these tests pin that devserver
turns it on for that server only, on its own port, and that the CLI knows the name. No JVM is started here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fhir_lupus import devserver


class _Started:
    """Stands in for the run.sh process: records how it was started and never exits."""

    calls: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, command: list[str], **options: Any) -> None:
        _Started.calls.append({"command": command, **options})
        self.pid = 4242
        self.returncode = None

    def poll(self) -> None:
        return None


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    _Started.calls = []
    monkeypatch.setattr(subprocess, "Popen", _Started)
    monkeypatch.setattr(devserver, "_answers", lambda url: True)
    return _Started.calls


def test_hapi_subscriptions_runs_hapis_run_sh_with_the_switch_on_and_a_small_heap(
    started: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAPI_PORT", "1")  # ignored: the port is run.sh's argument
    handle = devserver.start("hapi-subscriptions", state_dir=tmp_path)
    assert handle.url == "http://127.0.0.1:18083/fhir"
    [call] = started
    script = devserver.repo_root() / "servers" / "hapi" / "run.sh"
    assert call["command"] == ["bash", str(script), "18083"]
    assert call["env"]["HAPI_SUBSCRIPTIONS"] == "rest-hook"
    assert call["env"]["HAPI_HEAP"] == "512m"
    assert call["env"]["HAPI_PORT"] == "1"  # the rest of the caller's environment is passed on
    state = json.loads((tmp_path / "hapi-subscriptions.json").read_text())
    assert state["url"] == handle.url


def test_plain_hapi_gets_no_switch(
    started: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HAPI_SUBSCRIPTIONS", raising=False)
    monkeypatch.delenv("HAPI_HEAP", raising=False)
    handle = devserver.start("hapi", 18099, state_dir=tmp_path)
    assert handle.url == "http://127.0.0.1:18099/fhir"
    [call] = started
    assert call["command"][-2:] == [str(devserver.repo_root() / "servers" / "hapi" / "run.sh"), "18099"]
    assert "HAPI_SUBSCRIPTIONS" not in call["env"] and "HAPI_HEAP" not in call["env"]


def test_a_variant_outside_a_checkout_names_its_base_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_LUPUS_ROOT", str(tmp_path))
    with pytest.raises(devserver.CheckoutMissing, match=r"servers/hapi/run\.sh not found"):
        devserver.launch("hapi-subscriptions", 18083)


def test_fhir_server_url_knows_hapi_subscriptions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FHIR_LUPUS_ROOT", str(tmp_path))
    assert devserver.main(["url", "hapi-subscriptions"]) == 1  # not running: no state file
    (tmp_path / ".fhir-servers").mkdir()
    url = "http://127.0.0.1:18083/fhir"
    (tmp_path / ".fhir-servers" / "hapi-subscriptions.json").write_text(json.dumps({"url": url, "pid": 1, "log": ""}))
    assert devserver.main(["url", "hapi-subscriptions"]) == 0
    assert capsys.readouterr().out.strip() == url
