"""The starter library: ready-made policies an admin installs with one click.

Each policy is ``<slug>.rego`` next to this file (shipped as package data) plus its entry in
LIBRARY. The conformance corpus tests exactly these files: ``tests/policies/starter/<slug>/``
holds the inputs and expected decisions for ``<slug>.rego`` on every engine.

Tuning is done in the installed copy: each policy keeps its limits in named constants at the
top (``max_changes``, ``required_tags``, ...), which the description names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from backend.policies.models import PolicyType


@dataclass(frozen=True)
class LibraryPolicy:
    slug: str
    name: str
    description: str
    type: PolicyType

    @property
    def body(self) -> str:
        return source(self.slug)


LIBRARY: tuple[LibraryPolicy, ...] = (
    LibraryPolicy(
        "no_destroy_outside_destroy_runs",
        "No destroy outside destroy runs",
        "Denies a plan of a tracked or proposed run that deletes a resource, replacements included: "
        "deleting is what destroy runs are for. Nothing to tune; attach it where deletes must be "
        "deliberate.",
        PolicyType.post_plan,
    ),
    LibraryPolicy(
        "blast_radius",
        "Blast radius limit",
        "Denies a plan that changes more than 50 resources and warns above 25 (a replacement counts "
        "twice). Tune the limits with `max_changes` and `warn_changes`.",
        PolicyType.post_plan,
    ),
    LibraryPolicy(
        "required_tags",
        "Required tags",
        "Denies created or updated AWS and Azure resources without non-empty owner, cost-center and "
        "environment tags (a null or blank value is missing). Reads `tags_all` when the plan has it, "
        "so tags from the AWS provider's `default_tags` count, else `tags`; tags known only at apply "
        "are not judged. Edit `required_tags`, `taggable` for other providers and `exempt` for "
        "resource types that take no tags.",
        PolicyType.post_plan,
    ),
    LibraryPolicy(
        "allowed_instance_types",
        "Allowed instance types",
        "Denies EC2 instances and launch templates outside the approved instance families and warns "
        "on previous generations. An instance type that is not set (null) or known only at apply is "
        "not judged. Edit `allowed_families` and `deprecated_families`.",
        PolicyType.post_plan,
    ),
    LibraryPolicy(
        "no_public_buckets",
        "No public buckets",
        "Denies S3 buckets and bucket ACLs with a public canned ACL, and public access blocks that "
        "switch any of the four protections off. Edit `public_acls` to change which ACLs count as "
        "public.",
        PolicyType.post_plan,
    ),
    LibraryPolicy(
        "approval_above_n_changes",
        "Approval above N changes",
        "Sends a run that changes more than 10 resources to approval by one approver, more than 20 "
        "to two. Tune `one_approver_above` and `two_approvers_above`.",
        PolicyType.approval,
    ),
    LibraryPolicy(
        "business_hours_applies",
        "Business-hours applies",
        "Stops tracked and destroy runs created outside Monday to Friday, 09:00-18:00 Europe/Berlin "
        "from applying. It judges when the run was created, not when the apply happens (policies "
        "see no apply time): a run created on Friday afternoon can still apply on Saturday. Edit "
        "`timezone`, `workdays` and the hours in `in_business_hours`.",
        PolicyType.pre_apply,
    ),
)

_BY_SLUG = {p.slug: p for p in LIBRARY}


def get(slug: str) -> LibraryPolicy | None:
    return _BY_SLUG.get(slug)


@cache
def source(slug: str) -> str:
    """The Rego of a library policy (read once from the package)."""
    if slug not in _BY_SLUG:
        raise KeyError(slug)
    return resources.files(__name__).joinpath(f"{slug}.rego").read_text(encoding="utf-8")
