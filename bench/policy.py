#!/usr/bin/env python3
"""Policy engine benchmark: the starter library on plans with 100, 1,000 and 10,000 changes.

For each plan size and each available engine (the embedded ones that import, plus the OPA
server when CRUCIBLE_OPA_URL is set) it evaluates the seven starter policies from
backend/policies/library through the real PolicyEngine interface (sandboxed worker, time limit,
normalisation) and reports the median over the rounds, side by side, with the ratio against the
fastest engine of that size: one by one, and in one pass (``evaluate_many``, which is what a
run's hook calls), with the ratio of the two.

Separately it measures what the time limit costs: the same evaluation with the engine run
inline in this process (no worker, no limit) against the sandboxed call, on an empty input (the
fixed round trip) and on each plan size (which adds serialising the input and piping it).

Plans are generated: realistic ``resource_changes`` (AWS resource types with full before/after
attribute sets, tags, nested blocks, a mix of create/update/delete/replace/no-op, module
addresses) plus the ``crucible`` key, about 1.6 KB of JSON per change.

    python bench/policy.py [--sizes 100,1000,10000] [--rounds 5] [--quick] [--max-seconds 170]
                           [--engines opa-eval,regopy]

Results are printed and written to bench/results/policy.json (git-ignored). The run stops on
its own: a size/engine whose evaluations exceed --eval-timeout is reported as such, and no new
measurement starts after --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# This directory holds bench/queue.py: off the path, or it shadows the standard library's queue.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"


def say(msg: str = "") -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------- plans

TYPES = [
    "aws_instance",
    "aws_s3_bucket",
    "aws_s3_bucket_public_access_block",
    "aws_security_group",
    "aws_iam_role",
    "aws_db_instance",
    "aws_lambda_function",
    "aws_route53_record",
    "aws_launch_template",
    "aws_cloudwatch_log_group",
]
ACTIONS = (
    [["create"]] * 4
    + [["update"]] * 4
    + [["no-op"]] * 6
    + [["delete"]]
    + [["delete", "create"]]
    + [["create", "delete"]]
)
INSTANCE_TYPES = ["t3.micro", "t3.large", "m6i.large", "m7g.xlarge", "t2.small", "c5.xlarge", "c7g.2xlarge"]


def _attributes(rnd: random.Random, type_: str, i: int) -> dict[str, Any]:
    tags = {
        "owner": f"team-{i % 7}",
        "cost-center": f"cc-{i % 13}",
        "environment": rnd.choice(["prod", "staging"]),
    }
    if i % 19 == 0:
        tags.pop("owner")
    after: dict[str, Any] = {
        "id": f"{type_}-{i:06d}",
        "arn": f"arn:aws:service:eu-west-1:123456789012:{type_}/{i:06d}",
        "name": f"{type_.removeprefix('aws_')}-{i}",
        "tags": tags,
        "tags_all": {**tags, "managed-by": "crucible"},
        "timeouts": None,
    }
    if type_ in ("aws_instance", "aws_launch_template"):
        after.update(
            instance_type=rnd.choice(INSTANCE_TYPES),
            ami="ami-0abcdef1234567890",
            subnet_id=f"subnet-{i % 32:04x}",
            vpc_security_group_ids=[f"sg-{i % 9:04x}", "sg-00ff"],
            root_block_device=[
                {"volume_size": 20 + i % 80, "volume_type": "gp3", "encrypted": True, "iops": 3000}
            ],
            metadata_options=[
                {"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1}
            ],
            user_data_base64=None,
        )
    elif type_ == "aws_s3_bucket":
        acl = rnd.choice(["private"] * 19 + ["public-read"])
        after.update(
            bucket=f"crucible-bench-{i}", acl=acl, versioning=[{"enabled": True, "mfa_delete": False}]
        )
    elif type_ == "aws_s3_bucket_public_access_block":
        after.update(
            bucket=f"crucible-bench-{i}",
            block_public_acls=True,
            block_public_policy=i % 23 != 0,
            ignore_public_acls=True,
            restrict_public_buckets=True,
        )
    elif type_ == "aws_security_group":
        after.update(
            description="bench",
            ingress=[
                {
                    "cidr_blocks": ["10.0.0.0/8"],
                    "from_port": 443,
                    "to_port": 443,
                    "protocol": "tcp",
                    "self": False,
                }
            ],
            egress=[
                {"cidr_blocks": ["0.0.0.0/0"], "from_port": 0, "to_port": 0, "protocol": "-1", "self": False}
            ],
        )
    elif type_ == "aws_db_instance":
        after.update(engine="postgres", engine_version="16.3", instance_class="db.m6g.large")
        after.update(allocated_storage=100, backup_retention_period=7, multi_az=True, storage_encrypted=True)
    elif type_ == "aws_lambda_function":
        after.update(
            runtime="python3.12",
            handler="app.handler",
            memory_size=256,
            timeout=30,
            environment=[{"variables": {"LOG_LEVEL": "info", "STAGE": "prod"}}],
        )
    else:
        after.update(retention_in_days=30, ttl=300, records=[f"10.0.{i % 256}.{i % 200}"])
    return after


def resource_change(rnd: random.Random, i: int) -> dict[str, Any]:
    type_ = TYPES[i % len(TYPES)]
    actions = rnd.choice(ACTIONS)
    module = f"module.svc{i % 25}"
    after = _attributes(rnd, type_, i)
    before = None if actions == ["create"] else {**after, "tags": {**after["tags"], "revision": "1"}}
    return {
        "address": f"{module}.{type_}.r{i}",
        "module_address": module,
        "mode": "managed",
        "type": type_,
        "name": f"r{i}",
        "provider_name": "registry.opentofu.org/hashicorp/aws",
        "change": {
            "actions": actions,
            "before": before,
            "after": None if actions == ["delete"] else after,
            "after_unknown": {"id": True, "arn": True} if "create" in actions else {},
            "before_sensitive": {} if before is not None else False,
            "after_sensitive": {"tags": {}} if actions != ["delete"] else False,
        },
    }


def make_plan(n: int, seed: int = 7) -> dict[str, Any]:
    rnd = random.Random(seed)
    changes = [resource_change(rnd, i) for i in range(n)]
    counts = {
        "add": sum("create" in c["change"]["actions"] for c in changes),
        "change": sum(c["change"]["actions"] == ["update"] for c in changes),
        "destroy": sum("delete" in c["change"]["actions"] for c in changes),
    }
    return {
        "format_version": "1.2",
        "terraform_version": "1.11.4",
        "resource_changes": changes,
        "planned_values": {"root_module": {"child_modules": []}},
        "prior_state": {"format_version": "1.0", "values": {"root_module": {}}},
        "crucible": {
            "run": {
                "id": "run-bench",
                "type": "tracked",
                "trigger": "vcs",
                "commit": "4f2a9c1e",
                "message": "bench",
                "created_by": "bench@example.com",
                "created_at": "2026-03-04T10:15:00Z",
            },
            "stack": {
                "id": "stk-bench",
                "name": "bench",
                "labels": ["env:prod"],
                "branch": "main",
                "tool": "opentofu",
                "project_root": "",
            },
            "counts": counts,
        },
    }


# ---------------------------------------------------------------------------- measuring


def starter_policies() -> dict[str, str]:
    from backend.policies import library

    return {p.slug: p.body for p in sorted(library.LIBRARY, key=lambda p: p.slug)}


def time_call(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--overhead-calls", type=int, default=200)
    ap.add_argument("--eval-timeout", type=float, default=60.0, help="per policy evaluation")
    ap.add_argument("--max-seconds", type=float, default=170.0)
    ap.add_argument("--quick", action="store_true", help="CI smoke: sizes 100,1000, 2 rounds")
    ap.add_argument("--engines", default="", help="comma-separated engine names (default: all available)")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.rounds, args.overhead_calls = "100,1000", 2, 50
    sizes = [int(s) for s in args.sizes.split(",") if s]
    deadline = time.monotonic() + args.max_seconds

    from backend.policies.engine import PolicyEvalError, available_engines
    from backend.policies.engines.embedded import BACKENDS, EmbeddedEngine

    engines = available_engines()
    if args.engines:
        wanted = {e.strip() for e in args.engines.split(",") if e.strip()}
        engines = {k: v for k, v in engines.items() if k in wanted}
    inline = {n: EmbeddedEngine(c, None, isolation="inline") for n, c in BACKENDS.items() if n in engines}
    policies = starter_policies()
    say(
        f"engines: {', '.join(engines) or 'none'}; policies: {len(policies)}; "
        f"sizes: {sizes}; rounds: {args.rounds}"
    )
    if not engines:
        say("SKIPPED: no policy engine installed")
        return 0

    results: dict[str, Any] = {
        "params": vars(args),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "engines": list(engines),
        "sizes": {},
        "overhead": {},
        "cut_short": False,
    }

    # Warm up: start the workers, compile each policy once per engine.
    tiny = make_plan(5)
    for eng in engines.values():
        for src in policies.values():
            eng.evaluate(src, tiny, timeout_seconds=args.eval_timeout)

    # ---- fixed overhead of the time limit: empty input, trivial policy
    trivial = 'package crucible\nimport rego.v1\ndeny contains "x" if input.never\n'
    for name in inline:
        eng = engines[name]
        boxed = [
            time_call(lambda e=eng: e.evaluate(trivial, {}, timeout_seconds=10))
            for _ in range(args.overhead_calls)
        ]
        raw = [time_call(lambda e=inline[name]: e.evaluate(trivial, {})) for _ in range(args.overhead_calls)]
        results["overhead"][name] = {
            "empty_input": {
                "sandboxed_ms": median(boxed),
                "inline_ms": median(raw),
                "overhead_ms": round(median(boxed) - median(raw), 3),
            },
        }

    # ---- the starter library per size and engine
    for n in sizes:
        plan = make_plan(n)
        plan_bytes = len(json.dumps(plan))
        say(f"\nplan: {n} resource changes, {plan_bytes / 1e6:.1f} MB of JSON")
        size_result: dict[str, Any] = {"plan_bytes": plan_bytes, "engines": {}}
        results["sizes"][str(n)] = size_result
        for name, eng in engines.items():
            if time.monotonic() > deadline:
                results["cut_short"] = True
                break
            per_policy: dict[str, list[float]] = {p: [] for p in policies}
            totals: list[float] = []
            error = None
            rounds = args.rounds
            for r in range(rounds):
                total = 0.0
                for pname, src in policies.items():
                    try:
                        decision = eng.evaluate(src, plan, timeout_seconds=args.eval_timeout)
                    except PolicyEvalError as exc:
                        error = exc.message
                        break
                    per_policy[pname].append(decision.duration_ms)
                    total += decision.duration_ms
                if error:
                    break
                totals.append(total)
                # a slow engine gets fewer rounds rather than eating the budget
                if r == 0 and total * (rounds - 1) / 1000 > max(5.0, (deadline - time.monotonic()) / 4):
                    break
                if time.monotonic() > deadline:
                    results["cut_short"] = True
                    break
            entry: dict[str, Any] = {
                "rounds": len(totals),
                "total_ms": median(totals),
                "per_policy_ms": {p: median(v) for p, v in per_policy.items()},
                "error": error,
            }
            # What a run's hook does: every policy in one call (evaluate_many), the input read
            # once for all of them where the engine can; the wall time of that call.
            many = getattr(eng, "evaluate_many", None)
            if many is not None and not error and time.monotonic() < deadline:
                sources = list(policies.values())
                passes = []
                for _ in range(max(1, len(totals))):
                    started = time.perf_counter()
                    many(sources, plan, timeout_seconds=args.eval_timeout)
                    passes.append((time.perf_counter() - started) * 1000)
                    if time.monotonic() > deadline:
                        break
                entry["one_pass_ms"] = median(passes)
                if entry["total_ms"]:
                    entry["one_pass_vs_one_by_one"] = round(entry["one_pass_ms"] / entry["total_ms"], 2)
            if name in inline and not error and time.monotonic() < deadline:
                src = policies["no_destroy_outside_destroy_runs"]
                boxed = [
                    eng.evaluate(src, plan, timeout_seconds=args.eval_timeout).duration_ms for _ in range(3)
                ]
                raw = [inline[name].evaluate(src, plan).duration_ms for _ in range(3)]
                entry["overhead_one_policy_ms"] = {
                    "sandboxed_ms": median(boxed),
                    "inline_ms": median(raw),
                    "overhead_ms": round(median(boxed) - median(raw), 3),
                }
            size_result["engines"][name] = entry
            shown = f"{entry['total_ms']:.1f} ms" if entry["total_ms"] is not None else error
            if "one_pass_ms" in entry:
                shown += f", one pass {entry['one_pass_ms']:.1f} ms"
            say(f"  {name:10s} {shown} ({len(totals)} rounds)")
        done = {k: v["total_ms"] for k, v in size_result["engines"].items() if v["total_ms"] is not None}
        if done:
            fastest = min(done.values())
            for v in size_result["engines"].values():
                v["ratio_to_fastest"] = (
                    round(v["total_ms"] / fastest, 2) if v["total_ms"] is not None else None
                )

    # ---- report
    say("\nStarter library (7 policies, evaluated one after another), median total ms per plan")
    names = list(engines)
    header = f"{'changes':>8} " + " ".join(f"{n:>22}" for n in names)
    say(header)
    for n, size_result in results["sizes"].items():
        cells = []
        for name in names:
            e = size_result["engines"].get(name)
            if e is None:
                cells.append(f"{'(not run)':>22}")
            elif e["total_ms"] is None:
                cells.append(f"{'error':>22}")
            else:
                cells.append(f"{e['total_ms']:>12.1f} ms  x{e['ratio_to_fastest']:<5}")
        say(f"{n:>8} " + " ".join(cells))
    say("\nThe same 7 policies in one pass (what a run's hook does), median wall ms, vs one by one")
    for n, size_result in results["sizes"].items():
        parts = [
            f"{name}: {e['one_pass_ms']:.1f} ms (x{e.get('one_pass_vs_one_by_one', '?')} of one by one)"
            for name, e in size_result["engines"].items()
            if e.get("one_pass_ms") is not None
        ]
        say(f"{n:>8}  " + ("; ".join(parts) or "(not measured)"))
    say("\nSlowest starter policy per plan (ms)")
    for n, size_result in results["sizes"].items():
        parts = []
        for name, e in size_result["engines"].items():
            pp = {k: v for k, v in e["per_policy_ms"].items() if v is not None}
            if pp:
                worst = max(pp, key=pp.__getitem__)
                parts.append(f"{name}: {worst} {pp[worst]:.1f}")
        say(f"{n:>8}  " + "; ".join(parts))
    say("\nCost of the time limit (sandboxed worker vs. the same engine inline), median ms")
    for name, o in results["overhead"].items():
        e = o["empty_input"]
        say(
            f"  {name:10s} empty input: {e['sandboxed_ms']:.3f} vs {e['inline_ms']:.3f}"
            f" -> {e['overhead_ms']:+.3f} ms per call"
        )
        for n, size_result in results["sizes"].items():
            one = size_result["engines"].get(name, {}).get("overhead_one_policy_ms")
            if one:
                say(
                    f"  {'':10s} {n:>6} changes (one policy): {one['sandboxed_ms']:.1f}"
                    f" vs {one['inline_ms']:.1f} -> {one['overhead_ms']:+.1f} ms"
                )
    if results["cut_short"]:
        say(f"\n(cut short after --max-seconds {args.max_seconds:g})")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "policy.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"\nwritten to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
