#!/usr/bin/env python3
"""State backend benchmark: GET and POST of large Terraform states, throughput and peak memory.

A server process runs the real API (SQLite + filesystem object store, the embedded default)
under uvicorn on 127.0.0.1, plus two bare routes in the same process and event loop: ``GET
/bare/static`` returns the same bytes as a plain ``FileResponse``, and ``POST /bare/sink``
streams a body to a file computing MD5 and SHA-256 (what any careful upload endpoint does).
The client (this process) then, for a 10 MB and a 100 MB state, interleaves rounds of:

- ``POST``: Terraform's write (basic auth with a stack token, ``Content-MD5``) of a new serial
  to ``/api/v1/state/{stack}``, against ``POST /bare/sink`` of the same bytes;
- ``GET``: Terraform's read of the current state, against ``GET /bare/static`` of the same bytes.

Per request it measures the wall time (→ MB/s) and the server's peak RSS growth: the kernel's
high-water mark is reset (``/proc/<pid>/clear_refs``) before the request and read after
(``VmHWM`` minus ``VmRSS`` before). The issue's bar: large states are streamed, so peak growth
stays below 2x the state size. Every GET is checked byte for byte against what was written.

    python bench/state.py [--rounds 3] [--sizes 10,100] [--quick]

Results are printed and written to bench/results/state.json (git-ignored). Temporary files are
removed and the server stopped at the end, also on error; the run stops itself after
--max-seconds (default 300).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the route's annotation by name

ROOT = Path(__file__).resolve().parent.parent
# This directory holds bench/queue.py: off the path, or it shadows the standard library's queue.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
MB = 1_000_000
CHUNK = 1 << 20
SERIAL_WIDTH = 12  # the serial is patched in place: padded with spaces, still valid JSON


def say(msg: str = "") -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------- the server side


def serve(workdir: Path) -> None:
    """The child process: migrate, make a stack and a token, serve the API and the bare routes."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import FileResponse, JSONResponse

    from backend.api import create_api
    from backend.auth.principal import system_principal
    from backend.config import load_settings
    from backend.context import build_context, set_context
    from backend.db import migrate
    from backend.stacks import service as stacks_service
    from backend.stacks.schemas import StackCreate
    from backend.state import tokens

    settings = load_settings(
        data_dir=workdir / "data",
        secret_key="bench-" + "k" * 40,
        state_max_bytes=1024**3,
        log_level="WARNING",
        worker_enabled=False,
    )
    migrate(settings)
    ctx = build_context(settings)
    set_context(ctx)
    with ctx.session() as s:
        org = ctx.auth.ensure_default_org(s)
        system = system_principal(org.id)
        stack = stacks_service.create_stack(
            s,
            system,
            StackCreate(name="bench", repository_url="https://git.example.com/x.git", tool="opentofu"),
        )
        _public, token = tokens.create_token(s, ctx.auth.hasher, system, stack.id, "bench", "write")

    bare = FastAPI()
    static = workdir / "static.json"

    @bare.get("/bare/static")
    def bare_static() -> FileResponse:
        return FileResponse(static, media_type="application/json")

    @bare.post("/bare/sink")
    async def bare_sink(request: Request) -> JSONResponse:
        md5, sha = hashlib.md5(), hashlib.sha256()
        size = 0
        with open(workdir / "sink.bin", "wb") as f:
            async for chunk in request.stream():
                md5.update(chunk)
                sha.update(chunk)
                f.write(chunk)
                size += len(chunk)
        return JSONResponse({"size": size, "sha256": sha.hexdigest()})

    real = create_api(ctx)

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/bare/"):
            await bare(scope, receive, send)
        else:
            await real(scope, receive, send)

    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started:
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        print("READY " + json.dumps({"port": port, "stack_id": stack.id, "token": token}), flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run()


# ---------------------------------------------------------------------------- the client side


def make_state(path: Path, size: int) -> int:
    """A Terraform v4 state of about ``size`` bytes: many instances with realistic attributes.
    Returns the offset of the serial's padded digits."""
    head = (
        '{"version": 4, "terraform_version": "1.11.4", "serial": '
        + "1".ljust(SERIAL_WIDTH)
        + ', "lineage": "0b6f3c9e-5d7a-4c36-9a53-bench0000001", "outputs": {"vpc_id": '
        '{"value": "vpc-0123456789abcdef0", "type": "string"}}, "resources": ['
    )
    serial_at = head.index('"serial": ') + len('"serial": ')
    with path.open("w") as f:
        f.write(head)
        written, i = len(head), 0
        while written < size:
            blob = secrets.token_hex(256)
            resource = json.dumps(
                {
                    "mode": "managed",
                    "type": "aws_instance",
                    "name": f"web_{i}",
                    "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
                    "instances": [
                        {
                            "schema_version": 1,
                            "attributes": {
                                "id": f"i-{i:017x}",
                                "ami": "ami-0abcdef1234567890",
                                "instance_type": "t3.micro",
                                "tags": {"Name": f"web-{i}", "team": "platform"},
                                "user_data": blob,
                            },
                            "sensitive_attributes": [],
                        }
                    ],
                }
            )
            f.write(("," if i else "") + resource)
            written += len(resource) + 1
            i += 1
        f.write("]}")
    return serial_at


def set_serial(path: Path, offset: int, serial: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(str(serial).ljust(SERIAL_WIDTH).encode())


def file_digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    return base64.b64encode(md5.digest()).decode(), sha.hexdigest()


class Memory:
    """The server's peak RSS growth over one request, from the kernel's own high-water mark."""

    def __init__(self, pid: int):
        self.pid = pid

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {key} in /proc/{self.pid}/status")

    def start(self) -> int:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        return self._status("VmRSS")

    def peak_growth(self, before: int) -> int:
        return max(0, self._status("VmHWM") - before)


def post(port: int, path: str, body: Path, headers: dict[str, str]) -> tuple[int, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    conn.putrequest("POST", path)
    size = body.stat().st_size
    for k, v in {**headers, "Content-Length": str(size), "Content-Type": "application/json"}.items():
        conn.putheader(k, v)
    conn.endheaders()
    with body.open("rb") as f:
        while chunk := f.read(CHUNK):
            conn.send(chunk)
    resp = conn.getresponse()
    data = resp.read()
    took = time.perf_counter() - t0
    conn.close()
    return resp.status, data, took


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, str, int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    sha, size = hashlib.sha256(), 0
    while chunk := resp.read(CHUNK):
        sha.update(chunk)
        size += len(chunk)
    took = time.perf_counter() - t0
    conn.close()
    return resp.status, sha.hexdigest(), size, took


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        info = None
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the server exited: {proc.stderr.read() if proc.stderr else ''}")
            if line.startswith("READY "):
                info = json.loads(line[len("READY ") :])
                break
        if info is None:
            raise RuntimeError("the server did not start within 60 s")
        return measure(args, workdir, proc.pid, info)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def measure(args: argparse.Namespace, workdir: Path, pid: int, info: dict[str, Any]) -> dict[str, Any]:
    port, stack_id = info["port"], info["stack_id"]
    auth = "Basic " + base64.b64encode(f"{stack_id}:{info['token']}".encode()).decode()
    state_path = f"/api/v1/state/{stack_id}"
    memory = Memory(pid)
    started = time.monotonic()
    results: dict[str, Any] = {}
    serial = 1
    for size_mb in args.sizes:
        body = workdir / f"state-{size_mb}.json"
        offset = make_state(body, size_mb * MB)
        size = body.stat().st_size
        samples: dict[str, list[tuple[float, int]]] = {
            k: [] for k in ("post", "bare_post", "get", "bare_get")
        }
        for rnd in range(args.rounds):
            if time.monotonic() - started > args.max_seconds:
                say(f"stopping early: --max-seconds {args.max_seconds} reached")
                break
            set_serial(body, offset, serial)
            shutil.copyfile(body, workdir / "static.json")  # the bare GET serves the same bytes
            md5, sha = file_digests(body)
            order = ("crucible", "bare") if rnd % 2 == 0 else ("bare", "crucible")
            for side in order:
                before = memory.start()
                if side == "crucible":
                    status, reply, took = post(
                        port, state_path, body, {"Authorization": auth, "Content-MD5": md5}
                    )
                    assert status == 200, (status, reply[:500])
                    samples["post"].append((took, memory.peak_growth(before)))
                else:
                    status, reply, took = post(port, "/bare/sink", body, {})
                    assert status == 200 and json.loads(reply)["sha256"] == sha, (status, reply[:500])
                    samples["bare_post"].append((took, memory.peak_growth(before)))
            serial += 1
            for side in order:
                before = memory.start()
                if side == "crucible":
                    status, got_sha, got_size, took = get(port, state_path, {"Authorization": auth})
                    assert status == 200 and got_sha == sha and got_size == size, (status, got_size)
                    samples["get"].append((took, memory.peak_growth(before)))
                else:
                    status, got_sha, got_size, took = get(port, "/bare/static", {})
                    assert status == 200 and got_sha == sha, status
                    samples["bare_get"].append((took, memory.peak_growth(before)))
        body.unlink()
        results[f"{size_mb}MB"] = summarize(size, samples)
    return results


def summarize(size: int, samples: dict[str, list[tuple[float, int]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"size_bytes": size}
    for key, rows in samples.items():
        if not rows:
            continue
        times = [t for t, _ in rows]
        peaks = [m for _, m in rows]
        out[key] = {
            "n": len(rows),
            "median_s": statistics.median(times),
            "mb_per_s": size / MB / statistics.median(times),
            "peak_rss_growth_bytes": max(peaks),
            "peak_rss_growth_x_size": max(peaks) / size,
        }
    return out


def print_report(results: dict[str, Any]) -> None:
    say()
    say(
        f"{'case':<12} {'crucible MB/s':>14} {'bare MB/s':>10} {'ratio':>7} "
        f"{'crucible peak RSS':>18} {'bare peak RSS':>14}"
    )
    say("-" * 80)
    for size_key, r in results.items():
        for op, bare in (("post", "bare_post"), ("get", "bare_get")):
            if op not in r or bare not in r:
                continue
            c, b = r[op], r[bare]
            say(
                f"{op.upper() + ' ' + size_key:<12} {c['mb_per_s']:>14.1f} {b['mb_per_s']:>10.1f} "
                f"{c['mb_per_s'] / b['mb_per_s']:>6.2f}x "
                f"{c['peak_rss_growth_bytes'] / MB:>10.1f} MB {c['peak_rss_growth_x_size']:>4.2f}x "
                f"{b['peak_rss_growth_bytes'] / MB:>8.1f} MB {b['peak_rss_growth_x_size']:>4.2f}x"
            )
    say()
    say(
        "ratio = Crucible throughput / the bare route's in the same server and run (1.00x = as fast). "
        "Peak RSS = the server's high-water mark during the request minus its RSS before, and as "
        "a multiple of the state size (the bar: below 2x)."
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="10,100", help="state sizes in MB, comma-separated (default 10,100)")
    ap.add_argument("--quick", action="store_true", help="smoke: 1 round of a 10 MB state")
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(Path(args.serve))
        return 0
    args.sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    if args.quick:
        args.rounds, args.sizes = 1, [10]
    workdir = Path(tempfile.mkdtemp(prefix="crucible-bench-state-"))
    try:
        say(f"state bench: sizes {args.sizes} MB, {args.rounds} rounds, SQLite + filesystem store, loopback")
        t0 = time.monotonic()
        results = run(args, workdir)
        print_report(results)
        RESULTS.mkdir(parents=True, exist_ok=True)
        doc = {
            "benchmark": "state",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "params": {"rounds": args.rounds, "sizes_mb": args.sizes},
            "results": results,
            "seconds": round(time.monotonic() - t0, 1),
        }
        (RESULTS / "state.json").write_text(json.dumps(doc, indent=2))
        say(f"wrote bench/results/state.json ({doc['seconds']} s)")
        bad = [
            f"{k} {op}"
            for k, r in results.items()
            for op in ("post", "get")
            if op in r and r[op]["peak_rss_growth_x_size"] >= 2
        ]
        if bad:
            say(f"peak memory growth reached 2x the state size: {', '.join(bad)}")
            return 1
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
