"""The push plan, routes and chunking: pure functions, no server, milliseconds."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from fakefhir import SYS, ref, res, trial
from support import REPO

from fhir_lupus.bundle import business_key, dependency_sorted, entry, key_id, load_matching_rules, local_ref
from fhir_lupus.client import Capabilities
from fhir_lupus.errors import MappingError
from fhir_lupus.journal import JournalEntry
from fhir_lupus.pull._reverse import load_pull_rules
from fhir_lupus.push import Match, content_hash, plan_batch, plan_routes
from fhir_lupus.push._apply import WriteLimits, make_chunks
from fhir_lupus.push._plan import PlanItem, load_finality_rules, needs_lookup
from fhir_lupus.push._routes import CREATE_BY_ID
from fhir_lupus.terminology import load_pack


def statement(
    *, params: dict[str, list[str]] | None = None, conditional: bool = True, update_create: bool | None = None
) -> Capabilities:
    types = ["CodeSystem", "Organization", "Location", "ResearchStudy", "Patient", "ResearchSubject", "Observation"]
    resources = []
    for name in types:
        declared = (params or {}).get(name, ["url", "system"] if name == "CodeSystem" else ["identifier"])
        item: dict[str, Any] = {
            "type": name,
            "interaction": [{"code": c} for c in ("read", "update", "create", "search-type")],
            "conditionalCreate": conditional,
            "conditionalUpdate": conditional,
            "searchParam": [{"name": p} for p in declared],
        }
        if update_create is not None:
            item["updateCreate"] = update_create
        resources.append(item)
    return Capabilities.from_statement(
        {
            "fhirVersion": "4.0.1",
            "rest": [{"mode": "server", "interaction": [{"code": "transaction"}], "resource": resources}],
        }
    )


def routes(caps: Capabilities | None = None, **options: Any) -> dict[str, Any]:
    types = {r["resourceType"] for r in trial()}
    return plan_routes(types, caps or statement(), load_matching_rules(), **options)


def plan(
    found: dict[tuple[str, str], list[Match]] | None = None,
    known: dict[Any, JournalEntry] | None = None,
    *,
    resources: list[dict[str, Any]] | None = None,
    **options: Any,
) -> dict[str, PlanItem]:
    resources = dependency_sorted(resources or trial())
    if found is None:
        found = {(r["resourceType"], business_key(r)): [] for r in resources}
    result = plan_batch(
        resources, options.pop("routes", None) or routes(), known=known or {}, found=found, server_refs={}, **options
    )
    return {item.resource["id"]: item for item in result.items}


class TestPlan:
    def test_everything_new_is_put_to_key_derived_ids_in_dependency_order(self) -> None:
        items = plan()
        assert {i.action for i in items.values()} == {"create"}
        create_only = {i.resource_type for i in items.values() if routes()[i.resource_type].create_only}
        assert create_only == {"Patient"}  # a hospital's Patient: created only if absent, conditionally
        for item in items.values():
            if item.resource_type in create_only:
                assert (item.write, item.server_id) == ("conditional", None)
            else:
                assert (item.write, item.server_id) == ("create-by-id", key_id(item.resource_type, item.key))
        assert len({i.server_id for i in items.values()}) == len(items)
        order = [r["id"] for r in dependency_sorted(trial())]
        assert order.index("org") < order.index("loc") < order.index("st") < order.index("rs")
        assert order.index("lab") < order.index("score")  # a score after the labs it is derived from

    def test_key_derived_ids_differ_by_identifier_system_not_by_our_record_id(self) -> None:
        lab = res("Observation", "lab")
        other_system = {**lab, "identifier": [{"system": "urn:elsewhere", "value": "lab"}]}
        same_key_other_id = {**lab, "id": "renamed"}
        assert key_id("Observation", business_key(lab)) != key_id("Observation", business_key(other_system))
        assert key_id("Observation", business_key(lab)) == key_id("Observation", business_key(same_key_other_id))
        assert key_id("Observation", business_key(lab)) != key_id("Procedure", business_key(lab))

    def test_new_resources_stay_conditional_on_request(self) -> None:
        items = plan(routes=routes(new_by_id=False))
        assert {i.action for i in items.values()} == {"create"}
        assert {i.write for i in items.values()} == {"conditional"}
        order = [r["id"] for r in dependency_sorted(trial())]
        assert order.index("org") < order.index("loc") < order.index("st") < order.index("rs")
        assert order.index("lab") < order.index("score")  # a score after the labs it is derived from

    def test_journal_settles_unchanged_and_updates_by_id(self) -> None:
        resources = {r["id"]: r for r in trial()}
        known = {
            ("Organization", f"{SYS}|org"): JournalEntry(
                "Organization", f"{SYS}|org", content_hash(resources["org"]), "S-ORG", "3", "created"
            ),
            ("Location", f"{SYS}|loc"): JournalEntry("Location", f"{SYS}|loc", "old-hash", "S-LOC", "1", "created"),
        }
        found = {(r["resourceType"], business_key(r)): [] for r in trial() if r["id"] not in ("org", "loc")}
        items = plan(found, known)
        assert items["org"].action == "unchanged" and items["org"].server_id == "S-ORG"
        assert (items["loc"].action, items["loc"].write, items["loc"].server_id) == ("update", "by-id", "S-LOC")
        assert needs_lookup(trial(), routes(), known, verify=False) == [
            r for r in trial() if r["id"] not in ("org", "loc")
        ]
        assert len(needs_lookup(trial(), routes(), known, verify=True)) == len(trial())

    def test_a_match_equal_to_ours_is_unchanged_and_recorded(self) -> None:
        resources = {r["id"]: r for r in trial()}
        server_copy = {**resources["org"], "id": "S1", "meta": {"versionId": "7"}, "text": {"div": "x"}}
        changed = {**resources["loc"], "id": "S2", "name": "renamed", "managingOrganization": ref("Organization/S1")}
        found = {(r["resourceType"], business_key(r)): [] for r in trial()}
        found[("Organization", f"{SYS}|org")] = [Match("S1", "7", server_copy)]
        found[("Location", f"{SYS}|loc")] = [Match("S2", "1", changed)]
        items = plan(found)
        assert (items["org"].action, items["org"].record, items["org"].version_id) == ("unchanged", True, "7")
        # the Location's reference to our Organization compares through the id the look-up found
        assert (items["loc"].action, items["loc"].diffs) == ("update", ("name",))

    def test_twins_are_a_conflict_and_hold_back_everything_that_depends_on_them(self) -> None:
        found = {(r["resourceType"], business_key(r)): [] for r in trial()}
        found[("Organization", f"{SYS}|org")] = [Match("A"), Match("B")]
        items = plan(found)
        assert (items["org"].action, items["org"].server_ids) == ("conflict", ("A", "B"))
        assert items["loc"].action == "held-back" and "Organization/org" in items["loc"].reason
        assert items["st"].action == "held-back" and "Location/loc" in items["st"].reason  # two hops away
        assert items["rs"].action == "held-back"
        assert {items[k].action for k in ("p", "lab", "score", "cs")} == {"create"}

    def test_an_existing_patient_is_linked_never_updated(self) -> None:
        found = {(r["resourceType"], business_key(r)): [] for r in trial()}
        found[("Patient", f"{SYS}|p")] = [Match("H9", "4", {"resourceType": "Patient", "name": [{"text": "theirs"}]})]
        items = plan(found)
        assert (items["p"].action, items["p"].server_id, items["p"].write) == ("unchanged", "H9", None)
        assert "never overwritten" in items["p"].reason
        bundle_entry = entry(trial()[3], write="conditional", targets={}, parameter="identifier", create_only=True)
        assert bundle_entry["request"] == {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SYS}|p"}

    def test_skipped_type_becomes_a_logical_reference(self) -> None:
        items = plan(routes=routes(skip=frozenset({"Organization"})))
        assert items["org"].action == "skipped" and items["loc"].action == "create"
        result = plan_batch(
            dependency_sorted(trial()), routes(skip=frozenset({"Organization"})), known={}, found={}, server_refs={}
        )
        targets = {**result.logical, "Location/loc": "urn:uuid:loc"}
        written = entry(trial()[5], write="conditional", targets=targets, parameter="identifier")
        assert written["resource"]["managingOrganization"] == {
            "type": "Organization",
            "identifier": {"system": SYS, "value": "org"},
        }

    def test_a_reference_to_something_the_server_lacks_is_held_back(self) -> None:
        lonely = res("Observation", "x", subject=ref("Patient/elsewhere"))
        result = plan_batch([lonely], routes(), known={}, found={("Observation", f"{SYS}|x"): []}, server_refs={})
        assert result.items[0].action == "held-back" and "Patient/elsewhere" in result.items[0].reason
        result = plan_batch(
            [lonely],
            routes(),
            known={},
            found={("Observation", f"{SYS}|x"): []},
            server_refs={"Patient/elsewhere": "Patient/77"},
        )
        assert result.items[0].action == "create"


LAB = ("Observation", f"{SYS}|lab")


def with_lab(status: str, **fields: Any) -> list[dict[str, Any]]:
    """The small trial with its lab Observation (which the score is derived from) given ``status``."""
    return [{**r, "status": status, **fields} if r["id"] == "lab" else r for r in trial()]


def nothing_found(resources: list[dict[str, Any]]) -> dict[tuple[str, str], list[Match]]:
    return {(r["resourceType"], business_key(r)): [] for r in resources}


def server_lab(status: str, **fields: Any) -> Match:
    """The lab as the server holds it (its own id and meta) with ``status``."""
    lab = next(r for r in trial() if r["id"] == "lab")
    return Match("S-LAB", "2", {**lab, "id": "S-LAB", "meta": {"versionId": "2"}, "status": status, **fields})


class TestKeepFinal:
    """Push never replaces a final server resource with a preliminary one (mappings/fhir/push.yaml)."""

    @pytest.mark.parametrize("theirs", ["final", "amended", "corrected"])
    @pytest.mark.parametrize("ours", ["preliminary", "registered"])
    def test_a_final_server_copy_is_held_back_with_what_depends_on_it(self, theirs: str, ours: str) -> None:
        resources = with_lab(ours, valueInteger=2)
        found = {**nothing_found(resources), LAB: [server_lab(theirs, valueInteger=18)]}
        items = plan(found, resources=resources)
        lab = items["lab"]
        assert (lab.action, lab.write, lab.server_ids) == ("held-back", None, ("S-LAB",))
        assert lab.reason == (
            f"the server holds a final version (Observation/S-LAB, status {theirs}); ours is {ours}: not replaced"
        )
        assert items["score"].action == "held-back" and "Observation/lab" in items["score"].reason
        assert {items[k].action for k in ("p", "rs", "org")} == {"create"}  # the rest goes ahead

    def test_a_preliminary_server_copy_is_updated_or_left_alone(self) -> None:
        resources = with_lab("preliminary", valueInteger=5)
        changed = {**nothing_found(resources), LAB: [server_lab("preliminary", valueInteger=3)]}
        lab = plan(changed, resources=resources)["lab"]
        assert (lab.action, lab.write, lab.server_id, lab.diffs) == ("update", "by-id", "S-LAB", ("valueInteger",))
        equal = {**nothing_found(resources), LAB: [server_lab("preliminary", valueInteger=5)]}
        assert plan(equal, resources=resources)["lab"].action == "unchanged"

    def test_a_final_version_replaces_a_preliminary_one(self) -> None:
        resources = with_lab("final", valueInteger=18)
        found = {**nothing_found(resources), LAB: [server_lab("preliminary", valueInteger=2)]}
        items = plan(found, resources=resources)
        assert (items["lab"].action, items["lab"].diffs) == ("update", ("status", "valueInteger"))
        assert items["score"].action == "create"

    def test_a_preliminary_resource_the_server_lacks_is_created(self) -> None:
        resources = with_lab("preliminary")
        items = plan(nothing_found(resources), resources=resources)
        assert (items["lab"].action, items["lab"].write) == ("create", "create-by-id")
        assert items["score"].action == "create"

    def test_a_superseded_final_copy_is_held_back_too(self) -> None:
        resources = with_lab("preliminary")
        old = server_lab("final")
        found = {**nothing_found(resources), LAB: [Match(old.server_id, "2", old.resource, superseded="urn:old|lab")]}
        assert plan(found, resources=resources)["lab"].action == "held-back"

    def test_a_server_status_the_plan_cannot_see_is_never_overwritten(self) -> None:
        resources = with_lab("preliminary")
        digest = content_hash(next(r for r in resources if r["id"] == "lab"))
        stale = {LAB: JournalEntry(*LAB, "old-hash", "S-LAB", "1", "created")}
        without_content = {**nothing_found(resources), LAB: [Match("S-LAB", "2")]}
        lab = plan(without_content, stale, resources=resources)["lab"]
        assert lab.action == "held-back" and "(the look-up returned no content)" in lab.reason
        assert "ours is preliminary and the server's status of Observation/S-LAB is unknown" in lab.reason
        stripped = server_lab("final")
        no_status = {k: v for k, v in (stripped.resource or {}).items() if k != "status"}
        found = {**nothing_found(resources), LAB: [Match("S-LAB", "2", no_status)]}
        assert "(the server copy has no status)" in plan(found, resources=resources)["lab"].reason
        not_looked_up = {k: v for k, v in nothing_found(resources).items() if k != LAB}
        lab = plan(not_looked_up, stale, resources=resources)["lab"]
        assert lab.action == "held-back" and "(it was not looked up)" in lab.reason
        # what the journal says is already there is not written at all: nothing to hold back
        same = {LAB: JournalEntry(*LAB, digest, "S-LAB", "1", "created")}
        assert plan(without_content, same, resources=resources)["lab"].action == "unchanged"

    @pytest.mark.parametrize("params", [None, {"Observation": []}], ids=["search", "read"])
    def test_journal_settled_preliminary_resources_are_looked_up(self, params: Any) -> None:
        chosen = routes(statement(params=params))
        assert chosen["Observation"].lookup == ("search" if params is None else "read")
        resources = with_lab("preliminary")
        known = {
            (r["resourceType"], business_key(r)): JournalEntry(
                r["resourceType"], business_key(r), content_hash(r), f"S-{r['id']}", "1", "created"
            )
            for r in resources
        }
        assert [r["id"] for r in needs_lookup(resources, chosen, known, verify=False)] == ["lab"]
        assert needs_lookup(trial(), chosen, known, verify=False) == []  # final ones: the journal settles them

    def test_the_status_classes_are_data_and_agree_with_pull(self, tmp_path: Path) -> None:
        observation = load_finality_rules().keep_final["Observation"]
        assert observation.final == load_pull_rules().rows
        assert observation.preliminary == {"registered", "preliminary"}
        root = tmp_path / "mappings"
        shutil.copytree(REPO / "mappings", root)
        rules = root / "fhir" / "push.yaml"
        rules.write_text(
            rules.read_text(encoding="utf-8").replace("[registered, preliminary]", "[registered, final]"),
            encoding="utf-8",
        )
        with pytest.raises(MappingError, match=r"push\.yaml.*both final and preliminary: final"):
            load_finality_rules(load_pack(root))


class TestRoutes:
    def test_default_routes_search_the_business_key(self) -> None:
        chosen = routes()
        assert chosen["CodeSystem"].search_param == "url" and chosen["Observation"].search_param == "identifier"
        assert chosen["Patient"].create_only and not chosen["Observation"].create_only

    def test_codesystem_without_url_falls_back_to_system_then_to_our_id(self) -> None:
        assert routes(statement(params={"CodeSystem": ["system"]}))["CodeSystem"].search_param == "system"
        by_read = routes(statement(params={"CodeSystem": []}))["CodeSystem"]
        assert (by_read.lookup, by_read.skipped) == ("read", False)
        refused = routes(refused=frozenset({("CodeSystem", "url")}))["CodeSystem"]
        assert refused.search_param == "system"

    def test_a_type_the_server_cannot_take_is_skipped_with_the_reason(self) -> None:
        chosen = routes(statement(params={"CodeSystem": []}, update_create=False))["CodeSystem"]
        assert chosen.skipped and not chosen.skipped_by_user
        assert "cannot find CodeSystem by url or system" in (chosen.skip_reason or "")
        assert "refuses update-as-create" in (chosen.skip_reason or "")

    def test_without_conditional_writes_new_resources_go_to_a_key_derived_id(self) -> None:
        chosen = routes(statement(conditional=False), new_by_id=False)  # by id all the same: no other way
        assert chosen["Observation"].lookup == "search" and not chosen["Observation"].conditional
        items = plan(routes=chosen)
        assert (items["lab"].write, items["lab"].server_id) == ("create-by-id", key_id("Observation", items["lab"].key))

    def test_a_type_refused_by_id_goes_conditional(self) -> None:
        chosen = routes(refused=frozenset({("Observation", CREATE_BY_ID)}))
        assert not chosen["Observation"].new_by_id and chosen["Organization"].new_by_id
        assert "conditional update" in chosen["Observation"].describe()

    def test_user_choices(self) -> None:
        chosen = routes(only=frozenset({"Observation", "Patient"}))
        assert chosen["Organization"].skipped_by_user and not chosen["Observation"].skipped


class TestChunks:
    def items(self, *writes: str) -> list[PlanItem]:
        return [PlanItem(res("Observation", f"o{i}"), f"k{i}", "create", w) for i, w in enumerate(writes)]  # type: ignore[arg-type]

    def test_each_chunk_respects_the_strictest_kind_it_holds(self) -> None:
        limits = WriteLimits(500, {"conditional": 2, "direct": 4})
        chunks = make_chunks(self.items(*["by-id"] * 5, "conditional", "conditional", "conditional"), limits)
        assert [len(c) for c in chunks] == [4, 2, 2]
        assert [i.write for i in chunks[1]] == ["by-id", "conditional"]  # a mixed chunk obeys the stricter 2

    def test_lowering_never_goes_below_one_and_never_above_the_upper_bound(self) -> None:
        limits = WriteLimits(10)
        assert limits.lower("conditional", 500) == 10
        assert limits.lower("conditional", 3) == 1 and limits.size("conditional") == 1
        assert limits.size("direct") == 10


def test_dependency_sort_is_stable_and_refs_are_local() -> None:
    ordered = dependency_sorted(trial())
    assert [local_ref(r) for r in ordered][:2] == ["CodeSystem/cs", "Organization/org"]
