"""Just enough Rego lexing to analyse and adapt a policy module without an engine.

Used for three things the engines cannot tell us themselves:

- which functions a policy calls (the playground warns about builtins the active engine lacks,
  and calls to functions nobody defines are compile errors with a line and column);
- which of the decision rules (``deny``, ``warn``, ...) the module defines, so the generated
  decision rule only refers to rules that exist;
- rewriting calls to builtins an engine gets wrong into calls to Rego shims, keeping every
  line and column of the user's text where it was (shim names are as long as the builtin).

This is a lexer, not a parser: it knows comments, the three string forms, brackets and
identifiers, which is all the questions above need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KEYWORDS = frozenset(
    {"as", "contains", "default", "else", "every", "false", "if", "import", "in", "not", "null",
     "package", "some", "true", "with"}
)  # fmt: skip

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = frozenset(")]}")


@dataclass(frozen=True)
class Token:
    kind: str  # ident, string, number, punct, newline
    text: str
    line: int  # 1-based
    col: int  # 1-based, in characters
    offset: int  # character offset into the source
    depth: int  # bracket depth before the token


@dataclass(frozen=True)
class Call:
    name: str  # dotted, e.g. "net.cidr_contains"
    line: int
    col: int
    offset: int


@dataclass
class Module:
    package: str | None = None  # dotted path, e.g. "crucible"
    package_line: int | None = None
    package_span: tuple[int, int] | None = None  # character offsets of the dotted name
    imports_rego_v1: bool = False
    import_aliases: set[str] = field(default_factory=set)
    rule_names: set[str] = field(default_factory=set)  # root names of every rule head
    calls: list[Call] = field(default_factory=list)
    # Top-level input keys the module reads (`input.resource_changes`, `import input.crucible`);
    # None when it looks at `input` as a whole (bare, `input[x]`, `with input as`, ...).
    input_keys: set[str] | None = field(default_factory=set)


def tokenize(source: str) -> list[Token]:
    """Tokens of ``source``; unterminated strings end at the end of the text (the engine will
    report them properly)."""
    tokens: list[Token] = []
    i, n, line, line_start, depth = 0, len(source), 1, 0, 0

    def add(kind: str, start: int, end: int) -> None:
        tokens.append(Token(kind, source[start:end], line, start - line_start + 1, start, depth))

    while i < n:
        c = source[i]
        if c == "\n":
            add("newline", i, i + 1)
            i += 1
            line, line_start = line + 1, i
        elif c in " \t\r":
            i += 1
        elif c == "#":
            end = source.find("\n", i)
            i = n if end < 0 else end
        elif c == '"' or (c == "$" and source.startswith('$"', i)):
            start = i
            i += 2 if c == "$" else 1
            while i < n and source[i] not in '"\n':
                i += 2 if source[i] == "\\" else 1
            i = min(i + 1, n)
            add("string", start, i)
        elif c == "`":
            start = i
            end = source.find("`", i + 1)
            i = n if end < 0 else end + 1
            add("string", start, i)
            # raw strings may span lines: keep the line count right
            newlines = source.count("\n", start, i)
            if newlines:
                line += newlines
                line_start = source.rfind("\n", start, i) + 1
        elif (c.isascii() and c.isalpha()) or c == "_":  # Rego identifiers are ASCII
            m = _IDENT.match(source, i)
            assert m is not None  # the character itself matches
            add("ident", i, m.end())
            i = m.end()
        elif c.isascii() and c.isdigit():
            m = _NUMBER.match(source, i)
            end = m.end() if m else i + 1
            add("number", i, end)
            i = end
        else:
            if c in _CLOSE:
                depth = max(0, depth - 1)
            add("punct", i, i + 1)
            if c in _OPEN:
                depth += 1
            i += 1
    return tokens


def _dotted(tokens: list[Token], i: int) -> tuple[str, int]:
    """The dotted name starting at tokens[i] (an ident) and the index after it."""
    parts = [tokens[i].text]
    j = i + 1
    while (
        j + 1 < len(tokens)
        and tokens[j].text == "."
        and tokens[j + 1].kind == "ident"
        and tokens[j].offset == tokens[j - 1].offset + len(tokens[j - 1].text)
    ):
        parts.append(tokens[j + 1].text)
        j += 2
    return ".".join(parts), j


def analyse(source: str) -> Module:
    tokens = tokenize(source)
    mod = Module()
    at_statement_start = True
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.kind == "newline":
            at_statement_start = tok.depth == 0
            i += 1
            continue
        starts = at_statement_start and tok.depth == 0
        at_statement_start = False
        if starts and tok.kind == "ident":
            if tok.text == "package":
                if i + 1 < len(tokens) and tokens[i + 1].kind == "ident":
                    mod.package, i = _dotted(tokens, i + 1)
                    mod.package_line = tok.line
                    last = tokens[i - 1]
                    mod.package_span = (
                        tokens[i - 1 - 2 * mod.package.count(".")].offset,
                        last.offset + len(last.text),
                    )
                    at_statement_start = True  # `package x import rego.v1` on one line
                    continue
            elif tok.text == "import":
                if i + 1 < len(tokens) and tokens[i + 1].kind == "ident":
                    path, j = _dotted(tokens, i + 1)
                    if path == "rego.v1":
                        mod.imports_rego_v1 = True
                    elif path == "input":
                        mod.input_keys = None
                    if path.startswith("input.") and mod.input_keys is not None:
                        mod.input_keys.add(path.split(".")[1])
                    if path.startswith("data.") or path.startswith("input."):
                        if j + 1 < len(tokens) and tokens[j].text == "as":
                            mod.import_aliases.add(tokens[j + 1].text)
                        else:
                            mod.import_aliases.add(path.rsplit(".", 1)[-1])
                    i = j
                    continue
            elif tok.text == "default":
                if i + 1 < len(tokens) and tokens[i + 1].kind == "ident":
                    mod.rule_names.add(tokens[i + 1].text)
            elif tok.text not in KEYWORDS:
                mod.rule_names.add(tok.text)
        if tok.kind == "ident" and tok.text == "input" and not (i > 0 and tokens[i - 1].text == "."):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            adjacent = nxt is not None and nxt.offset == tok.offset + len(tok.text)
            if (
                adjacent
                and nxt is not None
                and nxt.text == "."
                and i + 2 < len(tokens)
                and tokens[i + 2].kind == "ident"
            ):
                if mod.input_keys is not None:
                    mod.input_keys.add(tokens[i + 2].text)
            else:
                mod.input_keys = None
        if tok.kind == "ident" and not (i > 0 and tokens[i - 1].text == "."):
            name, j = _dotted(tokens, i)
            if (
                j < len(tokens)
                and tokens[j].text == "("
                and tokens[j].offset == tokens[j - 1].offset + len(tokens[j - 1].text)
                and tok.text not in KEYWORDS
                and not starts  # a function's own head: `f(x) := ...`
            ):
                mod.calls.append(Call(name, tok.line, tok.col, tok.offset))
            i = j
            continue
        i += 1
    return mod


def called_builtins(mod: Module) -> list[Call]:
    """Calls that are not to the module's own functions nor to imported or data packages."""
    local = mod.rule_names | mod.import_aliases | {"data", "input"}
    return [c for c in mod.calls if c.name.split(".", 1)[0] not in local]


def rename_calls(source: str, mod: Module, renames: dict[str, str]) -> str:
    """``source`` with calls to the keys of ``renames`` replaced by their (same-length) value."""
    out, last = [], 0
    for call in mod.calls:
        new = renames.get(call.name)
        if new is None:
            continue
        if len(new) != len(call.name):
            raise ValueError(f"shim name {new!r} must be as long as {call.name!r}")
        out.append(source[last : call.offset])
        out.append(new)
        last = call.offset + len(call.name)
    out.append(source[last:])
    return "".join(out)


def line_col(source: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    offset = max(0, min(offset, len(source)))
    line = source.count("\n", 0, offset) + 1
    col = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, col
