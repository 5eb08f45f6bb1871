"""SLEDAI-2K calculator on hand-checked cases (weights from Gladman et al. 2002)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from fhir_lupus.scoring import LabEvidence, SledaiDefinition, load_sledai_definition, score_sledai
from fhir_lupus.terminology import LabCatalogue, UnitConverter, parse_lab_value

ASSESSED = date(2009, 3, 10)
CST = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
def definition() -> SledaiDefinition:
    return load_sledai_definition()


def lab(
    catalogue: LabCatalogue,
    analyte: str,
    value: str,
    unit: str | None = None,
    *,
    days_before: int = 0,
    low: str | None = None,
    high: str | None = None,
    rid: str | None = None,
) -> LabEvidence:
    parsed = parse_lab_value(value, catalogue.pack.ordinals)
    resolved = catalogue.resolve(analyte, parsed, unit, "ifa" if analyte == "ana" else None)
    collected = datetime.combine(ASSESSED - timedelta(days=days_before), datetime.min.time(), CST).replace(hour=8)
    return LabEvidence(
        rid or f"{analyte}-{value}",
        analyte,
        collected,
        parsed,
        resolved.ucum,
        Decimal(low) if low else None,
        Decimal(high) if high else None,
    )


def score(
    definition: SledaiDefinition,
    units: UnitConverter,
    flagged: tuple[str, ...] = (),
    labs: list[LabEvidence] | None = None,
    window: int | None = None,
) -> tuple[int, dict[str, str]]:
    result = score_sledai(
        definition, flagged=flagged, labs=labs or [], assessed_on=ASSESSED, window_days=window, units=units
    )
    return result.total, {d.key: d.source for d in result.descriptors}


class TestWeights:
    def test_published_instrument(self, definition: SledaiDefinition) -> None:
        weights = {d.key: d.weight for d in definition.descriptors}
        assert len(weights) == 24 and sum(weights.values()) == 105
        assert [k for k, w in weights.items() if w == 8] == [
            "seizure",
            "psychosis",
            "organic_brain_syndrome",
            "visual_disturbance",
            "cranial_nerve_disorder",
            "lupus_headache",
            "cva",
            "vasculitis",
        ]
        assert {k for k, w in weights.items() if w == 1} == {"fever", "thrombocytopenia", "leukopenia"}

    def test_all_descriptors_give_105(self, definition: SledaiDefinition, units: UnitConverter) -> None:
        total, _ = score(definition, units, tuple(d.key for d in definition.descriptors))
        assert total == 105

    def test_nothing_gives_zero(self, definition: SledaiDefinition, units: UnitConverter) -> None:
        assert score(definition, units)[0] == 0

    def test_typical_active_nephritis(self, definition: SledaiDefinition, units: UnitConverter) -> None:
        # arthritis 4 + rash 2 + proteinuria 4 + hematuria 4 + low complement 2 + DNA binding 2 = 18
        flagged = ("arthritis", "rash", "proteinuria", "hematuria", "low_complement", "increased_dna_binding")
        assert score(definition, units, flagged)[0] == 18

    def test_unknown_descriptor(self, definition: SledaiDefinition, units: UnitConverter) -> None:
        with pytest.raises(KeyError):
            score(definition, units, ("headache",))


class TestDerivedFromLabs:
    def test_proteinuria_above_half_gram(
        self, definition: SledaiDefinition, units: UnitConverter, catalogue: LabCatalogue
    ) -> None:
        assert score(definition, units, labs=[lab(catalogue, "urine_protein_24h", "0.6", "g/24h")]) == (
            4,
            {"proteinuria": "derived"},
        )
        assert score(definition, units, labs=[lab(catalogue, "urine_protein_24h", "0.5", "g/24h")])[0] == 0
        # the same threshold in mg: 600 mg/24 h counts, 450 does not
        assert score(definition, units, labs=[lab(catalogue, "urine_protein_24h", "600", "mg/24h")])[0] == 4
        assert score(definition, units, labs=[lab(catalogue, "urine_protein_24h", "450", "mg/24h")])[0] == 0

    def test_hematuria_pyuria_and_cell_counts(
        self, definition: SledaiDefinition, units: UnitConverter, catalogue: LabCatalogue
    ) -> None:
        labs = [
            lab(catalogue, "urine_rbc", "6", "/HPF"),  # > 5: hematuria 4
            lab(catalogue, "urine_wbc", "5", "/HPF"),  # not > 5
            lab(catalogue, "platelets", "99", "10^9/L"),  # < 100: 1
            lab(catalogue, "wbc", "3.0", "10^9/L"),  # not < 3
        ]
        assert score(definition, units, labs=labs) == (
            5,
            {"hematuria": "derived", "thrombocytopenia": "derived"},
        )

    def test_low_complement_uses_the_lab_reference_range(
        self, definition: SledaiDefinition, units: UnitConverter, catalogue: LabCatalogue
    ) -> None:
        below = lab(catalogue, "c4", "0.08", "g/L", low="0.1", high="0.4")
        inside = lab(catalogue, "c3", "0.95", "g/L", low="0.9", high="1.8")
        no_range = lab(catalogue, "c3", "0.2", "g/L")
        assert score(definition, units, labs=[below, inside])[0] == 2
        assert score(definition, units, labs=[inside, no_range])[0] == 0

    def test_dna_binding_from_iu_or_titer(
        self, definition: SledaiDefinition, units: UnitConverter, catalogue: LabCatalogue
    ) -> None:
        assert score(definition, units, labs=[lab(catalogue, "anti_dsdna", "180", "IU/mL", high="100")])[0] == 2
        assert score(definition, units, labs=[lab(catalogue, "anti_dsdna", "<10", "IU/mL", high="100")])[0] == 0
        assert score(definition, units, labs=[lab(catalogue, "anti_dsdna", ">300", "IU/mL", high="100")])[0] == 2

    def test_flagged_wins_over_derived_and_is_not_counted_twice(
        self, definition: SledaiDefinition, units: UnitConverter, catalogue: LabCatalogue
    ) -> None:
        labs = [lab(catalogue, "urine_rbc", "30", "/HPF")]
        assert score(definition, units, ("hematuria",), labs) == (4, {"hematuria": "flagged"})

    def test_window_10_and_30_days(
        self, definition: SledaiDefinition, units: UnitConverter, catalogue: LabCatalogue
    ) -> None:
        old = [lab(catalogue, "urine_protein_24h", "2.0", "g/24h", days_before=20)]
        assert score(definition, units, labs=old)[0] == 0
        assert score(definition, units, labs=old, window=30)[0] == 4
        later = [lab(catalogue, "urine_protein_24h", "2.0", "g/24h", days_before=-1)]  # after the assessment
        assert score(definition, units, labs=later, window=30)[0] == 0

    def test_window_must_be_allowed(self, definition: SledaiDefinition, units: UnitConverter) -> None:
        with pytest.raises(ValueError, match="window_days"):
            score(definition, units, window=14)

    def test_evidence_names_the_results(
        self, definition: SledaiDefinition, units: UnitConverter, catalogue: LabCatalogue
    ) -> None:
        labs = [
            lab(catalogue, "urine_rbc", "30", "/HPF", rid="R-1"),
            lab(catalogue, "urine_rbc", "2", "/HPF", rid="R-2"),
        ]
        result = score_sledai(definition, flagged=(), labs=labs, assessed_on=ASSESSED, window_days=None, units=units)
        assert result.derived == ("hematuria",)
        assert result.descriptors[0].evidence == ("R-1",)


class TestCensoredValues:
    """A censored value counts only when it proves the threshold is crossed (SLEDAI-2K: > 5, < 100, < 3)."""

    @pytest.mark.parametrize(
        ("analyte", "value", "unit", "expected"),
        [
            ("urine_rbc", ">=5", "/HPF", 0),  # 5 or more does not prove more than 5
            ("urine_rbc", ">5", "/HPF", 4),
            ("urine_rbc", ">=6", "/HPF", 4),
            ("urine_rbc", "<=50", "/HPF", 0),
            ("urine_wbc", ">=5", "/HPF", 0),
            ("platelets", "<=100", "10^9/L", 0),  # 100 or less does not prove less than 100
            ("platelets", "<100", "10^9/L", 1),
            ("platelets", "<=99", "10^9/L", 1),
            ("wbc", "<=3", "10^9/L", 0),
            ("wbc", "<3", "10^9/L", 1),
            ("urine_protein_24h", ">=0.5", "g/24h", 0),
            ("urine_protein_24h", ">0.5", "g/24h", 4),
        ],
    )
    def test_threshold_is_proved_or_not(
        self,
        definition: SledaiDefinition,
        units: UnitConverter,
        catalogue: LabCatalogue,
        analyte: str,
        value: str,
        unit: str,
        expected: int,
    ) -> None:
        assert score(definition, units, labs=[lab(catalogue, analyte, value, unit)])[0] == expected

    def test_censored_against_a_reference_range(
        self, definition: SledaiDefinition, units: UnitConverter, catalogue: LabCatalogue
    ) -> None:
        assert score(definition, units, labs=[lab(catalogue, "c3", "<=0.9", "g/L", low="0.9")])[0] == 0
        assert score(definition, units, labs=[lab(catalogue, "c3", "<0.9", "g/L", low="0.9")])[0] == 2
        assert score(definition, units, labs=[lab(catalogue, "anti_dsdna", ">=100", "IU/mL", high="100")])[0] == 0


class TestAttribution:
    def test_not_attributed_descriptor_scores_nothing_but_is_kept(
        self, definition: SledaiDefinition, units: UnitConverter, catalogue: LabCatalogue
    ) -> None:
        labs = [lab(catalogue, "wbc", "2.1", "10^9/L", rid="W"), lab(catalogue, "urine_wbc", "20", "/HPF", rid="U")]
        result = score_sledai(
            definition,
            flagged=(),
            labs=labs,
            assessed_on=ASSESSED,
            window_days=None,
            units=units,
            not_attributed={"leukopenia": "cyclophosphamide", "pyuria": "urinary tract infection", "fever": ""},
        )
        assert result.total == 0 and result.computed_total == 0
        kept = {d.key: (d.source, d.points, d.evidence) for d in result.descriptors}
        assert kept == {
            "pyuria": ("not-attributed", 0, ("U",)),
            "fever": ("not-attributed", 0, ()),
            "leukopenia": ("not-attributed", 0, ("W",)),
        }

    def test_crf_total_is_the_score(
        self, definition: SledaiDefinition, units: UnitConverter, catalogue: LabCatalogue
    ) -> None:
        labs = [lab(catalogue, "urine_rbc", "30", "/HPF")]
        result = score_sledai(
            definition,
            flagged=("arthritis",),
            labs=labs,
            assessed_on=ASSESSED,
            window_days=None,
            units=units,
            reported_total=4,
        )
        assert (result.total, result.computed_total, result.assessed_total) == (4, 8, 4)
        hematuria = next(d for d in result.descriptors if d.key == "hematuria")
        assert (hematuria.counted, hematuria.points) == (False, 0) and "CRF" in hematuria.why

    def test_window_of_zero_is_not_the_default(self, definition: SledaiDefinition, units: UnitConverter) -> None:
        with pytest.raises(ValueError, match="window_days 0"):
            score(definition, units, window=0)
