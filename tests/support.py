"""Paths the tests share (a module of its own: conftest modules must not be imported by name)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "nct00698191"
