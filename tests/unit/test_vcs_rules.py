"""What a verified delivery means for a stack: trigger-path globs, skip actors and messages, the
tracked branch, and the run (type, commit, branch, message) or the skip reason users see."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backend.runs.lifecycle import RunType
from backend.vcs import providers as pv
from backend.vcs import rules

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"


def event_of(name: str, change=None) -> pv.Event:
    doc = json.loads((FIXTURES / name).read_text())
    headers = {k.lower(): v for k, v in doc["headers"].items()}
    payload = doc["payload"]
    if change is not None:
        change(payload)
    provider = pv.AZURE if name.startswith("azure") else pv.detect(headers)
    # As the service does: a push of several refs is read for the stack's branch.
    return pv.parse(provider, pv.event_name(provider, headers, payload), payload, prefer_branch="main")


def decide(event: pv.Event, **settings: Any) -> rules.Decision:
    values: dict[str, Any] = {
        "stack_branch": "main",
        "trigger_paths": [],
        "skip_messages": ["[skip ci]", "[ci skip]"],
        "skip_actors": [],
    }
    values.update(settings)
    return rules.decide(event, **values)


def push(files: list[str] | None = None, **fields: Any) -> pv.Event:
    values: dict[str, Any] = {
        "provider": pv.GITHUB,
        "name": "push",
        "kind": "push",
        "branch": "main",
        "sha": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "actor": "octocat",
        "message": "Change things",
        "files": files,
    }
    values.update(fields)
    return pv.Event(**values)


# ----------------------------------------------------------------------------- globs

GLOBS = [
    # a pattern without a slash: a file name at any depth
    ("*.tf", "main.tf", True),
    ("*.tf", "envs/prod/main.tf", True),
    ("*.tf", "a/b/c/d/e.tf", True),
    ("*.tf", "main.tfvars", False),
    ("*.tf", "main.tf.bak", False),
    ("*.tf", "envs/prod/main.tf/README", False),
    ("main.tf", "modules/vpc/main.tf", True),
    ("main.tf", "modules/vpc/xmain.tf", False),
    # ** below a folder: everything in it, at any depth, and nothing beside it
    ("envs/prod/**", "envs/prod/main.tf", True),
    ("envs/prod/**", "envs/prod/db/replica/main.tf", True),
    ("envs/prod/**", "envs/production/main.tf", False),
    ("envs/prod/**", "envs/staging/main.tf", False),
    ("envs/prod/**", "other/envs/prod/main.tf", False),  # a pattern with a slash is anchored
    ("envs/prod/", "envs/prod/main.tf", True),  # a trailing slash: the folder's contents
    ("envs/prod/", "envs/prod/a/b.tf", True),
    # * stays within one directory
    ("modules/*/main.tf", "modules/vpc/main.tf", True),
    ("modules/*/main.tf", "modules/dns/main.tf", True),
    ("modules/*/main.tf", "modules/vpc/nested/main.tf", False),
    ("modules/*/main.tf", "modules/main.tf", False),
    ("modules/*/main.tf", "x/modules/vpc/main.tf", False),
    # **/x: x at any depth, the root included
    ("**/variables.tf", "variables.tf", True),
    ("**/variables.tf", "modules/vpc/variables.tf", True),
    ("**/variables.tf", "modules/vpc/myvariables.tf", False),
    ("envs/**/main.tf", "envs/main.tf", True),
    ("envs/**/main.tf", "envs/prod/eu/main.tf", True),
    ("envs/**/main.tf", "envs/prod/eu/other.tf", False),
    ("**", "anything/at/all.txt", True),
    # ? is one character, never a slash
    ("env?.tf", "env1.tf", True),
    ("env?.tf", "env10.tf", False),
    ("a?b", "a/b", False),
    # regex characters are literal
    ("a+b.tf", "a+b.tf", True),
    ("a+b.tf", "aab.tf", False),
    ("x(1).tf", "x(1).tf", True),
    ("*.tf", "maintf", False),
    ("[ab].tf", "a.tf", False),
    ("[ab].tf", "[ab].tf", True),
    # surrounding blanks are not part of the pattern
    ("  *.tf ", "main.tf", True),
]


@pytest.mark.parametrize(("pattern", "path", "matches"), GLOBS)
def test_glob_semantics(pattern, path, matches):
    assert rules.glob_match(path, pattern) is matches


def test_a_leading_slash_anchors_a_pattern_to_the_repository_root():
    """Like .gitignore (which the matcher says it follows): /main.tf is the root's main.tf only."""
    assert rules.glob_match("main.tf", "/main.tf")
    assert not rules.glob_match("modules/vpc/main.tf", "/main.tf")
    assert rules.glob_match("envs/prod/main.tf", "/envs/prod/**")


def test_a_pattern_of_many_globstars_is_matched_in_bounded_steps():
    """A stack's trigger paths are user input: nested globstars must not backtrack without end
    (as a regex of nested ``(?:.*/)?`` groups did). A thread counts the matcher's steps."""
    pattern, path = "**/" * 40 + "x/" * 40 + "nomatch", "/".join(["x"] * 60) + "/main.tf"
    calls = []
    real = rules.fnmatchcase
    rules.fnmatchcase = lambda name, pat: calls.append(1) or real(name, pat)
    try:
        assert not rules.glob_match(path, pattern)
    finally:
        rules.fnmatchcase = real
    assert len(calls) <= 41 * 61


def test_matching_paths_keeps_the_files_any_glob_matches_in_order():
    files = ["README.md", "envs/prod/main.tf", "docs/x.md", "modules/vpc/main.tf", "envs/dev/a.tf"]
    assert rules.matching_paths(files, ["envs/prod/**", "modules/*/main.tf"]) == [
        "envs/prod/main.tf",
        "modules/vpc/main.tf",
    ]
    assert rules.matching_paths(files, ["*.md"]) == ["README.md", "docs/x.md"]
    assert rules.matching_paths(files, ["*.go"]) == []
    assert rules.matching_paths([], ["**"]) == []


# ----------------------------------------------------------------------------- pushes


def test_a_push_to_the_tracked_branch_starts_a_tracked_run_at_the_pushed_commit():
    decision = decide(event_of("github-push.json"))
    assert decision.run_type is RunType.tracked
    assert decision.commit == "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
    assert decision.branch == "main"
    # Who pushed and the head commit's title (not its body) name the run.
    assert decision.message == "push by octocat: Add VPC flow log variables"
    assert "main" in decision.reason and "0d1a26e67d8f" in decision.reason


def test_a_push_to_another_branch_is_skipped_naming_both_branches():
    decision = decide(event_of("github-push.json"), stack_branch="production")
    assert decision.run_type is None
    assert decision.reason == "push to main; this stack tracks production"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("github-push-delete.json", "branch feature/old-vpc was deleted"),
        ("gitlab-push-delete.json", "branch feature/old-dns was deleted"),
        ("bitbucket-push-delete.json", "branch feature/old-subnet was deleted"),
        ("github-push-tag.json", "tag v1.4.0: tags start no runs"),
        ("gitlab-tag-push.json", "tag v1.0.0: tags start no runs"),
        ("github-ping.json", "ping"),
        ("gitlab-merge_request-update-no-oldrev.json", "without new commits"),
    ],
)
def test_deletions_tags_and_other_events_start_nothing(name, reason):
    decision = decide(event_of(name))
    assert decision.run_type is None and decision.commit is None
    assert reason in decision.reason


def test_deleting_the_tracked_branch_itself_starts_nothing():
    deleted = event_of("github-push-delete.json", lambda p: p.update(ref="refs/heads/main"))
    assert decide(deleted).run_type is None
    gitlab = event_of("gitlab-push-delete.json", lambda p: p.update(ref="refs/heads/main"))
    assert decide(gitlab).run_type is None


def test_a_tag_named_like_the_branch_is_still_a_tag():
    tag = event_of("github-push-tag.json", lambda p: p.update(ref="refs/tags/main"))
    assert decide(tag).run_type is None and "tag main" in decide(tag).reason


def test_a_push_to_a_ref_that_is_no_branch_starts_nothing():
    notes = event_of("github-push.json", lambda p: p.update(ref="refs/notes/commits"))
    assert decide(notes).run_type is None


@pytest.mark.parametrize(
    "name",
    ["github-push.json", "gitlab-push.json", "gitea-push.json", "bitbucket-push.json", "azure-git.push.json"],
)
def test_every_providers_push_to_main_plans(name):
    decision = decide(event_of(name))
    assert decision.run_type is RunType.tracked and decision.branch == "main"
    assert decision.commit == event_of(name).sha


def test_a_bitbucket_push_of_several_branches_plans_the_tracked_one():
    """Bitbucket lists one change per ref pushed together (git push origin main feature)."""

    def two_branches(p):
        main = p["push"]["changes"][0]
        feature = json.loads(json.dumps(main))
        feature["new"]["name"] = "feature/x"
        feature["new"]["target"]["hash"] = "1111111111111111111111111111111111111111"
        p["push"]["changes"] = [main, feature]

    decision = decide(event_of("bitbucket-push.json", two_branches))
    assert decision.run_type is RunType.tracked
    assert decision.commit == "3f2c1b0a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"


def test_an_azure_push_of_several_branches_plans_the_tracked_one():
    def two_branches(p):
        p["resource"]["refUpdates"].insert(
            0,
            {
                "name": "refs/heads/feature/x",
                "oldObjectId": "0" * 40,
                "newObjectId": "1111111111111111111111111111111111111111",
            },
        )

    decision = decide(event_of("azure-git.push.json", two_branches))
    assert decision.run_type is RunType.tracked
    assert decision.commit == "33b55f7cb7e7e245323987634f960cf4a6e6bc74"


# ----------------------------------------------------------------------------- pull requests


@pytest.mark.parametrize(
    ("name", "number", "branch"),
    [
        ("github-pull_request-opened.json", 42, "feature/vpc-flow-logs"),
        ("github-pull_request-synchronize.json", 42, "feature/vpc-flow-logs"),
        ("gitlab-merge_request-open.json", 7, "feature/dns-ttl"),
        ("gitlab-merge_request-update.json", 7, "feature/dns-ttl"),
        ("gitea-pull_request-synchronized.json", 12, "feature/office-vpn"),
        ("bitbucket-pullrequest-created.json", 7, "feature/staging-subnet"),
        ("azure-git.pullrequest.created.json", 1, "feature/peering"),
        ("azure-git.pullrequest.updated.json", 1, "feature/peering"),
    ],
)
def test_a_pull_request_to_the_tracked_branch_plans_its_head_on_the_head_branch(name, number, branch):
    event = event_of(name)
    decision = decide(event)
    assert decision.run_type is RunType.proposed
    assert decision.commit == event.sha and decision.branch == branch
    assert decision.message == f"pull request #{number}: {event.pr_title}"


def test_a_pull_request_to_another_branch_is_skipped():
    decision = decide(event_of("github-pull_request-opened.json"), stack_branch="production")
    assert decision.run_type is None
    assert decision.reason == "pull request #42 targets main; this stack tracks production"


def test_a_pull_request_from_a_fork_is_not_planned():
    """A fork's code would run with the stack's variables and credentials (Atlantis and HCP
    Terraform refuse it by default too)."""

    def from_fork(p):
        p["pull_request"]["head"]["repo"] = {"full_name": "mallory/network"}

    decision = decide(event_of("github-pull_request-opened.json", from_fork))
    assert decision.run_type is None and "comes from a fork" in decision.reason
    assert decide(event_of("github-pull_request-opened.json")).run_type is RunType.proposed


# ----------------------------------------------------------------------------- filters


@pytest.mark.parametrize("actor", ["octocat", "OctoCat", " octocat "])
def test_skip_actors_are_exact_and_case_insensitive(actor):
    decision = decide(event_of("github-push.json"), skip_actors=["renovate[bot]", actor])
    assert decision.run_type is None and decision.reason == "octocat is in the stack's skip actors"


def test_skip_actors_do_not_match_parts_of_names():
    assert decide(event_of("github-push.json"), skip_actors=["octo", "cat", "octocat2"]).run_type is not None
    bot = push(actor="renovate[bot]")
    assert decide(bot, skip_actors=["renovate"]).run_type is not None
    assert decide(bot, skip_actors=["Renovate[Bot]"]).run_type is None


def test_skip_actors_apply_to_pull_requests_too():
    decision = decide(event_of("gitlab-merge_request-open.json"), skip_actors=["jsmith"])
    assert decision.run_type is None and "jsmith" in decision.reason


def test_an_event_without_an_actor_is_not_skipped_by_an_actor_rule():
    assert decide(push(actor=None), skip_actors=["", "octocat"]).run_type is RunType.tracked


@pytest.mark.parametrize(
    "message",
    [
        "Fix the typo [skip ci]",
        "[CI SKIP] docs only",
        "Docs\n\nThe body says [Skip CI] too",
    ],
)
def test_the_default_skip_patterns_skip_a_push(message):
    decision = decide(push(message=message))
    assert decision.run_type is None and "the commit message contains" in decision.reason


def test_skip_patterns_are_the_stacks_own():
    message = "chore: bump deps [no-plan]"
    assert decide(push(message=message)).run_type is RunType.tracked
    assert decide(push(message=message), skip_messages=["[no-plan]"]).run_type is None
    # No patterns at all: even [skip ci] plans.
    assert decide(push(message="x [skip ci]"), skip_messages=[]).run_type is RunType.tracked
    assert decide(push(message=None)).run_type is RunType.tracked


def test_only_the_head_commits_message_counts():
    def earlier_commit_skips(p):
        p["commits"][0]["message"] = "WIP [skip ci]"

    assert decide(event_of("github-push.json", earlier_commit_skips)).run_type is RunType.tracked

    def head_skips(p):
        p["head_commit"]["message"] = "Docs only [skip ci]"

    assert decide(event_of("github-push.json", head_skips)).run_type is None


def test_gitlab_merge_requests_honour_skip_messages_of_their_last_commit():
    def skip(p):
        p["object_attributes"]["last_commit"]["message"] = "wip [ci skip]"

    assert decide(event_of("gitlab-merge_request-open.json", skip)).run_type is None


def test_trigger_paths_let_through_a_push_that_touches_a_matching_file():
    event = event_of("github-push.json")  # envs/prod/main.tf, modules/vpc/variables.tf, README.md, ...
    for globs in (
        ["envs/prod/**"],
        ["*.tf"],
        ["modules/*/variables.tf"],
        ["**/README.md"],
        ["nothing/**", "*.md"],
    ):
        assert decide(event, trigger_paths=globs).run_type is RunType.tracked, globs


def test_trigger_paths_skip_a_push_that_touches_no_matching_file_and_say_what_changed():
    decision = decide(event_of("github-push.json"), trigger_paths=["envs/staging/**", "*.go"])
    assert decision.run_type is None
    assert "trigger paths (envs/staging/**, *.go)" in decision.reason
    assert "envs/prod/main.tf" in decision.reason and "README.md" in decision.reason


def test_a_removed_file_counts_as_a_change():
    event = event_of("github-push.json")  # docs/old-network.md was removed
    assert decide(event, trigger_paths=["docs/**"]).run_type is RunType.tracked


def test_the_skip_reason_lists_at_most_five_changed_files():
    many = push(files=[f"docs/{i}.md" for i in range(8)])
    reason = decide(many, trigger_paths=["*.tf"]).reason
    assert "docs/4.md" in reason and "docs/5.md" not in reason and reason.endswith("…")


@pytest.mark.parametrize(
    "name",
    ["bitbucket-push.json", "azure-git.push.json", "github-pull_request-opened.json", "gogs-push.json"],
)
def test_trigger_paths_let_through_what_lists_no_files(name):
    """Crucible never skips a change it cannot see: no file list, no path filtering."""
    decision = decide(event_of(name), trigger_paths=["nothing/matches/**"])
    assert decision.run_type is not None, decision.reason


def test_a_push_without_commits_listed_is_let_through_trigger_paths():
    event = event_of("github-push.json", lambda p: p.update(commits=[]))
    assert decide(event, trigger_paths=["nothing/**"]).run_type is RunType.tracked


def test_an_empty_file_list_is_a_change_to_nothing():
    assert decide(push(files=[]), trigger_paths=["*.tf"]).run_type is None
    assert decide(push(files=[])).run_type is RunType.tracked  # no trigger paths: every push


def test_filters_are_checked_after_the_branch():
    # A push to another branch says so, not that a filter matched.
    event = push(branch="develop", actor="renovate[bot]", message="[skip ci]")
    decision = decide(event, skip_actors=["renovate[bot]"])
    assert decision.reason == "push to develop; this stack tracks main"


def test_an_ignored_event_is_skipped_with_the_parsers_reason():
    event = pv.Event(
        provider=pv.GITHUB, name="push", kind="push", branch="main", sha="a" * 40, ignore="because"
    )
    assert decide(event) == rules.Decision(None, "because")
    other = pv.Event(provider=pv.GITHUB, name="deployment", kind="other")
    assert decide(other).run_type is None and "deployment" in decide(other).reason
