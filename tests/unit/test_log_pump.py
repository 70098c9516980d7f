"""The worker's log pump: lines reach the database in order, and a database that refuses them
can neither lose the run's end nor hold it forever."""

from __future__ import annotations

import asyncio
import time

import pytest

from runner import job
from runner.job import LogPump
from runner.masking import Masker
from tests.aio import run_async


class _Port:
    """Stores batches like the database, refusing what PostgreSQL refuses (NUL in text) and,
    while ``down``, everything."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.down = False
        self.refused = 0

    async def append_logs(self, run_id: str, phase: str, lines: list[str]) -> None:
        await asyncio.sleep(0)
        if self.down or any("\x00" in line for line in lines):
            self.refused += 1
            raise RuntimeError("the database refused the batch")
        self.stored.extend(lines)


def test_a_nul_byte_is_stored_as_a_replacement_character_and_nothing_is_lost():
    port = _Port()

    async def main():
        pump = LogPump(port, "run-0", "plan", Masker(["s3cr3t-value"]))
        pump.line("before")
        pump.line("a\x00b s3cr3t-value")
        pump.line("after")
        await pump.drain()
        await pump.close()

    run_async(main())
    assert port.stored == ["before", "a\ufffdb ***", "after"]
    assert port.refused == 0


def test_drain_gives_up_at_its_deadline_when_the_database_keeps_refusing(monkeypatch):
    monkeypatch.setattr(job, "DRAIN_SECONDS", 1.5)
    port = _Port()

    async def main():
        pump = LogPump(port, "run-0", "plan", Masker([]))
        port.down = True
        pump.line("kept for later")
        started = time.monotonic()
        await pump.drain()
        waited = time.monotonic() - started
        port.down = False  # the database is back: the lines still go, in order
        pump.line("next")
        await pump.drain()
        await pump.close()
        return waited

    waited = run_async(main())
    assert 1.0 <= waited < 10, waited  # it retried until its deadline, then let the run end
    assert port.stored == ["kept for later", "next"]
    assert port.refused >= 2


@pytest.mark.parametrize("lines", [1, job.FLUSH_LINES * 3 + 7])
def test_drain_stores_every_line_in_order(lines):
    port = _Port()

    async def main():
        pump = LogPump(port, "run-0", "plan", Masker([]))
        for i in range(lines):
            pump.line(f"line {i}")
            if i % 700 == 0:
                await asyncio.sleep(0)  # let the background flusher take some
        await pump.drain()
        stored = list(port.stored)
        await pump.close()
        return stored

    assert run_async(main()) == [f"line {i}" for i in range(lines)]
