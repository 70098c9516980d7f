"""Turn a user's policy module into the module an engine evaluates.

Every engine gets the same treatment, so all of them answer the same question the same way:

1. **Static checks** the embedded engines skip until evaluation: a package declaration, and no
   calls to functions that are neither OPA builtins nor defined in the module (a typo such as
   ``sprntf`` is a compile error with its line and column, not a failed run later).
2. **Shims** for builtins an engine gets wrong (see ``SHIMS``): calls are renamed to a Rego
   function of the same length appended to the module, so the user's lines and columns stay
   where they were.
3. **One decision rule**, ``__crucible_decision``, appended to the module: an object with the
   four decision keys, each defaulted when the policy does not define it (or it is undefined).
   Engines evaluate that one rule instead of the whole package: nothing else the package
   computes (helper sets holding whole resource changes, say) has to be serialized, and every
   engine evaluates exactly the rules the decision depends on.

4. **Input projection**: only the top-level input keys the module reads (``input.<key>``) are
   sent to the engine, unless it uses ``input`` as a whole (``Adapted.project``).

The appended text starts after the user's last line, so any error whose line is past
``Adapted.user_lines`` is in Crucible's own text.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass

from backend.policies.engine import DECISION_KEYS, PolicyCompileError
from backend.policies.engines import rego_source
from backend.policies.engines.builtins import OPA_BUILTINS

DECISION_RULE = "__crucible_decision"

# Format verbs as Go (and so OPA) writes them: flags, width, precision, verb; `%%` included.
_VERB = r"`%[-+# 0]*[0-9]*(?:\.[0-9]+)?[a-zA-Z%]`"

# sprintf: regorus drops the character after each verb ("%s b" -> "xb"); rego-cpp quotes strings
# computed by other builtins when there are several arguments (`"X" p`) and prints arrays and
# objects as "" under %s. Both format a single verb with a single argument correctly, so the
# shim splits the format into literal text and verbs, formats each verb alone with the engine's
# own sprintf and joins the pieces. %s of a non-string is %v, as in OPA. A plain %d of a whole
# number goes through format_int: regorus writes -7 as "--7", rego-cpp refuses 90.0 (the result
# of a division) as "not a number".
_SPRINTF = f"""
__spf__(format, args) := concat("", [piece |
\tlits := regex.split({_VERB}, format)
\tverbs := regex.find_n({_VERB}, format, -1)
\tsome i
\tlit := lits[i]
\tpiece := concat("", [lit, __crucible_spf_verb(verbs, args, i)])
])

__crucible_spf_verb(verbs, args, i) := "" if i >= count(verbs)

__crucible_spf_verb(verbs, args, i) := "%" if {{
\ti < count(verbs)
\tverbs[i] == "%%"
}}

__crucible_spf_verb(verbs, args, i) := out if {{
\ti < count(verbs)
\tverbs[i] != "%%"
\tn := count([j | some j; verbs[j] != "%%"; j < i])
\tout := __crucible_spf_arg(verbs[i], args, n)
}}

__crucible_spf_arg(verb, args, n) := missing if {{
\tn >= count(args)
\tmissing := concat("", ["%!", substring(verb, count(verb) - 1, 1), "(MISSING)"])
}}

__crucible_spf_arg(verb, args, n) := args[n] if {{
\tverb in {{"%s", "%v"}}
\tis_string(args[n])
}}

__crucible_spf_arg(verb, args, n) := sprintf("%v", [args[n]]) if {{
\tverb in {{"%s", "%v"}}
\tnot is_string(args[n])
}}

__crucible_spf_arg(verb, args, n) := format_int(args[n], 10) if {{
\tn < count(args)
\t__crucible_spf_int(verb, args[n])
}}

__crucible_spf_arg(verb, args, n) := sprintf(verb, [args[n]]) if {{
\tn < count(args)
\tnot verb in {{"%s", "%v"}}
\tnot __crucible_spf_int(verb, args[n])
}}

__crucible_spf_int(verb, x) if {{
\tverb == "%d"
\tis_number(x)
\tfloor(x) == x
}}
"""

# regorus' sprintf only goes wrong on a space right after a verb, so while the format has only
# plain %s/%v/%d/%% and no negative numbers (regorus writes -7 as "--7"), spaces are swapped for
# U+0001 around the engine's own sprintf: two replace() calls instead of the per-verb walk, which
# costs about 0.3 ms a message. Anything else takes the walk above.
_SPRINTF_REGORUS = (
    _SPRINTF.replace("__spf__(format, args) := concat(", "__crucible_spf_walk(format, args) := concat(", 1)
    + """
__spf__(format, args) := replace(sprintf(replace(format, " ", "\\u0001"), args), "\\u0001", " ") if {
\t__crucible_spf_simple(format, args)
} else := __crucible_spf_walk(format, args)

__crucible_spf_simple(format, args) if {
\tnot contains(replace(replace(replace(replace(format, "%%", ""), "%s", ""), "%v", ""), "%d", ""), "%")
\tnot __crucible_spf_negative(args)
}

__crucible_spf_negative(args) if {
\tsome x in args
\tis_number(x)
\tx < 0
}
"""
)

# time.parse_rfc3339_ns: rego-cpp rejects the "Z" suffix ("Unable to parse time") but takes
# "+00:00", which means the same.
_RFC3339 = """
__crucible_rfc3339ns_(value) := time.parse_rfc3339_ns(utc) if {
\tendswith(lower(value), "z")
\tutc := concat("", [substring(value, 0, count(value) - 1), "+00:00"])
} else := time.parse_rfc3339_ns(value)
"""

# shim -> (the builtin it replaces, the function name that replaces it: as long as the
# builtin, so columns stay put; its Rego text)
SHIMS: dict[str, tuple[str, str, str]] = {
    "sprintf": ("sprintf", "__spf__", _SPRINTF),
    "sprintf/regorus": ("sprintf", "__spf__", _SPRINTF_REGORUS),
    "time.parse_rfc3339_ns": ("time.parse_rfc3339_ns", "__crucible_rfc3339ns_", _RFC3339),
}


@dataclass(frozen=True)
class Adapted:
    text: str
    user_lines: int
    package: str  # the package of the module the engine sees
    rules: frozenset[str]  # decision rules the user's module defines
    calls: tuple[rego_source.Call, ...]  # builtin calls in the user's text
    digest: str  # identifies `text`
    input_keys: frozenset[str] | None  # the top-level input keys it reads; None: all of them

    def project(self, doc: dict) -> dict:
        """The part of ``doc`` the policy can see. A policy that reads only ``input.crucible``
        and ``input.resource_changes`` cannot tell whether ``prior_state`` was there, and not
        sending it saves serialising and parsing most of a large plan."""
        return _project(self.input_keys, doc)


def _project(keys: frozenset[str] | None, doc: dict) -> dict:
    return doc if keys is None else {k: doc[k] for k in keys if k in doc}


def _decision_rule(rules: set[str]) -> str:
    defaults = {
        "deny": "[]",
        "warn": "[]",
        "require_approval": "false",
        "required_approvals": "0",
        "trigger": "[]",
        "role": '""',
    }
    lines = [""]
    for key in DECISION_KEYS:
        lines.append(f"default __crucible_{key} := {defaults[key]}")
        if key in rules:
            lines.append(f"__crucible_{key} := {key}")
    fields = ", ".join(f'"{key}": __crucible_{key}' for key in DECISION_KEYS)
    lines.append(f"{DECISION_RULE} := {{{fields}}}")
    return "\n".join(lines) + "\n"


# Policies are functions of their input: no network, no peeking at the server they run on.
_NO_NETWORK = "policies decide from their input alone and cannot make network calls"
DISABLED_BUILTINS = {
    "http.send": _NO_NETWORK,
    "net.lookup_ip_addr": _NO_NETWORK,
    "providers.aws.sign_req": _NO_NETWORK,
    "opa.runtime": "policies cannot read the server's runtime information (environment, config)",
}


def _refuse_disabled_references(source: str) -> None:
    """A disabled builtin is refused wherever it is named, not only where it is called:
    ``with f as http.send`` would otherwise replace a function with it."""
    tokens = rego_source.tokenize(source)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.kind == "ident" and not (i and tokens[i - 1].text == "."):
            name, j = rego_source._dotted(tokens, i)
            if name in DISABLED_BUILTINS:
                raise PolicyCompileError(
                    f"{name} is not allowed: {DISABLED_BUILTINS[name]}", tok.line, tok.col
                )
            i = j
            continue
        i += 1


def adapt(
    source: str,
    *,
    shims: frozenset[str] = frozenset(),
    ensure_rego_v1_import: bool = False,
    package: str | None = None,
) -> Adapted:
    """The module to evaluate for ``source``. ``shims``: keys of SHIMS to apply;
    ``ensure_rego_v1_import``: add ``import rego.v1`` on the package line when missing (for
    engines that default to v0 syntax); ``package``: move the module to this package."""
    mod = rego_source.analyse(source)
    if mod.package is None or mod.package_span is None:
        raise PolicyCompileError(
            "a policy must begin with a package declaration, e.g. `package crucible`", 1, 1
        )
    calls = rego_source.called_builtins(mod)
    for call in calls:
        if call.name not in OPA_BUILTINS:
            raise PolicyCompileError(f"unknown function {call.name}", call.line, call.col)
        if call.name in DISABLED_BUILTINS:
            raise PolicyCompileError(
                f"{call.name} is not allowed: {DISABLED_BUILTINS[call.name]}", call.line, call.col
            )
    _refuse_disabled_references(source)
    used = {c.name for c in calls}
    active = [key for key in SHIMS if key in shims and SHIMS[key][0] in used]
    text = rego_source.rename_calls(source, mod, {SHIMS[key][0]: SHIMS[key][1] for key in active})
    start, end = mod.package_span
    head = package or mod.package
    suffix = " import rego.v1" if ensure_rego_v1_import and not mod.imports_rego_v1 else ""
    text = text[:start] + head + suffix + text[end:]
    user_lines = source.count("\n") + (0 if source.endswith("\n") else 1)
    if not text.endswith("\n"):
        text += "\n"
    rules = frozenset(k for k in DECISION_KEYS if k in mod.rule_names)
    text += "".join(SHIMS[key][2] for key in active) + _decision_rule(set(rules))
    return Adapted(
        text=text,
        user_lines=user_lines,
        package=head,
        rules=rules,
        calls=tuple(calls),
        digest=hashlib.sha256(text.encode()).hexdigest(),
        input_keys=None if mod.input_keys is None else frozenset(mod.input_keys),
    )


# ---------------------------------------------------------------------------- batches
#
# Engines that take the input as JSON text parse it on every evaluation: for a 10,000-change
# plan that parse costs far more than the policies themselves, and a hook evaluates every policy
# of a stack against the same input. ``combine`` merges several adapted modules into one, so the
# input is parsed once for all of them: each module's package and import lines are dropped, its
# rule names (and only they) are prefixed with its index, and one rule collects every decision.
# Renaming one identifier everywhere in a module is a bijection, so what each module computes is
# unchanged; what the lexer cannot rename safely (data references, import aliases, template
# strings, rule names that are builtin namespaces) makes ``combine`` decline, and the caller
# evaluates those modules one by one.

BATCH_PACKAGE = "crucible_batch"
BATCH_RULE = "__crucible_batch"
_MERGEABLE_IMPORTS = ("rego.v1", "future.keywords")
_MERGED_NAME = re.compile(r"^__p[0-9]+_")


@dataclass(frozen=True)
class Combined:
    text: str
    digest: str
    input_keys: frozenset[str] | None

    def project(self, doc: dict) -> dict:
        return _project(self.input_keys, doc)


def _merge_body(index: int, text: str) -> str | None:
    """``text`` (an adapted module) without its package and import lines and with its rule
    names prefixed; None when that cannot be done safely."""
    mod = rego_source.analyse(text)
    if mod.import_aliases:
        return None
    namespaces = {c.name.split(".", 1)[0] for c in mod.calls if "." in c.name}
    if mod.rule_names & (namespaces | {"data", "input"}):
        return None
    tokens = rego_source.tokenize(text)
    drop: set[int] = set()  # token indexes of package/import statements
    at_start = True
    for i, tok in enumerate(tokens):
        if tok.kind == "string" and tok.text.startswith("$"):
            return None  # template strings hold expressions the lexer does not see into
        if tok.kind == "ident" and tok.text == "data" and not (i and tokens[i - 1].text == "."):
            return None
        if tok.kind == "ident" and (_MERGED_NAME.match(tok.text) or tok.text == BATCH_RULE):
            return None  # a name the merge itself would introduce: it could be captured
        if at_start and tok.depth == 0 and tok.kind == "ident" and tok.text in ("package", "import"):
            j = i
            while j < len(tokens) and tokens[j].kind != "newline":
                if tokens[j].text == "import":
                    path, _ = rego_source._dotted(tokens, j + 1) if j + 1 < len(tokens) else ("", 0)
                    if not path.startswith(_MERGEABLE_IMPORTS):
                        return None
                drop.add(j)
                j += 1
        at_start = tok.kind == "newline" and tok.depth == 0
    out: list[str] = []
    last = 0
    for i, tok in enumerate(tokens):
        if i in drop:
            out.append(text[last : tok.offset])
            last = tok.offset + len(tok.text)
            continue
        field_access = i and tokens[i - 1].text == "." and tokens[i - 1].offset + 1 == tok.offset
        if tok.kind == "ident" and tok.text in mod.rule_names and not field_access:
            out.append(text[last : tok.offset])
            out.append(f"__p{index}_{tok.text}")
            last = tok.offset + len(tok.text)
    out.append(text[last:])
    return "".join(out)


_COMBINED: dict[tuple[str, ...], Combined | None] = {}
_COMBINED_MAX = 64
_COMBINED_LOCK = threading.Lock()


def combine(adapted: list[Adapted]) -> Combined | None:
    """One module whose ``BATCH_RULE`` is ``{"0": decision of adapted[0], ...}``; None when a
    module cannot be merged (evaluate them one by one then). Cached: a hook evaluates the same
    policies run after run, and merging lexes every module (tens of milliseconds)."""
    key = tuple(a.digest for a in adapted)
    with _COMBINED_LOCK:
        if key in _COMBINED:
            return _COMBINED[key]
    result = _combine(adapted)
    with _COMBINED_LOCK:
        if len(_COMBINED) >= _COMBINED_MAX:
            _COMBINED.pop(next(iter(_COMBINED)))
        _COMBINED[key] = result
    return result


def _combine(adapted: list[Adapted]) -> Combined | None:
    bodies = []
    for i, a in enumerate(adapted):
        body = _merge_body(i, a.text)
        if body is None:
            return None
        bodies.append(body)
    fields = ", ".join(f'"{i}": __p{i}_{DECISION_RULE}' for i in range(len(adapted)))
    text = (
        f"package {BATCH_PACKAGE}\n\nimport rego.v1\n\n"
        + "\n".join(bodies)
        + f"\n{BATCH_RULE} := {{{fields}}}\n"
    )
    keys: set[str] | None = set()
    for a in adapted:
        if a.input_keys is None:
            keys = None
            break
        keys |= a.input_keys
    return Combined(
        text=text,
        digest=hashlib.sha256(text.encode()).hexdigest(),
        input_keys=None if keys is None else frozenset(keys),
    )
