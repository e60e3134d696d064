"""Heartbeat's shared lexical rules: '#' comments, whitespace-separated words, backslash continuation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_NEWLINE = re.compile(r"\r\n|\r|\n")


def is_number(word: str, max_digits: int = 9) -> bool:
    """Plain ASCII digits, short enough for int(): str.isdigit() is also true for '²' (int() refuses
    it) and '١٢' (int() reads 12), and int() refuses more than 4300 digits."""
    return word.isascii() and word.isdigit() and len(word) <= max_digits


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
    # Only \n, \r\n and \r end a line (as editors, fgets and Python's universal newlines count
    # them); str.splitlines() also splits at \f, \v, \x1c-\x1e, \x85 and U+2028/9, so line numbers
    # in findings pointed past the end of the file.
    for number, raw in enumerate(_NEWLINE.split(text), start=1):
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
