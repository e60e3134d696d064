"""Heartbeat's shared lexical rules: '#' comments, whitespace-separated words, backslash continuation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Line:
    """A logical line: its first physical line number and its words."""

    number: int
    words: list[str]


def logical_lines(text: str, *, continuation: bool = False) -> Iterator[Line]:
    """Yield non-empty logical lines with comments removed.

    Heartbeat strips everything from '#' to the end of the line. haresources (not ha.cf)
    joins a line ending in a backslash with the next one.
    """
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        body = raw.split("#", 1)[0].rstrip()
        joined = continuation and body.endswith("\\")
        if joined:
            body = body[:-1]
        if not pending:
            start = number
        pending.extend(body.split())
        if joined:
            continue
        if pending:
            yield Line(start, pending)
        pending = []
    if pending:
        yield Line(start, pending)
