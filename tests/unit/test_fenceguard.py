"""The fence guard's decision on a fake clock, its loop on a real pipe (no sleeps), its command line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from ipaddress import ip_interface

import pytest

from hacluster_agent.resources import fenceguard
from hacluster_agent.resources.fenceguard import (
    BEAT,
    QUIT,
    TIGHT,
    FenceGuard,
    Verdict,
    Watchdog,
    decide,
    default_fence_after,
    guard_command,
    guarded_addresses,
    watch,
)
from hacluster_api.heartbeat.haresources import parse_haresources

G = 0.25


def test_decide_pure() -> None:
    assert decide(None, False, 100.0, False, G) is Verdict.WAIT  # not armed before the first beat
    assert decide(10.0, False, 10.2, False, G) is Verdict.WAIT
    assert decide(10.0, False, 10.25, False, G) is Verdict.FENCE
    assert decide(10.0, True, 99.0, False, G) is Verdict.WAIT  # once per silence
    for last, fenced in [(None, False), (10.0, False), (10.0, True)]:
        assert decide(last, fenced, 10.01, True, G) is Verdict.EXIT


def test_watchdog_fences_once_per_silence_and_rearms_on_a_beat() -> None:
    dog = Watchdog(G)
    assert dog.timeout(0.0) is None and dog.decide(5.0) is Verdict.WAIT
    dog.beat(1.0)
    assert dog.timeout(1.1) == pytest.approx(0.15)
    assert dog.decide(1.249) is Verdict.WAIT
    assert dog.decide(1.25) is Verdict.FENCE
    assert dog.timeout(1.3) is None  # fenced: wait for the pipe only, no busy loop
    assert [dog.decide(t) for t in (1.3, 2.0, 60.0)] == [Verdict.WAIT] * 3
    dog.beat(61.0)  # the agent resumed
    assert dog.decide(61.1) is Verdict.WAIT
    assert dog.silence(61.2) == pytest.approx(0.2)
    assert dog.decide(61.25) is Verdict.FENCE
    assert dog.decide(61.3, eof=True) is Verdict.EXIT


def test_watchdog_beats_keep_it_quiet_and_timeout_never_negative() -> None:
    dog = Watchdog(G)
    t = 0.0
    for _ in range(1000):
        dog.beat(t)
        t += 0.05
        assert dog.decide(t) is Verdict.WAIT
    assert dog.timeout(t + 10) == 0.0


def test_watchdog_retry_after_a_failed_fence() -> None:
    dog = Watchdog(G)
    dog.beat(0.0)
    assert dog.decide(0.3) is Verdict.FENCE
    dog.retry(0.3)
    assert dog.decide(0.5) is Verdict.WAIT
    assert dog.decide(0.55) is Verdict.FENCE


class Clock:
    def __init__(self, times: list[float]) -> None:
        self.times = iter(times)
        self.last = 0.0

    def __call__(self) -> float:
        self.last = next(self.times, self.last)
        return self.last


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_watch_eof_removes_and_exits(pipe: tuple[int, int]) -> None:
    r, w = pipe
    calls: list[str] = []
    os.write(w, BEAT * 3)
    os.close(w)
    rc = watch(r, Watchdog(G), lambda: calls.append("rm") or ["192.0.2.100/24 on eth0"], Clock([0.0] * 10))
    assert rc == 0 and calls == ["rm"]


def test_watch_eof_failure_exits_1(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.close(w)
    assert watch(r, Watchdog(G), lambda: None) == 1


def test_watch_quit_touches_nothing(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, BEAT + QUIT)
    os.close(w)
    assert watch(r, Watchdog(G), lambda: pytest.fail("must not remove")) == 0


def test_watch_silence_fences_then_eof(pipe: tuple[int, int]) -> None:
    """Beat at t=0, then the fake clock jumps past G while the pipe is empty: poll() times out at
    once (the timeout is computed from the fake clock: 0 ms), it fences, then waits on the pipe."""
    r, w = pipe
    os.write(w, BEAT)
    fenced: list[float] = []
    # clock reads: before poll, after poll (beat at 0.0), before poll (0.3 -> timeout 0), after poll
    clock = Clock([0.0, 0.0, 0.3, 0.3])

    def remove() -> list[str]:
        fenced.append(clock.last)
        if len(fenced) == 1:
            os.close(w)  # the agent dies after having been fenced: EOF, second removal, exit
        return []

    assert watch(r, Watchdog(G), remove, clock) == 0
    assert fenced == [0.3, 0.3]


def test_tight_beats_shorten_g_until_a_plain_beat() -> None:
    """While the owner proves itself in the Lease the peer can take over W after its last renewal:
    a stall must cost the VIP within W/2, not deadtime/2 (sim seed 42 at 500 ms / 3 s: 723 ms of
    two owners when the guard waited 1.5 s)."""
    dog = Watchdog(1.5, tight_after=0.1)
    dog.beat(0.0, tight=True)
    assert dog.timeout(0.0) == pytest.approx(0.1)
    assert dog.decide(0.09) is Verdict.WAIT and dog.decide(0.1) is Verdict.FENCE
    dog.beat(1.0)  # a plain beat: back to G
    assert dog.decide(1.2) is Verdict.WAIT and dog.timeout(1.2) == pytest.approx(1.3)


def test_watch_a_tight_beat_fences_after_the_tight_timeout(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, BEAT + TIGHT)  # the last byte read decides
    fenced: list[float] = []
    clock = Clock([0.0, 0.0, 0.12, 0.12])

    def remove() -> list[str]:
        fenced.append(clock.last)
        if len(fenced) == 1:
            os.close(w)
        return []

    assert watch(r, Watchdog(1.5, tight_after=0.1), remove, clock) == 0
    assert fenced == [0.12, 0.12]


def test_guarded_addresses_both_sides_once() -> None:
    res, _ = parse_haresources(
        "n1 IPaddr::192.0.2.100/24/eth0 web\nn2 192.0.2.101 IPv6addr::2001:db8::100/64 db\n"
        "n1 IPaddr2::192.0.2.100/24 other\n"
    )
    assert res is not None
    assert guarded_addresses(res.groups) == [
        ip_interface("192.0.2.100/24"),
        ip_interface("192.0.2.101/32"),
        ip_interface("2001:db8::100/64"),
    ]


def test_defaults_and_command() -> None:
    assert default_fence_after(300) == 150
    cmd = guard_command(7, [ip_interface("192.0.2.100/24")], 150, "text")
    assert cmd[1] == "-P" and cmd[2].endswith("fenceguard.py")
    assert cmd[3:] == ["--fd", "7", "--after-ms", "150", "--log-format", "text", "192.0.2.100/24"]
    g = FenceGuard([ip_interface("192.0.2.100/24")], 150)
    assert g.interval == pytest.approx(0.0375)
    assert FenceGuard([ip_interface("192.0.2.100/24")], 1000).interval == 0.05
    with pytest.raises(ValueError):
        FenceGuard([], 0)
    tight = FenceGuard([ip_interface("192.0.2.100/24")], 1500, tight_after_ms=100)
    assert tight.tight_interval == pytest.approx(0.025)
    cmd = guard_command(7, [ip_interface("192.0.2.100/24")], 1500, "text", 100)
    assert cmd[3:9] == ["--fd", "7", "--after-ms", "1500", "--tight-after-ms", "100"]


def test_for_agent_needs_a_vip_and_a_nonzero_g() -> None:
    res, _ = parse_haresources("n1 IPaddr::192.0.2.100/24/eth0 web\nn2 web2\n")
    assert res is not None
    g = FenceGuard.for_agent(res.groups, None, 500, 100)
    assert g is not None and g.after_ms == 250
    assert FenceGuard.for_agent(res.groups, 0, 500, 100) is None
    assert FenceGuard.for_agent(res.groups_of("n2"), None, 500, 100) is None


@pytest.mark.asyncio
async def test_keeper_restarts_a_dead_guard_and_closes_it() -> None:
    """A real guard process (an address this host does not have: it can never remove anything)."""
    ups: list[bool] = []
    restarts: list[int] = []
    g = FenceGuard(
        [ip_interface("198.51.100.199/24")],
        200,
        log_format="text",
        on_up=ups.append,
        on_restart=lambda: restarts.append(1),
    )
    g.start()
    try:
        first = g.proc
        assert first is not None and g.running
        first.kill()
        deadline = asyncio.get_running_loop().time() + 5
        while (g.proc is first or not g.running) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert g.proc is not first and g.running and g.restarts == 1 and restarts == [1]
    finally:
        await g.close()
    assert g.proc is not None and g.proc.returncode == 0  # EOF, nothing present: a quiet exit
    assert ups[0] is True and ups[-1] is False and ups.count(True) == 2


@pytest.mark.asyncio
async def test_keeper_close_keep_sends_quit() -> None:
    g = FenceGuard([ip_interface("198.51.100.199/24")], 200, log_format="text")
    g.start()
    await asyncio.sleep(0.1)
    await g.close(keep=True)
    assert g.proc is not None and g.proc.returncode == 0


# Stands in for the guard: exits 0 if the last byte before EOF is `q`, else 3.
_QUIT_READER = (
    "import os, sys\nfd, data = int(sys.argv[1]), b''\n"
    "while chunk := os.read(fd, 4096):\n    data += chunk\n"
    "sys.exit(0 if data.endswith(b'q') else 3)"
)


@pytest.mark.asyncio
@pytest.mark.parametrize(("keep", "code"), [(True, 0), (False, 3)])
async def test_keeper_close_sends_quit_only_when_keeping(
    monkeypatch: pytest.MonkeyPatch, keep: bool, code: int
) -> None:
    """What the guard reads: a real guard exits 0 either way when nothing is present, so this
    reads the pipe instead (the guard's side of `q` is test_watch_quit_touches_nothing)."""
    monkeypatch.setattr(
        fenceguard, "guard_command", lambda fd, *_: [sys.executable, "-c", _QUIT_READER, str(fd)]
    )
    g = FenceGuard([ip_interface("198.51.100.199/24")], 200, log_format="text")
    g.start()
    await asyncio.sleep(0.1)
    await g.close(keep=keep)
    assert g.proc is not None and g.proc.returncode == code
