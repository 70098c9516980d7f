"""backend.state.diff: state version diffs, resource listings and outputs, on states recorded from
Terraform 1.11.4 (tests/fixtures/state/state-v*.json, see its README), on real-looking AWS states
(aws-v*.json) and on small hand-made documents for the corners."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from backend.runs import plandiff
from backend.state import diff as sd
from backend.state.diff import SENSITIVE, StateFormatError, UnsupportedStateVersion

FIXTURES = Path(__file__).parents[1] / "fixtures" / "state"
# Every sensitive value in the fixtures: sensitive variables (recorded), random_password results
# and bcrypt hashes, the RDS password, the SSM parameter value and its marked tag.
RECORDED_SECRETS = ("st4te-pw-initial", "st4te-pw-rotated")
AWS_SECRETS = (
    "Zr8#pQ2v!Lm9@Xt4&Wk7^Nb3",
    "u6$Hc1@Yd8!Rf3*Gj5&Kl0Mq",
    "$2a$10$Q7g8x2mJ4n1p9rT5vW3yZ.eK6hL0cB8dF2gH4jM6nP8qR0sT2uV4w",
    "$2a$10$Z1y2X3w4V5u6T7s8R9q0P.oN1mL2kJ3iH4gF5eD6cB7aZ8yX9wV0u",
    "sk_live_51HxQ2eKz9vT4mW8pR3nB7cY",
    "rot-7f3a9c2e1b",
    "rot-9d4b1e6f0a",
)


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def assert_no_secret(document: object, secrets: tuple[str, ...]) -> None:
    text = json.dumps(document)
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"sensitive values leaked: {leaked}"


def entry(diff: dict, address: str) -> dict:
    for group in diff["groups"]:
        for res in group["resources"]:
            if res["address"] == address:
                return res
    raise AssertionError(f"{address} not in the diff")


def rows(diff: dict, address: str) -> dict[str, dict]:
    return {row["path"]: row for row in entry(diff, address)["attributes"]}


def state(*resources: dict, **extra) -> dict:
    return {
        "version": 4,
        "terraform_version": "1.9.8",
        "serial": 1,
        "lineage": "a6b1c2d3-0000-4000-8000-000000000001",
        "outputs": {},
        "resources": list(resources),
        **extra,
    }


def resource(address: str, *instances: dict, mode: str = "managed", module: str | None = None) -> dict:
    type_, name = address.split(".")
    res = {
        "mode": mode,
        "type": type_,
        "name": name,
        "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
        "instances": list(instances),
    }
    if module:
        res["module"] = module
    return res


def instance(attributes: dict, sensitive=None, **extra) -> dict:
    return {"schema_version": 0, "attributes": attributes, "sensitive_attributes": sensitive or [], **extra}


def assert_has(mapping: dict, **expected) -> None:
    assert {k: mapping.get(k) for k in expected} == expected


def get_attr(name: str) -> dict:
    return {"type": "get_attr", "value": name}


# ---------------------------------------------------------------------------------------------
# Recorded Terraform 1.11.4 states


def test_recorded_states_diff_by_instance_address():
    diff = sd.diff_states(load("state-v1.json"), load("state-v2.json"))

    assert diff["added"] == ["terraform_data.cache", 'terraform_data.site["ap"]', "terraform_data.worker[2]"]
    assert diff["removed"] == ["terraform_data.gone", 'terraform_data.site["us \\"east\\""]']
    assert diff["changed"] == ["terraform_data.db", "terraform_data.web", "module.net.terraform_data.vpc"]
    # keep, site["eu"], worker[0], worker[1] and the re-read (identical) data source
    assert diff["summary"] == {"added": 3, "removed": 2, "changed": 3, "unchanged": 5}
    assert diff["has_changes"] is True
    assert [g["action"] for g in diff["groups"]] == ["create", "update", "delete"]
    assert diff["serial"] == {"old": 10, "new": 19}
    assert diff["lineage"]["old"] == diff["lineage"]["new"] == "8b1e9b4a-a4a5-100d-4a9c-f151bb5d9536"
    assert diff["lineage_changed"] is False
    assert diff["terraform_version"] == {"old": "1.11.4", "new": "1.11.4"}


def test_recorded_dynamic_values_are_unwrapped_into_value_paths():
    diff = sd.diff_states(load("state-v1.json"), load("state-v2.json"))

    web = rows(diff, "terraform_data.web")
    assert set(web) == {
        "input.tags.env",
        "input.ingress[0].cidr_blocks[1]",
        "output.tags.env",
        "output.ingress[0].cidr_blocks[1]",
    }
    assert_has(web["input.tags.env"], change="changed", before="staging", after="prod", sensitive=False)
    vpc = entry(diff, "module.net.terraform_data.vpc")
    assert vpc["module"] == "module.net"
    assert rows(diff, "module.net.terraform_data.vpc")["input.cidr_block"]["after"] == "10.1.0.0/16"


def test_recorded_secret_is_hidden_where_marked_and_where_repeated_unmarked():
    old, new = load("state-v1.json"), load("state-v2.json")
    diff = sd.diff_states(old, new)

    db = rows(diff, "terraform_data.db")
    assert db["input.password"]["before"] == db["input.password"]["after"] == SENSITIVE
    assert db["input.password"]["sensitive"] is True
    assert db["input.labels.secret"]["after"] == SENSITIVE
    # terraform_data.output repeats the input without the mark: hidden by value.
    assert db["output.password"]["after"] == SENSITIVE
    assert "input.name" not in db  # unchanged attributes of a changed resource are not listed
    pw = next(o for o in diff["outputs"] if o["name"] == "db_password")
    assert (pw["change"], pw["before"], pw["after"], pw["sensitive"]) == (
        "changed",
        SENSITIVE,
        SENSITIVE,
        True,
    )

    assert_no_secret(diff, RECORDED_SECRETS)
    assert_no_secret(sd.list_resources(new), RECORDED_SECRETS)
    assert_no_secret(sd.list_outputs(new), RECORDED_SECRETS)
    assert_no_secret(sd.diff_states(None, old), RECORDED_SECRETS)
    assert_no_secret(sd.diff_states(new, old), RECORDED_SECRETS)


def test_recorded_multi_line_value_is_folded():
    diff = sd.diff_states(load("state-v1.json"), load("state-v2.json"))

    policy = rows(diff, "terraform_data.cache")["input.policy"]
    assert policy["change"] == "added"
    assert policy["folded"] is True
    assert policy["before_preview"] is None
    assert policy["after_preview"].startswith('{ "Version": "2012-10-17", "Statement": [')
    assert policy["after_preview"].endswith("(170 chars, 6 lines)")
    assert policy["after"].count("\n") == 6  # the whole value is there, for unfolding
    output = next(o for o in diff["outputs"] if o["name"] == "cache_policy")
    assert (output["change"], output["folded"], output["type"]) == ("added", True, "string")


def test_recorded_data_source_is_listed_with_its_mode():
    listed = sd.list_resources(load("state-v2.json"), address_filter="remote_state")

    assert [r["address"] for r in listed] == ["data.terraform_remote_state.shared"]
    (shared,) = listed
    assert shared["mode"] == "data"
    assert shared["provider"] == "terraform.io/builtin/terraform"
    assert shared["provider_short"] == "terraform"
    values = {row["path"]: row["value"] for row in shared["attributes"]}
    assert values["outputs.region"] == "eu-west-1"
    assert values["config.path"] == "shared.tfstate.json"
    assert "workspace" not in values  # null


# ---------------------------------------------------------------------------------------------
# Real-looking AWS states


@pytest.fixture(scope="module")
def aws_diff() -> dict:
    return sd.diff_states(load("aws-v1.json"), load("aws-v2.json"))


def test_aws_count_for_each_and_deposed_instances(aws_diff):
    assert aws_diff["added"] == [
        "aws_instance.web[2]",
        "aws_security_group.web (deposed 1a2b3c4d)",
        'module.vpc.aws_subnet.private["eu-west-1c"]',
    ]
    assert aws_diff["removed"] == ['module.vpc.aws_subnet.private["eu-west-1b"]']
    assert aws_diff["summary"] == {"added": 3, "removed": 1, "changed": 8, "unchanged": 2}

    deposed = entry(aws_diff, "aws_security_group.web (deposed 1a2b3c4d)")
    assert (deposed["deposed"], deposed["action"], deposed["change"]) == ("1a2b3c4d", "create", "added")
    current = rows(aws_diff, "aws_security_group.web")
    assert current["id"]["before"] == "sg-0c1d2e3f4a5b6c7d8"
    assert current["id"]["after"] == "sg-0e9f8a7b6c5d4e3f2"

    subnet = entry(aws_diff, 'module.vpc.aws_subnet.private["eu-west-1c"]')
    assert (subnet["module"], subnet["index"], subnet["provider"], subnet["provider_short"]) == (
        "module.vpc",
        "eu-west-1c",
        "registry.terraform.io/hashicorp/aws",
        "aws",
    )


def test_aws_added_lists_every_attribute_changed_only_the_changes(aws_diff):
    added = rows(aws_diff, "aws_instance.web[2]")
    assert_has(added["instance_type"], change="added", before=None, after="t3.small")
    assert added["root_block_device[0].volume_size"]["after"] == 20
    assert added["vpc_security_group_ids[0]"]["after"] == "sg-0c1d2e3f4a5b6c7d8"
    assert added["tags_all.ManagedBy"]["after"] == "crucible"
    assert "timeouts" not in added and "user_data_base64" not in added  # nulls are not listed
    assert "ebs_block_device" in added and added["ebs_block_device"]["after"] == []

    removed = rows(aws_diff, 'module.vpc.aws_subnet.private["eu-west-1b"]')
    assert_has(removed["cidr_block"], change="removed", before="10.0.2.0/24", after=None)
    assert removed['tags["kubernetes.io/role/internal-elb"]']["before"] == "1"

    changed = rows(aws_diff, "aws_instance.web[0]")
    assert set(changed) == {"instance_type", "tags.Env", "tags_all.Env"}
    assert (changed["tags.Env"]["before"], changed["tags.Env"]["after"]) == ("staging", "prod")


def test_aws_tainted_instance_is_a_change_without_attribute_rows(aws_diff):
    tainted = entry(aws_diff, "aws_instance.web[1]")

    assert tainted["attributes"] == []
    assert (tainted["status"], tainted["status_changed"], tainted["previous_status"]) == (
        "tainted",
        True,
        None,
    )
    assert tainted["reason"] == "status ready → tainted"


def test_aws_data_source_changes_are_flagged(aws_diff):
    ami = entry(aws_diff, "data.aws_ami.ubuntu")

    assert (ami["mode"], ami["reason"], ami["action"]) == ("data", "data source", "update")
    assert rows(aws_diff, "data.aws_ami.ubuntu")["image_id"]["after"] == "ami-0e9085e60087ce171"


def test_aws_sensitive_values_never_appear(aws_diff):
    assert rows(aws_diff, "aws_db_instance.main")["password"]["after"] == SENSITIVE
    password = rows(aws_diff, "random_password.db")
    assert set(password) == {"bcrypt_hash", "keepers.rotation", "result"}
    assert password["result"]["before"] == password["result"]["after"] == SENSITIVE
    # The old state marks the tag, the new one does not: hidden on both sides.
    tag = rows(aws_diff, "aws_ssm_parameter.api_key")["tags.rotation-token"]
    assert (tag["before"], tag["after"], tag["sensitive"]) == (SENSITIVE, SENSITIVE, True)

    old, new = load("aws-v1.json"), load("aws-v2.json")
    assert_no_secret(aws_diff, AWS_SECRETS)
    assert_no_secret(sd.diff_states(new, old), AWS_SECRETS)
    # Alone, the new state hides what it marks; its unmarked tag is shown (nothing says it is secret).
    alone = sd.diff_states(None, new)
    assert_no_secret(alone, tuple(s for s in AWS_SECRETS if s != "rot-9d4b1e6f0a"))
    assert "rot-9d4b1e6f0a" in json.dumps(alone)
    assert_no_secret(sd.list_resources(old), AWS_SECRETS)
    assert_no_secret(sd.list_outputs(old), AWS_SECRETS)
    listed = {r["address"]: r for r in sd.list_resources(new)}
    ssm = {row["path"]: row for row in listed["aws_ssm_parameter.api_key"]["attributes"]}
    assert ssm["value"]["value"] == SENSITIVE and ssm["value"]["sensitive"] is True
    assert ssm["tags.owner"]["value"] == "platform"
    # The provider's private blob is never part of the output.
    assert "eyJlMmJmYjczMC" not in json.dumps([aws_diff, listed])


def test_aws_long_values_are_folded_on_both_sides(aws_diff):
    policy = rows(aws_diff, "aws_iam_policy.deploy")["policy"]

    assert policy["folded"] is True
    assert len(policy["before"]) > sd.FOLD_CHARS
    for preview in (policy["before_preview"], policy["after_preview"]):
        assert preview.startswith('{"Version":"2012-10-17","Statement":[{"Sid":"Deploy"')
        assert len(preview.split("…")[0]) < sd.PREVIEW_CHARS
    assert "s3:DeleteObject" in policy["after"] and "s3:DeleteObject" not in policy["before"]


def test_aws_outputs_diff(aws_diff):
    outputs = {o["name"]: o for o in aws_diff["outputs"]}

    assert list(outputs) == ["ami_id", "api_url", "db_password", "instance_ips", "vpc"]
    assert (outputs["ami_id"]["change"], outputs["ami_id"]["action"]) == ("removed", "delete")
    assert (outputs["api_url"]["change"], outputs["api_url"]["after"]) == (
        "added",
        "https://api.crucible.example.com",
    )
    assert outputs["db_password"]["before"] == outputs["db_password"]["after"] == SENSITIVE
    ips = outputs["instance_ips"]
    assert ips["type"] == "tuple([string, string, string])"
    assert ips["previous_type"] == "tuple([string, string])"
    assert ips["after"][-1] == "34.245.1.22"
    assert outputs["vpc"]["type"] == "object({cidr = string, id = string, private_subnets = list(string)})"
    assert outputs["vpc"]["previous_type"] is None


def test_entries_have_the_plan_diff_shape(aws_diff):
    """The run page's plan diff component (state/runs.py diff_groups) reads build_diff entries;
    a state diff entry carries every key of one, and its rows are plan rows."""
    plan = json.loads((Path(__file__).parents[1] / "fixtures" / "tofu" / "plan-changes.json").read_text())
    plan_diff = plandiff.build_diff(plan)
    plan_entry = plan_diff["groups"][0]["resources"][0]
    plan_row = plan_entry["attributes"][0]

    for group in aws_diff["groups"]:
        assert group["action"] in plandiff.GROUP_ORDER
        for res in group["resources"]:
            assert set(plan_entry) <= set(res)
            for row in res["attributes"]:
                assert set(row) == set(plan_row)
    for output in aws_diff["outputs"]:
        assert set(plan_diff["outputs"][0]) <= set(output)


# ---------------------------------------------------------------------------------------------
# Corners


def test_first_version_adds_everything():
    new = load("aws-v1.json")
    diff = sd.diff_states(None, new)

    assert diff["summary"] == {"added": 11, "removed": 0, "changed": 0, "unchanged": 0}
    assert diff["removed"] == diff["changed"] == []
    assert [g["action"] for g in diff["groups"]] == ["create"]
    assert diff["serial"] == {"old": None, "new": 41}
    assert diff["lineage_changed"] is False
    assert {o["name"]: o["change"] for o in diff["outputs"]} == dict.fromkeys(
        ["ami_id", "db_password", "instance_ips", "vpc"], "added"
    )
    assert rows(diff, "random_password.db")["result"]["after"] == SENSITIVE
    # An empty stand-in for "no previous version" gives the same diff.
    stand_in = sd.diff_states({"version": 4, "resources": [], "outputs": {}}, new)
    assert {k: v for k, v in stand_in.items() if k != "serial"} == {
        k: v for k, v in diff.items() if k != "serial"
    }


def test_identical_states_have_no_changes():
    old = load("aws-v2.json")
    diff = sd.diff_states(old, copy.deepcopy(old))

    assert diff["has_changes"] is False
    assert diff["groups"] == [] and diff["outputs"] == []
    assert diff["summary"] == {"added": 0, "removed": 0, "changed": 0, "unchanged": 13}


def test_empty_states_and_lineage_change():
    empty = state()
    other = state(lineage="a6b1c2d3-0000-4000-8000-000000000002", resources=None, outputs=None)

    diff = sd.diff_states(empty, other)
    assert diff["summary"] == {"added": 0, "removed": 0, "changed": 0, "unchanged": 0}
    assert diff["lineage_changed"] is True
    assert sd.list_resources(empty) == [] and sd.list_outputs(empty) == [] and sd.resource_types(empty) == []


def test_null_and_missing_are_the_same_but_values_are_not():
    old = state(resource("aws_s3_bucket.logs", instance({"id": "logs", "policy": None, "acl": "private"})))
    new = state(resource("aws_s3_bucket.logs", instance({"id": "logs", "acl": "private"})))
    assert sd.diff_states(old, new)["summary"]["unchanged"] == 1

    new = state(resource("aws_s3_bucket.logs", instance({"id": "logs", "policy": "{}", "acl": None})))
    changed = rows(sd.diff_states(old, new), "aws_s3_bucket.logs")
    assert changed["policy"]["change"] == "added"
    assert (changed["acl"]["change"], changed["acl"]["before"], changed["acl"]["after"]) == (
        "removed",
        "private",
        None,
    )


def test_nested_maps_and_lists_become_path_rows():
    old = state(
        resource(
            "aws_lb_listener.https",
            instance(
                {
                    "tags": {"kubernetes.io/cluster/prod": "owned", "team": "edge"},
                    "default_action": [{"type": "forward", "forward": [{"target_group": [{"weight": 1}]}]}],
                }
            ),
        )
    )
    new = copy.deepcopy(old)
    attributes = new["resources"][0]["instances"][0]["attributes"]
    attributes["tags"]["kubernetes.io/cluster/prod"] = "shared"
    attributes["default_action"][0]["forward"][0]["target_group"].append({"weight": 3})

    changed = rows(sd.diff_states(old, new), "aws_lb_listener.https")
    assert set(changed) == {
        'tags["kubernetes.io/cluster/prod"]',
        "default_action[0].forward[0].target_group[1].weight",
    }
    assert changed["default_action[0].forward[0].target_group[1].weight"]["change"] == "added"


def test_huge_value_is_folded_everywhere():
    blob = "-----BEGIN CERTIFICATE-----\n" + "MIIB" * 5000 + "\n-----END CERTIFICATE-----\n"
    doc = state(
        resource("aws_acm_certificate.api", instance({"id": "cert-1", "certificate_body": blob})),
        outputs={"cert": {"value": blob, "type": "string"}},
    )

    (listed,) = sd.list_resources(doc)
    body = next(r for r in listed["attributes"] if r["path"] == "certificate_body")
    assert body["folded"] is True
    assert body["preview"].startswith("-----BEGIN CERTIFICATE----- MIIB")
    assert body["preview"].endswith(f"({len(blob)} chars, 3 lines)")
    assert len(body["preview"]) < 120
    (output,) = sd.list_outputs(doc)
    assert output["folded"] is True and output["preview"] == body["preview"]
    row = rows(sd.diff_states(None, doc), "aws_acm_certificate.api")["certificate_body"]
    assert row["folded"] is True and row["after"] == blob


def test_instances_are_ordered_by_address_with_numeric_indexes():
    workers = [instance({"id": f"w{i}"}, index_key=i) for i in (10, 2, 0, 1)]
    doc = state(
        resource("aws_instance.worker", *workers),
        resource("aws_vpc.main", instance({"id": "vpc"}), module="module.net"),
        resource("aws_ami.base", instance({"id": "ami"}), mode="data"),
    )

    assert [r["address"] for r in sd.list_resources(doc)] == [
        "aws_instance.worker[0]",
        "aws_instance.worker[1]",
        "aws_instance.worker[2]",
        "aws_instance.worker[10]",
        "data.aws_ami.base",
        "module.net.aws_vpc.main",
    ]
    assert sd.diff_states(None, doc)["added"] == [r["address"] for r in sd.list_resources(doc)]


def test_string_index_keys_are_quoted_like_terraform():
    doc = state(
        resource(
            "aws_route53_record.name",
            instance({"id": "a"}, index_key='say "hi"'),
            instance({"id": "b"}, index_key="back\\slash"),
            instance({"id": "c"}, index_key="zürich"),
        ),
        resource("aws_s3_bucket.b", instance({"id": "d"}), module='module.site["eu"].module.cdn'),
    )

    assert [r["address"] for r in sd.list_resources(doc)] == [
        'aws_route53_record.name["back\\\\slash"]',
        'aws_route53_record.name["say \\"hi\\""]',
        'aws_route53_record.name["zürich"]',
        'module.site["eu"].module.cdn.aws_s3_bucket.b',
    ]


def test_list_filters_and_types():
    doc = load("aws-v2.json")

    assert sd.resource_types(doc) == [
        "aws_ami",
        "aws_db_instance",
        "aws_iam_policy",
        "aws_instance",
        "aws_security_group",
        "aws_ssm_parameter",
        "aws_subnet",
        "aws_vpc",
        "random_password",
    ]

    def addresses(**filters) -> list[str]:
        return [r["address"] for r in sd.list_resources(doc, **filters)]

    assert addresses(type_filter="aws_instance") == [
        "aws_instance.web[0]",
        "aws_instance.web[1]",
        "aws_instance.web[2]",
    ]
    assert addresses(type_filter="aws_inst") == []  # exact unless it ends in *
    assert addresses(type_filter="aws_s*") == [
        "aws_security_group.web",
        "aws_security_group.web (deposed 1a2b3c4d)",
        "aws_ssm_parameter.api_key",
        'module.vpc.aws_subnet.private["eu-west-1a"]',
        'module.vpc.aws_subnet.private["eu-west-1c"]',
    ]
    assert addresses(address_filter="MODULE.VPC") == [
        'module.vpc.aws_subnet.private["eu-west-1a"]',
        'module.vpc.aws_subnet.private["eu-west-1c"]',
        "module.vpc.aws_vpc.main",
    ]
    assert addresses(type_filter="aws_subnet", address_filter='["eu-west-1c"]') == [
        'module.vpc.aws_subnet.private["eu-west-1c"]'
    ]
    assert addresses(address_filter="data.") == ["data.aws_ami.ubuntu"]
    assert len(addresses(type_filter="", address_filter=None)) == 13

    web = sd.list_resources(doc, address_filter="aws_instance.web[2]")[0]
    assert web["dependencies"] == [
        "aws_security_group.web",
        "data.aws_ami.ubuntu",
        "module.vpc.aws_subnet.private",
    ]
    assert (web["index_key"], web["schema_version"], web["attr_count"]) == (2, 1, len(web["attributes"]))
    sg = sd.list_resources(doc, address_filter="deposed")[0]
    assert (sg["deposed"], sg["create_before_destroy"]) == ("1a2b3c4d", True)


def test_provider_forms():
    def provider_of(config: str) -> tuple:
        res = resource("aws_vpc.main", instance({"id": "v"}))
        res["provider"] = config
        (listed,) = sd.list_resources(state(res))
        return listed["provider"], listed["provider_short"], listed["provider_alias"]

    assert provider_of('provider["registry.terraform.io/hashicorp/aws"]') == (
        "registry.terraform.io/hashicorp/aws",
        "aws",
        None,
    )
    assert provider_of('provider["registry.opentofu.org/hashicorp/aws"].west') == (
        "registry.opentofu.org/hashicorp/aws",
        "aws",
        "west",
    )
    assert provider_of('module.net.provider["registry.terraform.io/integrations/github"]')[:2] == (
        "registry.terraform.io/integrations/github",
        "github",
    )
    assert provider_of("provider.aws.east") == ("aws", "aws", "east")  # Terraform 0.12


def test_outputs_list_with_types_and_hidden_values():
    doc = state(
        outputs={
            "token": {
                "value": {"key": "t0k3n-abcdef"},
                "type": ["object", {"key": "string"}],
                "sensitive": True,
            },
            "empty_secret": {"value": None, "type": "string", "sensitive": True},
            "ids": {"value": ["a", "b"], "type": ["list", "string"]},
            "echo": {"value": "prefix-t0k3n-abcdef", "type": "string"},
            "untyped": {"value": 3},
        }
    )

    listed = {o["name"]: o for o in sd.list_outputs(doc)}
    assert list(listed) == ["echo", "empty_secret", "ids", "token", "untyped"]
    assert_has(listed["token"], value=SENSITIVE, sensitive=True)
    assert listed["token"]["type"] == "object({key = string})"
    assert listed["empty_secret"]["value"] is None
    assert_has(listed["ids"], value=["a", "b"], type="list(string)", sensitive=False)
    assert listed["echo"]["value"] == f"prefix-{SENSITIVE}"  # the secret's text is scrubbed anywhere
    assert listed["untyped"]["type"] is None
    assert_no_secret(listed, ("t0k3n-abcdef",))


def test_output_sensitive_on_either_side_hides_both():
    old = state(
        outputs={"dsn": {"value": "postgres://app:pa55word@db/app", "type": "string", "sensitive": True}}
    )
    new = state(outputs={"dsn": {"value": "postgres://app:pa55word@db/app2", "type": "string"}})

    for a, b in ((old, new), (new, old)):
        (output,) = sd.diff_states(a, b)["outputs"]
        assert (output["before"], output["after"], output["sensitive"]) == (SENSITIVE, SENSITIVE, True)
    # Only the flag changed: a change, still hidden.
    flagged = copy.deepcopy(old)
    flagged["outputs"]["dsn"]["sensitive"] = False
    (output,) = sd.diff_states(old, flagged)["outputs"]
    assert output["change"] == "changed" and output["after"] == SENSITIVE


@pytest.mark.parametrize(
    ("descriptor", "rendered"),
    [
        ("string", "string"),
        ("dynamic", "any"),
        (["list", "string"], "list(string)"),
        (["set", ["map", "number"]], "set(map(number))"),
        (["tuple", ["string", "bool"]], "tuple([string, bool])"),
        (["tuple", []], "tuple([])"),
        (["object", {}], "object({})"),
        (
            ["object", {"name": "string", "ports": ["list", "number"], "a.b": "bool"}],
            'object({name = string, ports = list(number), "a.b" = bool})',
        ),
        (
            ["object", {"size": "number", "tier": "string"}, ["tier"]],
            "object({size = number, tier = optional(string)})",
        ),
        (["list", ["object", {"id": "string"}]], "list(object({id = string}))"),
        (["mystery", 1], '["mystery", 1]'),
    ],
)
def test_render_type(descriptor, rendered):
    assert sd.render_type(descriptor) == rendered


# ---------------------------------------------------------------------------------------------
# sensitive_attributes in every form


SECRET = "s3cr3t-v4lue-0001"


def hidden_paths(sensitive, attributes=None) -> tuple[dict[str, object], str]:
    attributes = attributes or {
        "id": "x-1",
        "password": SECRET,
        "tags": {"secret": SECRET + "-tag", "team": "web"},
        "rules": [{"token": SECRET + "-rule", "port": 443}],
    }
    doc = state(resource("aws_thing.a", instance(attributes, sensitive)))
    (listed,) = sd.list_resources(doc)
    return {row["path"]: row["value"] for row in listed["attributes"]}, json.dumps(listed)


def test_sensitive_paths_terraform_form_with_index_steps():
    values, text = hidden_paths(
        [
            [get_attr("password")],
            [get_attr("tags"), {"type": "index", "value": {"value": "secret", "type": "string"}}],
            [
                get_attr("rules"),
                {"type": "index", "value": {"value": 0, "type": "number"}},
                get_attr("token"),
            ],
        ]
    )
    assert values == {
        "id": "x-1",
        "password": SENSITIVE,
        "tags.secret": SENSITIVE,
        "tags.team": "web",
        "rules[0].token": SENSITIVE,
        "rules[0].port": 443,
    }
    assert SECRET not in text


@pytest.mark.parametrize(
    "sensitive",
    [
        [["password"], ["tags", "secret"], ["rules", 0, "token"]],  # bare steps
        ["password", 'tags["secret"]', "rules[0].token"],  # path strings
        {"password": True, "tags": {"secret": True}, "rules": [{"token": True}]},  # value-shaped
    ],
    ids=["bare-steps", "path-strings", "value-tree"],
)
def test_sensitive_paths_other_forms(sensitive):
    values, text = hidden_paths(sensitive)
    assert (values["password"], values["tags.secret"], values["rules[0].token"]) == (SENSITIVE,) * 3
    assert values["tags.team"] == "web" and values["rules[0].port"] == 443
    assert SECRET not in text


def test_sensitive_single_path_and_whole_containers():
    values, _ = hidden_paths([get_attr("password")])  # one path, not a list of paths
    assert values["password"] == SENSITIVE and values["tags.team"] == "web"

    values, text = hidden_paths([[get_attr("tags")], [get_attr("rules")]])
    assert values["tags"] == values["rules"] == SENSITIVE
    assert "tags.team" not in values
    assert SECRET + "-tag" not in text

    # A set element (index by value) cannot be followed: the whole set is hidden.
    values, _ = hidden_paths(
        [[get_attr("rules"), {"type": "index", "value": {"value": {"port": 443}, "type": "dynamic"}}]]
    )
    assert values["rules"] == SENSITIVE


@pytest.mark.parametrize(
    "sensitive",
    [
        True,
        "password",
        [[{"type": "future_step", "value": "password"}]],
        [[None]],
        [[]],
        {"type": "list", "value": ["password"]},
    ],
    ids=["true", "string", "unknown-step", "null-step", "empty-path", "odd-object"],
)
def test_unreadable_sensitive_attributes_hide_everything(sensitive):
    values, text = hidden_paths(sensitive)
    assert set(values.values()) == {SENSITIVE}
    assert SECRET not in text


def test_sensitive_path_into_a_dynamic_value_left_wrapped():
    # A wrapper whose value does not match its type is shown as stored; the path still finds it.
    attributes = {
        "input": {
            "value": {"password": SECRET, "n": "not-a-number"},
            "type": ["object", {"password": "string", "n": "number", "x": "bool"}],
        }
    }
    doc = state(
        resource("terraform_data.odd", instance(attributes, [[get_attr("input"), get_attr("password")]]))
    )
    assert_no_secret(sd.list_resources(doc), (SECRET,))

    attributes = {
        "input": {
            "value": {"password": SECRET, "name": "app"},
            "type": ["object", {"name": "string", "password": "string"}],
        }
    }
    doc = state(
        resource("terraform_data.db", instance(attributes, [[get_attr("input"), get_attr("password")]]))
    )
    (listed,) = sd.list_resources(doc)
    assert {r["path"]: r["value"] for r in listed["attributes"]} == {
        "input.name": "app",
        "input.password": SENSITIVE,
    }


def test_sensitive_on_either_side_of_a_change():
    marked = state(resource("aws_thing.a", instance({"key": "k3y-before-1234"}, [[get_attr("key")]])))
    unmarked = state(resource("aws_thing.a", instance({"key": "k3y-after-5678"})))

    for old, new in ((marked, unmarked), (unmarked, marked)):
        diff = sd.diff_states(old, new)
        row = rows(diff, "aws_thing.a")["key"]
        assert (row["before"], row["after"], row["sensitive"]) == (SENSITIVE, SENSITIVE, True)
        assert_no_secret(diff, ("k3y-before-1234", "k3y-after-5678"))


def test_an_empty_sensitive_value_does_not_hide_every_empty_string():
    doc = state(
        resource(
            "aws_instance.web",
            instance({"id": "i-1", "password_data": "", "key_name": ""}, [[get_attr("password_data")]]),
        )
    )

    (listed,) = sd.list_resources(doc)
    values = {row["path"]: row["value"] for row in listed["attributes"]}
    assert values == {"id": "i-1", "password_data": SENSITIVE, "key_name": ""}


def test_removed_instance_secret_is_hidden_in_other_instances():
    old = state(
        resource("random_password.db", instance({"result": "pw-Ab12Cd34Ef56"}, [[get_attr("result")]])),
        resource("aws_ssm_parameter.copy", instance({"value": "pw-Ab12Cd34Ef56"})),
    )
    new = state(resource("aws_ssm_parameter.copy", instance({"value": "pw-Ab12Cd34Ef56-v2"})))

    diff = sd.diff_states(old, new)
    assert rows(diff, "aws_ssm_parameter.copy")["value"]["before"] == SENSITIVE
    assert_no_secret(diff, ("pw-Ab12Cd34Ef56",))


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "a state must be a JSON object, got a list"),
        ({"resources": []}, "not a Terraform state: it has no 'version'"),
        ({"format_version": "1.0", "values": {}}, "this is `terraform show -json` output"),
        ({"version": "4"}, "version must be an integer, got '4'"),
        (state(resources={}), "resources must be a list, got an object"),
        (state(resources=[None]), "resources[0] must be an object, got null"),
        (
            state(resource("aws_vpc.a", mode="ephemeral")),
            'resources[0].mode must be "managed" or "data", got \'ephemeral\'',
        ),
        (
            state({"mode": "managed", "type": "aws_vpc", "instances": []}),
            "resources[0].name must be a non-empty string",
        ),
        (state(outputs=[]), "outputs must be an object, got a list"),
        (state(outputs={"x": "y"}), "outputs.x must be an object, got a string"),
    ],
)
def test_not_a_state(document, message):
    with pytest.raises(StateFormatError, match="^" + re.escape(message)):
        sd.list_resources(document)


def test_error_messages_point_at_the_broken_part():
    doc = state(*(resource(f"aws_vpc.v{i}", instance({"id": str(i)})) for i in range(4)))
    doc["resources"][3]["instances"] = None
    with pytest.raises(StateFormatError) as raised:
        sd.list_outputs(doc)
    assert str(raised.value) == "resources[3].instances must be a list, got null (aws_vpc.v3)"

    doc["resources"][3]["instances"] = [instance({"id": "3"}, index_key=[1])]
    with pytest.raises(
        StateFormatError, match=r"^resources\[3\]\.instances\[0\]\.index_key must be an integer"
    ):
        sd.resource_types(doc)

    doc["resources"][3]["instances"] = [{"attributes": "id=3"}]
    with pytest.raises(
        StateFormatError, match=r"^resources\[3\]\.instances\[0\]\.attributes must be an object"
    ):
        sd.resource_types(doc)

    doc["resources"][3]["instances"] = [instance({"id": "3"}), instance({"id": "3b"})]
    with pytest.raises(StateFormatError, match=r"aws_vpc\.v3 appears more than once"):
        sd.resource_types(doc)

    good = state()
    with pytest.raises(StateFormatError, match=r"^old state: resources\[3\]\.instances"):
        sd.diff_states(
            {**doc, "resources": [*doc["resources"][:3], {**doc["resources"][3], "instances": 1}]}, good
        )
    with pytest.raises(StateFormatError, match=r"^new state: a state must be a JSON object, got null"):
        sd.diff_states(good, None)


def test_old_and_future_versions_are_refused():
    v3 = {
        "version": 3,
        "terraform_version": "0.11.14",
        "serial": 7,
        "modules": [{"path": ["root"], "resources": {}}],
    }
    with pytest.raises(UnsupportedStateVersion) as raised:
        sd.diff_states(None, v3)
    assert raised.value.version == 3
    assert isinstance(raised.value, StateFormatError) and isinstance(raised.value, ValueError)
    assert "state version 3 (written by Terraform 0.11 or older) is not supported" in str(raised.value)
    assert "Terraform 0.12 or newer" in str(raised.value)

    with pytest.raises(UnsupportedStateVersion, match="state version 5 is newer than the version 4"):
        sd.list_resources(state(version=5))


def test_json_text_is_accepted():
    doc = load("aws-v1.json")

    assert sd.resource_types(json.dumps(doc)) == sd.resource_types(doc.copy())
    assert sd.diff_states(json.dumps(doc).encode(), doc)["has_changes"] is False
    with pytest.raises(StateFormatError, match=r"^not JSON: "):
        sd.list_outputs("{not json")


def test_attributes_flat_of_an_upgraded_v3_state():
    doc = state(
        resource("aws_vpc.old", {"schema_version": 0, "attributes_flat": {"id": "vpc-1", "tags.%": "0"}})
    )

    (listed,) = sd.list_resources(doc)
    assert {r["path"]: r["value"] for r in listed["attributes"]} == {"id": "vpc-1", '["tags.%"]': "0"}
