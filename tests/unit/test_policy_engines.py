"""The policy engines: the conformance corpus on every embedded engine, errors, time limits.

The corpus lives in tests/policies/<group>/<policy>/: ``policy.rego`` plus pairs
``<case>.input.json`` / ``<case>.expected.json`` (tests/policies/README.md). The starter group
tests the packaged library: ``starter/<slug>/`` has no policy.rego of its own, its cases run
``backend/policies/library/<slug>.rego``. Every case runs on
every embedded engine that is installed. A case an engine is known to get wrong names it in
``known_failures`` with the reason; it runs as a strict xfail, so the day the engine gets it
right the suite says so and the entry (and docs/policies-engines.md) must go.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from backend.policies import engine as engine_mod
from backend.policies import library
from backend.policies.engine import (
    OPA_EVAL,
    REGOPY,
    Decision,
    PolicyCompileError,
    PolicyEngine,
    PolicyEvalError,
    available_engines,
    default_engine,
    normalise,
)
from backend.policies.engines import rego_source
from backend.policies.engines.builtins import OPA_BUILTINS, REGOPY_MISSING, REGORUS_MISSING
from backend.policies.engines.embedded import BACKENDS, EmbeddedEngine, importable_engines
from backend.policies.engines.sandbox import WorkerPool

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "policies"
FIXTURES = ROOT / "fixtures"
LIBRARY = Path(library.__file__).parent
DECISION_FIELDS = ("deny", "warn", "require_approval", "required_approvals")


def load_input(path: Path) -> dict:
    """A case's input; ``"$plan": "<file under tests/fixtures>"`` merges a recorded plan's keys in."""
    doc = json.loads(path.read_text())
    plan = doc.pop("$plan", None)
    if plan is not None:
        doc = {**json.loads((FIXTURES / plan).read_text()), **doc}
    return doc


def policy_file(case_dir: Path) -> Path:
    """The policy a corpus directory's cases run: the library's for starter/<slug>."""
    if case_dir.parent.name == "starter":
        return LIBRARY / f"{case_dir.name}.rego"
    return case_dir / "policy.rego"


def corpus_cases() -> list[tuple[str, Path, Path, Path]]:
    cases = []
    for case_dir in sorted({p.parent for p in CORPUS.glob("*/*/*.expected.json")}):
        policy = policy_file(case_dir)
        for expected in sorted(case_dir.glob("*.expected.json")):
            name = expected.name.removesuffix(".expected.json")
            case_id = f"{case_dir.parent.name}/{case_dir.name}/{name}"
            cases.append((case_id, policy, case_dir / f"{name}.input.json", expected))
    return cases


CASES = corpus_cases()
ENGINE_NAMES = sorted(BACKENDS)


@pytest.fixture(scope="module")
def engines() -> dict[str, PolicyEngine]:
    return available_engines()


def _params():
    for case_id, policy, input_path, expected_path in CASES:
        expected = json.loads(expected_path.read_text())
        known = expected.get("known_failures", {})
        for name in ENGINE_NAMES:
            marks = []
            if name in known:
                marks.append(
                    pytest.mark.xfail(
                        reason=known[name],
                        strict=True,
                        raises=(AssertionError, PolicyEvalError, PolicyCompileError),
                    )
                )
            yield pytest.param(name, policy, input_path, expected, id=f"{name}:{case_id}", marks=marks)


def test_the_corpus_is_there():
    groups = {c[0].split("/")[0] for c in CASES}
    assert {"starter", "builtins"} <= groups
    starter = {c[0].split("/")[1] for c in CASES if c[0].startswith("starter/")}
    assert len(starter) == 7, starter
    # Every library policy has cases, and every starter case runs a library policy.
    assert starter == {p.slug for p in library.LIBRARY} == {p.stem for p in LIBRARY.glob("*.rego")}
    assert not list((CORPUS / "starter").glob("*/policy.rego")), "starter policies live in the library"
    for _, policy, _, _ in CASES:
        assert policy.exists(), policy
    for _, _, input_path, expected_path in CASES:
        assert input_path.exists(), f"{expected_path.name} has no input file"
        expected = json.loads(expected_path.read_text())
        assert set(expected) <= {*DECISION_FIELDS, "known_failures", "note", "error"}, expected_path
        assert expected.get("error") in (None, "PolicyEvalError", "PolicyCompileError"), expected_path
        assert set(expected.get("known_failures", {})) <= {OPA_EVAL, REGOPY, "opa-server"}, expected_path


@pytest.mark.parametrize(("engine_name", "policy", "input_path", "expected"), list(_params()))
def test_corpus(engines, engine_name, policy, input_path, expected):
    engine = engines[engine_name]
    if "error" in expected:
        error = {"PolicyEvalError": PolicyEvalError, "PolicyCompileError": PolicyCompileError}[
            expected["error"]
        ]
        with pytest.raises(error):
            engine.evaluate(policy.read_text(), load_input(input_path), timeout_seconds=30)
        return
    decision = engine.evaluate(policy.read_text(), load_input(input_path), timeout_seconds=30)
    got = {k: getattr(decision, k) for k in DECISION_FIELDS}
    want = {
        k: expected.get(k, [] if k in ("deny", "warn") else 0 if k == "required_approvals" else False)
        for k in DECISION_FIELDS
    }
    assert got == want


# ---------------------------------------------------------------------------- the interface


@pytest.fixture(scope="module", params=ENGINE_NAMES)
def engine(request, engines) -> PolicyEngine:
    return engines[request.param]


def test_engines_follow_the_protocol(engines):
    assert set(ENGINE_NAMES) <= set(engines)
    for name, eng in engines.items():
        assert isinstance(eng, PolicyEngine)
        assert eng.name == name


def test_default_engine_is_opa_eval():
    # opa-eval is a pinned dependency: a missing engine is a broken install, not a skip.
    assert default_engine(None).name == OPA_EVAL

    class Settings:
        policy_engine = "regopy"
        opa_url = None
        opa_token = None

    assert default_engine(Settings()).name == REGOPY
    Settings.policy_engine = "regorus"  # the alias backend/config.py uses
    assert default_engine(Settings()).name == OPA_EVAL


def test_default_engine_with_opa_url():
    class Settings:
        policy_engine = "auto"
        opa_url = "http://127.0.0.1:8181"
        opa_token = None

    eng = default_engine(Settings())
    assert eng.name == "opa-server"
    assert default_engine(Settings()) is eng  # cached: the API asks on every request

    Settings.policy_engine = "opa"
    Settings.opa_url = None
    with pytest.raises(PolicyEvalError, match="CRUCIBLE_OPA_URL"):
        default_engine(Settings())


def test_minimal_policy(engine):
    src = 'package crucible\nimport rego.v1\n\ndeny contains "no" if input.x == 1\n'
    assert engine.evaluate(src, {"x": 1}).deny == ["no"]
    decision = engine.evaluate(src, {"x": 2})
    assert decision == Decision([], [], False, 0, decision.duration_ms)
    assert decision.duration_ms > 0


def test_rego_v1_without_the_import(engine):
    # OPA 1.x and rego-cpp default to v1; regorus needs the import, which the adapter adds.
    src = (
        'package crucible\n\ndeny contains msg if {\n\tsome x in input.xs\n\tmsg := sprintf("bad %s", [x])\n}'
    )
    assert engine.evaluate(src, {"xs": ["a", "b"]}).deny == ["bad a", "bad b"]


def test_other_package_names(engine):
    src = 'package acme.guardrails\nimport rego.v1\nwarn contains "hello" if true\n'
    assert engine.evaluate(src, {}).warn == ["hello"]


# ---------------------------------------------------------------------------- compile errors


SYNTAX_ERROR_LINE_3 = (
    "package crucible\nimport rego.v1\ndeny contains msg if { msg := [1, 2 }\n\nwarn contains 1 if true\n"
)


def test_syntax_error_reports_its_line(engine):
    with pytest.raises(PolicyCompileError) as info:
        engine.compile(SYNTAX_ERROR_LINE_3)
    assert info.value.line == 3, info.value
    assert info.value.column is not None and info.value.column >= 1
    assert info.value.message
    with pytest.raises(PolicyCompileError):
        engine.evaluate(SYNTAX_ERROR_LINE_3, {})


def test_unknown_function_is_a_compile_error_with_position(engine):
    src = 'package crucible\nimport rego.v1\n\ndeny contains msg if {\n\tmsg := sprntf("%s", ["x"])\n}\n'
    with pytest.raises(PolicyCompileError) as info:
        engine.compile(src)
    assert (info.value.line, info.value.column) == (5, 9)
    assert "sprntf" in info.value.message


@pytest.mark.parametrize(
    "src", ["\u00c0", "package crucible\n\nd\u00e9j\u00e0 := 1\n", "package crucible\nx := \u00b2\n"]
)
def test_non_ascii_identifiers_and_digits_are_compile_errors(engine, src):
    """Rego identifiers and numbers are ASCII: anything else is the author's error, with a
    position, never a crash of the source scanner (the API is fuzzed with such input)."""
    with pytest.raises(PolicyCompileError) as info:
        engine.compile(src)
    assert info.value.line is not None


@pytest.mark.parametrize(
    "call", ['http.send({"method": "get", "url": "http://127.0.0.1:9/"})', "opa.runtime()"]
)
def test_policies_cannot_reach_the_network_or_the_runtime(engine, call):
    src = f'package crucible\nimport rego.v1\n\ndeny contains sprintf("%v", [{call}]) if true\n'
    with pytest.raises(PolicyCompileError, match="not allowed") as info:
        engine.compile(src)
    assert (info.value.line, info.value.column) == (4, 30)


def test_a_disabled_builtin_cannot_be_smuggled_in_with_a_with(engine):
    src = (
        "package crucible\nimport rego.v1\n\nf(x) := x\n"
        'deny contains "x" if f({"url": "http://127.0.0.1:9/"}) with f as http.send\n'
    )
    with pytest.raises(PolicyCompileError, match=r"http\.send is not allowed") as info:
        engine.compile(src)
    assert (info.value.line, info.value.column) == (5, 66)


def test_missing_package_is_a_compile_error(engine):
    with pytest.raises(PolicyCompileError, match="package"):
        engine.compile('deny contains "x" if true\n')


def test_compile_accepts_the_starter_library(engine):
    for policy in library.LIBRARY:
        engine.compile(policy.body)


def test_compile_error_is_picklable_and_readable():
    import pickle

    err = pickle.loads(pickle.dumps(PolicyCompileError("bad", 3, 7)))
    assert (err.message, err.line, err.column) == ("bad", 3, 7)
    assert str(err) == "line 3, column 7: bad"


# ---------------------------------------------------------------------------- runtime errors


def test_runtime_error_is_an_eval_error(engine):
    src = 'package crucible\nimport rego.v1\n\ndeny contains msg if msg := sprintf("%d", [10 / input.zero])\n'
    with pytest.raises(PolicyEvalError, match=r"(?i)divide by zero|division"):
        engine.evaluate(src, {"zero": 0})


def test_conflicting_values_are_an_eval_error(engine):
    src = "package crucible\nimport rego.v1\nrequired_approvals := 1\nrequired_approvals := 2 if input.x\n"
    assert engine.evaluate(src, {"x": False}).required_approvals == 1
    with pytest.raises(PolicyEvalError):
        engine.evaluate(src, {"x": True})


def test_wrong_decision_shapes_are_eval_errors(engine):
    with pytest.raises(PolicyEvalError, match="deny"):
        engine.evaluate("package crucible\nimport rego.v1\ndeny := true\n", {})
    with pytest.raises(PolicyEvalError, match="required_approvals"):
        engine.evaluate('package crucible\nimport rego.v1\nrequired_approvals := "two"\n', {})


def test_input_must_be_an_object(engine):
    with pytest.raises(PolicyEvalError, match="object"):
        engine.evaluate("package crucible\n", [1, 2])  # type: ignore[arg-type]


def test_infinite_recursion_ends_as_an_eval_error(engine):
    # OPA rejects this at compile time (rego_recursion_error); rego-cpp reports recursion,
    # regorus overflows its stack. Either way the caller gets an error, quickly.
    src = "package crucible\nimport rego.v1\n\nf(x) := f(x + 1)\n\ndeny contains msg if msg := f(1)\n"
    started = time.monotonic()
    with pytest.raises((PolicyEvalError, PolicyCompileError)):
        engine.evaluate(src, {}, timeout_seconds=2)
    assert time.monotonic() - started < 2 + 3
    # and the engine still works afterwards (a fresh worker replaced a crashed one)
    assert engine.evaluate('package crucible\nimport rego.v1\nwarn contains "ok" if true\n', {}).warn == [
        "ok"
    ]


# 10^10 iterations, no memory: regorus would run for hours, rego-cpp for seconds before its
# own statement limit; both are killed at the deadline.
ENDLESS = """package crucible
import rego.v1

deny contains "never" if {
\tsome i in numbers.range(1, 100000)
\tsome j in numbers.range(1, 100000)
\ti == j + 1000000
}
"""


def test_endless_evaluation_is_killed_at_the_timeout(engine):
    started = time.monotonic()
    with pytest.raises(PolicyEvalError, match=r"exceeded 1 s"):
        engine.evaluate(ENDLESS, {}, timeout_seconds=1)
    elapsed = time.monotonic() - started
    assert 1 <= elapsed < 1 + 2, elapsed
    assert engine.evaluate('package crucible\nimport rego.v1\nwarn contains "ok" if true\n', {}).warn == [
        "ok"
    ]


def test_memory_limit_kills_a_greedy_policy():
    pool = WorkerPool(size=1, memory_limit_mb=300)
    try:
        greedy = (
            "package crucible\nimport rego.v1\n"
            "deny contains 1 if count([i | some i in numbers.range(1, 100000000)]) > 0\n"
        )
        for name, eng in importable_engines(pool=pool).items():
            started = time.monotonic()
            with pytest.raises(PolicyEvalError, match=r"memory|crashed"):
                eng.evaluate(greedy, {}, timeout_seconds=60)
            assert time.monotonic() - started < 30, name
    finally:
        pool.close()


def test_concurrent_evaluations_share_the_pool(engine):
    from concurrent.futures import ThreadPoolExecutor

    src = 'package crucible\nimport rego.v1\ndeny contains sprintf("n=%d", [input.n]) if input.n > 0\n'
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda n: engine.evaluate(src, {"n": n}).deny, range(1, 25)))
    assert results == [[f"n={n}"] for n in range(1, 25)]


# ---------------------------------------------------------------------------- builtin coverage


def test_builtins_used_unsupported(engines):
    src = (
        "package crucible\nimport rego.v1\nimport data.lib.helpers\n\n"
        "mine(x) := upper(x)\n\n"
        'deny contains msg if {\n\tnet.cidr_contains("10.0.0.0/8", input.ip)\n'
        '\tmsg := mine(helpers.f("x"))\n}\n'
        'warn contains concat(",", strings.split_n("a,b", ",", 1)) if true\n'
        '# http.send({"url": "x"}) in a comment is not a call\n'
        'warn contains "io.jwt.verify_rs256(x)" if true\n'
    )
    if REGOPY in engines:
        assert engines[REGOPY].builtins_used_unsupported(src) == ["net.cidr_contains", "strings.split_n"]
    if OPA_EVAL in engines:
        assert engines[OPA_EVAL].builtins_used_unsupported(src) == ["net.cidr_contains", "strings.split_n"]
    clean = library.source("required_tags")
    for eng in engines.values():
        assert eng.builtins_used_unsupported(clean) == []
        assert eng.builtins_used_unsupported("not rego at all {") == []


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_known_builtin_gaps_match_the_installed_engine(engines, name):
    eng = engines[name]
    assert isinstance(eng, EmbeddedEngine)
    expected = {OPA_EVAL: REGORUS_MISSING, REGOPY: REGOPY_MISSING}[name]
    assert eng.probe_missing(sorted(OPA_BUILTINS)) == sorted(expected)


def test_lexer_finds_calls_rules_and_positions():
    src = (
        "package acme.x import rego.v1\n"
        "import data.lib as l\n"
        "default allow := false\n"
        "f(a) := count(a)\n"
        's := "count(no)" # sprintf(no)\n'
        "r := `raw\ntrim(no)` \n"
        'deny contains m if { m := l.g(object.get(input, "k", f([1]))) }\n'
    )
    mod = rego_source.analyse(src)
    assert mod.package == "acme.x"
    assert mod.imports_rego_v1
    assert {"allow", "f", "s", "r", "deny"} <= mod.rule_names
    calls = [(c.name, c.line, c.col) for c in rego_source.called_builtins(mod)]
    assert calls == [("count", 4, 9), ("object.get", 8, 31)]


def test_input_projection():
    from backend.policies.engines.adapt import adapt

    doc = {"resource_changes": [1], "prior_state": {"big": True}, "crucible": {"run": {}}}
    only = adapt("package crucible\nimport input.crucible\nx := input.resource_changes\n")
    assert only.project(doc) == {"resource_changes": [1], "crucible": {"run": {}}}
    assert adapt('package crucible\nx := object.get(input, "a", 1)\n').project(doc) is doc
    assert adapt('package crucible\nwarn contains "input" if true\n').project(doc) == {}


# ---------------------------------------------------------------------------- batches


def _decision_or_error(engine, source: str, doc: dict):
    try:
        d = engine.evaluate(source, doc, timeout_seconds=30)
    except (PolicyCompileError, PolicyEvalError) as exc:
        return type(exc).__name__
    return {k: getattr(d, k) for k in DECISION_FIELDS}


@pytest.mark.skipif(OPA_EVAL not in BACKENDS, reason="opa-eval is pinned: test_default_engine fails")
def test_a_merged_batch_decides_exactly_what_each_policy_decides_alone(engines):
    """Hooks evaluate all of a stack's policies in one pass (adapt.combine). Every corpus
    policy, merged with every other one, must decide on every corpus input what it decides
    alone: the renaming keeps each module's meaning, and same-named rules of different
    policies never meet."""
    from backend.policies.engines.adapt import combine
    from backend.policies.engines.embedded import RegorusBackend, dumps

    engine = engines[OPA_EVAL]
    backend = RegorusBackend()
    policies = sorted({policy for _, policy, _, _ in CASES})
    names = [str(p.relative_to(ROOT.parent)) for p in policies]
    sources = [p.read_text() for p in policies]
    merged_somewhere = 0
    for input_path in sorted({i for _, _, i, _ in CASES}):
        doc = load_input(input_path)
        alone = [_decision_or_error(engine, src, doc) for src in sources]
        # A batch fails as a whole on one policy's error (then each is evaluated alone, which
        # says which failed): merge the ones that succeed alone.
        ok = [i for i, a in enumerate(alone) if isinstance(a, dict)]
        combined = combine([RegorusBackend.adapt(sources[i]) for i in ok])
        assert combined is not None, "a corpus policy no longer merges"
        raw = backend.evaluate_many([sources[i] for i in ok], dumps(combined.project(doc)))
        assert raw is not None, f"the merged module failed on {input_path.name}"
        got = {names[i]: normalise(r, 0) for i, r in zip(ok, raw, strict=True)}
        assert {k: {f: getattr(d, f) for f in DECISION_FIELDS} for k, d in got.items()} == {
            names[i]: alone[i] for i in ok
        }, input_path
        merged_somewhere += len(ok)
        # Through the engine (the sandbox worker): the same decisions, errors included.
        through = engine.evaluate_many(sources, doc, timeout_seconds=30)
        assert [
            type(d).__name__ if isinstance(d, Exception) else {f: getattr(d, f) for f in DECISION_FIELDS}
            for d in through
        ] == alone
    assert merged_somewhere > 100


def test_the_starter_library_merges_into_one_pass():
    from backend.policies.engines.adapt import combine
    from backend.policies.engines.embedded import RegorusBackend

    assert combine([RegorusBackend.adapt(p.body) for p in library.LIBRARY]) is not None
    # What the lexer cannot rename safely is declined, never merged wrongly.
    for src in (
        "package crucible\nimport data.lists\ndeny contains x if some x in lists.bad\n",
        "package crucible\ndeny contains x if x := data.crucible.other\nother := 1\n",
        'package crucible\ndeny contains $"{input.x}" if true\n',
        'package crucible\ntime := 1\ndeny contains "late" if time.now_ns() > 0\n',
    ):
        assert combine([RegorusBackend.adapt(src)]) is None, src


def test_normalise():
    d = normalise(
        {"deny": ["b", {"z": 1, "a": [2.0]}, "a", "b"], "warn": [3.0], "require_approval": True}, 1.23456
    )
    assert d.deny == ["a", "b", '{"a":[2],"z":1}']
    assert d.warn == ["3"]
    assert (d.require_approval, d.required_approvals, d.duration_ms) == (True, 1, 1.235)
    assert normalise({"required_approvals": 2.0}, 0).require_approval is True
    assert normalise({"required_approvals": 100}, 0).required_approvals == 100
    assert normalise({"deny": {"a.b": "msg"}}, 0).deny == ["msg"]
    for bad in (
        {"deny": "x"},
        {"require_approval": 1},
        {"required_approvals": -1},
        {"required_approvals": 1.5},
        {"required_approvals": float("inf")},  # 1e400 on rego-cpp and OPA
        {"required_approvals": 2**40},  # no team has that many approvers; the column would overflow
        {"required_approvals": 101},
        [],
    ):
        with pytest.raises(PolicyEvalError):
            normalise(bad, 0)


def test_engine_module_exports_the_interface():
    for name in (
        "PolicyCompileError",
        "PolicyEvalError",
        "Decision",
        "PolicyEngine",
        "available_engines",
        "default_engine",
    ):
        assert hasattr(engine_mod, name)
