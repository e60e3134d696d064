"""Heartbeat time values: a plain number is seconds; 'ms' and 'us' suffixes are accepted."""

from __future__ import annotations

import re

MAX_MS = 2**31 - 1  # about 24.8 days: what a C int of milliseconds (Heartbeat's timers) holds
_TIME = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<unit>ms|us|s)?$")


def parse_duration_ms(text: str) -> int:
    """Parse '2', '1.5', '500ms', '250000us', '2s' into whole milliseconds (rounded up).

    Raises ValueError with a readable message for anything else.
    """
    m = _TIME.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a time value (expected e.g. 2, 1.5, 500ms, 2s)")
    value = float(m.group("num"))
    unit = m.group("unit") or "s"
    scale = {"s": 1000.0, "ms": 1.0, "us": 0.001}[unit]
    ms = value * scale
    if not ms <= MAX_MS:  # also infinity: float() of a 400-digit number, which int() refuses
        raise ValueError(f"{text!r} is too long (at most {MAX_MS} ms, about 24 days)")
    whole = int(ms)
    return whole if whole == ms else whole + 1


def format_duration_ms(ms: int) -> str:
    """Render milliseconds the way a person writes ha.cf: whole seconds plain, otherwise 'ms'."""
    return str(ms // 1000) if ms % 1000 == 0 else f"{ms}ms"
