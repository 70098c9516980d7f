"""Login throttling per client IP and per account (in-process sliding windows)."""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque

from backend.errors import TooManyRequests


class LoginRateLimiter:
    def __init__(self, max_per_ip: int, max_failures_per_account: int, window_seconds: int):
        self.max_per_ip = max_per_ip
        self.max_failures = max_failures_per_account
        self.window = window_seconds
        self._ip: dict[str, deque[float]] = defaultdict(deque)
        self._acct: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _trim(self, q: deque[float], now: float) -> None:
        while q and q[0] <= now - self.window:
            q.popleft()

    def _retry_after(self, q: deque[float], now: float) -> int:
        return max(1, math.ceil(q[0] + self.window - now))

    def check_and_count(self, ip: str, account: str) -> None:
        """Raise 429 if this IP or account is over its limit; else count the attempt."""
        now = time.monotonic()
        account = account.lower()
        with self._lock:
            iq = self._ip[ip]
            self._trim(iq, now)
            if len(iq) >= self.max_per_ip:
                raise TooManyRequests(
                    "too many login attempts from this address; try again later",
                    self._retry_after(iq, now),
                )
            aq = self._acct[account]
            self._trim(aq, now)
            if len(aq) >= self.max_failures:
                raise TooManyRequests(
                    "too many failed logins for this account; try again later",
                    self._retry_after(aq, now),
                )
            iq.append(now)
            # Counted as a failure until it succeeds: parallel guesses cannot all slip through
            # while the (slow) password checks are still running.
            aq.append(now)

    def record_success(self, account: str) -> None:
        with self._lock:
            self._acct.pop(account.lower(), None)
