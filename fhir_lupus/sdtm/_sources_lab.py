"""LB's facts: one row per accepted lab result of an enrolled subject (labs.csv, checked and coded at load time).

The result as reported (LBORRES/LBORRESU, the reference range as the lab gave it) and standardised through the
project's own UCUM conversion to the analyte's trial unit (``LabCatalogue.normalise``, the conversion pull and the
FHIR round trip use), so SDTM and FHIR carry the same numbers. A censored value ("<0.5") keeps its comparator in
LBSTRESC and has no LBSTRESN (SDTMIG 3.4 LB assumption: a result that is not a number has no numeric form).
The normal-range indicator is the verdict the FHIR Observation carries (``mappers.interpretation``), so the two
never disagree. LBLOBXFL marks, per subject and test, the last result before the first study treatment (RFXSTDTC).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from fhir_lupus.errors import UnitError
from fhir_lupus.mappers import interpretation
from fhir_lupus.sdtm._design import Epochs, epochs, visit_numbers
from fhir_lupus.sdtm._sources import Row, SdtmContext, first_exposures
from fhir_lupus.sdtm._terms import load_sdtm_terms
from fhir_lupus.terminology import LabCatalogue, load_fhir_codes

__all__ = ["lb_rows"]

TREG, BLOOD = "treg_percent", "blood"  # the catalogue's analyte and specimen keys of treg.csv results


def _text(number: Any) -> str:
    """A number as SDTM text: no exponent, no trailing zeros beyond what was measured."""
    value = Decimal(str(number))
    return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")


def lb_rows(ctx: SdtmContext) -> Iterator[Row]:
    catalogue = LabCatalogue(ctx.pack)
    flags = load_fhir_codes(ctx.pack).interpretation
    verdicts = {ref.code: name for name, ref in flags}  # H -> high: the keys NRIND's terms are mapped from
    terms = load_sdtm_terms(ctx.pack)
    enrolled = ctx.enrolled
    exposure = first_exposures(ctx.trial)
    visits = {code: (visit.number, visit.name) for code, visit in visit_numbers(ctx).items()}  # as TV numbers them
    subject_epochs = epochs(ctx)
    rows: list[Row] = []
    for located in ctx.trial.labs:
        checked = located.record
        lab, value, resolved = checked.lab, checked.value, checked.resolved
        if lab.subject_id not in enrolled:
            continue
        analyte = catalogue.analyte(lab.analyte)
        row: Row = {
            "subject_id": lab.subject_id,
            "usubjid": ctx.usubjid(lab.subject_id),
            "refid": lab.result_id,
            "analyte": lab.analyte,
            "loinc": resolved.code.code if resolved.code.system == "loinc" else "",
            "orres": value.raw,
            "orres_unit": resolved.ucum or "",
            "ornrlo": _text(lab.ref_low) if lab.ref_low is not None else "",
            "ornrhi": _text(lab.ref_high) if lab.ref_high is not None else "",
            "specimen": lab.specimen,
            "method": method.value if (method := terms.lab_method(lab.analyte, lab.method)) else "",
            "visit_code": lab.visit_code,
            "visitnum": visits.get(lab.visit_code, (None, ""))[0],
            "visit": visits.get(lab.visit_code, (None, lab.visit_code))[1],
            "epoch": subject_epochs.epoch(lab.subject_id, lab.collected_at),
            "collected": ctx.dated(lab.subject_id, lab.collected_at),
            "_at": lab.collected_at,
        }
        row.update(_standard(catalogue, analyte.trial_unit, lab.analyte, value.number, value.comparator, resolved.ucum))
        if value.kind == "quantity" and value.number is not None:
            verdict = interpretation(value.number, value.comparator, lab.ref_low, lab.ref_high, flags)
            row["nrind"] = verdicts[verdict] if verdict else ""
            row.update(_standard_range(catalogue, lab.analyte, lab.ref_low, lab.ref_high, resolved.ucum))
        else:
            row["stresc"] = value.raw  # an ordinal answer or a titer, as reported
        rows.append(row)
    rows.extend(_treg_rows(ctx, catalogue, visits, subject_epochs))
    _flag_last_before_exposure(rows, exposure)
    for row in rows:
        row.pop("_at")
        yield row


def _treg_rows(
    ctx: SdtmContext, catalogue: LabCatalogue, visits: dict[str, tuple[int, str]], subject_epochs: Epochs
) -> Iterator[Row]:
    """treg.csv: the trial's secondary outcome, a flow-cytometry result in the trial unit (%), as the FHIR
    Observation of mappers/_observation_treg.py carries it (no reference range, no LOINC: docs/terminology.md)."""
    analyte = TREG
    unit = catalogue.analyte(analyte).trial_unit or ""
    method = load_sdtm_terms(ctx.pack).lab_method(analyte, None)
    for located in ctx.trial.treg:
        measured = located.record
        if measured.subject_id not in ctx.enrolled:
            continue
        text = _text(measured.percent)
        yield {
            "subject_id": measured.subject_id,
            "usubjid": ctx.usubjid(measured.subject_id),
            "refid": measured.measurement_id,
            "analyte": analyte,
            "loinc": "",
            "orres": text,
            "orres_unit": unit,
            "ornrlo": "",
            "ornrhi": "",
            "specimen": BLOOD,
            "method": method.value if method else "",
            "visit_code": measured.visit_code,
            "visitnum": visits.get(measured.visit_code, (None, ""))[0],
            "visit": visits.get(measured.visit_code, (None, measured.visit_code))[1],
            "epoch": subject_epochs.epoch(measured.subject_id, measured.measured_at),
            "collected": ctx.dated(measured.subject_id, measured.measured_at),
            "_at": measured.measured_at,
            "stresc": text,
            "stresn": float(measured.percent),
            "stres_unit": unit,
            "nrind": "",
            "stnrlo": None,
            "stnrhi": None,
        }


def _standard(
    catalogue: LabCatalogue,
    trial_unit: str | None,
    analyte: str,
    number: Decimal | None,
    comparator: str | None,
    ucum: str | None,
) -> Row:
    if number is None or ucum is None:
        return {"stresc": "", "stresn": None, "stres_unit": ""}
    try:
        standard, unit = catalogue.normalise(analyte, number, ucum)
    except UnitError:  # an arbitrary unit the trial unit cannot be reached from: kept as reported
        standard, unit = float(number), ucum
    text = _text(standard)
    return {
        "stresc": f"{comparator}{text}" if comparator else text,
        "stresn": None if comparator else standard,
        "stres_unit": unit or trial_unit or "",
    }


def _standard_range(
    catalogue: LabCatalogue, analyte: str, low: Decimal | None, high: Decimal | None, ucum: str | None
) -> Row:
    converted: Row = {"stnrlo": None, "stnrhi": None}
    if ucum is None:
        return converted
    for name, limit in (("stnrlo", low), ("stnrhi", high)):
        if limit is not None:
            try:
                converted[name] = catalogue.normalise(analyte, limit, ucum)[0]
            except UnitError:
                converted[name] = float(limit)
    return converted


def _flag_last_before_exposure(rows: list[Row], exposure: dict[str, datetime]) -> None:
    """LBLOBXFL = Y on each subject's last result per test collected before the first study treatment."""
    last: dict[tuple[str, str], Row] = {}
    for row in rows:
        start = exposure.get(row["subject_id"])
        if start is None or row["_at"] >= start or row.get("stresc", "") == "":
            continue
        key = (row["subject_id"], row["analyte"])
        if key not in last or row["_at"] > last[key]["_at"]:
            last[key] = row
    for row in rows:
        row["lobxfl"] = True if any(row is chosen for chosen in last.values()) else None
