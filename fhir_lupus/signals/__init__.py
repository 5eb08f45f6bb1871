"""Flare signals: the flare definitions of mappings/signals/flares.yaml tested on a subject's lab results.

``_definitions`` reads the definitions (SLEDAI-2K laboratory descriptors as they change from the previous value,
reusing the descriptor thresholds of mappings/scoring/sledai2k.yaml; KDIGO kidney relapse from the post-treatment
nadir); ``_inputs`` makes the points they are tested on from a pulled table and/or the trial's own data (final,
unquestioned results only); ``_evaluate`` raises the signals; ``_output`` writes them as CSV and as FHIR
DetectedIssue; ``_publish`` sends them to a server, idempotently and audited. ``fhir-lupus signals`` and
``watch`` call these; the report draws a marker for each signal on the subject's timeline.
"""

from fhir_lupus.signals._definitions import FlareDefinition, FlareDefinitions, load_flare_definitions
from fhir_lupus.signals._evaluate import Signal, flare_signals
from fhir_lupus.signals._inputs import NotCounted, read_pulled
from fhir_lupus.signals._output import COLUMNS, describe, signal_resource, write_signals
from fhir_lupus.signals._publish import AUDIT_KIND, PublishReport, publish_signals

__all__ = [
    "AUDIT_KIND",
    "COLUMNS",
    "FlareDefinition",
    "FlareDefinitions",
    "NotCounted",
    "PublishReport",
    "Signal",
    "describe",
    "flare_signals",
    "load_flare_definitions",
    "publish_signals",
    "read_pulled",
    "signal_resource",
    "write_signals",
]
