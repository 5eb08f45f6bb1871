"""Every row source by the name a domain's mapping gives it (``rows:`` in mappings/sdtm/domains/<domain>.yaml)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fhir_lupus.sdtm._sources import Row, SdtmContext, dm_rows
from fhir_lupus.sdtm._sources_design import ds_rows, se_rows, sv_rows, ta_rows, te_rows, tv_rows
from fhir_lupus.sdtm._sources_events import ae_rows, cm_rows, ex_rows
from fhir_lupus.sdtm._sources_lab import lb_rows
from fhir_lupus.sdtm._sources_rs import rs_rows
from fhir_lupus.sdtm._sources_ts import ts_rows

__all__ = ["ROW_SOURCES"]

ROW_SOURCES: dict[str, Callable[[SdtmContext], Iterator[Row]]] = {
    "subjects": dm_rows,
    "labs": lb_rows,
    "adverse_events": ae_rows,
    "medications": cm_rows,
    "procedures": ex_rows,
    "responses": rs_rows,
    "trial_summary": ts_rows,
    "trial_arms": ta_rows,
    "trial_elements": te_rows,
    "trial_visits": tv_rows,
    "subject_elements": se_rows,
    "subject_visits": sv_rows,
    "disposition": ds_rows,
}
