"""The push plan, routes and chunking: pure functions, no server, milliseconds."""

from __future__ import annotations

from typing import Any

from fakefhir import SYS, ref, res, trial

from fhir_lupus.bundle import business_key, dependency_sorted, entry, key_id, load_matching_rules, local_ref
from fhir_lupus.client import Capabilities
from fhir_lupus.sync import JournalEntry, Match, content_hash, plan_batch, plan_routes
from fhir_lupus.sync.apply import WriteLimits, make_chunks
from fhir_lupus.sync.plan import PlanItem, needs_lookup
from fhir_lupus.sync.routes import CREATE_BY_ID


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
    **options: Any,
) -> dict[str, PlanItem]:
    resources = dependency_sorted(trial())
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
