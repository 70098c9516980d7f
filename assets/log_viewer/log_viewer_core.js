// Pure logic of the run log viewer: ANSI SGR parsing, a line buffer that accepts chunks which
// may end mid-line (or mid-escape), search, and small helpers. No DOM, no React: the component
// (log_viewer.jsx) and the Node unit tests (tests/unit/test_log_viewer_js.py) both import it.

// ------------------------------------------------------------------ colours

// A dark terminal palette (GitHub dark): readable on the viewer's background in both themes.
export const DEFAULT_FG = "#c9d1d9";
export const DEFAULT_BG = "#0d1117";
export const PALETTE16 = [
  "#484f58", "#ff7b72", "#3fb950", "#d29922", "#58a6ff", "#bc8cff", "#39c5cf", "#b1bac4",
  "#6e7681", "#ffa198", "#56d364", "#e3b341", "#79c0ff", "#d2a8ff", "#56d4dd", "#f0f6fc",
];

const CUBE = [0, 95, 135, 175, 215, 255];
const hex2 = (n) => n.toString(16).padStart(2, "0");

/** CSS colour of xterm-256 colour `n` (0-255). */
export function color256(n) {
  if (n < 16) return PALETTE16[n];
  if (n < 232) {
    const i = n - 16;
    return `#${hex2(CUBE[Math.floor(i / 36)])}${hex2(CUBE[Math.floor(i / 6) % 6])}${hex2(CUBE[i % 6])}`;
  }
  const g = 8 + (n - 232) * 10;
  return `#${hex2(g)}${hex2(g)}${hex2(g)}`;
}

// ------------------------------------------------------------------ SGR state

// A style is an immutable, interned object: equal styles are the same object, so lines share
// them and the renderer can compare by identity. `css` is the React style object (or null).
const styles = new Map();

function intern(fg, bg, flags) {
  const key = `${fg ?? ""}|${bg ?? ""}|${flags}`;
  let s = styles.get(key);
  if (s === undefined) {
    s = Object.freeze({ key, fg, bg, flags, css: toCss(fg, bg, flags) });
    styles.set(key, s);
  }
  return s;
}

export const BOLD = 1, DIM = 2, ITALIC = 4, UNDERLINE = 8, INVERSE = 16, STRIKE = 32;
export const DEFAULT_STYLE = intern(null, null, 0);

function toCss(fg, bg, flags) {
  if (fg === null && bg === null && flags === 0) return null;
  let color = fg, background = bg;
  if (flags & INVERSE) {
    color = bg ?? DEFAULT_BG;
    background = fg ?? DEFAULT_FG;
  }
  const css = {};
  if (color !== null) css.color = color;
  if (background !== null) css.backgroundColor = background;
  if (flags & BOLD) css.fontWeight = 700;
  if (flags & DIM) css.opacity = 0.7;
  if (flags & ITALIC) css.fontStyle = "italic";
  const deco = [flags & UNDERLINE ? "underline" : "", flags & STRIKE ? "line-through" : ""]
    .filter(Boolean)
    .join(" ");
  if (deco) css.textDecoration = deco;
  return Object.freeze(css);
}

const clampByte = (v) => Math.max(0, Math.min(255, v | 0));

// Logs repeat the same few sequences: remember (style, params) -> style.
const sgrCache = new Map();

/** Apply one SGR parameter list ("1;31", "", "38;5;208") to `style`; returns the new style. */
export function applySgr(style, params) {
  const key = style.key + "/" + params;
  let out = sgrCache.get(key);
  if (out === undefined) {
    out = computeSgr(style, params);
    if (sgrCache.size < 10000) sgrCache.set(key, out);
  }
  return out;
}

function computeSgr(style, params) {
  let { fg, bg, flags } = style;
  const p = params === "" ? [0] : params.split(/[;:]/).map((x) => (x === "" ? 0 : Number(x)));
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === 0) { fg = null; bg = null; flags = 0; }
    else if (c === 1) flags |= BOLD;
    else if (c === 2) flags |= DIM;
    else if (c === 3) flags |= ITALIC;
    else if (c === 4) flags |= UNDERLINE;
    else if (c === 7) flags |= INVERSE;
    else if (c === 9) flags |= STRIKE;
    else if (c === 21 || c === 22) flags &= ~(BOLD | DIM);
    else if (c === 23) flags &= ~ITALIC;
    else if (c === 24) flags &= ~UNDERLINE;
    else if (c === 27) flags &= ~INVERSE;
    else if (c === 29) flags &= ~STRIKE;
    else if (c >= 30 && c <= 37) fg = PALETTE16[c - 30];
    else if (c === 39) fg = null;
    else if (c >= 40 && c <= 47) bg = PALETTE16[c - 40];
    else if (c === 49) bg = null;
    else if (c >= 90 && c <= 97) fg = PALETTE16[c - 90 + 8];
    else if (c >= 100 && c <= 107) bg = PALETTE16[c - 100 + 8];
    else if (c === 38 || c === 48) {
      let col = null;
      if (p[i + 1] === 5 && i + 2 < p.length) {
        col = color256(clampByte(p[i + 2]));
        i += 2;
      } else if (p[i + 1] === 2 && i + 4 < p.length) {
        col = `rgb(${clampByte(p[i + 2])},${clampByte(p[i + 3])},${clampByte(p[i + 4])})`;
        i += 4;
      } else {
        break; // malformed extended colour: ignore the rest, as terminals do
      }
      if (c === 38) fg = col;
      else bg = col;
    }
    // anything else (blink, fonts, ...) is ignored
  }
  return intern(fg, bg, flags);
}

// ------------------------------------------------------------------ parsing one line

// CSI (ESC [ params intermediates final), OSC (ESC ] ... BEL | ESC \), ESC intermediates final
// (charset selection such as ESC ( B), and the other two-byte escapes (ESC 7, ESC =, ESC c, ...).
const ESCAPE = /\x1b(?:\[([0-?]*)[ -/]*([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[ -/]+[0-~]|[0-~])/g;
// Control characters other than TAB: never shown (ESC alone is an incomplete sequence).
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/g;
// An escape sequence cut off at the end of the text received so far.
const TRAILING_PARTIAL_ESCAPE = /\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*|[ -/]+)?$/;

/**
 * Parse one line (without its newline) starting in SGR state `start`.
 * Returns { plain, segs, end }: `plain` is the text without escapes, `segs` null when the whole
 * line is in the default style, else [{ text, style }] covering `plain` exactly.
 */
export function parseLine(raw, start = DEFAULT_STYLE) {
  // "\r" mid-line means the tool redrew the line (progress output): show what was drawn last,
  // in the colours in effect at that point.
  let cr = raw.lastIndexOf("\r");
  if (cr >= 0 && cr === raw.length - 1) {
    raw = raw.replace(/\r+$/, "");
    cr = raw.lastIndexOf("\r");
  }
  if (cr >= 0) {
    start = parseLine(raw.slice(0, cr).replace(/\r/g, ""), start).end;
    raw = raw.slice(cr + 1);
  }
  if (raw.indexOf("\x1b") < 0) {
    const plain = cleanText(raw);
    return { plain, segs: start === DEFAULT_STYLE || plain === "" ? null : [{ text: plain, style: start }], end: start };
  }
  const segs = [];
  let style = start;
  let last = 0;
  let plain = "";
  const push = (text) => {
    text = cleanText(text);
    if (!text) return;
    plain += text;
    const prev = segs[segs.length - 1];
    if (prev && prev.style === style) prev.text += text;
    else segs.push({ text, style });
  };
  ESCAPE.lastIndex = 0;
  let m;
  while ((m = ESCAPE.exec(raw)) !== null) {
    push(raw.slice(last, m.index));
    last = ESCAPE.lastIndex;
    if (m[2] === "m") style = applySgr(style, m[1]);
  }
  push(raw.slice(last));
  const allDefault = segs.every((s) => s.style === DEFAULT_STYLE);
  return { plain, segs: allDefault ? null : segs, end: style };
}

function cleanText(text) {
  return text.replace(CONTROL, "");
}

/** The text without any escape sequences or control characters (for download / copy). */
export function stripAnsi(text) {
  return text
    .split("\n")
    .map((l) => parseLine(l).plain)
    .join("\n");
}

// ------------------------------------------------------------------ the line buffer

/**
 * Lines received so far. `push(chunk)` accepts decoded text that may end anywhere (mid-line,
 * mid-escape); complete lines are parsed once, the open last line on demand.
 */
export class LogBuffer {
  constructor() {
    this.reset();
  }

  reset() {
    this.plain = []; // plain text of each complete line
    this.segs = []; // segments (or null) of each complete line
    this.partialRaw = ""; // the last line, not yet terminated by "\n"
    this.state = DEFAULT_STYLE; // SGR state after the last complete line
    this.chars = 0;
    this._partialCache = null;
    this.generation = (this.generation ?? 0) + 1;
  }

  /** Append decoded text; returns the number of lines completed by it. */
  push(chunk) {
    if (!chunk) return 0;
    this.chars += chunk.length;
    const before = this.plain.length;
    let text = this.partialRaw + chunk;
    let start = 0;
    let nl;
    while ((nl = text.indexOf("\n", start)) >= 0) {
      this._commit(text.slice(start, nl));
      start = nl + 1;
    }
    this.partialRaw = start === 0 ? text : text.slice(start);
    this._partialCache = null;
    return this.plain.length - before;
  }

  /** The stream ended: an unterminated last line becomes a complete line. */
  finish() {
    if (this.partialRaw !== "") {
      this._commit(this.partialRaw);
      this.partialRaw = "";
      this._partialCache = null;
    }
  }

  _commit(raw) {
    if (raw.endsWith("\r")) raw = raw.slice(0, -1);
    const { plain, segs, end } = parseLine(raw, this.state);
    this.plain.push(plain);
    this.segs.push(segs);
    this.state = end;
  }

  /** Complete lines. */
  get complete() {
    return this.plain.length;
  }

  /** The open last line, parsed (an escape cut off at its end is not shown yet). */
  partial() {
    if (this.partialRaw === "") return null;
    if (this._partialCache === null) {
      const raw = this.partialRaw.replace(TRAILING_PARTIAL_ESCAPE, "");
      this._partialCache = parseLine(raw, this.state);
    }
    return this._partialCache;
  }

  /** Lines to show: the complete ones plus the open last line when it has text. */
  get length() {
    const p = this.partial();
    return this.plain.length + (p !== null && p.plain !== "" ? 1 : 0);
  }

  /** { plain, segs } of line `i` (0-based) of the lines shown. */
  line(i) {
    if (i < this.plain.length) return { plain: this.plain[i], segs: this.segs[i] };
    const p = this.partial();
    return p === null ? { plain: "", segs: null } : { plain: p.plain, segs: p.segs };
  }

  /** Everything received, without ANSI codes, "\n"-terminated. */
  text() {
    const p = this.partial();
    const lines = p !== null && p.plain !== "" ? [...this.plain, p.plain] : this.plain;
    return lines.length ? lines.join("\n") + "\n" : "";
  }
}

// ------------------------------------------------------------------ search

export const MAX_MATCHES = 50000;

/**
 * Incremental, case-insensitive search over a LogBuffer's complete lines; the open last
 * line's matches are computed on demand. Matches are kept as two parallel arrays (line, start),
 * sorted, so 100,000 lines with thousands of matches stay cheap.
 */
export class Search {
  constructor(query = "") {
    this.setQuery(query);
  }

  setQuery(query) {
    this.query = query;
    this.needle = query.toLowerCase();
    this.lines = [];
    this.starts = [];
    this.scanned = 0; // complete lines searched so far
    this.capped = false;
    this.generation = -1;
  }

  /** Search the complete lines of `buf` not searched yet (restarting after buf.reset()). */
  update(buf) {
    if (buf.generation !== this.generation) {
      this.lines = [];
      this.starts = [];
      this.scanned = 0;
      this.capped = false;
      this.generation = buf.generation;
    }
    const n = this.needle;
    if (!n) {
      this.scanned = buf.complete;
      return;
    }
    for (let i = this.scanned; i < buf.complete && !this.capped; i++) {
      this._scan(buf.plain[i], i, this.lines, this.starts);
    }
    this.scanned = buf.complete;
  }

  _scan(plain, line, lines, starts) {
    const hay = plain.toLowerCase();
    let at = hay.indexOf(this.needle);
    while (at >= 0) {
      if (lines.length >= MAX_MATCHES) {
        this.capped = true;
        return;
      }
      lines.push(line);
      starts.push(at);
      at = hay.indexOf(this.needle, at + this.needle.length);
    }
  }

  /** Matches in the open last line (not stored: it still changes). */
  partialMatches(buf) {
    const p = buf.partial();
    const lines = [], starts = [];
    if (this.needle && p !== null && !this.capped) this._scan(p.plain, buf.complete, lines, starts);
    return { lines, starts };
  }

  /** Total number of matches, including the open last line's. */
  count(buf) {
    return this.lines.length + this.partialMatches(buf).lines.length;
  }

  /** [line, start] of match `k` (0-based over complete then partial matches). */
  match(buf, k) {
    if (k < this.lines.length) return [this.lines[k], this.starts[k]];
    const p = this.partialMatches(buf);
    const j = k - this.lines.length;
    return j < p.lines.length ? [p.lines[j], p.starts[j]] : null;
  }

  /** Matches on line `line`: [{ start, end, k }] where k is the match's global index. */
  rangesForLine(buf, line) {
    const out = [];
    const len = this.needle.length;
    if (!len) return out;
    if (line >= buf.complete) {
      const p = this.partialMatches(buf);
      p.lines.forEach((_, j) => out.push({ start: p.starts[j], end: p.starts[j] + len, k: this.lines.length + j }));
      return out;
    }
    for (let k = lowerBound(this.lines, line); k < this.lines.length && this.lines[k] === line; k++) {
      out.push({ start: this.starts[k], end: this.starts[k] + len, k });
    }
    return out;
  }

  /** Index of the first match on or after `line` (wrapping to 0), -1 when there is none. */
  firstFrom(buf, line) {
    const total = this.count(buf);
    if (total === 0) return -1;
    const k = lowerBound(this.lines, line);
    if (k < this.lines.length) return k;
    return this.lines.length < total ? this.lines.length : 0;
  }
}

/** First index i with arr[i] >= value (arr sorted ascending). */
export function lowerBound(arr, value) {
  let lo = 0, hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (arr[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Split a line's segments at match boundaries. `ranges` = [{ start, end, k }] in plain-text
 * offsets, sorted, non-overlapping. Returns [{ text, style, mark }] with mark = -1 (no match)
 * or the match's global index k.
 */
export function highlight(plain, segs, ranges) {
  const base = segs ?? [{ text: plain, style: DEFAULT_STYLE }];
  if (!ranges.length) return base.map((s) => ({ text: s.text, style: s.style, mark: -1 }));
  const out = [];
  let pos = 0; // plain offset of the current segment's start
  let r = 0;
  for (const seg of base) {
    const segEnd = pos + seg.text.length;
    let at = pos;
    while (at < segEnd) {
      while (r < ranges.length && ranges[r].end <= at) r++;
      const range = ranges[r];
      if (range === undefined || range.start >= segEnd) {
        out.push({ text: seg.text.slice(at - pos), style: seg.style, mark: -1 });
        at = segEnd;
      } else if (range.start > at) {
        out.push({ text: seg.text.slice(at - pos, range.start - pos), style: seg.style, mark: -1 });
        at = range.start;
      } else {
        const stop = Math.min(range.end, segEnd);
        out.push({ text: seg.text.slice(at - pos, stop - pos), style: seg.style, mark: range.k });
        at = stop;
      }
    }
    pos = segEnd;
  }
  return out;
}

// ------------------------------------------------------------------ small helpers

/** Fixed-height virtualization: [first, last) rows to render, with `overscan` rows each side. */
export function visibleRange(scrollTop, viewportHeight, rowHeight, count, overscan = 10) {
  const first = Math.max(0, Math.floor(scrollTop / rowHeight) - overscan);
  const last = Math.min(count, Math.ceil((scrollTop + viewportHeight) / rowHeight) + overscan);
  return [first, Math.max(first, last)];
}

/** Whether a scroller is at (or within `tolerance` px of) its bottom. */
export function isAtBottom(scrollTop, clientHeight, scrollHeight, tolerance = 4) {
  return scrollTop + clientHeight >= scrollHeight - tolerance;
}

/** Reconnect delay for attempt 0, 1, 2, ...: exponential, capped, with ±20 % jitter. */
export function backoffDelay(attempt, { base = 500, max = 15000, random = Math.random } = {}) {
  const d = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.round(d * (0.8 + 0.4 * random()));
}

/** Whether an HTTP status is worth retrying (the server or a proxy in between is restarting). */
export function isRetryableStatus(status) {
  return status === 408 || status === 429 || status >= 500;
}

/** The message to show for a failed response: the API's `detail`, else something useful. */
export function errorMessage(status, body) {
  let detail = null;
  try {
    const data = JSON.parse(body);
    detail = data?.detail ?? null;
    if (Array.isArray(detail)) detail = detail.map((d) => d?.msg ?? JSON.stringify(d)).join("; ");
    else if (detail !== null && typeof detail !== "string") detail = JSON.stringify(detail);
  } catch {
    const text = (body || "").trim();
    if (text && !text.startsWith("<")) detail = text.slice(0, 300);
  }
  return `Could not load the log: ${detail || "the server answered an error"} (HTTP ${status})`;
}

/** File name for the download: run-<id>.log for /api/v1/runs/<id>/logs, else run.log. */
export function downloadName(src) {
  const m = /\/runs\/([^/?#]+)\/logs/.exec(src || "");
  return m ? `run-${decodeURIComponent(m[1]).replace(/[^\w.-]+/g, "_")}.log` : "run.log";
}
