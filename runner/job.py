"""One phase of one run, start to end: workspace → tool adapter → executor → report.

Plan phase: clone the repository at the run's commit (or the branch head), run the adapter's
plan steps, read the plan, store its artifacts and report the summary. Apply phase: clone again
at the exact planned commit, restore the stored binary plan (checksum-verified), run the
adapter's apply steps. Every line goes through the masker before it is stored or streamed.
Whatever happens, the run ends in a reported state (or stays owned by a worker that reports it
later), the phase log is archived and the workspace is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from backend.config import Settings
from backend.policies import enforcement
from backend.policies.inputs import redacted
from backend.runs.execution import Job
from backend.storage import StorageError
from runner import workspace
from runner.executors.base import NOT_FOUND_EXIT, Executor, Phase, Result
from runner.masking import Masker
from runner.port import InProcessPort
from runner.tools import adapter_for
from runner.tools.base import PlanOutcome, Step, ToolAdapter, ToolContext, ToolError, not_found_message

log = logging.getLogger("crucible.runner")

FLUSH_SECONDS = 0.1
FLUSH_LINES = 500
DRAIN_SECONDS = 15.0
KEEP_STEP_LINES = 20_000  # what an adapter may read back from its last plan step
PLAN_FILE = "plan.bin"
APPLYING_TYPES = ("tracked", "destroy")  # the run types whose plans are applied (and approved)
# Terraform merges files named *_override.tf over the configuration (see runner docs).
BACKEND_OVERRIDE_FILE = "crucible_backend_override.tf"
BACKEND_OVERRIDE = (
    "# Written by Crucible for this run: the state lives in Crucible's state backend.\n"
    "# The address and credentials come from the TF_HTTP_* environment variables.\n"
    'terraform {\n  backend "http" {}\n}\n'
)


class LogPump:
    """Masks lines and ships them to the control plane in small batches."""

    def __init__(self, port: InProcessPort, run_id: str, phase: str, masker: Masker):
        self.port, self.run_id, self.phase, self.mask = port, run_id, phase, masker
        self._buffer: list[str] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._sending = asyncio.Lock()  # one batch in flight at a time, in order
        self._task = asyncio.create_task(self._flusher())
        self.step_lines: list[str] = []

    def line(self, text: str) -> None:
        # PostgreSQL text cannot hold NUL: one such byte would make every retry of its batch fail.
        masked = self.mask(text.replace("\x00", "\ufffd") if "\x00" in text else text)
        self._buffer.append(masked)
        self.step_lines.append(masked)
        if len(self.step_lines) > KEEP_STEP_LINES:
            del self.step_lines[: len(self.step_lines) - KEEP_STEP_LINES]
        if len(self._buffer) >= FLUSH_LINES:
            self._wake.set()

    def info(self, text: str) -> None:
        self.line(f"[crucible] {text}")

    async def _flusher(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_SECONDS)
            self._wake.clear()
            if not await self._flush():
                await asyncio.sleep(1)  # the database refused the lines: back off, keep them

    async def drain(self) -> None:
        """Every line so far is stored when this returns. Called before a phase's end is
        reported: whoever sees the run finished reads its whole log. Bounded: a database that
        keeps refusing the lines must not keep the run from ending."""
        await self._flush(deadline=asyncio.get_running_loop().time() + DRAIN_SECONDS)

    async def _flush(self, deadline: float | None = None) -> bool:
        """Send the buffered lines in order; False if the database refused some (they stay
        buffered). With ``deadline``, retry every second until then."""
        async with self._sending:
            loop = asyncio.get_running_loop()
            while self._buffer:
                batch, self._buffer = self._buffer[:FLUSH_LINES], self._buffer[FLUSH_LINES:]
                try:
                    await self.port.append_logs(self.run_id, self.phase, batch)
                except Exception:
                    log.exception("could not store log lines of %s; retrying", self.run_id)
                    self._buffer[:0] = batch
                    if deadline is None or loop.time() >= deadline:
                        return False
                    await asyncio.sleep(1)
            return True

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        with contextlib.suppress(Exception):
            await self._task
        await self._flush()


@dataclass
class RunFailed(Exception):
    reason: str


class Canceled(Exception):
    pass


class JobRunner:
    def __init__(
        self, job: Job, port: InProcessPort, executor: Executor, settings: Settings, cancel: asyncio.Event
    ):
        self.job, self.port, self.executor, self.settings, self.cancel = job, port, executor, settings, cancel
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + settings.run_timeout_seconds
        self.root = settings.resolved_workspace_dir / f"{job.run_id}-{job.phase}"
        self.scratch = self.root / ".crucible"
        self.pump: LogPump | None = None
        self.shutting_down = False  # set by the worker when it stops: the run fails, not cancels

    async def run(self) -> None:
        job = self.job
        self.pump = LogPump(self.port, job.run_id, job.phase, Masker(job.secrets))
        try:
            await self._run_phase()
        except Canceled:
            if self.shutting_down:
                reason = "the worker shut down while the run was executing; trigger it again"
                self.pump.info(f"ERROR: {reason}")
                await self._report(self.port.fail, job.run_id, reason)
            else:
                self.pump.info("the run was canceled")
                await self._report(self.port.mark_canceled, job.run_id)
        except RunFailed as exc:
            self.pump.info(f"ERROR: {exc.reason}")
            await self._report(self.port.fail, job.run_id, exc.reason)
        except Exception as exc:  # a bug or an infrastructure error: the run fails, the worker lives
            log.exception("run %s failed unexpectedly", job.run_id)
            reason = f"internal error in the worker: {type(exc).__name__}: {exc}"
            self.pump.info(f"ERROR: {reason}")
            await self._report(self.port.fail, job.run_id, reason)
        finally:
            await self.pump.close()
            try:
                await self.port.archive_logs(job.run_id, job.phase)
            except Exception:
                log.exception("could not archive the %s log of %s", job.phase, job.run_id)
            await asyncio.to_thread(shutil.rmtree, self.root, True)

    async def _report(self, report, *args, **kwargs):
        """A phase's end goes to the control plane only once its log lines are stored."""
        assert self.pump is not None
        await self.pump.drain()
        return await report(*args, **kwargs)

    # ------------------------------------------------------------------ phases

    async def _run_phase(self) -> None:
        job, pump = self.job, self.pump
        assert pump is not None
        adapter = self._adapter()
        ws = await self._prepare_workspace()
        if job.state_address:
            self._write_backend_override(ws.project_dir)
        ctx = ToolContext(
            project_dir=ws.project_dir,
            scratch=self.scratch,
            run_type=job.run_type,
            tool=job.tool,
            tool_version=job.tool_version,
            options={"playbook": job.playbook} if job.playbook else {},
        )
        if job.phase == "plan":
            status = await self.port.start_planning(job.run_id, ws.commit_sha, ws.commit_message)
            if status is None:
                raise Canceled
            policies = await self.port.load_policies(job.run_id, "plan")
            pre_plan = enforcement.input_for(policies, commit_sha=ws.commit_sha)
            await self._policies(policies, pre_plan, "pre_plan")
            pump.info(f"planning with {adapter.binary} ({job.runner} runner)")
            steps = self._tool(adapter.plan_steps, ctx)
            for step in steps:
                await self._step(adapter, step, ctx)
            # Parsing a big plan JSON takes a while: off the event loop.
            outcome: PlanOutcome = await asyncio.to_thread(
                self._tool, adapter.read_plan, ctx, list(pump.step_lines)
            )
            artifacts = await self._store_plan(outcome)
            summary = {k: int(v) for k, v in outcome.summary.items()}
            pump.info(
                f"plan: +{summary.get('add', 0)} ~{summary.get('change', 0)} -{summary.get('destroy', 0)}"
                + ("" if outcome.has_changes else " (no changes)")
            )
            would_apply = job.run_type in APPLYING_TYPES and outcome.has_changes
            required = 0
            if policies.for_hook("post_plan") or (would_apply and policies.for_hook("approval")):
                plan = await self._plan_input(outcome.plan_json)
                doc = enforcement.input_for(policies, commit_sha=ws.commit_sha, plan=plan, summary=summary)
                hooks = ("post_plan", "approval") if would_apply else ("post_plan",)
                verdicts = await self._policies(policies, doc, *hooks)
                required = verdicts["approval"].required_approvals if would_apply else 0
            triggers = None
            if job.run_type in APPLYING_TYPES and not outcome.has_changes:  # it finishes here
                triggers = await self._trigger_policies(policies, ws.commit_sha, summary)
            status = await self._report(
                self.port.finish_planning,
                job.run_id,
                summary=summary,
                has_changes=outcome.has_changes,
                artifacts=artifacts,
                required_approvals=required,
            )
            if triggers and status == "finished":
                await self._start_triggered(triggers)
            if status == "pending_approval":
                plural = "s" if required != 1 else ""
                pump.info(f"waiting for {required} approval{plural} (approval policies)")
            elif status == "unconfirmed":
                pump.info("waiting for confirmation")
            elif status == "confirmed":
                pump.info("auto-apply: the plan will be applied")
        else:
            plan_file = await self._restore_plan()
            policies = await self.port.load_policies(job.run_id, "apply")
            if policies.for_hook("pre_apply"):
                plan = None
                if entry := job.artifacts.get("plan_json"):
                    plan = await self._plan_input(await self._stored(entry["key"], "plan JSON"))
                doc = enforcement.input_for(policies, commit_sha=job.commit_sha, plan=plan)
                await self._policies(policies, doc, "pre_apply")
            pump.info(f"applying with {adapter.binary} ({job.runner} runner)")
            for step in self._tool(adapter.apply_steps, ctx, plan_file):
                await self._step(adapter, step, ctx)
            pump.info("applied")
            triggers = await self._trigger_policies(policies, job.commit_sha, None)
            status = await self._report(self.port.finish_applying, job.run_id)
            if triggers and status == "finished":
                await self._start_triggered(triggers)

    async def _start_triggered(self, outcomes: list[enforcement.Outcome]) -> None:
        """The runs the trigger policies named; the run itself has finished whatever happens."""
        try:
            await self.port.trigger_runs(self.job.run_id, outcomes)
        except Exception:
            log.exception("could not start the runs the trigger policies of %s named", self.job.run_id)

    async def _policies(
        self, policies: enforcement.PolicySet, doc: dict, *hooks: str
    ) -> dict[str, enforcement.Verdict]:
        """Evaluate the hooks' policies (hooks that share an input go in one pass), log and
        store what each decided, and fail the run at the first hook with a deny or an
        evaluation error (policies fail closed)."""
        checks = {hook: policies.for_hook(hook) for hook in hooks if policies.for_hook(hook)}
        empty = enforcement.Verdict(None, [], 0)
        if not checks:
            return dict.fromkeys(hooks, empty)
        pump = self.pump
        assert pump is not None
        if self.cancel.is_set():
            raise Canceled
        found = await self.port.check_policies(self.job.run_id, checks, doc)
        if found is None:  # the run is no longer this worker's (reaped, force-canceled): stop
            raise Canceled
        verdicts = {}
        for hook in hooks:
            outcomes = found.get(hook, [])
            for o in outcomes:
                c = o.check
                pump.info(
                    f"policy {c.name} (v{c.version}, {hook}): {o.result(hook)} in {o.duration_ms:.0f} ms"
                )
                for message in o.deny:
                    pump.info(f"  deny: {message}")
                for message in o.warn:
                    pump.info(f"  warn: {message}")
                if o.error:
                    pump.info(f"  error: {o.error}")
            verdicts[hook] = enforcement.verdict(hook, outcomes)
        for hook in hooks:
            if verdicts[hook].failure:
                raise RunFailed(verdicts[hook].failure)
        return verdicts

    async def _trigger_policies(
        self, policies: enforcement.PolicySet, commit_sha: str | None, summary: dict[str, int] | None
    ) -> list[enforcement.Outcome] | None:
        """Evaluate the trigger policies of a run about to finish, and log what they decided; the
        runs they name are made once the run has finished (``port.trigger_runs``). Nothing here
        can fail the run: its work is done."""
        checks = policies.for_hook(enforcement.TRIGGER)
        if not checks:
            return None
        doc = enforcement.input_for(policies, commit_sha=commit_sha, summary=summary)
        doc["crucible"]["run"] = {**doc["crucible"]["run"], "status": "finished"}
        outcomes = await self.port.evaluate_policies(checks, doc)
        pump = self.pump
        assert pump is not None
        for o in outcomes:
            c = o.check
            pump.info(f"policy {c.name} (v{c.version}, trigger): {o.result(enforcement.TRIGGER)}")
            if o.trigger:
                pump.info(f"  trigger: {', '.join(o.trigger)}")
            for message in (*o.deny, *o.warn):
                pump.info(f"  warn: {message}")
            if o.error:
                pump.info(f"  error: {o.error} (nothing is triggered)")
        return outcomes

    async def _plan_input(self, data: bytes | None) -> dict | None:
        """The plan JSON as policies see it; too big a plan fails the run (policies fail closed)."""
        if data is None:
            return None
        limit = self.settings.policy_input_max_bytes
        if len(data) > limit:
            raise RunFailed(
                f"the plan JSON is {len(data)} bytes, more than policies may be given "
                f"(CRUCIBLE_POLICY_INPUT_MAX_BYTES={limit}); raise the limit to evaluate "
                "this stack's policies"
            )
        try:
            plan = await asyncio.to_thread(json.loads, data)
        except ValueError as exc:
            raise RunFailed(f"the plan JSON cannot be read for the policies: {exc}") from None
        if not isinstance(plan, dict):
            raise RunFailed("the plan JSON is not an object: the policies cannot read it")
        # Sensitive values never reach a policy, so none reaches a message (as in backtests).
        return await asyncio.to_thread(redacted, plan)

    async def _stored(self, key: str, what: str) -> bytes:
        try:
            return await self.port.get_object(key)
        except StorageError as exc:
            raise RunFailed(f"the stored {what} cannot be read: {exc}") from None

    def _write_backend_override(self, project_dir: Path) -> None:
        """State always lands in Crucible: an override file's backend block replaces whatever
        backend the code declares (or adds one where it declares none); the TF_HTTP_* variables
        in the job's env carry the address and this phase's token."""
        path = project_dir / BACKEND_OVERRIDE_FILE
        if path.exists() or path.is_symlink():
            raise RunFailed(
                f"the repository has a file named {BACKEND_OVERRIDE_FILE} in the project root; "
                "Crucible writes that file to point the state at its backend: rename yours"
            )
        path.write_text(BACKEND_OVERRIDE)
        assert self.pump is not None
        self.pump.info(f"state: Crucible's state backend at {self.job.state_address}")
        if self.job.runner == "docker" and self.settings.docker_network == "none":
            self.pump.info(
                "WARNING: the Docker runner has no network (CRUCIBLE_DOCKER_NETWORK=none), so the tool "
                "cannot reach the state backend: set CRUCIBLE_DOCKER_NETWORK=host (or a network that "
                "reaches this server) and CRUCIBLE_STATE_BACKEND_URL to an address containers resolve"
            )

    def _adapter(self) -> ToolAdapter:
        try:
            return adapter_for(self.job.tool)
        except ToolError as exc:
            raise RunFailed(str(exc)) from None

    @staticmethod
    def _tool(fn, *args):
        try:
            return fn(*args)
        except ToolError as exc:
            raise RunFailed(str(exc)) from None

    async def _prepare_workspace(self) -> workspace.Workspace:
        job, pump = self.job, self.pump
        assert pump is not None
        await asyncio.to_thread(shutil.rmtree, self.root, True)
        self.root.mkdir(parents=True)
        checkout = self.root / "repo"
        where = f"commit {job.commit_sha}" if job.commit_sha else f"branch {job.branch}"
        pump.info(f"cloning {job.repository_url} at {where}")
        prepare = asyncio.create_task(
            workspace.prepare(
                job.repository_url,
                checkout,
                branch=job.branch,
                commit=job.commit_sha,
                project_root=job.project_root,
                timeout=max(1.0, self.deadline - self.loop.time()),
            )
        )
        stopper = asyncio.create_task(self.cancel.wait())
        done, _ = await asyncio.wait({prepare, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if prepare not in done:
            prepare.cancel()
            with contextlib.suppress(BaseException):
                await prepare
            raise Canceled
        try:
            ws = prepare.result()
        except workspace.WorkspaceError as exc:
            raise RunFailed(str(exc)) from None
        first = ws.commit_message.splitlines()[0] if ws.commit_message else ""
        pump.info(f"checked out {ws.commit_sha[:12]} {first}".rstrip())
        self.scratch.mkdir(exist_ok=True)
        return ws

    async def _step(self, adapter: ToolAdapter, step: Step, ctx: ToolContext) -> None:
        pump = self.pump
        assert pump is not None
        if self.cancel.is_set():
            raise Canceled
        remaining = self.deadline - self.loop.time()
        if remaining <= 0:
            raise RunFailed(f"the run timed out after {self.settings.run_timeout_seconds} s")
        env = {**self.job.env, **step.env}
        if self.executor.kind == "local":
            env["PATH"] = _local_path(self.job.env.get("PATH"))
            if shutil.which(step.argv[0], path=env["PATH"]) is None:
                raise RunFailed(not_found_message(adapter, "on this server's PATH"))
        argv = list(step.argv)
        if step.stdout_file is not None:
            argv = ["sh", "-c", 'exec "$@" > "$0"', str(step.stdout_file), *argv]
        pump.info(f"$ {' '.join([step.argv[0], *step.argv[1:]])}")
        pump.step_lines.clear()
        phase = Phase(argv=argv, cwd=ctx.project_dir, workspace=self.root, env=env, timeout=remaining)
        result: Result = await self.executor.run(phase, pump.line, cancel=self.cancel)
        if result.canceled:
            raise Canceled
        if result.error:
            raise RunFailed(result.error)
        if result.timed_out:
            raise RunFailed(f"the run timed out after {self.settings.run_timeout_seconds} s ({step.name})")
        if result.exit_code == NOT_FOUND_EXIT:
            where = "in the runner image" if self.executor.kind == "docker" else "on this server's PATH"
            raise RunFailed(not_found_message(adapter, where))
        if result.exit_code != 0:
            raise RunFailed(f"{step.name} failed: {step.argv[0]} exited with code {result.exit_code}")

    async def _store_plan(self, outcome: PlanOutcome) -> dict:
        artifacts: dict = {}
        try:
            if outcome.plan_json is not None:
                key = f"runs/{self.job.run_id}/plan.json"
                artifacts["plan_json"] = await self.port.put_object(key, outcome.plan_json)
            if outcome.plan_file is not None:
                data = await asyncio.to_thread(Path(outcome.plan_file).read_bytes)
                key = f"runs/{self.job.run_id}/{PLAN_FILE}"
                artifacts["plan_file"] = await self.port.put_object(key, data)
        except (StorageError, OSError) as exc:
            raise RunFailed(f"could not store the plan: {exc}") from None
        return artifacts

    async def _restore_plan(self) -> Path | None:
        entry = self.job.artifacts.get("plan_file")
        if not entry:
            return None
        try:
            data = await self.port.get_object(entry["key"])
        except StorageError as exc:
            raise RunFailed(f"the stored plan cannot be used: {exc}") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise RunFailed("the stored plan does not match the checksum recorded at plan time")
        path = self.scratch / PLAN_FILE
        await asyncio.to_thread(path.write_bytes, data)
        assert self.pump is not None
        self.pump.info(f"restored the plan ({len(data)} bytes, sha256 {entry['sha256'][:12]})")
        return path


def _local_path(configured: str | None) -> str:
    """The server's PATH with this installation's own bin directory first: ansible-core is a
    dependency of Crucible, so its ansible-playbook sits next to the running interpreter."""
    own = str(Path(sys.executable).parent)
    rest = configured or os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    return os.pathsep.join([own, *[p for p in rest.split(os.pathsep) if p and p != own]])
