"""The lab catalogue picks the LOINC code from what the lab reported: unit, method and value kind."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhir_lupus.errors import TerminologyError, UnitError
from fhir_lupus.terminology import LabCatalogue, MappingPack, parse_lab_value


def resolve(
    catalogue: LabCatalogue,
    analyte: str,
    value: str,
    unit: str | None = None,
    method: str | None = None,
    specimen: str | None = None,
) -> str:
    parsed = parse_lab_value(value, catalogue.pack.ordinals)
    return catalogue.resolve(analyte, parsed, unit, method, specimen).code.code


class TestCodeChoice:
    def test_creatinine_code_follows_the_unit(self, catalogue: LabCatalogue) -> None:
        assert resolve(catalogue, "creatinine", "88", "umol/L") == "14682-9"
        assert resolve(catalogue, "creatinine", "88", "µmol/L") == "14682-9"
        assert resolve(catalogue, "creatinine", "1.0", "mg/dL") == "2160-0"

    def test_urea_and_bun_are_different_codes(self, catalogue: LabCatalogue) -> None:
        assert resolve(catalogue, "urea", "6.1", "mmol/L") == "22664-7"
        assert resolve(catalogue, "bun", "17", "mg/dL") == "3094-0"
        assert resolve(catalogue, "bun", "6.1", "mmol/L") == "14937-7"

    def test_egfr_code_follows_the_formula(self, catalogue: LabCatalogue) -> None:
        assert resolve(catalogue, "egfr", "95", "mL/min/1.73m2", "ckd-epi-2021") == "98979-8"
        assert resolve(catalogue, "egfr", "95", "mL/min/1.73m2", "ckd-epi-2009") == "62238-1"
        assert resolve(catalogue, "egfr", "95", "mL/min/1.73m2", "mdrd") == "33914-3"
        with pytest.raises(TerminologyError, match="no code for egfr"):
            resolve(catalogue, "egfr", "95", "mL/min/1.73m2", None)

    def test_ana_code_follows_the_value_kind_and_the_method(self, catalogue: LabCatalogue) -> None:
        assert resolve(catalogue, "ana", "1:640", method="ifa") == "5048-4"
        assert resolve(catalogue, "ana", "1:640", method="iif") == "5048-4"
        assert resolve(catalogue, "ana", "1:640") == "29953-7"  # no method stated: the method-less titer
        assert resolve(catalogue, "ana", "positive") == "8061-4"
        assert resolve(catalogue, "ana", "positive", method="ifa") == "42254-3"
        assert resolve(catalogue, "ana", "positive", method="elisa") == "47383-5"

    def test_ana_titer_by_elisa_is_refused_not_coded_as_immunofluorescence(self, catalogue: LabCatalogue) -> None:
        with pytest.raises(TerminologyError, match="refused: an immunoassay reports units or presence") as caught:
            resolve(catalogue, "ana", "1:320", method="elisa", specimen="serum")
        assert caught.value.field == "method"

    def test_ana_with_an_unknown_method_is_refused(self, catalogue: LabCatalogue) -> None:
        with pytest.raises(TerminologyError, match="method western-blot"):
            resolve(catalogue, "ana", "1:320", method="western-blot")

    def test_anti_dsdna(self, catalogue: LabCatalogue) -> None:
        assert resolve(catalogue, "anti_dsdna", "250", "IU/mL") == "5130-0"
        assert resolve(catalogue, "anti_dsdna", "negative") == "31348-6"
        # Crithidia IIF titer: no verified method-specific code, so the method-less titer code (never 11235-9)
        assert resolve(catalogue, "anti_dsdna", "1:80", method="crithidia") == "11013-0"
        assert resolve(catalogue, "anti_dsdna", "1:80") == "11013-0"
        with pytest.raises(TerminologyError, match="refused"):
            resolve(catalogue, "anti_dsdna", "1:80", method="elisa")

    def test_urine_creatinine_is_not_serum_creatinine(self, catalogue: LabCatalogue) -> None:
        with pytest.raises(TerminologyError, match="refused: this analyte is serum/plasma creatinine"):
            resolve(catalogue, "creatinine", "8000", "µmol/L", specimen="urine")
        assert resolve(catalogue, "creatinine", "88", "µmol/L", specimen="serum") == "14682-9"
        assert resolve(catalogue, "urine_creatinine", "8000", "µmol/L", specimen="urine") == "14683-7"
        assert resolve(catalogue, "urine_creatinine", "90", "mg/dL", specimen="urine") == "2161-8"
        assert resolve(catalogue, "urine_creatinine_24h", "9.5", "mmol/24h", specimen="urine-24h") == "14684-5"
        assert resolve(catalogue, "urine_creatinine_24h", "1.1", "g/24h", specimen="urine-24h") == "2162-6"
        with pytest.raises(TerminologyError):  # a spot-urine code is not for a 24-hour collection
            resolve(catalogue, "urine_creatinine", "8000", "µmol/L", specimen="urine-24h")

    def test_every_code_checks_the_specimen(self, catalogue: LabCatalogue) -> None:
        for key, analyte in catalogue.pack.labs.analytes.items():
            for choice in analyte.codes:
                assert choice.when.specimen, (key, choice.code)
        with pytest.raises(TerminologyError, match="specimen urine") as caught:
            resolve(catalogue, "c3", "0.9", "g/L", specimen="urine")
        assert caught.value.field == "specimen"
        with pytest.raises(TerminologyError):
            resolve(catalogue, "urine_rbc", "12", "/HPF", specimen="serum")

    def test_egfr_in_ml_per_min_is_refused(self, catalogue: LabCatalogue) -> None:
        # 98979-8 is a property per 1.73 m2: a raw mL/min must not take it, whatever the formula
        with pytest.raises(TerminologyError, match="refused: an eGFR in mL/min is not normalised"):
            resolve(catalogue, "egfr", "95", "mL/min", "ckd-epi-2021", specimen="serum")

    def test_clearance_code_follows_the_body_surface_annotation(self, catalogue: LabCatalogue) -> None:
        assert resolve(catalogue, "creatinine_clearance", "80", "mL/min", specimen="urine-24h") == "2164-2"
        with pytest.raises(TerminologyError, match=r"refused: a clearance per 1\.73 m2"):
            resolve(catalogue, "creatinine_clearance", "80", "mL/min/1.73m2", specimen="urine-24h")
        assert resolve(catalogue, "creatinine_clearance_bsa", "80", "mL/min/1.73m2", specimen="urine-24h") == "12195-4"
        with pytest.raises(TerminologyError):
            resolve(catalogue, "creatinine_clearance_bsa", "80", "mL/min", specimen="urine-24h")

    def test_protein_creatinine_ratio_in_mg_per_mmol(self, catalogue: LabCatalogue) -> None:
        assert resolve(catalogue, "urine_pcr", "150", "mg/mmol", specimen="urine") == "34366-5"
        assert resolve(catalogue, "urine_pcr", "1300", "mg/g", specimen="urine") == "2890-2"
        # through creatinine's molar mass: 1 mg/mmol = 1000/113.12 mg/g
        assert catalogue.normalise("urine_pcr", 100, "mg/mmol") == (pytest.approx(884.017, rel=1e-5), "mg/g")

    def test_24h_protein_in_mg_keeps_its_code(self, catalogue: LabCatalogue) -> None:
        assert resolve(catalogue, "urine_protein_24h", "1500", "mg/24h") == "2889-4"

    def test_unit_of_the_wrong_dimension_is_refused(self, catalogue: LabCatalogue) -> None:
        with pytest.raises(TerminologyError, match="catalogue accepts"):
            resolve(catalogue, "c3", "0.9", "mmol/L")

    def test_arbitrary_unit_must_match_exactly(self, catalogue: LabCatalogue) -> None:
        with pytest.raises(TerminologyError):
            resolve(catalogue, "urine_rbc", "12", "/LPF")

    def test_number_without_unit_and_ordinal_with_unit(self, catalogue: LabCatalogue) -> None:
        with pytest.raises(UnitError, match="needs a unit"):
            resolve(catalogue, "c3", "0.9")
        with pytest.raises(UnitError, match="takes no unit"):
            resolve(catalogue, "urine_protein_dipstick", "2+", "g/L")

    def test_unknown_analyte(self, catalogue: LabCatalogue) -> None:
        with pytest.raises(TerminologyError, match="not in the lab catalogue"):
            resolve(catalogue, "troponin", "1", "ng/L")


class TestParseValue:
    def test_forms(self, pack: MappingPack) -> None:
        ordinals = pack.ordinals
        assert parse_lab_value("12.50", ordinals).number == Decimal("12.50")
        less = parse_lab_value("< 0.5", ordinals)
        assert (less.kind, less.comparator, less.number) == ("quantity", "<", Decimal("0.5"))
        assert parse_lab_value(">=1000", ordinals).comparator == ">="
        assert parse_lab_value("1:1280", ordinals).titer == 1280
        assert parse_lab_value("Trace", ordinals).ordinal == "trace"
        assert parse_lab_value("3+", ordinals).kind == "ordinal"

    @pytest.mark.parametrize("bad", ["high", "1:0", "1:x", "12,5", "--3", "1:"])
    def test_unreadable_values(self, pack: MappingPack, bad: str) -> None:
        with pytest.raises(ValueError):
            parse_lab_value(bad, pack.ordinals)


def test_every_catalogue_code_names_loinc_and_every_unit_is_ucum(pack: MappingPack, catalogue: LabCatalogue) -> None:
    for key, analyte in pack.labs.analytes.items():
        for choice in analyte.codes:
            assert choice.display, key
            if choice.when.unit_like:
                assert catalogue.units.to_ucum(choice.when.unit_like) == choice.when.unit_like
        if analyte.trial_unit:
            catalogue.units.to_ucum(analyte.trial_unit)
