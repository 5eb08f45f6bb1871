"""A package's public names imported when first used (PEP 562), not when the package is.

``fhir_lupus`` and ``fhir_lupus.model`` list many names from many modules; importing them all cost every command
(a ``--help``, a pull) the mappers, the loader, SDTM and the rest (issue 25). A package keeps its names under
``TYPE_CHECKING`` for the type checker, its literal ``__all__``, and a table of where each name lives:

    __getattr__, __dir__ = lazy_exports(__name__, {"fhir_lupus.model._study": ("load_study", ...), ...})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, homes: Mapping[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose names live in the modules of ``homes``."""
    home_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = home_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # once: later uses are a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *home_of})

    return __getattr__, __dir__
