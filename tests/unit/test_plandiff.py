"""plandiff: counting, grouping, flattening and hiding, on plans recorded from Terraform 1.11.4
(tests/fixtures/tofu, see its README) and on small hand-made documents for the corners."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from backend.runs import plandiff
from backend.runs.plandiff import SENSITIVE, UNKNOWN, PlanFormatError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "tofu"
# Every sensitive value in the recorded plans (sensitive variables, before and after rotation).
SECRETS = (
    "hunter2-initial",
    "s3cr3t-rotated-value",
    "tok-9f8e7d6c5b4a-initial",
    "tok-9f8e7d6c5b4a-rotated",
)


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def plan_with(*changes: dict, **extra) -> dict:
    return {"format_version": "1.2", "planned_values": {}, "resource_changes": list(changes), **extra}


def resource(address: str, actions: list[str], before=None, after=None, **change) -> dict:
    type_, name = address.split(".")[-2:]
    return {
        "address": address,
        "mode": "managed",
        "type": type_,
        "name": name,
        "provider_name": "registry.opentofu.org/hashicorp/aws",
        "change": {"actions": actions, "before": before, "after": after, **change},
    }


def entry(diff: dict, address: str) -> dict:
    for group in diff["groups"]:
        for res in group["resources"]:
            if res["address"] == address:
                return res
    raise AssertionError(f"{address} not in the diff")


def rows(diff: dict, address: str) -> dict[str, dict]:
    return {row["path"]: row for row in entry(diff, address)["attributes"]}


def assert_no_secret(document: object, secrets=SECRETS) -> None:
    text = json.dumps(document)
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"sensitive values leaked: {leaked}"


# --- counting -------------------------------------------------------------------------------------


def test_counts_match_what_terraform_printed_for_the_recorded_plans():
    # "Plan: 7 to add, 2 to change, 3 to destroy." / "0 to add, 0 to change, 6 to destroy."
    assert plandiff.count_actions(load("plan-changes.json")) == {"add": 7, "change": 2, "destroy": 3}
    assert plandiff.count_actions(load("plan-destroy.json")) == {"add": 0, "change": 0, "destroy": 6}
    assert plandiff.count_actions(load("plan-no-changes.json")) == {"add": 0, "change": 0, "destroy": 0}


@pytest.mark.parametrize("name", ["plan-changes.json", "plan-destroy.json", "plan-no-changes.json"])
def test_has_changes_agrees_with_terraforms_own_applyable_flag(name):
    plan = load(name)
    assert plandiff.has_changes(plan) is plan["applyable"]


def test_output_only_import_and_move_are_changes_too():
    noop = resource("aws_s3_bucket.b", ["no-op"], {"id": "b"}, {"id": "b"})
    assert not plandiff.has_changes(plan_with(noop))
    assert plandiff.has_changes(plan_with(noop, output_changes={"url": {"actions": ["update"]}}))
    assert plandiff.has_changes(plan_with({**noop, "change": {**noop["change"], "importing": {"id": "b"}}}))
    assert plandiff.has_changes(plan_with({**noop, "previous_address": "aws_s3_bucket.a"}))
    assert plandiff.count_actions(plan_with(noop)) == {"add": 0, "change": 0, "destroy": 0}


@pytest.mark.parametrize(
    ("actions", "name"),
    [
        (["create"], "create"),
        (["update"], "update"),
        (["delete"], "delete"),
        (["delete", "create"], "replace"),
        (["create", "delete"], "replace"),
        (["read"], "read"),
        (["no-op"], "no-op"),
        (["forget"], "forget"),
        (["create", "forget"], "create+forget"),
    ],
)
def test_action_names(actions, name):
    assert plandiff.action_of(actions) == name


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be an object"),
        ({"planned_values": {}}, "no format_version"),
        ({"format_version": "2.0", "planned_values": {}}, "unsupported plan JSON format_version 2.0"),
        ({"format_version": "1.0", "values": {}}, "is it a state file"),
        ({"format_version": "1.2", "planned_values": {}, "resource_changes": {}}, "must be a list"),
        (plan_with({"address": "a.b", "change": {"actions": "create"}}), "a.b has no list of actions"),
        ({"format": plandiff.PLAN_SET_FORMAT, "units": {"app": {"format_version": "1.2"}}}, "unit 'app'"),
    ],
)
def test_documents_that_are_not_plans_are_refused_with_a_reason(document, message):
    for function in (plandiff.count_actions, plandiff.build_diff, plandiff.redact_plan):
        with pytest.raises(PlanFormatError, match=message):
            function(document)


def test_a_plan_without_resource_changes_has_none():
    diff = plandiff.build_diff({"format_version": "1.2", "planned_values": {"root_module": {}}})
    assert diff["groups"] == [] and diff["summary"] == {"add": 0, "change": 0, "destroy": 0}
    assert not diff["has_changes"]


# --- grouping -------------------------------------------------------------------------------------


def test_resources_are_grouped_by_action_in_reading_order():
    diff = plandiff.build_diff(load("plan-changes.json"))
    grouped = {g["action"]: [r["address"] for r in g["resources"]] for g in diff["groups"]}
    assert list(grouped) == ["create", "update", "replace", "delete"]
    assert grouped == {
        "create": [
            "terraform_data.cache",
            'terraform_data.dns["api"]',
            "terraform_data.token",
            "terraform_data.worker[0]",
            "terraform_data.worker[1]",
        ],
        "update": ["terraform_data.web", "module.net.terraform_data.vpc"],
        "replace": ["terraform_data.blue", "terraform_data.db"],
        "delete": ["terraform_data.gone"],
    }
    # read (the deferred data source) and no-op are counted, never listed
    assert diff["counts"] == {
        "create": 5, "update": 2, "replace": 2, "delete": 1, "forget": 0, "read": 1, "no-op": 1,
    }  # fmt: skip
    assert diff["summary"] == {"add": 7, "change": 2, "destroy": 3} and diff["has_changes"]
    assert diff["tool_version"] == "1.11.4" and diff["errored"] is False


def test_resource_metadata_is_carried_over():
    diff = plandiff.build_diff(load("plan-changes.json"))
    vpc = entry(diff, "module.net.terraform_data.vpc")
    assert (vpc["module"], vpc["type"], vpc["name"], vpc["mode"]) == (
        "module.net",
        "terraform_data",
        "vpc",
        "managed",
    )
    assert entry(diff, "terraform_data.worker[1]")["index"] == 1
    assert entry(diff, 'terraform_data.dns["api"]')["index"] == "api"
    blue = entry(diff, "terraform_data.blue")
    assert blue["actions"] == ["create", "delete"] and blue["reason"] == "replace_because_cannot_update"
    assert entry(diff, "terraform_data.gone")["reason"] == "delete_because_no_resource_config"


def test_the_whole_diff_is_plain_json():
    diff = plandiff.build_diff(load("plan-changes.json"))
    assert json.loads(json.dumps(diff, allow_nan=False)) == diff


# --- attributes -----------------------------------------------------------------------------------


def test_updates_list_only_the_changed_attributes_at_flattened_paths():
    diff = plandiff.build_diff(load("plan-changes.json"))
    web = rows(diff, "terraform_data.web")
    assert list(web) == ["input.ingress[0].cidr_blocks[1]", "input.tags.env", "output"]
    assert web["input.tags.env"] == {
        "path": "input.tags.env", "change": "changed", "before": "staging", "after": "prod",
        "sensitive": False, "unknown": False, "forces_replacement": False,
        "folded": False, "before_preview": None, "after_preview": None,
    }  # fmt: skip
    assert (
        web["input.ingress[0].cidr_blocks[1]"]["before"],
        web["input.ingress[0].cidr_blocks[1]"]["after"],
    ) == (
        "192.168.0.0/16",
        "172.16.0.0/12",
    )
    # the whole `output` object becomes unknown: one row, the old object before, the marker after
    assert web["output"]["unknown"] and web["output"]["after"] == UNKNOWN
    assert web["output"]["before"]["tags"] == {"env": "staging", "team": "web"}
    assert list(rows(diff, "module.net.terraform_data.vpc")) == ["input.cidr_block", "output"]


def test_creates_list_every_non_null_attribute_and_unknowns():
    diff = plandiff.build_diff(load("plan-changes.json"))
    cache = rows(diff, "terraform_data.cache")
    assert list(cache) == ["id", "input.policy", "input.size", "output"]  # null triggers_replace left out
    assert all(r["change"] == "added" and r["before"] is None for r in cache.values())
    assert cache["input.size"]["after"] == 3
    assert cache["id"]["after"] == UNKNOWN and cache["id"]["unknown"]
    assert not cache["input.size"]["unknown"]


def test_deletes_list_every_attribute_as_removed():
    gone = rows(plandiff.build_diff(load("plan-changes.json")), "terraform_data.gone")
    assert {p: (r["change"], r["before"], r["after"]) for p, r in gone.items() if p != "id"} == {
        "input": ("removed", "bye", None),
        "output": ("removed", "bye", None),
    }
    assert gone["id"]["change"] == "removed"


def test_replaces_flag_the_attributes_that_force_replacement():
    diff = plandiff.build_diff(load("plan-changes.json"))
    blue = rows(diff, "terraform_data.blue")
    assert blue["triggers_replace[0]"]["forces_replacement"]
    assert (blue["triggers_replace[0]"]["before"], blue["triggers_replace[0]"]["after"]) == (
        "blue-v1",
        "blue-v2",
    )
    assert not blue["input"]["forces_replacement"]
    assert blue["id"]["change"] == "changed" and blue["id"]["after"] == UNKNOWN


def test_paths_quote_keys_that_are_not_identifiers():
    assert plandiff.format_path(["tags", "env"]) == "tags.env"
    assert plandiff.format_path(["ingress", 0, "cidr_blocks", 1]) == "ingress[0].cidr_blocks[1]"
    assert plandiff.format_path(["tags", "kubernetes.io/role"]) == 'tags["kubernetes.io/role"]'
    assert plandiff.format_path([0, "a b"]) == '[0]["a b"]'
    before = {"tags": {"kubernetes.io/role": "internal", "Name": "vpc"}}
    after = {"tags": {"kubernetes.io/role": "public", "Name": "vpc"}}
    diff = plandiff.build_diff(plan_with(resource("aws_vpc.main", ["update"], before, after)))
    assert list(rows(diff, "aws_vpc.main")) == ['tags["kubernetes.io/role"]']


def test_added_and_removed_keys_type_changes_and_empty_maps():
    before = {"tags": {"old": "x", "same": "s"}, "ports": [80, 443], "mode": "a", "labels": {}}
    after = {"tags": {"new": "y", "same": "s"}, "ports": [80], "mode": ["a", "b"], "labels": {}, "extra": {}}
    diff = plandiff.build_diff(plan_with(resource("aws_thing.t", ["update"], before, after)))
    got = {p: (r["change"], r["before"], r["after"]) for p, r in rows(diff, "aws_thing.t").items()}
    assert got == {
        "extra": ("added", None, {}),
        "mode": ("changed", "a", ["a", "b"]),
        "ports[1]": ("removed", 443, None),
        "tags.new": ("added", None, "y"),
        "tags.old": ("removed", "x", None),
    }


# --- sensitive values -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plan-changes.json", "plan-destroy.json", "plan-no-changes.json"])
def test_no_sensitive_value_appears_anywhere_in_the_diff(name):
    plan = load(name)
    assert any(s in json.dumps(plan) for s in SECRETS)  # the recording does hold them
    assert_no_secret(plandiff.build_diff(plan))


def test_sensitive_attributes_show_as_sensitive_and_changes_to_them_still_show():
    diff = plandiff.build_diff(load("plan-changes.json"))
    token = rows(diff, "terraform_data.token")["input"]  # the whole input is a sensitive variable
    assert (token["after"], token["sensitive"], token["change"]) == (SENSITIVE, True, "added")
    password = rows(diff, "terraform_data.db")["input.password"]  # rotated, so it is listed
    assert (password["before"], password["after"], password["change"]) == (SENSITIVE, SENSITIVE, "changed")
    assert password["sensitive"]
    assert "input.name" not in rows(diff, "terraform_data.db")  # unchanged, not sensitive


def test_values_terraform_forgot_to_mark_are_hidden_by_value():
    # terraform_data's `output` repeats the sensitive input unmarked (before_sensitive.output == {})
    plan = load("plan-changes.json")
    db = next(rc for rc in plan["resource_changes"] if rc["address"] == "terraform_data.db")
    assert db["change"]["before"]["output"]["password"] == "hunter2-initial"
    assert db["change"]["before_sensitive"]["output"] == {}
    row = rows(plandiff.build_diff(plan), "terraform_data.db")["output"]
    assert row["before"] == {"name": "app", "password": SENSITIVE} and row["sensitive"]


def test_an_unchanged_sensitive_value_is_not_listed_and_a_new_one_is():
    before = {"password": "pw-unchanged-1", "user": "admin"}
    same = resource(
        "aws_db_instance.db", ["update"], before, {**before, "user": "root"},
        before_sensitive={"password": True}, after_sensitive={"password": True},
    )  # fmt: skip
    diff = plandiff.build_diff(plan_with(same))
    assert list(rows(diff, "aws_db_instance.db")) == ["user"]
    assert_no_secret(diff, ["pw-unchanged-1"])


def test_sensitive_values_inside_lists_and_marked_whole():
    after = {"ingress": [{"cidr": "10.0.0.0/8", "token": "list-secret-1"}], "key": {"pem": "pem-secret-2"}}
    create = resource(
        "aws_sg.sg", ["create"], None, after, after_sensitive={"ingress": [{"token": True}], "key": True}
    )
    diff = plandiff.build_diff(plan_with(create))
    got = {p: (r["after"], r["sensitive"]) for p, r in rows(diff, "aws_sg.sg").items()}
    assert got == {
        "ingress[0].cidr": ("10.0.0.0/8", False),
        "ingress[0].token": (SENSITIVE, True),
        "key": (SENSITIVE, True),
    }
    assert_no_secret(diff, ["list-secret-1", "pem-secret-2"])


def test_outputs_are_listed_with_sensitive_and_unknown_values_hidden():
    diff = plandiff.build_diff(load("plan-changes.json"))
    outputs = {o["name"]: o for o in diff["outputs"]}
    assert list(outputs) == ["cache_out", "pw"]  # web_id is a no-op
    assert (outputs["pw"]["before"], outputs["pw"]["after"], outputs["pw"]["sensitive"]) == (
        SENSITIVE,
        SENSITIVE,
        True,
    )
    assert outputs["pw"]["change"] == "changed"
    assert (outputs["cache_out"]["after"], outputs["cache_out"]["unknown"]) == (UNKNOWN, True)
    assert outputs["cache_out"]["change"] == "added"
    destroyed = {o["name"]: o for o in plandiff.build_diff(load("plan-destroy.json"))["outputs"]}
    assert destroyed["pw"]["before"] == SENSITIVE and destroyed["pw"]["change"] == "removed"
    assert destroyed["web_id"]["before"] is not None and destroyed["web_id"]["after"] is None


def test_partly_unknown_outputs_mark_the_unknown_parts():
    change = {
        "actions": ["create"], "before": None, "after": {"name": "a", "ids": ["x"]},
        "after_unknown": {"ids": [False, True], "arn": True},
        "before_sensitive": False, "after_sensitive": False,
    }  # fmt: skip
    diff = plandiff.build_diff(plan_with(output_changes={"info": change}))
    assert diff["outputs"][0]["after"] == {"name": "a", "ids": ["x", UNKNOWN], "arn": UNKNOWN}
    assert diff["outputs"][0]["unknown"]


# --- folding --------------------------------------------------------------------------------------


def test_multi_line_and_long_values_are_folded_with_a_short_preview():
    diff = plandiff.build_diff(load("plan-changes.json"))
    policy = rows(diff, "terraform_data.cache")["input.policy"]
    assert policy["folded"] and policy["before_preview"] is None
    assert policy["after_preview"].startswith('{ "Version": "2012-10-17", "Statement"')
    assert "\n" not in policy["after_preview"] and "6 lines" in policy["after_preview"]
    assert policy["after"].count("\n") == 6  # the full value is still there to unfold
    long_line = "x" * (plandiff.FOLD_CHARS + 1)
    edge = "y" * plandiff.FOLD_CHARS
    change = resource("aws_x.x", ["update"], {"a": "short", "b": "b"}, {"a": long_line, "b": edge})
    got = rows(plandiff.build_diff(plan_with(change)), "aws_x.x")
    assert got["a"]["folded"] and got["a"]["before_preview"] is None
    assert len(got["a"]["after_preview"]) < plandiff.PREVIEW_CHARS + 30
    assert not got["b"]["folded"] and got["b"]["after_preview"] is None
    assert not rows(diff, "terraform_data.web")["input.tags.env"]["folded"]


def test_a_large_collapsed_object_is_folded():
    big = {"rules": [{"cidr": f"10.0.{i}.0/24", "port": 443} for i in range(20)]}
    change = resource("aws_x.y", ["update"], {"cfg": big}, {"cfg": "replaced"})
    row = rows(plandiff.build_diff(plan_with(change)), "aws_x.y")["cfg"]
    assert row["folded"] and row["before_preview"].startswith('{"rules": [{"cidr": "10.0.0.0/24"')


# --- redact_plan ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plan-changes.json", "plan-destroy.json", "plan-no-changes.json"])
def test_redact_plan_leaves_no_sensitive_value_anywhere(name):
    plan = load(name)
    original = copy.deepcopy(plan)
    redacted = plandiff.redact_plan(plan)
    assert_no_secret(redacted)
    assert plan == original  # the input is not touched
    assert set(redacted) == set(plan)
    assert [rc["address"] for rc in redacted["resource_changes"]] == [
        rc["address"] for rc in plan["resource_changes"]
    ]
    assert [rc["change"]["actions"] for rc in redacted["resource_changes"]] == [
        rc["change"]["actions"] for rc in plan["resource_changes"]
    ]


def test_redact_plan_hides_each_kind_of_sensitive_place():
    redacted = plandiff.redact_plan(load("plan-changes.json"))
    assert redacted["variables"]["db_password"]["value"] == SENSITIVE
    assert redacted["configuration"]["root_module"]["variables"]["db_password"]["default"] == SENSITIVE
    assert redacted["output_changes"]["pw"]["before"] == SENSITIVE
    assert redacted["output_changes"]["pw"]["after"] == SENSITIVE
    assert redacted["planned_values"]["outputs"]["pw"]["value"] == SENSITIVE
    assert redacted["prior_state"]["values"]["outputs"]["pw"]["value"] == SENSITIVE
    db = next(r for r in redacted["prior_state"]["values"]["root_module"]["resources"] if r["name"] == "db")
    assert db["values"]["input"] == {"name": "app", "password": SENSITIVE}
    token = next(rc for rc in redacted["resource_changes"] if rc["name"] == "token")
    assert token["change"]["after"]["input"] == SENSITIVE
    # what is not sensitive stays as it was
    web = next(rc for rc in redacted["resource_changes"] if rc["name"] == "web")
    assert web["change"]["after"]["input"]["tags"] == {"env": "prod", "team": "web"}
    assert redacted["planned_values"]["outputs"]["web_id"]["value"] != SENSITIVE


def test_redact_plan_covers_drift_modules_and_configuration_constants():
    drift = resource(
        "aws_db_instance.db", ["update"], {"password": "drift-secret-1"}, {"password": "drift-secret-2"},
        before_sensitive={"password": True}, after_sensitive={"password": True},
    )  # fmt: skip
    plan = plan_with(
        resource_drift=[drift],
        planned_values={
            "root_module": {
                "child_modules": [
                    {
                        "address": "module.db",
                        "resources": [
                            {
                                "address": "module.db.x.y",
                                "values": {"key": "child-secret-3"},
                                "sensitive_values": {"key": True},
                            }
                        ],
                    }
                ]
            }
        },
        configuration={
            "root_module": {
                "outputs": {"conn": {"sensitive": True, "expression": {"constant_value": "const-secret-4"}}},
                "module_calls": {
                    "db": {
                        "expressions": {
                            "password": {"constant_value": "call-secret-5"},
                            "size": {"constant_value": 3},
                        },
                        "module": {
                            "variables": {"password": {"sensitive": True, "default": "default-secret-6"}}
                        },
                    }
                },
            }
        },
    )
    secrets = [
        f"{kind}-secret-{i}"
        for i, kind in enumerate(["drift", "drift", "child", "const", "call", "default"], 1)
    ]
    assert all(s in json.dumps(plan) for s in secrets)
    redacted = plandiff.redact_plan(plan)
    assert_no_secret(redacted, secrets)
    call = redacted["configuration"]["root_module"]["module_calls"]["db"]["expressions"]
    assert call == {"password": {"constant_value": SENSITIVE}, "size": {"constant_value": 3}}
    assert_no_secret(plandiff.build_diff(plan), secrets)
    assert plandiff.build_diff(plan)["drift"][0]["attributes"][0]["before"] == SENSITIVE


def test_a_secret_that_looks_like_structure_does_not_garble_it():
    change = resource(
        "aws_x.x", ["update"], {"v": "update", "w": "a"}, {"v": "update", "w": "b"},
        before_sensitive={"v": True}, after_sensitive={"v": True},
    )  # fmt: skip
    redacted = plandiff.redact_plan(plan_with(change))
    rc = redacted["resource_changes"][0]
    assert rc["change"]["actions"] == ["update"] and rc["mode"] == "managed"
    assert rc["change"]["before"] == {"v": SENSITIVE, "w": "a"}
    assert rows(plandiff.build_diff(plan_with(change)), "aws_x.x")["w"]["change"] == "changed"


def test_secrets_inside_other_strings_and_short_values():
    change = resource(
        "aws_app.a", ["create"], None,
        {"password": "longsecret-7", "url": "postgres://app:longsecret-7@db:5432/app",
         "pin": "42", "note": "42 items"},
        after_sensitive={"password": True, "pin": True},
    )  # fmt: skip
    diff = plandiff.build_diff(plan_with(change))
    got = rows(diff, "aws_app.a")
    assert got["url"]["after"] == f"postgres://app:{SENSITIVE}@db:5432/app"
    assert got["pin"]["after"] == SENSITIVE
    assert got["note"]["after"] == "42 items"  # too short to hunt for elsewhere, as in log masking


def test_an_empty_sensitive_value_does_not_hide_every_empty_string():
    change = resource(
        "aws_app.a", ["create"], None, {"password": "", "description": "", "name": "app"},
        after_sensitive={"password": True},
    )  # fmt: skip
    got = rows(plandiff.build_diff(plan_with(change)), "aws_app.a")
    assert got["password"]["after"] == SENSITIVE
    assert got["description"]["after"] == ""


# --- plan sets (terragrunt) -----------------------------------------------------------------------


def test_plan_sets_are_counted_diffed_and_redacted_across_units():
    plan_set = {
        "format": plandiff.PLAN_SET_FORMAT,
        "tool": "terragrunt",
        "units": {"app": load("plan-changes.json"), "db/replica": load("plan-destroy.json")},
    }
    assert plandiff.count_actions(plan_set) == {"add": 7, "change": 2, "destroy": 9}
    assert plandiff.has_changes(plan_set)
    diff = plandiff.build_diff(plan_set)
    units = {r["unit"] for g in diff["groups"] for r in g["resources"]}
    assert units == {"app", "db/replica"}
    assert {o["name"] for o in diff["outputs"]} >= {"app:pw", "db/replica:pw"}
    assert_no_secret(diff)
    redacted = plandiff.redact_plan(plan_set)
    assert set(redacted["units"]) == {"app", "db/replica"} and redacted["tool"] == "terragrunt"
    assert_no_secret(redacted)
    quiet = {**plan_set, "units": {"a": load("plan-no-changes.json"), "b": load("plan-no-changes.json")}}
    assert not plandiff.has_changes(quiet)
