"""Pieces of the policies pages: type badges, the Rego/JSON source editor, read-only Rego and
unified diffs."""

from __future__ import annotations

import reflex as rx
from reflex.vars import Var

from components.layout import testid

TYPE_COLORS = {
    "pre_plan": "cyan",
    "post_plan": "teal",
    "pre_apply": "orange",
    "approval": "amber",
    "trigger": "violet",
    "login": "crimson",
    "validation": "green",
}
TYPE_LABELS = {
    "pre_plan": "pre-plan",
    "post_plan": "post-plan",
    "pre_apply": "pre-apply",
    "approval": "approval",
    "trigger": "trigger",
    "login": "login",
    "validation": "validation",
}
# The editor's gutter, highlight layer and text area share these metrics so line N sits at the
# same height and column N at the same x in every layer.
LINE_PX = 20
PAD_PX = 8
FONT = {"font_family": "var(--code-font-family, monospace)", "font_size": "13px"}
_TEXT_METRICS = {
    **FONT,
    "line_height": f"{LINE_PX}px",
    "font_weight": "400",
    "font_style": "normal",
    "letter_spacing": "normal",
    "word_spacing": "normal",
    # A ligature (e.g. "=>") spanning two highlighted tokens would not form in the highlight
    # layer but would in the textarea: the caret would drift. Plain glyphs in both.
    "font_variant_ligatures": "none",
    "font_feature_settings": "normal",
    "font_kerning": "none",
    "tab_size": "4",
    "white_space": "pre",
    "overflow_wrap": "normal",
    "word_break": "normal",
    "text_align": "left",
}
# The text starts PAD_PX down and TEXT_PAD_X in, in both the textarea and the highlight layer.
TEXT_PAD_X = "0.75rem"
# Token colours: Radix steps 11 read on steps 1-2 in both light and dark mode. Only colours
# change per token (no bold or italic), so every glyph keeps the textarea's advance width.
_TOKEN_COLORS = {
    "comment": rx.color("gray", 10),
    "keyword": rx.color("purple", 11),
    "boolean": rx.color("orange", 11),
    "null": rx.color("orange", 11),
    "number": rx.color("orange", 11),
    "string": rx.color("green", 11),
    "property": rx.color("blue", 11),
    "function": rx.color("cyan", 11),
    "operator": rx.color("crimson", 11),
    "punctuation": rx.color("gray", 11),
}
EDITOR_LANGUAGES = ("rego", "json")

# Why not rx.code_block (react-syntax-highlighter, whose Prism has a "rego" grammar) for the
# layer: it re-tokenizes and re-renders the whole text on every keystroke (in Chromium, ~200 ms
# from a keystroke to the updated copy for a 400-line policy), and Prism's "rego" predates
# Rego v1 (no ``if``, ``contains``, ``every``, ``in``). These small tokenizers work one line at
# a time with Prism's class names, and each line is its own memoized block, so a keystroke
# re-tokenizes, re-renders and re-lays out only the lines it changed.
_LAYERS_JS = r"""
// Each rule is one capture group of a single regex; the first group that matched names the
// token. Rules use only non-capturing groups inside.
function crucibleGrammar(rules) {
  return {
    re: new RegExp(rules.map(([, r]) => `(${r.source})`).join("|"), "g"),
    kinds: [null, ...rules.map(([kind]) => kind)],
  };
}
const CRUCIBLE_GRAMMARS = {
  rego: crucibleGrammar([
    ["comment", /#.*/],
    ["property", /"(?:[^"\\]|\\.)*"(?=\s*:(?!=))/],
    ["string", /"(?:[^"\\]|\\.)*"?/],
    ["raw", /`[^`]*`?/], // a raw string may run over several lines
    ["keyword", /\b(?:as|contains|default|else|every|if|import|in|not|package|some|with)\b/],
    ["boolean", /\b(?:true|false|null)\b/],
    ["number", /-?\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b/],
    ["function", /\b[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*(?=\s*\()/],
    ["property", /\b[A-Za-z_]\w*(?=\s*:(?!=))/],
    ["operator", /:=|==|!=|<=|>=|[-+*/%|&<>=!]|\b_\b/],
    ["punctuation", /[,;.[\]{}()]/],
  ]),
  json: crucibleGrammar([
    ["property", /"(?:[^"\\]|\\.)*"?(?=\s*:)/],
    ["string", /"(?:[^"\\]|\\.)*"?/],
    ["boolean", /\b(?:true|false)\b/],
    ["null", /\bnull\b/],
    ["number", /-?\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b/],
    ["operator", /:/],
    ["punctuation", /[{}[\],]/],
  ]),
};

// One line's [kind, text] parts (kind null = plain), and whether it ends inside a raw string.
function crucibleTokenize(text, language, inRaw) {
  const parts = [];
  let i = 0;
  if (inRaw) {
    const end = text.indexOf("`");
    if (end < 0) return { parts: [["string", text]], open: true };
    parts.push(["string", text.slice(0, end + 1)]);
    i = end + 1;
  }
  const grammar = CRUCIBLE_GRAMMARS[language];
  if (!grammar) return { parts: [[null, text]], open: false };
  const { re, kinds } = grammar;
  let open = false;
  let m;
  re.lastIndex = i;
  while ((m = re.exec(text)) !== null) {
    if (m.index > i) parts.push([null, text.slice(i, m.index)]);
    let g = 1;
    while (m[g] === undefined) g++;
    let kind = kinds[g];
    if (kind === "raw") {
      open = m[0].length < 2 || !m[0].endsWith("`");
      kind = "string";
    }
    parts.push([kind, m[0]]);
    i = m.index + m[0].length;
  }
  if (i < text.length) parts.push([null, text.slice(i)]);
  return { parts, open };
}

const crucibleLineCache = new Map();
function crucibleLine(text, language, inRaw) {
  const key = `${language}:${inRaw ? 1 : 0}:${text}`;
  let hit = crucibleLineCache.get(key);
  if (hit === undefined) {
    if (crucibleLineCache.size > 20000) crucibleLineCache.clear();
    hit = crucibleTokenize(text, language, inRaw);
    crucibleLineCache.set(key, hit);
  }
  return hit;
}

const crucibleToken = ([kind, text]) =>
  kind ? createElement("span", { className: "token " + kind }, text) : text;
// One block per line: an edit re-lays out its own line, not the whole text. Cached parts keep
// their identity, so an unchanged line skips rendering altogether. The "\n" (no extra height
// at the end of a block) keeps the copy's textContent equal to the text.
const CrucibleSourceLine = memo(function CrucibleSourceLine({ parts, last }) {
  return createElement("div", null, ...parts.map(crucibleToken), last ? "" : "\n");
});

// The highlighted copy of an uncontrolled <textarea> (its child), drawn underneath it. The
// textarea's input events bubble here, so the copy follows every keystroke in the browser
// without a round trip. It renders in the same frame as the keystroke (a discrete event): the
// textarea's own text is invisible, so a deferred copy would show stale text. Only changed
// lines render, which keeps that cheap.
function CrucibleSourceLayers({ initial, language, highlightId, children, ...rest }) {
  const [text, setText] = useState(() => (initial == null ? "" : String(initial)));
  const box = useRef(null);
  useLayoutEffect(() => {
    // The textarea may already hold something else (the browser restores form values).
    const area = box.current && box.current.querySelector("textarea");
    if (area && area.value !== text) setText(area.value);
  }, []);
  const onInput = useCallback((e) => {
    if (e.target instanceof HTMLTextAreaElement) setText(e.target.value);
  }, []);
  const layer = useMemo(() => {
    const lines = text.split("\n");
    const rows = [];
    const last = lines.length - 1;
    let open = false;
    for (let n = 0; n <= last; n++) {
      const line = crucibleLine(lines[n], language, open);
      open = line.open;
      rows.push(createElement(CrucibleSourceLine, { key: n, parts: line.parts, last: n === last }));
    }
    return createElement(
      "pre",
      { "aria-hidden": "true", "data-testid": highlightId, "data-language": language },
      createElement("code", null, rows),
    );
  }, [text, language, highlightId]);
  return createElement("div", { ...rest, ref: box, onInput }, layer, children);
}
"""


class SourceLayers(rx.Component):
    """``CrucibleSourceLayers``: a highlighted copy of the child textarea, drawn under it."""

    tag = "CrucibleSourceLayers"

    # The textarea's starting text (its default_value); the copy follows its input events.
    initial: rx.Var[str]
    # "rego" or "json" (EDITOR_LANGUAGES); anything else is shown plain.
    language: rx.Var[str]
    # data-testid of the highlighted <pre>.
    highlight_id: rx.Var[str]

    def add_imports(self):
        return {
            "react": [
                "Fragment",
                "createElement",
                "memo",
                "useCallback",
                "useLayoutEffect",
                "useMemo",
                "useRef",
                "useState",
            ]
        }

    def add_custom_code(self) -> list[str]:
        return [_LAYERS_JS]


def type_badge(type_, tid: str = "") -> rx.Component:
    return rx.badge(
        rx.match(type_, *TYPE_LABELS.items(), type_),
        color_scheme=rx.match(type_, *TYPE_COLORS.items(), "gray"),
        variant="soft",
        font_family="monospace",
        custom_attrs={"data-testid": tid, "data-type": type_} if tid else {"data-type": type_},
    )


# Tab indents instead of leaving the editor (Rego is tab-indented by convention).
_TAB_INDENTS = Var(
    _js_expr=(
        "(e) => { if (e.key === 'Tab' && !e.shiftKey && !e.ctrlKey && !e.metaKey) "
        "{ e.preventDefault(); document.execCommand('insertText', false, '\\t'); } }"
    )
)
_TEXT_BOX = {
    "padding": f"{PAD_PX}px {TEXT_PAD_X}",
    "margin": "0",
    "border": "none",
    "box_sizing": "border-box",
}


def _error_band(error_line, **props) -> rx.Component:
    return rx.box(
        position="absolute",
        left="0",
        right="0",
        top=f"{PAD_PX + (error_line - 1) * LINE_PX}px",
        height=f"{LINE_PX}px",
        background=rx.color("red", 4),
        border_left=f"3px solid {rx.color('red', 9)}",
        pointer_events="none",
        **props,
    )


def _gutter(gutter, error_line, tid: str) -> rx.Component:
    return rx.el.pre(
        rx.cond(error_line > 0, _error_band(error_line)),
        rx.el.span(gutter, position="relative"),
        **{**_TEXT_METRICS, "text_align": "right"},
        margin="0",
        padding=f"{PAD_PX}px 0.6rem {PAD_PX}px 0.5rem",
        color=rx.color("gray", 9),
        user_select="none",
        min_width="3rem",
        flex="0 0 auto",
        align_self="stretch",
        border_right=f"1px solid {rx.color('gray', 5)}",
        background=rx.color("gray", 2),
        # The box scrolls sideways for long lines; the line numbers stay in view, above the text.
        position="sticky",
        left="0",
        z_index="2",
        custom_attrs=testid(f"{tid}-gutter"),
    )


def _layers_style(rows) -> dict:
    """The wrapper, its highlighted <pre> (one <div> per line) and the token colours."""
    return {
        "position": "relative",
        "flex": "1 0 auto",
        "& > pre": {
            **_TEXT_METRICS,
            **_TEXT_BOX,
            # Wider than the textarea's padding: the caret after the longest line never makes
            # the textarea scroll sideways under a copy that did not.
            "padding_right": "2.5rem",
            "min_height": f"{rows * LINE_PX + 2 * PAD_PX}px",
            # Positioned, so it paints above the error band like the textarea on top of it.
            "position": "relative",
            "overflow": "visible",
            "background": "transparent",
            "color": rx.color("gray", 12),
            "pointer_events": "none",
            "user_select": "none",
        },
        # Every line (an empty one too, and the empty last line after a final newline) is one
        # textarea line tall.
        "& > pre > code > div": {"min_height": f"{LINE_PX}px"},
        "& > pre code": {
            "display": "block",
            "font": "inherit",
            "white_space": "inherit",
            "tab_size": "inherit",
            "background": "none",
            "padding": "0",
            "border": "none",
        },
        **{f"& .token.{kind}": {"color": color} for kind, color in _TOKEN_COLORS.items()},
    }


def source_editor(
    *,
    default_value,
    key,
    gutter,
    rows,
    on_change=None,
    on_blur=None,
    error_line=0,
    tid: str,
    language: str = "rego",
    placeholder: str = "",
    max_height: str = "560px",
    read_only=False,
    max_length: int | None = None,
) -> rx.Component:
    """A monospace source editor with line numbers and syntax highlighting as you type.

    The textarea is uncontrolled (``default_value`` + ``key``: bump the key to load new text),
    so typing never waits for the server. Its text is transparent (only the caret and the
    selection show); underneath lies a highlighted copy of the same text (``language``:
    "rego" or "json"), updated in the browser on every input, with identical font metrics and
    padding. The copy sizes the editor (at least ``rows`` lines tall) and the textarea fills
    it exactly, so the textarea never scrolls itself: the surrounding box scrolls both ways
    with the gutter pinned on the left, which keeps every layer on the same lines and columns
    without any script. ``error_line`` (1-based, 0 = none) is marked in the gutter and behind
    the text.
    testids: ``<tid>`` (the textarea), ``<tid>-highlight`` (the highlighted copy; its tokens
    are ``span.token.<kind>``), ``<tid>-gutter``, ``<tid>-error-line``.
    """
    if language not in EDITOR_LANGUAGES:
        raise ValueError(f"source_editor: language must be one of {EDITOR_LANGUAGES}, not {language!r}")
    textarea = rx.el.textarea(
        default_value=default_value,
        key=key,
        on_change=on_change,
        on_blur=on_blur,
        max_length=max_length,
        wrap="off",
        spell_check=False,
        auto_complete="off",
        auto_capitalize="off",
        read_only=read_only,
        placeholder=placeholder,
        **_TEXT_METRICS,
        **_TEXT_BOX,
        position="absolute",
        top="0",
        left="0",
        width="100%",
        height="100%",
        outline="none",
        resize="none",
        overflow="hidden",
        background="transparent",
        color="transparent",
        caret_color=rx.color("gray", 12),
        z_index="1",
        style={
            "::placeholder": {"color": rx.color("gray", 9), "opacity": "1"},
            # The highlighted copy shows the selected text through the tint.
            "::selection": {"color": "transparent", "background": rx.color("teal", 5, alpha=True)},
        },
        custom_attrs={"data-testid": tid, "onKeyDown": _TAB_INDENTS},
    )
    layers = SourceLayers.create(
        textarea,
        initial=default_value,
        language=language,
        highlight_id=f"{tid}-highlight",
        key=key,
        style=_layers_style(rows),
    )
    marker = rx.cond(
        error_line > 0,
        _error_band(error_line, custom_attrs={"data-testid": f"{tid}-error-line", "data-line": error_line}),
    )
    return rx.box(
        rx.box(
            marker,
            rx.el.div(
                _gutter(gutter, error_line, tid),
                layers,
                display="flex",
                align_items="flex-start",
                width="max-content",
                min_width="100%",
            ),
            position="relative",
            width="max-content",
            min_width="100%",
        ),
        width="100%",
        max_height=max_height,
        overflow="auto",
        # Revealing the caret keeps it clear of the pinned gutter, not just inside the box.
        scroll_padding_left="5rem",
        border=f"1px solid {rx.color('gray', 6)}",
        border_radius="6px",
        background=rx.color("gray", 1),
        _focus_within={"border_color": rx.color("teal", 8)},
    )


def rego_view(code, tid: str, max_height: str = "480px") -> rx.Component:
    """Read-only Rego with syntax highlighting and line numbers."""
    return rx.box(
        rx.code_block(
            code,
            language="rego",
            show_line_numbers=True,
            wrap_long_lines=False,
            font_size="12px",
            margin="0",
        ),
        width="100%",
        max_height=max_height,
        overflow="auto",
        border=f"1px solid {rx.color('gray', 5)}",
        border_radius="6px",
        custom_attrs=testid(tid),
    )


def diff_view(lines, tid: str) -> rx.Component:
    """A unified diff, line by line: ``lines`` is a list of objects with ``kind`` (add, del,
    hunk, meta, ctx) and ``text``."""
    return rx.box(
        rx.foreach(
            lines,
            lambda ln: rx.el.div(
                rx.cond(ln.text != "", ln.text, " "),
                white_space="pre",
                padding_x="0.75rem",
                color=rx.match(
                    ln.kind,
                    ("add", rx.color("green", 11)),
                    ("del", rx.color("red", 11)),
                    ("hunk", rx.color("cyan", 11)),
                    ("meta", rx.color("gray", 10)),
                    rx.color("gray", 12),
                ),
                background=rx.match(
                    ln.kind,
                    ("add", rx.color("green", 3)),
                    ("del", rx.color("red", 3)),
                    ("hunk", rx.color("cyan", 2)),
                    "transparent",
                ),
                custom_attrs={"data-kind": ln.kind},
            ),
        ),
        **FONT,
        line_height="1.55",
        width="100%",
        max_height="480px",
        overflow="auto",
        padding_y="0.5rem",
        border=f"1px solid {rx.color('gray', 5)}",
        border_radius="6px",
        background=rx.color("gray", 1),
        custom_attrs=testid(tid),
    )


def location_error(message, line, column, tid: str) -> rx.Component:
    """An error at a place in a source (Rego or JSON): "Line 4, column 9" and the message."""
    return rx.callout.root(
        rx.callout.icon(rx.icon("circle-x", size=16)),
        rx.callout.text(
            rx.cond(
                line > 0,
                rx.text.span(
                    "Line ",
                    line,
                    rx.cond(column > 0, rx.text.span(", column ", column), rx.fragment()),
                    ": ",
                    weight="bold",
                    custom_attrs=testid(f"{tid}-location"),
                ),
            ),
            message,
        ),
        color_scheme="red",
        variant="surface",
        size="1",
        width="100%",
        custom_attrs={"data-testid": tid, "data-line": line, "data-column": column},
    )
