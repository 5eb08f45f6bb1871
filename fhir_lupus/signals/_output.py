"""Signals written down: a CSV (one row a signal, the ``Signal`` fields as columns, in a fixed order) and the
FHIR resource each one is published as."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, fields
from pathlib import Path

from fhir_lupus._resource import Resource
from fhir_lupus._scratch import write_csv
from fhir_lupus.mappers import IssueFacts, implicated_result, map_detected_issue
from fhir_lupus.signals._definitions import FlareDefinitions
from fhir_lupus.signals._evaluate import Signal
from fhir_lupus.terminology import MappingPack

__all__ = ["COLUMNS", "describe", "signal_resource", "write_signals"]

COLUMNS = tuple(f.name for f in fields(Signal))


def write_signals(signals: Iterable[Signal], path: Path) -> Path:
    """The signals as CSV, sorted (subject, date, definition, result) whatever order they come in, so the same
    signals give the same bytes; replaced atomically."""
    rows = sorted(signals, key=lambda s: (s.subject_id, s.date, s.definition_id, s.result_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, [COLUMNS, *(astuple(signal) for signal in rows)])
    return path


def describe(signal: Signal) -> str:
    """One line a reader can check: who, when, which definition, the value against what it was compared with."""
    return (
        f"{signal.subject_id} {signal.visit_code} {signal.date[:10]}: {signal.title}: {signal.analyte} "
        f"{signal.value} {signal.unit} {signal.threshold}; {signal.compared} {signal.compared_value} "
        f"{signal.compared_unit} on {signal.compared_date[:10]} [{signal.definition_id}]"
        + (f" (provisional: {signal.provisional})" if signal.provisional else "")
    )


def signal_resource(
    signal: Signal, pack: MappingPack, definitions: FlareDefinitions, *, study: str, patient: str | None = None
) -> Resource:
    """The DetectedIssue a signal is published as (fhir_lupus/mappers/_detected_issue.py); ``patient``: the
    server's "Patient/<id>" of the subject, when known (publishing looks it up)."""
    implicated = [
        implicated_result(
            pack,
            study=study,
            result_id=signal.result_id,
            observation_id=signal.observation_id,
            system=signal.result_system,
        ),
        implicated_result(
            pack,
            study=study,
            result_id=signal.compared_result_id,
            observation_id=signal.compared_observation_id,
            system=signal.result_system,
        ),
    ]
    facts = IssueFacts(
        key=signal.key,
        code=signal.definition_id,
        display=signal.title,
        subject_id=signal.subject_id,
        identified=signal.date,
        detail=f"{describe(signal)}. Source: {signal.source}",
        reference=signal.source_url,
        implicated=implicated,
        patient=patient,
    )
    fixed = definitions.detected_issue
    return map_detected_issue(
        facts,
        pack,
        study=study,
        system=definitions.system,
        status=fixed.provisional_status if signal.provisional else fixed.status,
        severity=fixed.severity,
    )
