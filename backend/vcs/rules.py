"""What a verified event means for a stack: a run to start (which type, at which commit) or a
skip with the reason the delivery log shows. Pure: the stack's settings in, a decision out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from backend.runs.lifecycle import RunType
from backend.vcs.providers import Event


@dataclass(frozen=True)
class Decision:
    run_type: RunType | None  # None: skip
    reason: str
    commit: str | None = None
    branch: str | None = None
    message: str = ""


@lru_cache(maxsize=512)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: ``**`` crosses directories, ``*`` and ``?`` stay within one, and
    a pattern without a slash matches a file name at any depth (``*.tf``), like .gitignore."""
    pattern = pattern.strip()
    anchored = "/" in pattern.rstrip("/")  # "/main.tf" and "envs/*.tf" start at the root
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):
        pattern += "**"
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    body = "".join(out)
    return re.compile(body if anchored else f"(?:.*/)?{body}", re.DOTALL)


def matching_paths(files: list[str], globs: list[str]) -> list[str]:
    regexes = [glob_regex(g) for g in globs if g.strip()]
    return [f for f in files if any(r.fullmatch(f) for r in regexes)]


def _short(sha: str | None) -> str:
    return (sha or "")[:12]


def _printable(text: str) -> str:
    """Control characters (a PR title with a stray escape) never make a run unstartable."""
    return "".join(c for c in text if c >= " " or c == "\t")


def _title(message: str | None) -> str:
    lines = (message or "").strip().splitlines()
    return _printable(lines[0])[:200] if lines else ""


def decide(
    event: Event,
    *,
    stack_branch: str,
    trigger_paths: list[str],
    skip_messages: list[str],
    skip_actors: list[str],
) -> Decision:
    if event.ignore:
        return Decision(None, event.ignore)
    if event.kind == "push":
        if event.tag is not None:
            return Decision(None, f"tag {event.tag}: tags start no runs")
        if event.branch is None:
            return Decision(None, "the push is not to a branch")
        if event.deleted:
            return Decision(None, f"branch {event.branch} was deleted: nothing to plan")
        if event.branch != stack_branch:
            return Decision(None, f"push to {event.branch}; this stack tracks {stack_branch}")
    elif event.kind == "pull_request":
        if event.pr_base is not None and event.pr_base != stack_branch:
            return Decision(
                None,
                f"pull request #{event.pr_number} targets {event.pr_base}; this stack tracks {stack_branch}",
            )
    else:
        return Decision(None, f"{event.name or 'this'} events are not acted on")
    actor = (event.actor or "").lower()
    for skipped in skip_actors:
        if actor and actor == skipped.strip().lower():
            return Decision(None, f"{event.actor} is in the stack's skip actors")
    message = event.message or ""
    for pattern in skip_messages:
        if pattern and pattern.lower() in message.lower():
            return Decision(None, f"the commit message contains {pattern!r}")
    if trigger_paths and event.files is not None and not matching_paths(event.files, trigger_paths):
        shown = ", ".join(event.files[:5]) + (" …" if len(event.files) > 5 else "")
        return Decision(
            None,
            f"no changed file matches the stack's trigger paths ({', '.join(trigger_paths)[:300]}); "
            f"changed: {shown or 'nothing'}",
        )
    if event.kind == "push":
        title = _title(event.message)
        return Decision(
            RunType.tracked,
            f"push to {event.branch} at {_short(event.sha)}",
            commit=event.sha,
            branch=event.branch,
            message=_printable(f"push by {event.actor or 'unknown'}") + (f": {title}" if title else ""),
        )
    number = f"#{event.pr_number}"
    return Decision(
        RunType.proposed,
        f"pull request {number} at {_short(event.sha)}",
        commit=event.sha,
        # A fork's head branch is not in the stack's repository: clone the tracked branch and
        # fetch the head commit by id.
        branch=event.branch if event.same_repo else None,
        message=f"pull request {number}" + (f": {_title(event.pr_title)}" if event.pr_title else ""),
    )
