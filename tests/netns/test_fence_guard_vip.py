"""The fence guard end to end: a killed or frozen owner's VIP is gone before the peer adds its own.

Both nodes' addresses are watched with `ip -ts monitor address` (every add, renewal and removal,
time-stamped as it happens), so even a few milliseconds of overlap would show.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.lab import VIP, Lab
from tests.support.netns import wait_until
from tests.support.vipevents import held_intervals, overlaps, vip_event

pytestmark = pytest.mark.netns


@dataclass
class Watch:
    """`ip -ts monitor address` in each node's namespace; the VIP's add/renew/remove events."""

    lab: Lab
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    initial: dict[str, bool] = field(default_factory=dict)
    events: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)

    def __enter__(self) -> Watch:
        for node in ("n1", "n2"):
            self.procs[node] = subprocess.Popen(
                ["ip", "-n", self.lab.ns(node), "-ts", "monitor", "address"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
        time.sleep(0.2)  # let both subscribe before reading the starting state
        self.initial = {node: self.lab.holds_vip(node) for node in self.procs}
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for node, proc in self.procs.items():
            if proc.poll() is None:
                proc.terminate()
            out, _ = proc.communicate(timeout=10)
            self.events[node] = [e for line in out.splitlines() if (e := vip_event(line, VIP)) is not None]

    def intervals(self, node: str, end: float) -> list[tuple[float, float]]:
        """When `node` held the VIP, as [from, to) intervals (open ones end at `end`)."""
        return held_intervals(self.events[node], end, 0.0 if self.initial[node] else None)

    def overlaps(self) -> list[tuple[float, float]]:
        end = time.time() + 3600
        return overlaps(self.intervals("n1", end), self.intervals("n2", end))

    def first(self, node: str, present: bool, after: float) -> float | None:
        return next((t for t, p in self.events[node] if p == present and t >= after), None)


def _start_pair(lab: Lab) -> None:
    lab.start_agent("n1")
    lab.start_agent("n2")
    lab.wait_for("n1", timeout=30)
    assert lab.holds_vip("n1") and not lab.holds_vip("n2")
    assert "fence guard: pid" in lab.agent_log("n1")


def test_sigkill_owner_vip_gone_before_peer_holds_it(lab: Lab) -> None:
    _start_pair(lab)
    with Watch(lab) as w:
        t0 = time.time()
        lab.kill_agent("n1", signal.SIGKILL)
        wait_until(lambda: lab.holds_vip("n2"), 10, interval=0.01, message="the peer to take over")
        time.sleep(0.3)
    gone, taken = w.first("n1", False, t0), w.first("n2", True, t0)
    assert gone is not None and taken is not None
    print(
        f"SIGKILL: gone from n1 after {(gone - t0) * 1000:.0f} ms, n2 holds after {(taken - t0) * 1000:.0f} ms"
    )
    assert gone - t0 < 0.2, "the guard should remove the VIP at once when the agent dies"
    assert w.overlaps() == []
    assert gone < taken
    assert "the agent is gone (pipe closed): removed 192.0.2.100/24 on eth0" in lab.agent_log("n1")
    lab.wait_for("n2", timeout=10)


@pytest.mark.parametrize(
    "lab", [{"auto_failback": "off"}, {"auto_failback": "on"}], indirect=True, ids=["off", "on"]
)
def test_sigstop_owner_never_both_then_sigcont(lab: Lab) -> None:
    _start_pair(lab)
    with Watch(lab) as w:
        t0 = time.time()
        lab.kill_agent("n1", signal.SIGSTOP)
        try:
            wait_until(lambda: lab.holds_vip("n2"), 10, interval=0.01, message="the peer to take over")
            time.sleep(1.0)
            assert not lab.holds_vip("n1"), "the guard must not re-add anything while the agent is frozen"
            t_cont = time.time()
        finally:
            lab.kill_agent("n1", signal.SIGCONT)
        time.sleep(4.0)  # the resumed agent hears the peer; whatever it does, never both at once
    gone, taken = w.first("n1", False, t0), w.first("n2", True, t0)
    assert gone is not None and taken is not None
    readded = w.first("n1", True, gone)
    print(
        f"SIGSTOP: gone from n1 after {(gone - t0) * 1000:.0f} ms, n2 holds after {(taken - t0) * 1000:.0f} ms"
    )
    assert gone < taken
    assert "fenced: no beat for" in lab.agent_log("n1")
    assert readded is None or readded > t_cont, "nothing may re-add the VIP while the agent is frozen"
    assert [o for o in w.overlaps() if o[0] < t_cont] == [], "both held the VIP while n1 was frozen"
    # Standalone too: the resumed home node finds its VIP gone, takes in the queued heartbeats, and
    # restarts nothing in place while the peer says it holds the group (it used to, for 2-17 ms).
    assert w.overlaps() == [], "both held the VIP after n1 resumed"
    assert lab.holds_vip("n1") != lab.holds_vip("n2")


def _guard_pids(lab: Lab, node: str) -> list[int]:
    pids = subprocess.run(
        ["ip", "netns", "pids", lab.ns(node)], capture_output=True, text=True
    ).stdout.split()
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if b"fenceguard" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(int(pid))
    return out


def test_guard_killed_is_restarted_and_the_owner_keeps_the_vip(lab: Lab) -> None:
    _start_pair(lab)
    (old,) = _guard_pids(lab, "n1")
    with Watch(lab) as w:
        os.kill(old, signal.SIGKILL)
        wait_until(
            lambda: len(_guard_pids(lab, "n1")) == 1 and _guard_pids(lab, "n1") != [old],
            5,
            interval=0.01,
            message="a new fence guard in place of the killed one",
        )
        time.sleep(0.5)
    assert "fence guard: died" in lab.agent_log("n1")
    assert all(present for _, present in w.events["n1"]), "a dying guard must not touch the VIP"
    assert lab.holds_vip("n1") and not lab.holds_vip("n2")


def test_clean_stop_guard_exits_quietly(lab: Lab) -> None:
    _start_pair(lab)
    assert len(_guard_pids(lab, "n1")) == 1
    lab.kill_agent("n1", signal.SIGTERM)
    wait_until(
        lambda: not _guard_pids(lab, "n1"),
        5,
        interval=0.01,
        message="the guard to exit with the stopped agent",
    )
    log = lab.agent_log("n1")
    assert "the agent is gone" not in log and "fence guard: exited" not in log
    lab.wait_for("n2", timeout=10)
