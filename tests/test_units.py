"""Unit normalisation through the UCUM library: allowed conversions, forbidden ones, located errors."""

from __future__ import annotations

import pytest

from fhir_lupus.errors import UnitError
from fhir_lupus.terminology import LabCatalogue, UnitConverter


class TestToUcum:
    @pytest.mark.parametrize(
        ("reported", "ucum"),
        [
            ("µmol/L", "umol/L"),
            ("μmol/L", "umol/L"),
            ("10^9/L", "10*9/L"),
            ("/HPF", "/[HPF]"),
            ("IU/mL", "[IU]/mL"),
            ("g/24h", "g/(24.h)"),
            ("mL/min/1.73m2", "mL/min/{1.73_m2}"),
            ("mg/dL", "mg/dL"),
        ],
    )
    def test_aliases_and_plain_ucum(self, units: UnitConverter, reported: str, ucum: str) -> None:
        assert units.to_ucum(reported) == ucum

    @pytest.mark.parametrize("bad", ["furlongs/fortnight", "mg/dLL", "", "   "])
    def test_unknown_unit_is_an_error(self, units: UnitConverter, bad: str) -> None:
        with pytest.raises(UnitError):
            units.to_ucum(bad)


class TestConvert:
    @pytest.mark.parametrize(
        ("value", "source", "target", "expected"),
        [
            (90, "mg/dL", "g/L", 0.9),  # C3
            (0.9, "g/L", "mg/dL", 90),
            (25, "mg/dL", "g/L", 0.25),  # C4
            (1500, "mg/(24.h)", "g/(24.h)", 1.5),  # 24-h protein
            (2.1, "g/(24.h)", "mg/(24.h)", 2100),
            (5.0, "10*3/uL", "10*9/L", 5.0),
        ],
    )
    def test_same_dimension(
        self, units: UnitConverter, value: float, source: str, target: str, expected: float
    ) -> None:
        assert units.convert(value, source, target) == pytest.approx(expected, rel=1e-12)

    def test_creatinine_mass_to_molar_needs_molar_mass(self, units: UnitConverter, catalogue: LabCatalogue) -> None:
        with pytest.raises(UnitError, match="molar mass"):
            units.convert(1.0, "mg/dL", "umol/L")
        # 1 mg/dL creatinine = 88.4 umol/L (molar mass 113.12 g/mol)
        value, unit = catalogue.normalise("creatinine", 1.0, "mg/dL")
        assert unit == "umol/L" and value == pytest.approx(88.40, abs=0.01)
        back, _ = catalogue.normalise("creatinine", 88.4, "umol/L")
        assert back == 88.4

    def test_urea_is_not_bun_but_converts_via_nitrogen(self, catalogue: LabCatalogue) -> None:
        # urea 5.0 mmol/L carries 10 mmol/L nitrogen = 140.07 mg/L = 14.007 mg/dL BUN
        assert catalogue.convert_across("urea", "bun", 5.0, "mmol/L") == pytest.approx(14.0067, rel=1e-6)
        # and urea's own mass concentration uses the whole molecule (60.06 g/mol): 5 mmol/L = 30.03 mg/dL
        assert catalogue.units.convert(5.0, "mmol/L", "mg/dL", molar_mass=60.06) == pytest.approx(30.03)

    @pytest.mark.parametrize(("source", "target"), [("[IU]/mL", "U/mL"), ("/[HPF]", "/[LPF]"), ("[IU]/mL", "[IU]/L")])
    def test_arbitrary_units_never_convert(self, units: UnitConverter, source: str, target: str) -> None:
        with pytest.raises(UnitError, match="arbitrary"):
            units.convert(10, source, target)

    def test_arbitrary_unit_identity_is_allowed(self, units: UnitConverter) -> None:
        assert units.convert(150, "[IU]/mL", "[IU]/mL") == 150

    def test_incompatible_dimensions(self, units: UnitConverter) -> None:
        with pytest.raises(UnitError):
            units.convert(1, "g/L", "mL/min")


class TestAnnotations:
    """UCUM counts {1.73_m2} as 1; a rate per body surface and a raw rate are still different quantities."""

    def test_annotation_decides_commensurability(self, units: UnitConverter) -> None:
        assert units.commensurable("mL/min/{1.73_m2}", "mL/min/{1.73_m2}")
        assert units.commensurable("L/h", "mL/min")
        assert not units.commensurable("mL/min", "mL/min/{1.73_m2}")
        assert not units.commensurable("mL/min/{1.73_m2}", "mL/min")

    def test_never_converted_across_annotations(self, units: UnitConverter) -> None:
        with pytest.raises(UnitError, match="differ in annotation"):
            units.convert(80, "mL/min", "mL/min/{1.73_m2}")
        with pytest.raises(UnitError, match="differ in annotation"):
            units.convert(80, "mL/min/{1.73_m2}", "mL/min")

    def test_annotation_stays_in_the_display(self, units: UnitConverter) -> None:
        assert "{1.73_m2}" in units.display("mL/min/{1.73_m2}")


def test_the_catalogues_own_units_are_decided_without_building_ucum() -> None:
    """A pull whose results carry the catalogue's units (the example's) never builds the UCUM registry, about a
    second of CPU (issue 25): equal units are commensurable and convert to themselves without UCUM. Run in a
    fresh interpreter: this one's registry may be built by another test."""
    import json
    import os
    import subprocess
    import sys

    from support import REPO

    probe = (
        "import json, sys\n"
        "from fhir_lupus.settings import Settings\n"
        "from fhir_lupus.terminology import UnitConverter\n"
        "pack = Settings.default().pack\n"
        "units = UnitConverter(pack)\n"
        "seen = sorted({c.when.unit_like for a in pack.labs.analytes.values() for c in a.codes if c.when.unit_like})\n"
        "decided = [units.commensurable(u, u) and units.convert(2.5, u, u) == 2.5 for u in seen]\n"
        "print(json.dumps({'units': len(seen), 'all': all(decided), 'ucum': 'ucumvert' in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["units"] >= 5 and found["all"]
    assert found["ucum"] is False
