// The run log viewer: streams GET <src> (text/plain, chunked) with fetch and renders it as a
// virtualized terminal. The log never passes through Reflex state (see ARCHITECTURE.md,
// "Process model"). Log text only ever becomes React text children, never HTML.
//
// Wrapped for Reflex by components/log_viewer.py; pure logic lives in log_viewer_core.js.
import { createElement as h, Fragment, memo, useCallback, useEffect, useLayoutEffect, useRef, useState } from "react";
import {
  LogBuffer, Search, backoffDelay, downloadName, errorMessage, highlight, isAtBottom,
  isRetryableStatus, visibleRange,
} from "./log_viewer_core.js";

const ROW = 20; // px, fixed: virtualization depends on it
const OVERSCAN = 20;
const SEARCH_DEBOUNCE_MS = 150;
const SLICE_MS = 8;
const SKELETON_MAX_MS = 2500;
const PARSE_PIECE = 32 * 1024; // chars parsed between two looks at the clock

// A macrotask turn without setTimeout's 4 ms clamp (scheduler.yield where available).
function yieldToBrowser() {
  if (typeof scheduler !== "undefined" && typeof scheduler.yield === "function") return scheduler.yield();
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => resolve();
    ch.port2.postMessage(null);
  });
}

// Static stylesheet (no log text in it). Dark terminal in both colour modes.
const CSS = `
.crucible-log{--lv-bg:#0d1117;--lv-bar:#161b22;--lv-border:#30363d;--lv-fg:#c9d1d9;--lv-muted:#8b949e;
  --lv-accent:#2dd4bf;display:flex;flex-direction:column;background:var(--lv-bg);color:var(--lv-fg);
  border:1px solid var(--lv-border);border-radius:8px;overflow:hidden;position:relative;min-height:160px;
  font-family:ui-monospace,SFMono-Regular,"SF Mono",Menlo,Consolas,"Liberation Mono","DejaVu Sans Mono",monospace;}
.crucible-log *{box-sizing:border-box;}
.crucible-log .lv-bar{display:flex;align-items:center;gap:8px;padding:6px 8px;background:var(--lv-bar);
  border-bottom:1px solid var(--lv-border);font-size:12px;color:var(--lv-muted);flex-wrap:wrap;}
.crucible-log .lv-status{display:inline-flex;align-items:center;gap:6px;font-weight:600;text-transform:lowercase;}
.crucible-log .lv-dot{width:8px;height:8px;border-radius:50%;background:#6e7681;}
.crucible-log[data-state=live] .lv-dot{background:#3fb950;box-shadow:0 0 0 0 rgba(63,185,80,.6);animation:lv-pulse 1.6s infinite;}
.crucible-log[data-state=live] .lv-status{color:#3fb950;}
.crucible-log[data-state=error] .lv-dot{background:#f85149;}
.crucible-log[data-state=error] .lv-status{color:#f85149;}
.crucible-log[data-state=connecting] .lv-dot{background:#58a6ff;animation:lv-blink 1s infinite;}
@keyframes lv-pulse{0%{box-shadow:0 0 0 0 rgba(63,185,80,.6)}70%{box-shadow:0 0 0 6px rgba(63,185,80,0)}100%{box-shadow:0 0 0 0 rgba(63,185,80,0)}}
@keyframes lv-blink{50%{opacity:.3}}
.crucible-log .lv-spacer{flex:1;}
.crucible-log .lv-search{display:inline-flex;align-items:center;gap:2px;background:var(--lv-bg);
  border:1px solid var(--lv-border);border-radius:6px;padding:0 4px;}
.crucible-log .lv-search:focus-within{border-color:var(--lv-accent);}
.crucible-log .lv-search input{background:transparent;border:0;outline:0;color:var(--lv-fg);font:inherit;
  font-size:12px;width:180px;padding:4px 2px;}
.crucible-log .lv-search input::placeholder{color:#6e7681;}
.crucible-log .lv-nth{min-width:56px;text-align:right;font-variant-numeric:tabular-nums;}
.crucible-log button{display:inline-flex;align-items:center;justify-content:center;gap:4px;background:transparent;
  color:var(--lv-fg);border:1px solid transparent;border-radius:5px;height:24px;min-width:24px;padding:0 6px;
  font:inherit;font-size:12px;cursor:pointer;}
.crucible-log button:hover:not(:disabled){background:#21262d;border-color:var(--lv-border);}
.crucible-log button:focus-visible{outline:2px solid var(--lv-accent);outline-offset:1px;}
.crucible-log button:disabled{opacity:.4;cursor:not-allowed;}
.crucible-log .lv-view{flex:1;overflow:auto;position:relative;overflow-anchor:none;outline:0;min-height:0;}
.crucible-log .lv-view:focus-visible{box-shadow:inset 0 0 0 1px var(--lv-accent);}
.crucible-log .lv-inner{position:relative;width:100%;}
.crucible-log .lv-rows{position:absolute;left:0;top:0;min-width:100%;width:max-content;will-change:transform;}
.crucible-log .lv-row{display:flex;height:${ROW}px;line-height:${ROW}px;font-size:12.5px;white-space:pre;tab-size:8;}
.crucible-log .lv-row::before{content:attr(data-line);position:sticky;left:0;flex:none;box-sizing:border-box;
  width:calc(var(--lv-gutter) + 20px);padding:0 12px 0 8px;margin-right:12px;text-align:right;color:#6e7681;background:var(--lv-bg);
  border-right:1px solid #21262d;user-select:none;}
.crucible-log .lv-row:hover{background:#161b22;}
.crucible-log .lv-row:hover::before{background:#161b22;color:var(--lv-muted);}
.crucible-log .lv-text{padding-right:16px;}
.crucible-log mark{background:rgba(227,179,65,.35);color:inherit;border-radius:2px;}
.crucible-log mark.lv-active{background:#e3b341;color:#0d1117;outline:1px solid #f0c75e;}
.crucible-log .lv-msg{padding:12px 16px;font-size:12.5px;color:var(--lv-muted);}
.crucible-log .lv-error{padding:6px 16px;font-size:12.5px;color:#ff7b72;background:rgba(248,81,73,.08);
  border-top:1px solid rgba(248,81,73,.3);white-space:pre-wrap;}
.crucible-log .lv-skel{padding:12px 16px;display:flex;flex-direction:column;gap:8px;}
.crucible-log .lv-skel div{height:10px;border-radius:4px;background:linear-gradient(90deg,#161b22 0%,#21262d 50%,#161b22 100%);
  background-size:200% 100%;animation:lv-shimmer 1.4s linear infinite;}
@keyframes lv-shimmer{0%{background-position:200% 0}100%{background-position:-200% 0}}
.crucible-log .lv-jump{position:absolute;right:20px;bottom:16px;height:28px;padding:0 12px;border-radius:14px;
  background:#1f6feb;color:#fff;border:0;box-shadow:0 2px 8px rgba(0,0,0,.5);font-weight:600;z-index:2;}
.crucible-log .lv-jump:hover:not(:disabled){background:#388bfd;border:0;}
`;

// Small inline icons (lucide paths), so the component needs no icon package.
const icon = (d, size = 14) =>
  h("svg", { width: size, height: size, viewBox: "0 0 24 24", fill: "none", stroke: "currentColor",
    strokeWidth: 2, strokeLinecap: "round", strokeLinejoin: "round", "aria-hidden": true },
    d.map((p, i) => h("path", { key: i, d: p })));
const ICON_UP = ["m18 15-6-6-6 6"];
const ICON_DOWN = ["m6 9 6 6 6-6"];
const ICON_SEARCH = ["m21 21-4.34-4.34", "M11 3a8 8 0 1 0 0 16 8 8 0 0 0 0-16z"];
const ICON_DOWNLOAD = ["M12 15V3", "M21 15v4a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2v-4", "m7 10 5 5 5-5"];
const ICON_ARROW_DOWN = ["M12 5v14", "m19 12-7 7-7-7"];

// One rendered line. Re-rendered only when its content, matches or active match change.
const Row = memo(function Row({ n, plain, segs, ranges, active, testid }) {
  const pieces = highlight(plain, segs, ranges);
  const children = pieces.map((p, i) => {
    const span = p.style.css ? h("span", { key: i, style: p.style.css }, p.text) : p.text;
    if (p.mark < 0) return typeof span === "string" ? h(Fragment, { key: i }, span) : span;
    return h("mark", { key: i, className: p.mark === active ? "lv-active" : undefined }, span);
  });
  return h("div", { className: "lv-row", "data-testid": testid, "data-line": n },
    h("span", { className: "lv-text" }, children));
}, (a, b) => a.plain === b.plain && a.segs === b.segs && a.n === b.n && a.testid === b.testid
  && sameRanges(a.ranges, b.ranges) && (a.ranges.length === 0 || a.active === b.active));

function sameRanges(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i].start !== b[i].start || a[i].k !== b[i].k) return false;
  return true;
}

export function LogViewer({ src, testidPrefix = "run-log", viewportHeight = "60vh" }) {
  const tid = (s) => (s ? `${testidPrefix}-${s}` : testidPrefix);
  const bufRef = useRef(null);
  if (bufRef.current === null) bufRef.current = new LogBuffer();
  const buf = bufRef.current;
  const searchRef = useRef(null);
  if (searchRef.current === null) searchRef.current = new Search("");
  const search = searchRef.current;

  const viewRef = useRef(null);
  const followRef = useRef(true);
  const pendingScrollRef = useRef(null); // line to bring into view after the next render
  const pendingMarkRef = useRef(false); // the active match still has to be scrolled to sideways
  const [, setVersion] = useState(0);
  const [phase, setPhase] = useState("connecting"); // connecting | live | ended | error
  const [answered, setAnswered] = useState(false); // a 200 arrived for the current src
  const [waited, setWaited] = useState(false); // no answer for a while: stop the skeleton
  const [error, setError] = useState(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [viewH, setViewH] = useState(400);
  const [following, setFollowing] = useState(true);
  const [query, setQuery] = useState("");
  const [activeQuery, setActiveQuery] = useState("");
  const [current, setCurrent] = useState(-1); // index of the active match

  const bump = useCallback(() => setVersion((v) => v + 1), []);
  const follow = useCallback((on) => {
    followRef.current = on;
    setFollowing(on);
  }, []);

  // ---------------------------------------------------------------- streaming
  useEffect(() => {
    buf.reset();
    search.update(buf);
    setAnswered(false);
    setWaited(false);
    setError(null);
    setCurrent(-1);
    follow(true);
    bump();
    if (!src) {
      setPhase("connecting");
      return undefined;
    }
    const ctrl = new AbortController();
    // Some servers send the response headers only with the first body bytes, so an empty log
    // of a queued run looks like a pending request: after a moment say so instead of loading.
    const waitedTimer = setTimeout(() => setWaited(true), SKELETON_MAX_MS);
    let dead = false;
    let attempt = 0;
    let timer = null;
    let raf = 0;
    const flush = () => {
      raf = 0;
      search.update(buf);
      bump();
    };
    // DOM updates are batched to one per frame however fast chunks arrive; a timer backs the
    // frame up in a background tab, where requestAnimationFrame does not run.
    const schedule = () => {
      if (raf) return;
      raf = requestAnimationFrame(flush);
      setTimeout(() => !dead && raf && (cancelAnimationFrame(raf), flush()), 250);
    };
    const retry = (why) => {
      const delay = backoffDelay(attempt++);
      setPhase("error");
      setError(`${why} — reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`);
      timer = setTimeout(run, delay);
    };
    async function run() {
      timer = null;
      setPhase("connecting");
      let resp;
      try {
        resp = await fetch(src, {
          credentials: "same-origin", signal: ctrl.signal, cache: "no-store",
          headers: { Accept: "text/plain" },
        });
      } catch {
        if (!dead) retry("Cannot reach the server");
        return;
      }
      if (dead) return;
      if (!resp.ok) {
        const body = await resp.text().catch(() => "");
        if (dead) return;
        const message = errorMessage(resp.status, body);
        if (isRetryableStatus(resp.status)) {
          retry(message);
        } else {
          setPhase("error");
          setError(message);
          setAnswered(true);
        }
        return;
      }
      // The endpoint has no resume offset: every (re)connection starts from the first line.
      buf.reset();
      search.update(buf);
      setAnswered(true);
      setError(null);
      setPhase("live");
      bump();
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let sliceStart = performance.now();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (dead) return;
          if (done) break;
          attempt = 0;
          const text = decoder.decode(value, { stream: true });
          // Reads of already-buffered data resolve as microtasks, so a big backlog (reopening
          // a 100,000-line log) would be parsed in one long task: parse in slices of at most
          // ~8 ms and give the browser the turn in between (input, scrolling, painting).
          for (let i = 0; i < text.length; i += PARSE_PIECE) {
            buf.push(text.length > PARSE_PIECE ? text.slice(i, i + PARSE_PIECE) : text);
            if (performance.now() - sliceStart > SLICE_MS) {
              schedule();
              await yieldToBrowser();
              if (dead) return;
              sliceStart = performance.now();
            }
          }
          schedule();
        }
      } catch {
        if (!dead) retry("The log stream was interrupted");
        return;
      }
      buf.push(decoder.decode());
      buf.finish();
      if (raf) cancelAnimationFrame(raf);
      flush();
      setPhase("ended");
    }
    run();
    return () => {
      dead = true;
      ctrl.abort();
      clearTimeout(waitedTimer);
      if (timer) clearTimeout(timer);
      if (raf) cancelAnimationFrame(raf);
      raf = 0;
    };
  }, [src, buf, search, bump, follow]);

  // ---------------------------------------------------------------- viewport
  useLayoutEffect(() => {
    const el = viewRef.current;
    if (!el) return undefined;
    setViewH(el.clientHeight);
    if (typeof ResizeObserver === "undefined") return undefined;
    const ro = new ResizeObserver(() => setViewH(el.clientHeight));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  const count = buf.length;
  const total = count * ROW;

  // While following, render as if already scrolled to the bottom: the rows are right on the
  // first paint, and the layout effect below moves the scrollbar there.
  const top = following ? Math.max(0, total - viewH) : scrollTop;
  const [first, last] = visibleRange(top, viewH, ROW, count, OVERSCAN);

  useLayoutEffect(() => {
    const el = viewRef.current;
    if (!el) return;
    const line = pendingScrollRef.current;
    if (line !== null) {
      // Bring a search match into view; only a match off screen stops following.
      pendingScrollRef.current = null;
      pendingMarkRef.current = true;
      const visible = line * ROW >= el.scrollTop && (line + 1) * ROW <= el.scrollTop + el.clientHeight;
      if (!visible) {
        followRef.current = false;
        setFollowing(false);
        el.scrollTop = Math.max(0, line * ROW - (el.clientHeight - ROW) / 2);
        setScrollTop(el.scrollTop);
      }
    } else if (followRef.current && el.scrollTop + el.clientHeight < el.scrollHeight) {
      el.scrollTop = el.scrollHeight;
    }
    if (pendingMarkRef.current) {
      // Once its row is rendered: scroll sideways to a match far right in a long line.
      const mark = el.querySelector("mark.lv-active");
      if (mark) {
        pendingMarkRef.current = false;
        const m = mark.getBoundingClientRect();
        const v = el.getBoundingClientRect();
        // Text starts right of the sticky line-number gutter (measured at scrollLeft 0).
        const text = el.querySelector(".lv-text");
        const left = text ? text.getBoundingClientRect().left + el.scrollLeft : v.left;
        if (m.right > v.right - 16) el.scrollLeft += m.right - v.right + 48;
        else if (m.left < left) el.scrollLeft -= left - m.left + 48;
      }
    }
  });

  const onScroll = useCallback(() => {
    const el = viewRef.current;
    if (!el) return;
    const atBottom = isAtBottom(el.scrollTop, el.clientHeight, el.scrollHeight);
    if (atBottom !== followRef.current) follow(atBottom);
    setScrollTop(el.scrollTop); // scroll events come at most once a frame
  }, [follow]);

  // A wheel or key press upwards stops following at once, before the scroll event arrives.
  const onWheel = useCallback((e) => {
    if (e.deltaY < 0 && followRef.current) follow(false);
  }, [follow]);

  const jumpToLive = useCallback(() => {
    follow(true);
    const el = viewRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [follow]);

  // ---------------------------------------------------------------- search
  useEffect(() => {
    const t = setTimeout(() => setActiveQuery(query), query ? SEARCH_DEBOUNCE_MS : 0);
    return () => clearTimeout(t);
  }, [query]);

  const goTo = useCallback((k) => {
    const m = search.match(buf, k);
    setCurrent(k);
    if (m === null) return;
    pendingScrollRef.current = m[0];
  }, [buf, search]);

  useEffect(() => {
    search.setQuery(activeQuery);
    search.update(buf);
    const el = viewRef.current;
    const firstVisible = el ? Math.floor(el.scrollTop / ROW) : 0;
    const k = activeQuery ? search.firstFrom(buf, firstVisible) : -1;
    if (k >= 0) goTo(k);
    else {
      setCurrent(-1);
      pendingMarkRef.current = false;
    }
    bump();
  }, [activeQuery, buf, search, goTo, bump]);

  const matches = activeQuery ? search.count(buf) : 0;
  // Matches that arrive after the search was typed (a live log): select the first one.
  useEffect(() => {
    if (activeQuery && current < 0 && matches > 0) goTo(search.firstFrom(buf, Math.floor(top / ROW)));
  });
  const step = (d) => {
    if (!matches) return;
    goTo(((current < 0 ? (d > 0 ? -1 : 0) : current) + d + matches) % matches);
  };
  const onSearchKey = (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      if (query !== activeQuery) setActiveQuery(query);
      else step(e.shiftKey ? -1 : 1);
    } else if (e.key === "Escape") {
      setQuery("");
      setActiveQuery("");
    }
  };
  const searchInput = useRef(null);
  // Browser find cannot see virtualized rows: Ctrl/Cmd+F inside the viewer opens ours.
  const onKeyDown = (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "f") {
      e.preventDefault();
      searchInput.current?.focus();
      searchInput.current?.select();
    } else if (e.target === viewRef.current && (e.key === "PageUp" || e.key === "ArrowUp" || e.key === "Home")) {
      follow(false);
    } else if (e.target === viewRef.current && e.key === "End") {
      jumpToLive();
    }
  };

  // ---------------------------------------------------------------- download
  const download = () => {
    const blob = new Blob([buf.text()], { type: "text/plain;charset=utf-8" });
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = downloadName(src);
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  };

  // ---------------------------------------------------------------- render
  const rows = [];
  for (let i = first; i < last; i++) {
    const { plain, segs } = buf.line(i);
    rows.push(h(Row, {
      key: i, n: i + 1, plain, segs, testid: tid("line"),
      ranges: activeQuery ? search.rangesForLine(buf, i) : NO_RANGES, active: current,
    }));
  }

  const statusText = phase;
  const showSkeleton = count === 0 && !answered && !waited && !error;
  const gutter = `${Math.max(3, String(count).length)}ch`;
  const nth = activeQuery
    ? `${matches ? current + 1 : 0} of ${matches}${search.capped ? "+" : ""}`
    : "";

  return h("div", {
    className: "crucible-log", "data-testid": tid(""), "data-state": phase,
    "data-following": following ? "true" : "false", onKeyDown,
    style: { height: viewportHeight, "--lv-gutter": gutter },
  },
    h("style", null, CSS),
    h("div", { className: "lv-bar" },
      h("span", { className: "lv-status", title: STATUS_TITLES[phase] },
        h("span", { className: "lv-dot" }),
        h("span", { "data-testid": tid("status") }, statusText)),
      h("span", null, h("span", { "data-testid": tid("count"), "data-count": count }, count),
        count === 1 ? " line" : " lines"),
      h("span", { className: "lv-spacer" }),
      h("div", { className: "lv-search", title: "Search the log (Enter: next, Shift+Enter: previous)" },
        icon(ICON_SEARCH, 13),
        h("input", {
          ref: searchInput, type: "search", placeholder: "Search log", value: query, "aria-label": "Search log",
          "data-testid": tid("search"), onChange: (e) => setQuery(e.target.value), onKeyDown: onSearchKey,
          spellCheck: false, autoComplete: "off",
        }),
        h("span", { className: "lv-nth", "data-testid": tid("search-count") }, nth),
        h("button", { type: "button", title: "Previous match (Shift+Enter)", "aria-label": "Previous match",
          disabled: !matches, onClick: () => step(-1), "data-testid": tid("search-prev") }, icon(ICON_UP)),
        h("button", { type: "button", title: "Next match (Enter)", "aria-label": "Next match",
          disabled: !matches, onClick: () => step(1), "data-testid": tid("search-next") }, icon(ICON_DOWN))),
      h("button", {
        type: "button", onClick: download, disabled: count === 0, "data-testid": tid("download"),
        title: count === 0 ? "Nothing to download yet" : "Download the log as plain text",
      }, icon(ICON_DOWNLOAD), "Download")),
    h("div", {
      ref: viewRef, className: "lv-view", tabIndex: 0, onScroll, onWheel, role: "log",
      "aria-live": "off", "aria-label": "Run log", "data-testid": tid("viewport"),
    },
      showSkeleton
        ? h("div", { className: "lv-skel", "data-testid": tid("skeleton"), "aria-busy": true },
          ...SKELETON_WIDTHS.map((w, i) => h("div", { key: i, style: { width: w } })))
        : count === 0 && error
          ? h("div", { className: "lv-error", role: "alert", "data-testid": tid("error") }, error)
          : count === 0
            ? h("div", { className: "lv-msg", "data-testid": tid("empty") },
              phase === "ended" ? "No output" : "No output yet")
          : h("div", { className: "lv-inner", style: { height: total } },
            h("div", { className: "lv-rows", style: { transform: `translateY(${first * ROW}px)` } }, rows))),
    error && count > 0
      ? h("div", { className: "lv-error", role: "alert", "data-testid": tid("error") }, error)
      : null,
    !following && count > 0
      ? h("button", { type: "button", className: "lv-jump", onClick: jumpToLive, "data-testid": tid("jump"),
        title: "Scroll to the newest line and keep following" },
      icon(ICON_ARROW_DOWN), phase === "live" ? "Jump to live" : "Jump to end")
      : null);
}

const NO_RANGES = [];
const SKELETON_WIDTHS = ["62%", "48%", "75%", "40%", "68%", "55%"];
const STATUS_TITLES = {
  connecting: "Connecting to the log stream",
  live: "Streaming: new lines appear as they are written",
  ended: "The run finished writing its log",
  error: "The log could not be loaded",
};

export default LogViewer;
