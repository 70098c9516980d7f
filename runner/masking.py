"""Secrets never reach a stored or streamed log line: every occurrence becomes ***."""

from __future__ import annotations

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words and digits everywhere


class Masker:
    def __init__(self, secrets: list[str] | tuple[str, ...]):
        parts: set[str] = set()
        for value in secrets:
            for piece in [value, *value.splitlines()]:  # a multi-line secret leaks line by line
                piece = piece.strip("\r")
                if len(piece) >= MIN_SECRET_LENGTH:
                    parts.add(piece)
        # Longest first, so a secret containing another is masked whole.
        self._parts = sorted(parts, key=len, reverse=True)

    def __call__(self, line: str) -> str:
        for part in self._parts:
            if part in line:
                line = line.replace(part, MASK)
        return line
