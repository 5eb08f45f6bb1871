"""Where the mappings directory is: FHIR_LUPUS_MAPPINGS, the checkout's mappings/, or the copy a wheel carries."""

from __future__ import annotations

import functools
import importlib.resources
import os
from pathlib import Path

from fhir_lupus.errors import MappingError

__all__ = ["checkout_mappings_dir", "default_mappings_dir", "packaged_mappings_dir", "resolved_root"]


def checkout_mappings_dir() -> Path | None:
    """The repository's top-level mappings/ when the package runs from a checkout (beside pyproject.toml)."""
    root = Path(__file__).resolve().parents[2]
    return root / "mappings" if (root / "pyproject.toml").is_file() and (root / "mappings").is_dir() else None


def packaged_mappings_dir() -> Path:
    """The copy of mappings/ that a wheel carries as package data (fhir_lupus/_mappings, see setup.py)."""
    packaged = importlib.resources.files("fhir_lupus") / "_mappings"
    if not isinstance(packaged, Path):  # imported from a zip: the loaders read files by path
        raise MappingError(
            f"the bundled mappings ({packaged}) are not on the file system; pass --mappings DIR or set "
            "FHIR_LUPUS_MAPPINGS"
        )
    return packaged


def default_mappings_dir() -> Path:
    """FHIR_LUPUS_MAPPINGS when set, else the checkout's mappings/ when running from a checkout, else the copy
    installed with the package (read through importlib.resources). ``--mappings DIR`` overrides all three."""
    env = os.environ.get("FHIR_LUPUS_MAPPINGS")
    if env:
        return Path(env)
    return checkout_mappings_dir() or packaged_mappings_dir()


def resolved_root(root: Path | None) -> Path:
    """The mappings directory a call means, resolved: packs are kept by it, never by ``None``, so a process that
    changes FHIR_LUPUS_MAPPINGS between calls (a test, a notebook, a service serving two packs) never gets the
    pack it read first."""
    if root is not None:
        return root.resolve()
    return _default_root(os.environ.get("FHIR_LUPUS_MAPPINGS"), os.getcwd())


@functools.lru_cache(maxsize=8)
def _default_root(env: str | None, cwd: str) -> Path:
    """The default directory, resolved once per FHIR_LUPUS_MAPPINGS value and working directory (a relative
    value depends on it): resolving it takes a dozen system calls."""
    return default_mappings_dir().resolve()
