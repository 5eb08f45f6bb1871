"""Reading one YAML file of mappings/ (or a site profile) against its contract, every error naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fhir_lupus.errors import MappingError

__all__ = ["parse_model", "read_yaml"]

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path) -> Any:
    """Read one YAML file, turning a parse error into a MappingError naming the file."""
    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise MappingError(f"{path}: mapping file missing") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {exc}") from None


def parse_model(model: type[M], path: Path, data: Any) -> M:
    """Validate YAML data against its contract; the error names the file and the key path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise MappingError(f"{path}: {problems}") from None
