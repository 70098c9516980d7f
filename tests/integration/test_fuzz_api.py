"""Property-based fuzzing of the whole OpenAPI surface with schemathesis: no input yields a 5xx.

One test per API operation and database. The admin's token is sent on every
request so that generated input gets past authentication into validation and the services.
"""

from __future__ import annotations

import copy
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from backend.api import create_api
from backend.auth.models import Role
from backend.config import load_settings
from backend.context import build_context

pytestmark = pytest.mark.slow


# The spec says "string" where the validators want a name, a URL, a git branch... Random strings
# almost never pass, so nothing would reach the database. These patterns (test-only, added to a
# copy of the spec) steer part of the generated input into valid shapes; the rest stays random.
STEER = {
    "StackCreate": {
        "name": r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$",
        "repository_url": r"^(https://[a-z]{1,12}\.example\.com/[a-z0-9/._-]{0,40}|git@[a-z]{1,8}\.test:[a-z/]{1,12}\.git|file:///srv/[a-z]{1,10})$",
        "branch": r"^[a-z][a-z0-9_-]{0,20}(/[a-z0-9][a-z0-9_-]{0,20}){0,2}$",
        "project_root": r"^([a-z][a-z0-9_-]{0,10}(/[a-z][a-z0-9_-]{0,10}){0,3})?$",
        "tool_version": r"^(latest|[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2})$",
        "runner_image": r"^[a-z]{1,10}(/[a-z]{1,10}){0,2}(:[0-9a-z.]{1,8})?$",
        "labels": r"^[A-Za-z0-9][A-Za-z0-9._:/=-]{0,63}$",
        "description": r"^[^\x00-\x08\x0b-\x1f]{0,200}$",
    },
    "UserCreate": {"email": r"^[a-z0-9.]{1,20}@[a-z]{1,10}\.test$", "password": r"^.{10,64}$"},
    "TokenCreate": {"name": r"^[ -~]{1,100}$"},
}
STEER["StackUpdate"] = STEER["StackCreate"]
STACK_ID = re.compile(r"stk-[0-9a-f]{16}")


def _constrain(prop: dict, pattern: str) -> None:
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") == "string":
            branch["pattern"] = pattern
        elif branch.get("type") == "array":
            branch["items"]["pattern"] = pattern


def _openapi() -> dict:
    """The spec, from an app that is never served (its database is never opened), steered."""
    settings = load_settings(database_url="sqlite://", secret_key="f" * 40, data_dir="/nonexistent")
    spec = copy.deepcopy(create_api(build_context(settings)).openapi())
    for model, fields in STEER.items():
        properties = spec["components"]["schemas"][model]["properties"]
        for field, pattern in fields.items():
            _constrain(properties[field], pattern)
    return spec


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture
def target_stack(world) -> str:
    """A stack that well-formed ids are pointed at, so reads and patches reach real rows."""
    world.stack(labels=["env:prod"], description="something to list")
    return world.stack(labels=["team:net"], description="fuzz target")["id"]


@pytest.fixture
def admin_headers(world) -> dict[str, str]:
    world.token(Role.viewer)
    return world.token(Role.admin).headers


@schema.parametrize()
@settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    # One database per operation, shared by its examples (the state they build up is part of the
    # search space); that is what the function-scoped fixture check warns about.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_no_input_causes_a_server_error(case, app, admin_headers, target_stack):
    stack_id = (case.path_parameters or {}).get("stack_id")
    if case.method != "DELETE" and isinstance(stack_id, str) and STACK_ID.fullmatch(stack_id):
        case.path_parameters["stack_id"] = target_stack
    case.call_and_validate(app=app, headers=admin_headers, checks=[not_a_server_error])
