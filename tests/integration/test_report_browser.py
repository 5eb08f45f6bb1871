"""The investigator report as a reader sees it: opened in a real headless Chromium (Debian's, installed by the
session fixture when missing), every plot rendered, no console error, no network request, a screenshot taken.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support import REPO

from fhir_lupus import load_trial
from fhir_lupus.report import write_report
from fhir_lupus.source import TrialSource

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium dials out at start-up (updates, sync, field trials), which
# a closed network refuses; QUIC and the GPU are off for a headless loopback run.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's /usr/bin/chromium, installed by scripts/ensure-chromium when missing (apt-get, as root). A
    failed install fails the test with apt's output: a browser test that skips proves nothing."""
    run = subprocess.run(
        [str(REPO / "scripts" / "ensure-chromium")], capture_output=True, text=True, timeout=900, check=False
    )
    if run.returncode != 0 or not CHROMIUM.exists():
        pytest.fail(
            f"scripts/ensure-chromium failed (exit {run.returncode}); stdout:\n{run.stdout}\nstderr:\n{run.stderr}",
            pytrace=False,
        )
    return CHROMIUM


def test_report_renders_in_chromium(chromium: Path, subset: Callable[..., Path], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    data, _ = load_trial(subset(3))
    result = write_report(TrialSource.loaded(data), tmp_path / "report.html")
    assert len(result.figures) == 3 + 3  # three subjects, change from baseline, renal response, adverse events

    console_errors: list[str] = []
    failed: list[str] = []
    fetched: list[str] = []
    shot = tmp_path / "report.png"
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user data dir
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(f"{r.url[:80]}: {r.failure}"))
            page.on("request", lambda r: fetched.append(r.url[:80]))
            page.goto(result.html.resolve().as_uri(), wait_until="load")
            images = page.evaluate(
                """() => Array.from(document.images).map(img => ({
                    name: img.dataset.figure, complete: img.complete, width: img.naturalWidth}))"""
            )
            page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()

    rendered = [img for img in images if img["complete"] and img["width"] > 0]
    assert rendered == images, [img for img in images if img not in rendered]
    assert len(rendered) == len(result.figures)
    assert sorted(img["name"] for img in images) == sorted(path.name for path in result.figures)
    assert console_errors == []
    assert failed == []
    assert [url for url in fetched if not url.startswith(("file:", "data:"))] == []  # the page needs nothing
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 50_000
