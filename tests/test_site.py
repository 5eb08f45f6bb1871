"""The site profile: what identifies a site, the placeholder refusal before a real push, systems that follow the
canonical base, and a change of system after a push (found again through superseded values, or refused)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import yaml
from fakefhir import FakeFhir
from typer.testing import CliRunner

from fhir_lupus.cli import app
from fhir_lupus.client import FhirClient
from fhir_lupus.errors import MappingError, SiteProfileError
from fhir_lupus.journal import Journal
from fhir_lupus.pipeline import map_trial
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import (
    EXAMPLE_PROFILE,
    SITE_TEMPLATE,
    MappingPack,
    is_loopback,
    is_placeholder,
    load_site_profile,
    placeholders,
)

runner = CliRunner()
REAL_BASE = "https://fhir.drumtower-hospital.cn/fhir"
REAL_MRN = "https://fhir.drumtower-hospital.cn/sid/mrn"


def real_profile(directory: Path, *, base: str = REAL_BASE, mrn: str = REAL_MRN, **superseded: Any) -> Path:
    """The example profile with real-looking systems (and ``superseded`` values), written to ``directory``."""
    profile = yaml.safe_load((Settings.default().pack.root / EXAMPLE_PROFILE).read_text(encoding="utf-8"))
    profile["canonical_base"] = base
    profile["identifier_systems"]["mrn"] = mrn
    profile["superseded"] = {"canonical_base": [], "identifier_systems": {}, **superseded}
    path = directory / f"site-{abs(hash((base, mrn, str(superseded))))}.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    return path


class TestReservedNames:
    @pytest.mark.parametrize(
        "uri",
        [
            "https://fhir-lupus.example.org/fhir",
            "https://example.com/sid/mrn",
            "http://sub.example.net/x",
            "https://hospital.invalid/fhir",
            "https://fhir.your-hospital.example/sid/mrn",
            "https://fake.test/fhir",
            "https://EXAMPLE.ORG/fhir",
        ],
    )
    def test_uris_under_reserved_domains_are_placeholders(self, uri: str) -> None:
        assert is_placeholder(uri)

    @pytest.mark.parametrize(
        "uri",
        ["https://clinicaltrials.gov/nctid", "https://fhir.drumtower-hospital.cn/sid/mrn", "https://myexample.org/x"],
    )
    def test_real_domains_are_not(self, uri: str) -> None:
        assert not is_placeholder(uri)

    @pytest.mark.parametrize(
        ("url", "loopback"),
        [
            ("http://127.0.0.1:18080/fhir", True),
            ("http://127.9.9.9/fhir", True),
            ("http://localhost:8080/fhir", True),
            ("http://[::1]:8080/fhir", True),
            ("http://10.0.0.5/fhir", False),
            ("https://fhir.hospital.cn/fhir", False),
            ("https://hospital.invalid/fhir", False),
            ("http://127.0.0.1.nip.io/fhir", False),
        ],
    )
    def test_loopback_servers(self, url: str, loopback: bool) -> None:
        assert is_loopback(url) is loopback


class TestProfiles:
    def test_the_example_profile_is_the_registered_site_under_placeholder_systems(self) -> None:
        settings = Settings.default()
        site = settings.site
        assert "Drum Tower Hospital" in site.location.name and site.location.country == "CN"
        found = placeholders(settings.pack.site_systems())
        assert any(f.startswith("canonical_base ") for f in found)
        assert any(f.startswith("identifier_systems.mrn ") for f in found)

    def test_the_template_site_init_writes_still_has_placeholders(self, pack: MappingPack) -> None:
        template = pack.with_site(load_site_profile(pack.root / SITE_TEMPLATE))
        assert {f.split(" ")[0] for f in placeholders(template.site_systems())} == {
            "canonical_base",
            "identifier_systems.mrn",
        }

    def test_derived_systems_follow_the_canonical_base(self, tmp_path: Path) -> None:
        settings = Settings.from_mappings(None, site=real_profile(tmp_path))
        pack = settings.pack
        assert pack.identifier_system("subject", study="NCT1") == f"{REAL_BASE}/sid/NCT1/subject"
        assert pack.system_uri("project") == f"{REAL_BASE}/CodeSystem/fhir-lupus"
        assert pack.extension_url("sledai_window").startswith(REAL_BASE + "/")
        assert pack.identifier_system("mrn", study="NCT1") == REAL_MRN
        assert placeholders(pack.site_systems()) == []
        assert Settings.default().pack.identifier_system("subject", study="NCT1") != pack.identifier_system(
            "subject", study="NCT1"
        )

    def test_mapped_resources_carry_the_site(self, dataset: Callable[..., Path], tmp_path: Path) -> None:
        settings = Settings.from_mappings(None, site=real_profile(tmp_path))
        resources = map_trial(TrialSource.directory(dataset(), settings=settings), settings=settings).resources
        patients = [r for r in resources if r["resourceType"] == "Patient"]
        assert patients and all(
            i["system"] in (REAL_MRN, f"{REAL_BASE}/sid/pseudonym") for p in patients for i in p["identifier"]
        )
        assert any(i["system"] == REAL_MRN for p in patients for i in p["identifier"])
        [location] = [r for r in resources if r["resourceType"] == "Location"]
        assert location["managingOrganization"]["identifier"]["system"] == f"{REAL_BASE}/sid/organization"
        assert location["managingOrganization"]["display"] == settings.site.organization.name
        texts = repr(resources)
        assert "example.org" not in texts, "a system of the example profile leaked into a real site's resources"

    def test_a_misspelt_key_names_the_file(self, tmp_path: Path) -> None:
        path = real_profile(tmp_path)
        path.write_text(path.read_text(encoding="utf-8").replace("canonical_base:", "canonical_bse:"), "utf-8")
        with pytest.raises(MappingError, match=str(path)):
            Settings.from_mappings(None, site=path)

    def test_superseded_names_must_exist(self, tmp_path: Path) -> None:
        path = real_profile(tmp_path, identifier_systems={"mnr": ["https://old.hospital.cn/mrn"]})
        with pytest.raises(MappingError, match="mnr"):
            Settings.from_mappings(None, site=path)

    def test_the_profiles_smart_client_fills_a_connection_without_credentials(self, tmp_path: Path) -> None:
        path = real_profile(tmp_path)
        profile = yaml.safe_load(path.read_text(encoding="utf-8"))
        profile["smart"] = {"client_id": "lupus", "key_file": "key.pem", "algorithm": "ES384", "kid": "k1"}
        path.write_text(yaml.safe_dump(profile), encoding="utf-8")
        from fhir_lupus.client import Connection

        settings = Settings.from_mappings(None, site=path, connection=Connection("http://127.0.0.1:9/fhir"))
        assert settings.connection is not None
        assert (settings.connection.smart_client_id, settings.connection.smart_alg) == ("lupus", "ES384")
        assert settings.connection.smart_key == tmp_path / "key.pem" and settings.connection.smart_kid == "k1"
        token = Settings.from_mappings(None, site=path, connection=Connection("http://127.0.0.1:9/fhir", token="t"))
        assert token.connection is not None and token.connection.smart_client_id is None


class TestPlaceholderRefusal:
    @pytest.fixture
    def no_network(self) -> Iterator[respx.MockRouter]:
        with respx.mock(assert_all_called=False) as mock:
            mock.route().mock(return_value=httpx.Response(500))
            yield mock

    def test_push_to_a_real_server_is_refused_before_any_request_or_read(
        self, no_network: respx.MockRouter, tmp_path: Path
    ) -> None:
        unreadable = tmp_path / "not-a-trial"  # had push read the trial first, it would complain about this
        result = runner.invoke(
            app,
            ["push", str(unreadable), "--server", "https://hospital.invalid/fhir", "--journal", str(tmp_path / "j")],
        )
        message = " ".join(result.output.split())
        assert result.exit_code == 2, message
        assert "refused" in message and "identifier_systems.mrn" in message and "site init" in message
        assert "not-a-trial" not in message
        assert no_network.calls.call_count == 0
        assert not (tmp_path / "j").exists()

    def test_the_library_refuses_too(self, dataset: Callable[..., Path], tmp_path: Path) -> None:
        with respx.mock(assert_all_called=False) as mock:
            route = mock.route().mock(return_value=httpx.Response(500))
            with (
                FhirClient("https://hospital.invalid/fhir") as client,
                Journal(tmp_path / "j.sqlite") as journal,
                pytest.raises(SiteProfileError, match="placeholder"),
            ):
                push_trial(TrialSource.directory(dataset()), client, journal, source="test")
        assert route.call_count == 0

    def test_a_real_profile_or_a_loopback_server_is_not_refused(self, tmp_path: Path) -> None:
        Settings.default().refuse_placeholders("http://127.0.0.1:8080/fhir", "push")
        Settings.from_mappings(None, site=real_profile(tmp_path)).refuse_placeholders("https://h.invalid/f", "push")

    def test_registry_submit_of_a_package_with_placeholder_systems_is_refused(
        self, no_network: respx.MockRouter, dataset: Callable[..., Path], tmp_path: Path
    ) -> None:
        key = tmp_path / "registry.key"
        key.write_bytes(b"k" * 32)
        key.chmod(0o600)
        package, journal = tmp_path / "package", str(tmp_path / "j")
        made = runner.invoke(app, ["registry", "package", str(dataset()), "-o", str(package), "--key-file", str(key)])
        assert made.exit_code == 0, made.output
        result = runner.invoke(
            app,
            ["registry", "submit", str(package), "--server", "https://registry.invalid/fhir", "--journal", journal],
        )
        message = " ".join(result.output.split())
        assert result.exit_code == 2 and "placeholder" in message, message
        assert no_network.calls.call_count == 0
        assert not (tmp_path / "j").exists()


class TestChangedSystems:
    """A push under one canonical base, then under another: found again through the superseded value, or refused."""

    def _push(self, settings: Settings, data: Path, journal: Journal) -> Any:
        with FhirClient("http://127.0.0.1:9/fhir") as client:
            return push_trial(
                TrialSource.directory(data, settings=settings), client, journal, source="t", settings=settings
            )

    def test_a_changed_base_listed_as_superseded_updates_in_place(
        self, fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path
    ) -> None:
        data = dataset()
        first_site = Settings.from_mappings(None, site=real_profile(tmp_path))
        moved = "https://fhir.drumtower-hospital.cn/trials"
        second_site = Settings.from_mappings(None, site=real_profile(tmp_path, base=moved, canonical_base=[REAL_BASE]))
        with Journal(tmp_path / "j.sqlite") as journal:
            first = self._push(first_site, data, journal)
            assert first.complete and first.created > 0
            before = Counter({kind: len(fake.all(kind)) for kind in fake.store if kind != "Provenance"})
            second = self._push(second_site, data, journal)
        after = Counter({kind: len(fake.all(kind)) for kind in fake.store if kind != "Provenance"})
        assert second.complete, second.summary()
        assert after == before, "a changed base listed as superseded must not duplicate anything"
        assert second.created == 0 and second.updated > 0
        subjects = fake.all("ResearchSubject")
        assert all(i["system"].startswith(moved) for s in subjects for i in s["identifier"])
        [code_system] = fake.all("CodeSystem")
        assert code_system["url"] == f"{moved}/CodeSystem/fhir-lupus"

    def test_a_changed_base_not_listed_is_refused_before_anything_is_sent(
        self, fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path
    ) -> None:
        data = dataset()
        with Journal(tmp_path / "j.sqlite") as journal:
            self._push(Settings.from_mappings(None, site=real_profile(tmp_path)), data, journal)
            sent = len(fake.requests)
            before = {kind: len(fake.all(kind)) for kind in fake.store}
            moved = Settings.from_mappings(None, site=real_profile(tmp_path, base="https://other.hospital.cn/fhir"))
            with pytest.raises(SiteProfileError, match=f"canonical_base was {REAL_BASE}") as refused:
                self._push(moved, data, journal)
            assert "superseded.canonical_base" in str(refused.value)
            assert {kind: len(fake.all(kind)) for kind in fake.store} == before
            assert len(fake.requests) == sent

    def test_a_changed_mrn_system_must_be_listed(
        self, fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path
    ) -> None:
        data = dataset()
        new_mrn = "https://emr.drumtower-hospital.cn/mrn"
        with Journal(tmp_path / "j.sqlite") as journal:
            self._push(Settings.from_mappings(None, site=real_profile(tmp_path)), data, journal)
            patients = len(fake.all("Patient"))
            with pytest.raises(SiteProfileError, match=r"identifier_systems\.mrn"):
                self._push(Settings.from_mappings(None, site=real_profile(tmp_path, mrn=new_mrn)), data, journal)
            listed = real_profile(tmp_path, mrn=new_mrn, identifier_systems={"mrn": [REAL_MRN]})
            again = self._push(Settings.from_mappings(None, site=listed), data, journal)
        assert again.complete and len(fake.all("Patient")) == patients
        # the hospital's record, found under the MRN system it was written with, is linked and never overwritten
        assert all(i["system"] == REAL_MRN for p in fake.all("Patient") for i in p["identifier"] if "type" in i)


class TestSiteCommands:
    def test_site_init_writes_a_profile_that_site_check_flags(self, tmp_path: Path) -> None:
        made = runner.invoke(app, ["site", "init", str(tmp_path / "conf")])
        assert made.exit_code == 0, made.output
        profile = tmp_path / "conf" / "site.yaml"
        assert "EDIT" in profile.read_text(encoding="utf-8")
        checked = runner.invoke(app, ["site", "check", str(profile)])
        assert checked.exit_code == 1 and "placeholders" in checked.output
        again = runner.invoke(app, ["site", "init", str(tmp_path / "conf")])
        assert again.exit_code == 2 and "--force" in again.output

    def test_site_check_passes_a_real_profile(self, tmp_path: Path) -> None:
        checked = runner.invoke(app, ["site", "check", str(real_profile(tmp_path))])
        assert checked.exit_code == 0, checked.output
        assert f"{REAL_BASE}/sid/{{study}}/subject" in checked.output

    def test_mappings_export_copies_a_pack_that_loads(self, tmp_path: Path) -> None:
        target = tmp_path / "mine"
        result = runner.invoke(app, ["mappings", "export", str(target)])
        assert result.exit_code == 0, result.output
        exported = Settings.from_mappings(target)
        assert exported.pack.root == target.resolve()
        assert exported.pack.project == Settings.default().pack.project
        assert runner.invoke(app, ["mappings", "export", str(target)]).exit_code == 2  # not empty: refused
        (tmp_path / "empty").mkdir()
        assert runner.invoke(app, ["mappings", "export", str(tmp_path / "empty")]).exit_code == 0
