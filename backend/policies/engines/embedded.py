"""The embedded engines: regorus (``opa-eval``) and rego-cpp (``regopy``).

Each engine has a *backend*, which talks to the native library and runs inside a sandbox
worker (``sandbox.py``), and an ``EmbeddedEngine``, the PolicyEngine the rest of Crucible
uses, which adapts the source (``adapt.py``), sends it to a worker with the input and
normalises the decision. ``isolation="inline"`` runs the backend in the calling process with
no time limit: only for bench/policy.py, to measure what the sandbox costs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from collections import OrderedDict
from typing import Any

from backend.policies.engine import (
    DECISION_KEYS,
    OPA_EVAL,
    REGOPY,
    Decision,
    PolicyCompileError,
    PolicyEvalError,
    normalise,
)
from backend.policies.engines import adapt as adapt_mod
from backend.policies.engines.builtins import OPA_BUILTINS, REGOPY_MISSING, REGORUS_MISSING
from backend.policies.engines.sandbox import WorkerPool

_CACHE_SIZE = 64

try:  # 10x faster than json on a 10,000-change plan (16 ms against 165 ms for 12 MB)
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; json is the fallback
    orjson = None  # type: ignore[assignment]


def dumps(doc: Any) -> str:
    """``doc`` as JSON text for an engine; PolicyEvalError if it is not JSON-serialisable."""
    if orjson is not None:
        try:
            return orjson.dumps(doc).decode()
        except (TypeError, orjson.JSONEncodeError):
            pass  # integers past 64 bits, non-string keys, ...: let json decide
    try:
        return json.dumps(doc, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PolicyEvalError(f"the input is not valid JSON: {exc}") from None


class _LRU(OrderedDict):
    def get_or(self, key: str, make: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        while len(self) > _CACHE_SIZE:
            self.popitem(last=False)
        return value


def _locate(adapted: adapt_mod.Adapted, message: str, line: int | None, col: int | None):
    """(message, line, col) with locations in Crucible's appended text dropped."""
    if line is not None and line > adapted.user_lines:
        return f"{message} (in Crucible's compatibility code for this engine)", None, None
    return message, line, col


# ---------------------------------------------------------------------------- regorus

# regorus reports `--> file:line:col` and then `error: message`.
_RG_LOCATION = re.compile(r"-->\s*[^\n:]*:(\d+):(\d+)")
_RG_MESSAGE = re.compile(r"^error:\s*(.*)$", re.MULTILINE)


def _regorus_error(text: str) -> tuple[str, int | None, int | None]:
    loc = _RG_LOCATION.search(text)
    msg = _RG_MESSAGE.search(text)
    message = msg.group(1).strip() if msg else text.strip().splitlines()[-1] if text.strip() else text
    if message.startswith("Failed to parse") or not message:
        message = text.strip()
    if loc:
        return message, int(loc.group(1)), int(loc.group(2))
    return message, None, None


class RegorusBackend:
    name = OPA_EVAL
    shims = frozenset({"sprintf/regorus"})
    missing = REGORUS_MISSING

    def __init__(self) -> None:
        import opa_eval

        self._lib = opa_eval
        self._dir = tempfile.mkdtemp(prefix="crucible-regorus-")
        self._cache = _LRU()
        self._holding: Any = None  # the evaluator that still holds its last input

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_dir", ""), ignore_errors=True)

    @classmethod
    def adapt(cls, source: str) -> adapt_mod.Adapted:
        return adapt_mod.adapt(source, shims=cls.shims, ensure_rego_v1_import=True)

    def _load(self, source: str) -> tuple[adapt_mod.Adapted, Any]:
        adapted = self.adapt(source)

        def make() -> Any:
            try:
                return self._compile(adapted.text, adapted.digest, adapted.package, adapt_mod.DECISION_RULE)
            except RuntimeError as exc:
                raise PolicyCompileError(*_locate(adapted, *_regorus_error(str(exc)))) from None

        return adapted, self._cache.get_or(adapted.digest, make)

    def _compile(self, text: str, digest: str, package: str, rule: str) -> Any:
        """An evaluator of ``data.<package>.<rule>``; RuntimeError if the text does not compile.
        OpaEval only reads policies from files."""
        path = os.path.join(self._dir, digest[:32] + ".rego")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            return self._lib.OpaEval(path, query=f"data.{package}.{rule}")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def compile(self, source: str) -> None:
        self._load(source)

    def release(self) -> None:
        """Free the last input now. regorus keeps an evaluator's input until its next call,
        which then pays for freeing it: a 10,000-change plan takes about as long to free as to
        parse. The sandbox worker calls this after it has replied, while it is idle."""
        evaluator, self._holding = self._holding, None
        if evaluator is not None:
            with contextlib.suppress(RuntimeError):
                evaluator.evaluate("{}")

    def evaluate(self, source: str, input_json: str) -> Any:
        adapted, evaluator = self._load(source)
        self._holding = evaluator
        try:
            out = evaluator.evaluate(input_json)
        except RuntimeError as exc:
            raise PolicyEvalError(_format_eval_error(*_locate(adapted, *_regorus_error(str(exc))))) from None
        return json.loads(out)

    def evaluate_many(self, sources: list[str], input_json: str) -> list[Any] | None:
        """Every policy's decision from one parse of the input (``adapt.combine``); None when
        they cannot be merged, or the merged module fails: then evaluate them one by one, which
        says which policy failed, where."""
        combined = adapt_mod.combine([self.adapt(s) for s in sources])
        if combined is None:
            return None

        def make() -> Any:
            try:
                package, rule = adapt_mod.BATCH_PACKAGE, adapt_mod.BATCH_RULE
                return self._compile(combined.text, combined.digest, package, rule)
            except RuntimeError:
                return None

        evaluator = self._cache.get_or(combined.digest, make)
        if evaluator is None:
            return None
        self._holding = evaluator
        try:
            out = json.loads(evaluator.evaluate(input_json))
        except RuntimeError:
            return None
        if not isinstance(out, dict) or set(out) != {str(i) for i in range(len(sources))}:
            return None
        return [out[str(i)] for i in range(len(sources))]

    def probe(self, names: list[str]) -> list[str]:
        """The names regorus has no function for."""
        missing = []
        for name in names:
            path = os.path.join(self._dir, "probe.rego")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(f"package probe\nimport rego.v1\nr := {name}(1, 2)\n")
            try:
                self._lib.OpaEval(path, query="data.probe.r").evaluate("{}")
            except RuntimeError as exc:
                if "could not find function" in str(exc):
                    missing.append(name)
        return missing


def _format_eval_error(message: str, line: int | None, col: int | None) -> str:
    if line is None:
        return message
    return f"line {line}, column {col}: {message}"


# ---------------------------------------------------------------------------- rego-cpp

# rego-cpp: `(error <len>:<file>|<offset>|<length> (errormsg <len>:<text>) ...`
_RP_ERROR = re.compile(r"\(error \d+:[^|]*\|(\d+)\|\d+\s*\(errormsg (\d+):")


def _regopy_compile_error(text: str, adapted_text: str) -> tuple[str, int | None, int | None]:
    m = _RP_ERROR.search(text)
    if not m:
        return text.strip(), None, None
    offset, length = int(m.group(1)), int(m.group(2))
    message = text[m.end() : m.end() + length]
    # Offsets count bytes of the UTF-8 text.
    prefix = adapted_text.encode("utf-8")[:offset].decode("utf-8", errors="ignore")
    line = prefix.count("\n") + 1
    col = len(prefix) - (prefix.rfind("\n") + 1) + 1
    return message, line, col


class RegopyBackend:
    name = REGOPY
    shims = frozenset({"sprintf", "time.parse_rfc3339_ns"})
    missing = REGOPY_MISSING

    def __init__(self) -> None:
        import regopy
        from regopy import rego_shared

        self._lib = regopy
        self._c = rego_shared
        self._cache = _LRU()

    @classmethod
    def adapt(cls, source: str) -> adapt_mod.Adapted:
        return adapt_mod.adapt(source, shims=cls.shims)

    def _load(self, source: str) -> tuple[adapt_mod.Adapted, Any]:
        adapted = self.adapt(source)

        def make() -> Any:
            interp = self._lib.Interpreter()
            interp.log_level = self._lib.LogLevel.NONE
            # OPA's REST API runs with strict builtin errors off, but an error that turns a deny
            # rule silently undefined lets a run through: fail closed instead, as regorus does.
            interp.strict_built_in_errors = True
            try:
                interp.add_module("policy.rego", adapted.text)
            except self._lib.RegoError as exc:
                raise PolicyCompileError(
                    *_locate(adapted, *_regopy_compile_error(str(exc), adapted.text))
                ) from None
            return interp

        return adapted, self._cache.get_or(adapted.digest, make)

    def compile(self, source: str) -> None:
        self._load(source)

    def _errors(self, output: Any) -> str:
        c = self._c
        node = c.rego_output_node(output)
        messages = []
        for i in range(c.rego_node_size(node) if node else 0):
            err = c.rego_node_get(node, i)
            if c.rego_node_size(err):
                with contextlib.suppress(Exception):
                    messages.append(c.rego_node_value(c.rego_node_get(err, 0)))
        unique = list(dict.fromkeys(m for m in messages if m))
        return "; ".join(unique) or "evaluation failed"

    def evaluate(self, source: str, input_json: str) -> Any:
        adapted, interp = self._load(source)
        c = self._c
        try:
            c.rego_set_input_term(interp._impl, input_json)
            output = c.rego_query(interp._impl, f"data.{adapted.package}.{adapt_mod.DECISION_RULE}")
        except self._lib.RegoError as exc:
            raise PolicyEvalError(str(exc).strip() or "evaluation failed") from None
        try:
            if not c.rego_output_ok(output):
                raise PolicyEvalError(self._errors(output))
            text = c.rego_output_string(output)
        finally:
            c.rego_free_output(output)
        if text == "undefined":
            return {}
        try:
            result = json.loads(text)
        except ValueError:
            raise PolicyEvalError("rego-cpp produced output that is not valid JSON") from None
        expressions = result.get("expressions") if isinstance(result, dict) else None
        if not expressions:
            return {}
        return expressions[0]

    def probe(self, names: list[str]) -> list[str]:
        interp = self._lib.Interpreter()
        return [n for n in names if not interp.is_builtin(n)]


BACKENDS: dict[str, type] = {}
if importlib.util.find_spec("opa_eval") is not None:
    BACKENDS[OPA_EVAL] = RegorusBackend
if importlib.util.find_spec("regopy") is not None:
    BACKENDS[REGOPY] = RegopyBackend


# ---------------------------------------------------------------------------- the engine


class EmbeddedEngine:
    """A PolicyEngine over one embedded backend."""

    def __init__(self, backend: type, pool: WorkerPool | None, *, isolation: str = "process"):
        if isolation not in ("process", "inline"):
            raise ValueError("isolation must be 'process' or 'inline'")
        self.name: str = backend.name
        self._backend_cls = backend
        self._pool = pool
        self._inline = backend() if isolation == "inline" else None
        self.isolation = isolation

    def __repr__(self) -> str:
        return f"<EmbeddedEngine {self.name} ({self.isolation})>"

    def _run(self, op: str, args: tuple, timeout: float) -> Any:
        if self._inline is not None:
            return getattr(self._inline, op)(*args)
        assert self._pool is not None
        return self._pool.run((op, self.name, *args), timeout)

    def compile(self, source: str, *, timeout_seconds: float = 10.0) -> None:
        self._backend_cls.adapt(source)  # static checks first: no worker round trip for a typo
        self._run("compile", (source,), timeout_seconds)

    def evaluate(self, source: str, input: dict, *, timeout_seconds: float = 5.0) -> Decision:
        started = time.perf_counter()
        if not isinstance(input, dict):
            raise PolicyEvalError("the input must be a JSON object")
        adapted = self._backend_cls.adapt(source)
        raw = self._run("evaluate", (source, dumps(adapted.project(input))), timeout_seconds)
        return normalise(raw, (time.perf_counter() - started) * 1000)

    def evaluate_many(
        self, sources: list[str], input: dict, *, timeout_seconds: float = 5.0
    ) -> list[Decision | PolicyCompileError | PolicyEvalError]:
        """Each source's decision (or its error), in order. Backends that can (regorus) parse
        the input once for all of them; the time is then shared equally. If that pass fails,
        each policy is evaluated on its own to tell which failed and why."""
        if len(sources) > 1 and hasattr(self._backend_cls, "evaluate_many") and isinstance(input, dict):
            started = time.perf_counter()
            try:
                adapted = [self._backend_cls.adapt(s) for s in sources]
                combined = adapt_mod.combine(adapted)
                raw = None
                if combined is not None:
                    doc = dumps(combined.project(input))
                    raw = self._run("evaluate_many", (sources, doc), timeout_seconds * len(sources))
            except (PolicyCompileError, PolicyEvalError):
                raw = None
            if raw is not None:
                share = (time.perf_counter() - started) * 1000 / len(sources)
                out: list[Decision | PolicyCompileError | PolicyEvalError] = []
                for item in raw:
                    try:
                        out.append(normalise(item, share))
                    except PolicyEvalError as exc:
                        out.append(exc)
                return out
        results: list[Decision | PolicyCompileError | PolicyEvalError] = []
        for source in sources:
            try:
                results.append(self.evaluate(source, input, timeout_seconds=timeout_seconds))
            except (PolicyCompileError, PolicyEvalError) as exc:
                results.append(exc)
        return results

    def builtins_used_unsupported(self, source: str) -> list[str]:
        try:
            adapted = self._backend_cls.adapt(source)
        except PolicyCompileError:
            return []
        return sorted({c.name for c in adapted.calls if c.name in self._backend_cls.missing})

    def probe_missing(self, names: list[str] | None = None, *, timeout_seconds: float = 60.0) -> list[str]:
        """Ask the live engine which of ``names`` (default: every OPA builtin) it lacks."""
        return sorted(self._run("probe", (sorted(names or OPA_BUILTINS),), timeout_seconds))


def importable_engines(
    *, memory_limit_mb: int = 1024, pool: WorkerPool | None = None
) -> dict[str, EmbeddedEngine]:
    """One engine per installed backend, sharing one worker pool (a worker runs either)."""
    if not BACKENDS:
        return {}
    pool = pool or WorkerPool(memory_limit_mb=memory_limit_mb)
    return {name: EmbeddedEngine(cls, pool) for name, cls in BACKENDS.items()}


__all__ = ["BACKENDS", "DECISION_KEYS", "EmbeddedEngine", "importable_engines"]
