"""SDTM datasets from the trial: the generic engine (study days, --SEQ, ISO 8601), DM's facts, keyed
de-identification as `registry package` does it, and the output written whole or not at all."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fhir_lupus.cli import app
from fhir_lupus.errors import FhirLupusError, RejectedRows
from fhir_lupus.registry import RegistryKey, date_shift, load_rules
from fhir_lupus.sdtm import DomainSpec, TrialDesign, build_datasets, iso_8601, sdtm_trial, study_day
from fhir_lupus.sdtm._engine import build_dataset
from fhir_lupus.sdtm._sources import SdtmContext
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

runner = CliRunner()


class TestEngine:
    @pytest.mark.parametrize(
        ("dtc", "day"),
        [("2008-01-06", 1), ("2008-01-07T10:00", 2), ("2008-01-05", -1), ("2007-12-31", -6), ("2008", None)],
    )
    def test_study_days_have_no_day_zero(self, dtc: str, day: int | None) -> None:
        assert study_day(dtc, "2008-01-06T08:00") == day

    def test_dates_are_local_clock_time_without_the_offset(self) -> None:
        moment = datetime(2008, 1, 6, 8, 0, tzinfo=timezone(timedelta(hours=8)))
        assert iso_8601(moment) == "2008-01-06T08:00"
        assert iso_8601(moment.replace(second=30)) == "2008-01-06T08:00:30"
        assert iso_8601(date(2008, 1, 6)) == "2008-01-06" and iso_8601(None) == "" and iso_8601("1975") == "1975"

    def test_sequence_numbers_follow_the_keys_per_subject(self) -> None:
        spec = DomainSpec.model_validate(
            {
                "domain": "XX",
                "label": "Test",
                "class": "FINDINGS",
                "structure": "One record per thing",
                "keys": ["USUBJID", "XXDTC", "XXSEQ"],
                "rows": "things",
                "variables": [
                    {
                        "name": "USUBJID",
                        "label": "U",
                        "origin": "Derived",
                        "role": "Identifier",
                        "core": "Req",
                        "source": "u",
                    },
                    {
                        "name": "XXSEQ",
                        "label": "S",
                        "type": "integer",
                        "origin": "Derived",
                        "role": "Identifier",
                        "core": "Req",
                        "transform": "seq",
                    },
                    {
                        "name": "XXDTC",
                        "label": "D",
                        "origin": "Collected",
                        "role": "Timing",
                        "core": "Exp",
                        "source": "d",
                        "transform": "iso_date",
                    },
                    {
                        "name": "XXDY",
                        "label": "Y",
                        "type": "integer",
                        "origin": "Derived",
                        "role": "Timing",
                        "core": "Perm",
                        "source": "d",
                        "transform": "study_day",
                        "relative_to": "XXDTC",
                    },
                ],
            }
        )
        rows = [{"u": "B", "d": date(2008, 1, 9)}, {"u": "A", "d": date(2008, 1, 8)}, {"u": "A", "d": date(2008, 1, 1)}]
        dataset = build_dataset(spec, rows, {"A": "2008-01-05", "B": "2008-01-09"})
        assert [(r["USUBJID"], r["XXSEQ"], r["XXDTC"], r["XXDY"]) for r in dataset.records] == [
            ("A", 1, "2008-01-01", -4),
            ("A", 2, "2008-01-08", 4),
            ("B", 1, "2008-01-09", 1),
        ]

    def test_a_mapping_with_two_sources_for_one_variable_is_refused(self) -> None:
        with pytest.raises(ValueError, match="exactly one of"):
            DomainSpec.model_validate(
                {
                    "domain": "XX",
                    "label": "T",
                    "class": "F",
                    "structure": "s",
                    "keys": ["A"],
                    "rows": "r",
                    "variables": [
                        {
                            "name": "A",
                            "label": "A",
                            "origin": "Assigned",
                            "role": "I",
                            "core": "Req",
                            "source": "a",
                            "value": "x",
                        }
                    ],
                }
            )


class TestDemographics:
    def test_one_record_per_subject_with_reference_dates_from_treatment(self, dataset: Callable[..., Path]) -> None:
        settings = Settings.default()
        data = TrialSource.directory(dataset(), settings=settings).whole()
        [dm] = [d for d in build_datasets(SdtmContext(data, settings.pack)) if d.name == "DM"]
        by_subject = {r["SUBJID"]: r for r in dm.records}
        assert sorted(by_subject) == sorted(s.record.subject_id for s in data.subjects)
        first = by_subject["MSC-001"]
        treatments = sorted(p.record.started_at for p in data.procedures if p.record.subject_id == "MSC-001")
        assert first["RFSTDTC"] == first["RFXSTDTC"] == iso_8601(treatments[0])  # the pretreatment, not the infusion
        assert first["USUBJID"] == f"{data.study.nct_id}-MSC-001" and first["STUDYID"] == data.study.nct_id
        assert first["SEX"] == "F" and first["AGEU"] == "YEARS" and first["COUNTRY"] == "CHN"
        assert isinstance(first["AGE"], int) and 18 <= first["AGE"] <= 80
        assert first["SITEID"] == settings.site.location.key
        assert by_subject["MSC-002"]["SEX"] == "M"

    def test_a_key_gives_the_registry_pseudonym_and_moves_dates_by_the_same_offset(
        self, dataset: Callable[..., Path]
    ) -> None:
        settings = Settings.default()
        data = TrialSource.directory(dataset(), settings=settings).whole()
        key = RegistryKey(b"k" * 32)
        plain = {r["SUBJID"]: r for r in _dm(SdtmContext(data, settings.pack))}
        keyed = _dm(SdtmContext(data, settings.pack, key))
        subject_system = settings.pack.identifier_system("subject", study=data.study.nct_id)
        pseudonym = key.hex("identifier", subject_system, "MSC-001")
        [row] = [r for r in keyed if r["USUBJID"] == pseudonym]
        assert "MSC-001" not in json.dumps(keyed)
        shift = date_shift(key, data.study.nct_id, "MSC-001", load_rules(settings.pack))
        moved = datetime.fromisoformat(str(plain["MSC-001"]["RFSTDTC"])) + timedelta(days=shift)
        assert row["RFSTDTC"] == moved.isoformat(timespec="minutes")


def _dm(ctx: SdtmContext) -> list[dict[str, object]]:
    return next(d for d in build_datasets(ctx) if d.name == "DM").records  # type: ignore[return-value]


class TestOutput:
    def test_json_and_xpt_hold_the_same_records(self, dataset: Callable[..., Path], tmp_path: Path) -> None:
        import pyreadstat

        out = tmp_path / "sdtm"
        result = sdtm_trial(TrialSource.directory(dataset()), out, created=datetime(2026, 1, 1, tzinfo=UTC))
        document = json.loads((out / "dm.json").read_text(encoding="utf-8"))
        assert document["records"] == len(document["rows"]) == result.datasets["DM"] == 2
        assert document["datasetJSONVersion"].startswith("1.1") and document["itemGroupOID"] == "IG.DM"
        names = [c["name"] for c in document["columns"]]
        frame, meta = pyreadstat.read_xport(str(out / "dm.xpt"))
        assert list(frame.columns) == names and meta.table_name == "DM"
        assert sorted(frame["USUBJID"]) == sorted(row[names.index("USUBJID")] for row in document["rows"])

    def test_rejected_rows_write_nothing_and_keep_the_earlier_output(
        self, dataset: Callable[..., Path], tmp_path: Path
    ) -> None:
        out = tmp_path / "sdtm"
        sdtm_trial(TrialSource.directory(dataset()), out, output="json")
        before = (out / "dm.json").read_bytes()

        def spoil(rows: dict[str, list[dict[str, str]]]) -> None:
            rows["labs.csv"][0]["collected_at"] = "yesterday"

        with pytest.raises(RejectedRows):
            sdtm_trial(TrialSource.directory(dataset(spoil)), out, output="json")
        assert (out / "dm.json").read_bytes() == before
        assert {p.name for p in tmp_path.iterdir()} == {"sdtm", "data"}  # no staging directory left

    def test_a_directory_with_other_files_is_not_replaced(self, dataset: Callable[..., Path], tmp_path: Path) -> None:
        out = tmp_path / "mine"
        out.mkdir()
        (out / "notes.txt").write_text("keep me", encoding="utf-8")
        with pytest.raises(FhirLupusError, match="not SDTM output"):
            sdtm_trial(TrialSource.directory(dataset()), out)
        assert (out / "notes.txt").read_text(encoding="utf-8") == "keep me"

    def test_the_command(self, dataset: Callable[..., Path], tmp_path: Path) -> None:
        result = runner.invoke(app, ["sdtm", str(dataset()), "-o", str(tmp_path / "out"), "--format", "json"])
        assert result.exit_code == 0, result.output
        assert "wrote" in result.output and "DM 2" in result.output
        domains = Settings.default().pack.load(TrialDesign, "sdtm/trial.yaml").domains
        assert "dm" in domains  # one file per domain of mappings/sdtm/trial.yaml, define.xml and the guide
        written = sorted([*(f"{d}.json" for d in domains), "define.xml", "reviewers-guide.md"])
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == written


class TestLaboratory:
    def _lb(self, data_dir: Path) -> dict[str, dict[str, object]]:
        settings = Settings.default()
        data = TrialSource.directory(data_dir, settings=settings).whole()
        [lb] = [d for d in build_datasets(SdtmContext(data, settings.pack)) if d.name == "LB"]
        return {str(r["LBREFID"]): r for r in lb.records}

    def test_reported_and_standard_values_units_and_verdicts(self, dataset: Callable[..., Path]) -> None:
        lb = self._lb(dataset())
        c3 = lb["L1"]
        assert (c3["LBTESTCD"], c3["LBORRES"], c3["LBORRESU"], c3["LBSTRESN"], c3["LBNRIND"]) == (
            "C3",
            "0.45",
            "g/L",
            0.45,
            "LOW",
        )
        platelets = lb["L9"]
        assert platelets["LBORRESU"] == platelets["LBSTRESU"] == "10^9/L" and platelets["LBSPEC"] == "BLOOD"
        censored = lb["L7"]  # "<10": kept in LBSTRESC with its comparator, no number, no verdict it does not prove
        assert (censored["LBSTRESC"], censored["LBSTRESN"], censored["LBNRIND"]) == ("<10", None, "")
        assert lb["L4"]["LBORRES"] == "1:320" and lb["L4"]["LBSTRESN"] is None
        assert lb["L8"]["LBMETHOD"] and lb["L6"]["LBSTRESU"] == "g/day"

    def test_a_unit_the_trial_does_not_use_is_standardised(self, dataset: Callable[..., Path]) -> None:
        def in_mg_dl(rows: dict[str, list[dict[str, str]]]) -> None:
            creatinine = next(r for r in rows["labs.csv"] if r["result_id"] == "L2")
            creatinine.update(value="1.0", unit="mg/dL", ref_low="0.5", ref_high="1.5")

        record = self._lb(dataset(in_mg_dl))["L2"]
        assert (record["LBORRES"], record["LBORRESU"], record["LBSTRESU"]) == ("1.0", "mg/dL", "umol/L")
        assert record["LBSTRESN"] == pytest.approx(88.4, abs=0.1) and record["LBSTNRHI"] == pytest.approx(
            132.6, abs=0.1
        )

    def test_the_last_result_before_the_first_treatment_is_flagged(self, dataset: Callable[..., Path]) -> None:
        lb = self._lb(dataset())
        assert lb["L1"]["LBLOBXFL"] == "Y"  # BL, before the pretreatment
        assert lb["L10"]["LBLOBXFL"] == ""  # M01, after it
        flagged = [r for r in lb.values() if r["LBLOBXFL"] == "Y"]
        assert len({(r["USUBJID"], r["LBTESTCD"], r["LBSPEC"]) for r in flagged}) == len(flagged)


def test_a_value_that_fails_the_projects_own_check_is_never_written(
    dataset: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What CORE does not check (here a date that is not ISO 8601) stops the run before anything is written."""
    from fhir_lupus.sdtm import _rows

    plain = _rows.ROW_SOURCES["subjects"]

    def spoiled(ctx: SdtmContext) -> Iterator[dict[str, object]]:
        for row in plain(ctx):
            yield {**row, "consent": "2008/01/02"}

    monkeypatch.setitem(_rows.ROW_SOURCES, "subjects", spoiled)
    out = tmp_path / "sdtm"
    with pytest.raises(FhirLupusError, match=r"RFICDTC='2008/01/02'"):
        sdtm_trial(TrialSource.directory(dataset()), out, output="json")
    assert not out.exists()
