"""What a verified event means for a stack: a run to start (which type, at which commit) or a
skip with the reason the delivery log shows. Pure: the stack's settings in, a decision out."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
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
def _glob_segments(pattern: str) -> tuple[str, ...]:
    """A path glob as segments: ``**`` (any number of directories), or an fnmatch pattern for
    one segment (``*`` and ``?`` stay within it; brackets are literal). A pattern without a slash matches a
    file name at any depth (``*.tf``) and a leading ``/`` anchors it at the root, as in
    .gitignore; a trailing ``/`` means everything below."""
    pattern = pattern.strip()
    anchored = "/" in pattern.rstrip("/")
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):
        pattern += "**"
    parts: list[str] = [] if anchored else ["**"]
    for part in pattern.split("/"):
        if part == "**" and parts and parts[-1] == "**":
            continue  # "**/**" is "**"
        # Brackets are literal ("[ab].tf" is that name): fnmatch would read a character class.
        parts.append(part if part == "**" else part.replace("**", "*").replace("[", "[[]"))
    return tuple(parts)


def glob_match(path: str, pattern: str) -> bool:
    """Whether ``path`` matches the glob: segment by segment, so a crafted pattern costs at most
    segments x segments steps (a regex of nested ``.*`` backtracks exponentially)."""
    segs, pats = path.split("/"), _glob_segments(pattern)
    # reach[i]: the pattern's first j parts can match the path's first i segments.
    reach = [True] + [False] * len(segs)
    for pat in pats:
        if pat == "**":
            for i in range(1, len(segs) + 1):
                reach[i] = reach[i] or reach[i - 1]
        else:
            reach = [False] + [reach[i] and fnmatchcase(segs[i], pat) for i in range(len(segs))]
    return reach[len(segs)]


def matching_paths(files: list[str], globs: list[str]) -> list[str]:
    patterns = [g for g in globs if g.strip()]
    return [f for f in files if any(glob_match(f, g) for g in patterns)]


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
        if not event.same_repo:
            # Its code would run with the stack's variables and cloud credentials.
            return Decision(
                None,
                f"pull request #{event.pr_number} comes from a fork: code from outside the repository "
                "is not planned (push the branch to the repository to plan it)",
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
        branch=event.branch,
        message=f"pull request {number}" + (f": {_title(event.pr_title)}" if event.pr_title else ""),
    )
