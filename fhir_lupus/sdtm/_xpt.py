"""SAS transport (XPT) version 5, the format FDA's Study Data Technical Conformance Guide asks for, through
pyreadstat's ``write_xport`` (the ``sdtm`` extra: ``pip install 'fhir-lupus[sdtm]'``).

Version 5 limits what it holds: names of 8 characters, labels of 40, text of 200 bytes; the mapping's contract
(``_spec``) keeps names and labels within them, and a longer text value is refused here, never cut.
"""

from __future__ import annotations

from pathlib import Path

from fhir_lupus.errors import ExtraMissing, FhirLupusError
from fhir_lupus.sdtm._engine import Dataset

__all__ = ["write_xpt"]

XPT_TEXT_LIMIT = 200  # bytes of one character value in XPT version 5
HINT = "pip install 'fhir-lupus[sdtm]'"


def write_xpt(dataset: Dataset, path: Path) -> Path:
    """``dataset`` as ``<domain>.xpt`` (XPT v5): its label, each variable's label and width."""
    try:
        import pandas as pd
        import pyreadstat
    except ImportError:
        raise ExtraMissing(f"XPT output needs pyreadstat and pandas: {HINT}") from None
    spec = dataset.spec
    columns = [v.name for v in spec.variables]
    for record in dataset.records:
        for variable in spec.variables:
            value = record[variable.name]
            if isinstance(value, str) and len(value.encode("utf-8")) > XPT_TEXT_LIMIT:
                raise FhirLupusError(
                    f"{spec.domain}.{variable.name}: a value of {len(value.encode('utf-8'))} bytes does not fit XPT "
                    f"version 5 ({XPT_TEXT_LIMIT}); write Dataset-JSON (--format json) instead"
                )
    frame = pd.DataFrame([[record[name] for name in columns] for record in dataset.records], columns=columns)
    for variable in spec.variables:
        if variable.type != "text":
            frame[variable.name] = pd.to_numeric(frame[variable.name])
        else:
            frame[variable.name] = frame[variable.name].fillna("").astype(str)
    labels: list[str | None] = [v.label for v in spec.variables]
    pyreadstat.write_xport(
        frame, str(path), file_format_version=5, table_name=spec.domain, file_label=spec.label, column_labels=labels
    )
    return path
