"""Hypothesis strategies for valid trial entities (kept in one place, as the style guide asks)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import strategies as st

from fhir_lupus.model import LabResult, SledaiAssessment, Subject, TreatmentProcedure
from fhir_lupus.terminology import MappingPack

KEYS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))])
DATETIMES = st.builds(
    lambda moment, tz: moment.replace(tzinfo=tz, microsecond=0),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 12, 31)),
    OFFSETS,
)
NUMBERS = st.decimals(
    min_value=Decimal("0"), max_value=Decimal("100000"), places=3, allow_nan=False, allow_infinity=False
)


@st.composite
def subjects(draw: st.DrawFn) -> Subject:
    enrolled = draw(st.dates(min_value=date(2005, 1, 1), max_value=date(2030, 1, 1)))
    born = draw(st.dates(min_value=date(1920, 1, 1), max_value=enrolled))
    precision = draw(st.sampled_from([4, 7, 10]))
    has_mrn = draw(st.booleans())
    off = draw(st.one_of(st.none(), st.dates(min_value=enrolled, max_value=date(2035, 1, 1))))
    return Subject(
        subject_id=draw(KEYS),
        mrn=draw(KEYS) if has_mrn else None,
        pseudonym=None if has_mrn else draw(KEYS),
        sex=draw(st.sampled_from(["male", "female", "other", "unknown"])),
        birth_date=born.isoformat()[:precision],
        enrolled_on=enrolled,
        status=draw(st.sampled_from(["on-study", "follow-up", "off-study", "withdrawn", "on-study-intervention"])),
        off_study_on=off,
        off_study_reason=draw(st.one_of(st.none(), st.text(min_size=1, max_size=30).filter(str.strip)))
        if off
        else None,
        arm="AlloMSC",
    )


@st.composite
def lab_results(draw: st.DrawFn, pack: MappingPack) -> LabResult:
    """A lab result that the catalogue can code: the value kind, unit and method of one of its choices."""
    analyte_key = draw(st.sampled_from(sorted(pack.labs.analytes)))
    choice = draw(st.sampled_from(pack.labs.analytes[analyte_key].codes))
    when = choice.when
    unit = ref_low = ref_high = None
    if when.value_kind == "quantity":
        number = draw(NUMBERS)
        comparator = draw(st.sampled_from(["", "", "", "<", ">", "<=", ">="]))
        value = f"{comparator}{number}"
        unit = when.unit_like
        if draw(st.booleans()):
            low = draw(NUMBERS)
            ref_low, ref_high = low, low + draw(NUMBERS)
    elif when.value_kind == "ordinal":
        value = draw(st.sampled_from(sorted(pack.ordinals)))
    else:
        value = f"1:{draw(st.integers(min_value=1, max_value=100000))}"
    method = draw(st.sampled_from(list(when.method))) if when.method else None
    return LabResult(
        result_id=draw(KEYS),
        subject_id="S-1",
        visit_code="BL",
        analyte=analyte_key,
        value=value,
        unit=unit,
        ref_low=ref_low,
        ref_high=ref_high,
        method=method,
        specimen=draw(st.sampled_from(list(when.specimen))),
        collected_at=draw(DATETIMES),
        lab=draw(st.one_of(st.none(), st.just("Central Laboratory"))),
        local_code=draw(st.one_of(st.none(), KEYS)),
    )


@st.composite
def sledai_assessments(draw: st.DrawFn, keys: list[str]) -> SledaiAssessment:
    return SledaiAssessment(
        subject_id="S-1",
        visit_code="BL",
        assessed_on=draw(st.dates(min_value=date(2005, 1, 1), max_value=date(2030, 1, 1))),
        descriptors=tuple(draw(st.lists(st.sampled_from(keys), unique=True))),
        window_days=draw(st.sampled_from([None, 10, 30])),
        assessor=draw(st.one_of(st.none(), KEYS)),
    )


@st.composite
def procedures(draw: st.DrawFn) -> TreatmentProcedure:
    kind = draw(st.sampled_from(["cyclophosphamide_pretreatment", "msc_infusion"]))
    started = draw(DATETIMES)
    ended = draw(
        st.one_of(
            st.none(),
            st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=8)).map(lambda d: started + d),
        )
    )
    positive = st.decimals(min_value=Decimal("0.1"), max_value=Decimal("5000000"), places=1)
    is_cyc = kind == "cyclophosphamide_pretreatment"
    return TreatmentProcedure(
        procedure_id=draw(KEYS),
        subject_id="S-1",
        kind=kind,
        status=draw(st.sampled_from(["completed", "stopped", "not-done", "in-progress"])),
        started_at=started,
        ended_at=ended,
        dose_mg=draw(positive) if is_cyc else None,
        dose_mg_per_m2=draw(st.one_of(st.none(), positive)) if is_cyc else None,
        cells_per_kg=None if is_cyc else draw(positive),
        route="intravenous",
        donor_id=None if is_cyc else draw(KEYS),
    )
