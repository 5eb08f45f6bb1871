"""Pull lab Observations of a study's subjects back into trial lab rows, units normalised, visits assigned.

The study is found by its NCT identifier, its subjects by ResearchSubject?study, and their labs by patient,
catalogue code list and date (plus ``_lastUpdated`` for an incremental pull, whose high-water mark the
journal keeps). A second search by category finds laboratory results whose codes are not in the catalogue:
those, and results whose unit or value cannot be read back, go to the unmapped rows with the reason. Each
result is assigned to the protocol visit whose window (due date +/- window days) holds it, or flagged.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from fhir_lupus.client import FhirClient
from fhir_lupus.errors import FhirLupusError, TerminologyError, UnitError
from fhir_lupus.model.study import DAYS_PER_MONTH, StudyDefinition, due_date
from fhir_lupus.terminology import LabCatalogue
from fhir_lupus.terminology._pack import CodeChoice

__all__ = ["PullResult", "PulledLab", "UnmappedResult", "format_number", "pull_labs", "write_rows"]


@dataclass(frozen=True)
class PulledLab:
    """A lab row in the trial's layout (docs/csv-layout.md) plus where it came from."""

    result_id: str
    subject_id: str
    visit_code: str
    analyte: str
    value: str
    unit: str
    ref_low: str
    ref_high: str
    method: str
    collected_at: str
    window: str  # "in-window" or "outside-windows"
    days_from_due: str
    loinc: str
    reported_value: str
    reported_unit: str
    observation_id: str
    last_updated: str


@dataclass(frozen=True)
class UnmappedResult:
    subject_id: str
    observation_id: str
    codes: str
    value: str
    collected_at: str
    reason: str


@dataclass
class PullResult:
    rows: list[PulledLab] = field(default_factory=list)
    unmapped: list[UnmappedResult] = field(default_factory=list)
    subjects: int = 0
    since: str | None = None
    high_water: str | None = None

    @property
    def outside_windows(self) -> int:
        return sum(1 for row in self.rows if row.window != "in-window")


def pull_labs(
    client: FhirClient,
    study: StudyDefinition,
    catalogue: LabCatalogue,
    *,
    since: str | None = None,
    window_days: int | None = None,
) -> PullResult:
    pack = catalogue.pack
    window = window_days if window_days is not None else study.protocol.visit_window_days
    study_system = pack.identifier_system("study", study=study.nct_id)
    studies = list(client.search("ResearchStudy", {"identifier": f"{study_system}|{study.nct_id}"}))
    if len(studies) != 1:
        raise FhirLupusError(f"{len(studies)} ResearchStudy resources on the server carry {study.nct_id}; expected 1")
    by_loinc = _loinc_index(catalogue)
    loinc = pack.system_uri("loinc")
    code_list = ",".join(f"{loinc}|{code}" for code in sorted(by_loinc))
    subject_system = pack.identifier_system("subject", study=study.nct_id)
    visit_system = pack.identifier_system("visit", study=study.nct_id)
    result = PullResult(since=since)
    marks: list[str] = []
    for research_subject in client.search(
        "ResearchSubject", {"study": f"ResearchStudy/{studies[0]['id']}", "_count": "200"}
    ):
        subject_id = next(
            (i["value"] for i in research_subject.get("identifier", []) if i.get("system") == subject_system),
            research_subject.get("id", ""),
        )
        patient_ref = research_subject.get("individual", research_subject.get("subject", {})).get("reference", "")
        if not patient_ref.startswith("Patient/"):
            continue
        result.subjects += 1
        anchor = _baseline(client, visit_system, patient_ref, subject_id, research_subject)
        seen: set[str] = set()
        params: dict[str, str] = {"patient": patient_ref, "_count": "200"}
        if since:
            params["_lastUpdated"] = f"gt{since}"
        if anchor:
            params["date"] = f"ge{(anchor - timedelta(days=window + 30)).isoformat()}"
        for search in ({"code": code_list}, {"category": "laboratory"}):
            for observation in client.search("Observation", {**params, **search}):
                if observation.get("id") in seen:
                    continue
                seen.add(str(observation.get("id")))
                if updated := observation.get("meta", {}).get("lastUpdated"):
                    marks.append(updated)
                row = _reverse_map(observation, subject_id, by_loinc, catalogue, study, anchor, window)
                if isinstance(row, PulledLab):
                    result.rows.append(row)
                else:
                    result.unmapped.append(row)
    result.rows.sort(key=lambda r: (r.subject_id, r.collected_at, r.analyte, r.result_id))
    result.unmapped.sort(key=lambda r: (r.subject_id, r.collected_at, r.observation_id))
    result.high_water = max(marks, key=_instant) if marks else since
    return result


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _loinc_index(catalogue: LabCatalogue) -> dict[str, list[tuple[str, CodeChoice]]]:
    index: dict[str, list[tuple[str, CodeChoice]]] = {}
    for key, analyte in catalogue.pack.labs.analytes.items():
        for choice in analyte.codes:
            index.setdefault(choice.loinc, []).append((key, choice))
    return index


def _baseline(
    client: FhirClient, visit_system: str, patient_ref: str, subject_id: str, research_subject: dict[str, Any]
) -> date | None:
    """The subject's day 0: the BL Encounter's date, else the start of the ResearchSubject period."""
    for encounter in client.search(
        "Encounter", {"patient": patient_ref, "identifier": f"{visit_system}|{subject_id}/BL"}
    ):
        period = encounter.get("period") or encounter.get("actualPeriod") or {}
        if period.get("start"):
            return date.fromisoformat(period["start"][:10])
    start = (research_subject.get("period") or {}).get("start")
    return date.fromisoformat(start[:10]) if start else None


def _reverse_map(
    observation: dict[str, Any],
    subject_id: str,
    by_loinc: dict[str, list[tuple[str, CodeChoice]]],
    catalogue: LabCatalogue,
    study: StudyDefinition,
    anchor: date | None,
    window: int,
) -> PulledLab | UnmappedResult:
    pack = catalogue.pack
    codings = observation.get("code", {}).get("coding", [])
    collected = str(observation.get("effectiveDateTime") or (observation.get("effectivePeriod") or {}).get("start", ""))
    codes = ";".join(f"{c.get('system', '')}|{c.get('code', '')}" for c in codings)

    def unmapped(reason: str, value: str = "") -> UnmappedResult:
        return UnmappedResult(subject_id, str(observation.get("id", "")), codes, value, collected, reason)

    loinc_codes = [c.get("code") for c in codings if c.get("system") == pack.system_uri("loinc")]
    candidates = [pair for code in loinc_codes for pair in by_loinc.get(str(code), [])]
    if not candidates:
        return unmapped("no LOINC code of the lab catalogue")
    try:
        analyte, choice, value, unit, reported_value, reported_unit, ref = _read_value(
            observation, candidates, catalogue
        )
    except (UnitError, TerminologyError, ValueError) as exc:
        return unmapped(str(exc), _raw_value(observation))
    visit_code, status, offset = _assign_visit(collected, anchor, study, window)
    identifier = next(
        (
            i["value"]
            for i in observation.get("identifier", [])
            if i.get("system") == pack.identifier_system("lab_result", study=study.nct_id)
        ),
        "",
    )
    return PulledLab(
        result_id=identifier,
        subject_id=subject_id,
        visit_code=visit_code,
        analyte=analyte,
        value=value,
        unit=unit,
        ref_low=ref[0],
        ref_high=ref[1],
        method=choice.when.method[0]
        if choice.when.method and len(choice.when.method) == 1 and choice.when.method[0]
        else "",
        collected_at=collected,
        window=status,
        days_from_due=offset,
        loinc=choice.loinc,
        reported_value=reported_value,
        reported_unit=reported_unit,
        observation_id=str(observation.get("id", "")),
        last_updated=str(observation.get("meta", {}).get("lastUpdated", "")),
    )


def _read_value(
    observation: dict[str, Any], candidates: list[tuple[str, CodeChoice]], catalogue: LabCatalogue
) -> tuple[str, CodeChoice, str, str, str, str, tuple[str, str]]:
    """(analyte, code choice, value, unit, reported value, reported unit, normalised reference range)."""
    if quantity := observation.get("valueQuantity"):
        ucum = quantity.get("code") if quantity.get("system") == catalogue.pack.system_uri("ucum") else None
        ucum = ucum or catalogue.units.to_ucum(str(quantity.get("unit", "")))
        for analyte, choice in candidates:
            if (
                choice.when.value_kind == "quantity"
                and choice.when.unit_like
                and catalogue.units.commensurable(ucum, choice.when.unit_like)
            ):
                number, unit = catalogue.normalise(analyte, quantity["value"], ucum)
                comparator = quantity.get("comparator", "")
                ref = _reference_range(observation, analyte, ucum, catalogue)
                return (
                    analyte,
                    choice,
                    f"{comparator}{format_number(number)}",
                    unit,
                    f"{comparator}{quantity['value']}",
                    ucum,
                    ref,
                )
        raise UnitError(f"unit {ucum} fits no catalogue code for {', '.join(c.loinc for _, c in candidates)}")
    if concept := observation.get("valueCodeableConcept"):
        codes = {c.get("code") for c in concept.get("coding", [])}
        for key, answer in catalogue.pack.ordinals.items():
            if answer.code in codes:
                for analyte, choice in candidates:
                    if choice.when.value_kind == "ordinal":
                        return analyte, choice, key, "", concept.get("text", key), "", ("", "")
        raise ValueError("coded value is not an ordinal the catalogue knows")
    if (text := observation.get("valueString")) is not None:
        for analyte, choice in candidates:
            if choice.when.value_kind == "titer" and str(text).strip().startswith("1:"):
                return analyte, choice, str(text).strip(), "", str(text), "", ("", "")
        raise ValueError(f"text value {text!r} is not a titer")
    raise ValueError("no value[x] the catalogue can read")


def _reference_range(observation: dict[str, Any], analyte: str, ucum: str, catalogue: LabCatalogue) -> tuple[str, str]:
    ranges = observation.get("referenceRange") or [{}]
    bounds = []
    for side in ("low", "high"):
        bound = ranges[0].get(side)
        bounds.append(
            format_number(catalogue.normalise(analyte, bound["value"], ucum)[0]) if bound and "value" in bound else ""
        )
    return bounds[0], bounds[1]


def format_number(value: float) -> str:
    """Up to 6 significant digits, no float noise, no trailing zeros (88.4, 0.05, 1200)."""
    return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.0f}"


def _assign_visit(collected: str, anchor: date | None, study: StudyDefinition, window: int) -> tuple[str, str, str]:
    if not collected or anchor is None:
        return "", "outside-windows", ""
    day = date.fromisoformat(collected[:10])
    elapsed = (day - anchor).days
    month = max(0, round(elapsed / DAYS_PER_MONTH))
    offset = (day - due_date(anchor, month)).days
    codes = {visit.month: visit.code for visit in study.visits()}
    if abs(offset) <= window and month in codes:
        return codes[month], "in-window", str(offset)
    return "", "outside-windows", str(offset)


def _raw_value(observation: dict[str, Any]) -> str:
    if quantity := observation.get("valueQuantity"):
        unit = quantity.get("code") or quantity.get("unit", "")
        return f"{quantity.get('comparator', '')}{quantity.get('value')} {unit}".strip()
    if concept := observation.get("valueCodeableConcept"):
        return str(concept.get("text") or concept.get("coding", [{}])[0].get("code", ""))
    return str(observation.get("valueString", ""))


def write_rows(rows: Iterable[Any], path: Path, row_type: type) -> Path:
    """CSV, or parquet when the path ends in .parquet and pyarrow is installed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [asdict(row) for row in rows]
    columns = [f.name for f in fields(row_type)]
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa  # type: ignore[import-not-found]
            import pyarrow.parquet as pq  # type: ignore[import-not-found]
        except ImportError:
            raise FhirLupusError("parquet output needs pyarrow (pip install pyarrow); use a .csv path") from None
        pq.write_table(pa.Table.from_pylist(records, schema=pa.schema([(c, pa.string()) for c in columns])), path)
        return path
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)
    return path
