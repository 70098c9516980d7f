"""Policy request/response models (one family per resource: Create/Update/Public)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from backend.policies.models import PolicyType
from backend.stacks.schemas import Description, Labels, Name

BODY_MAX_BYTES = 256 * 1024
# Deeper documents than this are not plans: refuse them before an engine recurses into them.
INPUT_MAX_DEPTH = 100
POLICY_ID_PATTERN = r"^pol-[0-9a-f]{16}$"


def _body(value: str) -> str:
    if not value.strip():
        raise ValueError("body must contain Rego source, e.g. 'package crucible' followed by rules")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise ValueError("body must not contain control characters other than tabs and newlines")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("body contains invalid characters (unpaired surrogates)") from None
    if size > BODY_MAX_BYTES:
        raise ValueError(f"body is {size} bytes; a policy may have at most {BODY_MAX_BYTES} bytes (256 KiB)")
    return value


def input_depth(value: Any, limit: int) -> int:
    """The nesting depth of a JSON value, walking at most ``limit`` levels (no recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        stack.extend((child, depth + 1) for child in children)
    return deepest


PolicyBody = Annotated[str, Field(max_length=BODY_MAX_BYTES), AfterValidator(_body)]
PolicyId = Annotated[
    str, Field(pattern=POLICY_ID_PATTERN, description="Policy id, e.g. pol-0123456789abcdef")
]


class PolicyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    type: PolicyType
    body: PolicyBody
    description: Description = ""
    enabled: StrictBool = True
    applies_to_all: StrictBool = False
    labels: Labels = Field(default_factory=list)


class PolicyUpdate(BaseModel):
    """PUT body: the POST fields, all optional. Only the fields sent change; none may be null."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    type: PolicyType | None = None
    body: PolicyBody | None = None
    description: Description | None = None
    enabled: StrictBool | None = None
    applies_to_all: StrictBool | None = None
    labels: Labels | None = None


class PolicySummary(BaseModel):
    """A policy without its source (lists); ``body_sha256``/``body_bytes`` identify the source."""

    id: str
    name: str
    description: str
    type: PolicyType
    enabled: bool
    applies_to_all: bool
    labels: list[str]
    version: int
    body_sha256: str
    body_bytes: int
    created_by: str | None
    created_at: str
    updated_by: str | None
    updated_at: str


class PolicyPublic(PolicySummary):
    body: str


class PoliciesPublic(BaseModel):
    data: list[PolicySummary]
    count: int


class PolicyVersionSummary(BaseModel):
    policy_id: str
    version: int
    description: str
    type: PolicyType
    enabled: bool
    body_sha256: str
    body_bytes: int
    changed_by: str | None
    created_at: str
    current: bool


class PolicyVersionPublic(PolicyVersionSummary):
    body: str


class PolicyVersionsPublic(BaseModel):
    data: list[PolicyVersionSummary]
    count: int


class StackPolicyAttach(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy_id: PolicyId


AppliesVia = Literal["direct", "all", "label"]


class StackPolicyPublic(BaseModel):
    """A policy that applies to a stack, and every way it does: attached to the stack itself
    (``direct``), org-wide (``all``) or through one of the stack's labels (``label``)."""

    policy_id: str
    name: str
    description: str
    type: PolicyType
    enabled: bool
    version: int
    via: list[AppliesVia]
    matched_labels: list[str]
    attached_by: str | None  # the direct attachment's, else null
    attached_at: str | None


class StackPoliciesPublic(BaseModel):
    data: list[StackPolicyPublic]
    count: int


class PolicyEvaluate(BaseModel):
    """Evaluate Rego source (``body``) or a saved policy (``policy_id``) against ``input``."""

    model_config = ConfigDict(extra="forbid")

    body: PolicyBody | None = None
    policy_id: PolicyId | None = None
    type: PolicyType | None = None
    input: dict[str, Any] = Field(
        description="The input document: the plan JSON's keys at the top level plus `crucible`"
    )

    @field_validator("input", mode="before")
    @classmethod
    def _input_is_object(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
                type(value), "a number"
            )
            raise ValueError(f"input must be a JSON object (the plan JSON plus the crucible key), not {kind}")
        depth = input_depth(value, INPUT_MAX_DEPTH)
        if depth > INPUT_MAX_DEPTH:
            raise ValueError(f"input is nested more than {INPUT_MAX_DEPTH} levels deep")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> PolicyEvaluate:
        if (self.body is None) == (self.policy_id is None):
            raise ValueError("give exactly one of body (Rego source) or policy_id (a saved policy)")
        return self


class EvaluationResult(BaseModel):
    deny: list[str]
    warn: list[str]
    require_approval: bool
    required_approvals: int
    trigger: list[str] = Field(default_factory=list, description="trigger policies: stacks to run next")
    role: str | None = Field(default=None, description="login policies: the role of the login")
    engine: str
    duration_ms: float
    unsupported_builtins: list[str]
    type: PolicyType
    policy_id: str | None = None  # set when a saved policy was evaluated
    version: int | None = None


# ---------------------------------------------------------------- starter library


class LibraryPolicyPublic(BaseModel):
    """A ready-made policy of the starter library, with its Rego."""

    slug: str
    name: str
    description: str
    type: PolicyType
    body: str


class LibraryPublic(BaseModel):
    data: list[LibraryPolicyPublic]
    count: int


class LibraryInstall(BaseModel):
    """Optional body of an install: the new policy's name (default: the library policy's)."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None


# ---------------------------------------------------------------- backtesting

StackIdItem = Annotated[str, Field(pattern=r"^stk-[0-9a-f]{16}$", description="e.g. stk-0123456789abcdef")]
BacktestOutcome = Literal["allow", "warn", "deny", "approval", "error"]


class BacktestRequest(BaseModel):
    """Evaluate draft Rego against the last ``limit`` real plans, and compare it with the
    current version of ``policy_id`` (the saved policy being edited) when given."""

    model_config = ConfigDict(extra="forbid")

    body: PolicyBody
    type: PolicyType | None = Field(
        default=None, description="The draft's type; defaults to the saved policy's (policy_id)"
    )
    policy_id: PolicyId | None = None
    stack_ids: Annotated[list[StackIdItem], Field(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="The stacks whose runs to replay; default: the stacks policy_id applies to, "
        "or every stack without policy_id",
    )
    limit: StrictInt = Field(default=20, ge=1, le=100, description="How many of the newest planned runs")


class BacktestDecision(BaseModel):
    """What one version of the policy decided on one past run. ``deny``/``warn`` are cut to
    the first few messages; ``deny_count``/``warn_count`` are the full numbers."""

    outcome: BacktestOutcome
    deny: list[str]
    warn: list[str]
    deny_count: int
    warn_count: int
    require_approval: bool
    required_approvals: int
    error: str | None = None
    duration_ms: float


class BacktestRun(BaseModel):
    run_id: str
    stack_id: str
    stack_name: str
    run_type: str
    run_status: str
    created_at: str
    commit_sha: str | None
    skipped: str | None = None  # why the run was not evaluated (time budget, plan unavailable)
    draft: BacktestDecision | None = None
    current: BacktestDecision | None = None
    changed: bool = False  # the draft's outcome differs from the current version's (or from no policy)
    messages_changed: bool = False


class BacktestCounts(BaseModel):
    evaluated: int = 0
    would_deny: int = 0
    would_warn: int = 0
    would_require_approval: int = 0
    errors: int = 0


class BacktestSummary(BacktestCounts):
    """The draft's counts, and ``current``: the same for the saved version (null without one)."""

    runs: int = 0
    skipped: int = 0
    changed: int = 0
    current: BacktestCounts | None = None


class BacktestResult(BaseModel):
    engine: str
    type: PolicyType
    policy_id: str | None
    version: int | None  # the current version compared against
    policy_enabled: bool | None
    stack_ids: list[str] | None  # the stacks replayed; null: every stack of the organization
    limit: int
    summary: BacktestSummary
    runs: list[BacktestRun]
    budget_seconds: float
    budget_exceeded: bool
    duration_ms: float
    unsupported_builtins: list[str]
    notes: list[str]


# ---------------------------------------------------------------- validation (a stack's current state)

ValidationOutcome = Literal["allow", "warn", "deny", "error"]
ValidationTrigger = Literal["manual", "schedule"]


class StackValidationPublic(BaseModel):
    """What one validation policy decided about the stack's current state, the last time it
    was evaluated. ``state_serial`` is the state version evaluated (null: the stack had none)."""

    policy_id: str
    policy_name: str
    policy_version: int
    state_serial: int | None
    outcome: ValidationOutcome
    deny: list[str]
    warn: list[str]
    error: str | None
    engine: str
    duration_ms: float
    trigger: ValidationTrigger
    evaluated_by: str | None
    evaluated_at: str


class StackValidationsPublic(BaseModel):
    data: list[StackValidationPublic]
    count: int
