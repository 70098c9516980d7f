"""Policies list (/policies): search by name, filter by type, paging; filters live in the URL.

Also the pieces the other policies states share: the types, row conversion, starter templates.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import urlencode

import reflex as rx

from backend.errors import ServiceError
from backend.policies import attachments, service
from backend.policies.models import PolicyType
from backend.policies.schemas import PolicySummary
from state.base import AuthState, SessionExpired
from state.helpers import exact, relative, run_db

PAGE_SIZE = 25
ALL = "all"
TYPES = [t.value for t in PolicyType]
ORG_ONLY = tuple(service.ORG_ONLY_TYPES)
# Searching by name reads the organization's policies page by page; beyond this many the
# search covers the first ones by name (an organization has tens of policies, not thousands).
SEARCH_SCAN_MAX = 5000

TYPE_HINTS = {
    "pre_plan": "Before the plan. deny stops the run; warn is shown.",
    "post_plan": "On the plan. deny fails the run; warn is shown.",
    "pre_apply": "Just before apply. deny stops the apply.",
    "approval": "After the plan. require_approval / required_approvals hold the run for approvers.",
    "trigger": "After a tracked or destroy run finishes: trigger names the stacks to run next.",
    "login": "On every login whose password is right: deny refuses it; role sets the session's role.",
    "validation": "Against each stack's current state, on demand and on a schedule; shown on the stack.",
}

# What a new policy starts with: a small, working example of the type (Rego v1).
TEMPLATES = {
    "pre_plan": """package crucible

# Runs before the plan: only `input.crucible` (run and stack) is there.
deny contains msg if {
	input.crucible.run.type == "tracked"
	input.crucible.run.branch != input.crucible.stack.branch
	want := input.crucible.stack.branch
	msg := sprintf("tracked runs must come from %s, not %s", [want, input.crucible.run.branch])
}
""",
    "post_plan": """package crucible

# Runs on the plan: `input.resource_changes` plus `input.crucible`.
deny contains msg if {
	input.crucible.run.type != "destroy"
	some rc in input.resource_changes
	"delete" in rc.change.actions
	msg := sprintf("%s would be destroyed; use a destroy run", [rc.address])
}

warn contains msg if {
	input.crucible.counts.change > 10
	msg := sprintf("%d resources change in place", [input.crucible.counts.change])
}
""",
    "pre_apply": """package crucible

# Runs just before apply; deny stops it.
deny contains msg if {
	input.crucible.counts.destroy > 0
	input.crucible.run.type != "destroy"
	msg := sprintf("this apply destroys %d resources", [input.crucible.counts.destroy])
}
""",
    "approval": """package crucible

total := input.crucible.counts.add + input.crucible.counts.change + input.crucible.counts.destroy

# More than 20 changes needs two approvers.
require_approval if total > 20

required_approvals := 2 if total > 20
""",
    "trigger": """package crucible

# After a tracked or destroy run of the stack finishes: the stacks to run next, by id or
# name. Each gets one tracked run; a chain of triggered runs never comes back to a stack.
trigger contains "app-frontend" if {
	input.crucible.counts.add + input.crucible.counts.change > 0
}
""",
    "login": """package crucible

# On every login whose password is right, for the whole organization. deny refuses the
# login; role sets the session's role (the lowest any policy sets wins). Test it in the
# playground first: a policy that refuses everyone locks everyone out (recovery:
# `crucible policies disable <name>` on the server).
role := "viewer" if endswith(input.crucible.login.email, "@contractor.example.com")
""",
    "validation": """package crucible

# Against the stack's current state (input.state, sensitive values redacted), on demand
# and on a schedule; the results are shown on the stack.
warn contains msg if {
	some r in input.state.resources
	r.mode == "managed"
	r.type == "aws_s3_bucket"
	some inst in r.instances
	not inst.attributes.tags.owner
	msg := sprintf("%s.%s has no owner tag", [r.type, r.name])
}
""",
}


def gutter(text: str) -> tuple[str, int]:
    """The line numbers of ``text`` ("1\\n2\\n…") and how many rows its editor needs."""
    lines = text.count("\n") + 1
    return "\n".join(str(i) for i in range(1, lines + 1)), lines + 2


def applies_text(type_: str, applies_to_all: bool, labels: list[str], direct: int) -> str:
    """Where a policy applies, in a few words (the list's "Applies to" column)."""
    if type_ in ORG_ONLY:
        return "the organization"
    parts = []
    if applies_to_all:
        parts.append("all stacks")
    if labels:
        parts.append(("label " if len(labels) == 1 else "labels ") + ", ".join(labels))
    if direct:
        parts.append(f"{direct} stack{'s' if direct != 1 else ''}")
    return " · ".join(parts) if parts else "not attached"


@dataclasses.dataclass
class PolicyRow:
    id: str = ""
    name: str = ""
    description: str = ""
    type: str = ""
    enabled: bool = True
    applies: str = ""
    attached: bool = False
    version: int = 1
    updated_by: str = ""
    updated_rel: str = ""
    updated_exact: str = ""


def policy_row(p: PolicySummary, direct: int) -> PolicyRow:
    applies = applies_text(p.type.value, p.applies_to_all, p.labels, direct)
    return PolicyRow(
        id=p.id,
        name=p.name,
        description=p.description,
        type=p.type.value,
        enabled=p.enabled,
        applies=applies,
        attached=applies != "not attached",
        version=p.version,
        updated_by=p.updated_by or "",
        updated_rel=relative(p.updated_at),
        updated_exact=exact(p.updated_at),
    )


def find_policies(s, principal, q: str, type_: str | None, limit: int, offset: int):
    """One page of the organization's policies (by name), optionally only names containing
    ``q`` (case-insensitive), with how many match in all."""
    ptype = PolicyType(type_) if type_ else None
    if not q:
        return service.list_policies(s, principal, ptype, limit=limit, offset=offset)
    needle = q.casefold()
    matches = []
    scanned = 0
    while scanned < SEARCH_SCAN_MAX:
        page, total = service.list_policies(s, principal, ptype, limit=service.MAX_PAGE, offset=scanned)
        matches += [p for p in page if needle in p.name.casefold()]
        scanned += len(page)
        if not page or scanned >= total:
            break
    return matches[offset : offset + limit], len(matches)


class PoliciesState(AuthState):
    rows: list[PolicyRow] = []
    count: int = 0
    q: str = ""
    type_filter: str = ALL
    offset: int = 0
    loading: bool = True
    error: str = ""

    @rx.var
    def page_label(self) -> str:
        if self.count == 0:
            return "0 policies"
        end = min(self.offset + PAGE_SIZE, self.count)
        return f"{self.offset + 1}-{end} of {self.count}"

    @rx.var
    def has_prev(self) -> bool:
        return self.offset > 0

    @rx.var
    def has_next(self) -> bool:
        return self.offset + PAGE_SIZE < self.count

    @rx.var
    def filtered(self) -> bool:
        return bool(self.q) or self.type_filter != ALL

    @rx.event
    async def load(self):
        """on_load: filters come from the URL so that links and reloads keep them."""
        params = self.router.url.query_parameters
        self.q = params.get("q", "").strip()[:100]
        self.type_filter = params.get("type", ALL) if params.get("type") in TYPES else ALL
        try:
            self.offset = min(max(0, int(params.get("offset", "0"))), 1_000_000)
        except ValueError:
            self.offset = 0
        self.rows, self.count = [], 0
        return await self._fetch()

    async def _fetch(self):
        self.loading, self.error = True, ""
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        q, type_, offset = self.q, None if self.type_filter == ALL else self.type_filter, self.offset

        def _q(s):
            data, count = find_policies(s, principal, q, type_, PAGE_SIZE, offset)
            return data, count, attachments.attachment_counts(s, principal, [p.id for p in data])

        try:
            data, count, direct = await run_db(_q, readonly=True)
        except ServiceError as exc:
            self.loading, self.error = False, exc.message
            return rx.toast.error(exc.message)
        self.rows = [policy_row(p, direct.get(p.id, 0)) for p in data]
        self.count = count
        self.loading = False
        return None

    def _url(self) -> str:
        params = {}
        if self.q:
            params["q"] = self.q
        if self.type_filter != ALL:
            params["type"] = self.type_filter
        if self.offset:
            params["offset"] = str(self.offset)
        return "/policies" + ("?" + urlencode(params) if params else "")

    async def _apply(self):
        yield rx.call_script(f"window.history.replaceState(null, '', {self._url()!r})")
        out = await self._fetch()
        if out is not None:
            yield out

    @rx.event
    async def set_search(self, value: str):
        self.q = value.strip()[:100]
        self.offset = 0
        async for ev in self._apply():
            yield ev

    @rx.event
    async def set_type_filter(self, value: str):
        self.type_filter = value if value in TYPES else ALL
        self.offset = 0
        async for ev in self._apply():
            yield ev

    @rx.event
    async def clear_filters(self):
        self.q, self.type_filter, self.offset = "", ALL, 0
        async for ev in self._apply():
            yield ev

    @rx.event
    async def next_page(self):
        if self.offset + PAGE_SIZE < self.count:
            self.offset += PAGE_SIZE
        async for ev in self._apply():
            yield ev

    @rx.event
    async def prev_page(self):
        self.offset = max(0, self.offset - PAGE_SIZE)
        async for ev in self._apply():
            yield ev
