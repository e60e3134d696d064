"""The kernel fence's rules on a fake clock: Engine.serve_until (when this node may answer for its
VIPs, whatever happens to its processes) and kernelfence.next_write (what the agent writes). The
fence itself, on a real kernel, is tests/netns/test_kernel_fence.py."""

from __future__ import annotations

import math

from hacluster_agent.engine.membership import FENCE_HORIZON, FENCE_MARGIN
from hacluster_agent.resources.kernelfence import REFRESH_STEP, Write, next_write, sync_interval, table_name
from tests.unit.test_engine import DEADTIME
from tests.unit.test_engine_arbitrated import ArbitratedPair, engine


def settled() -> ArbitratedPair:
    p = ArbitratedPair()
    p.start()
    p.run(3.0)
    assert engine(p, "a").hold and not engine(p, "b").hold
    return p


def test_the_owner_may_answer_a_horizon_ahead_and_the_standby_not_at_all() -> None:
    p = settled()
    a, b = engine(p, "a"), engine(p, "b")
    until = a.serve_until(p.now)
    assert until is not None and p.now < until <= p.now + FENCE_HORIZON
    assert b.serve_until(p.now) == -math.inf


def test_the_heard_certificate_is_deadtime_after_the_status_the_peer_reports() -> None:
    p = settled()
    a = engine(p, "a")
    a.proven_at = None  # the Lease certificate alone would not reach this far
    heard = a.peer.heard_us_at
    assert heard is not None
    far = p.now - FENCE_HORIZON  # look from a moment when the horizon is not what limits it
    until = a.serve_until(far)
    assert until is not None and until <= heard + DEADTIME - FENCE_MARGIN
    a.peer.epoch = 7  # the peer claims the Lease: it has declared us dead once already
    assert a.serve_until(far) == -math.inf


def test_a_stopped_clock_closes_the_fence_until_the_owner_proved_itself_again() -> None:
    p = settled()
    a = engine(p, "a")
    a.clocks(p.now, 1000.0)
    actions = a.clocks(p.now + 0.01, 1000.0 + 0.01 + 1.0)  # the wall clock went on for 1 s more
    assert any(getattr(x, "kind", None) == "renew" for x in actions), actions
    assert a.serve_until(p.now + 0.01) == -math.inf
    assert a.clocks(p.now + 0.02, 1001.02) == []  # both moved together: nothing to say


def test_standalone_and_take_over_without_arbiter_have_no_fence() -> None:
    p = ArbitratedPair(take_over_without_arbiter=True)
    p.start()
    p.run(3.0)
    assert engine(p, "a").serve_until(p.now) is None


def test_the_writes_follow_the_deadline_at_most_one_per_refresh_step() -> None:
    assert next_write(None, None, 0.0) is None  # no fence
    assert next_write(-math.inf, None, 0.0) == Write(None)  # unknown -> close
    assert next_write(-math.inf, -math.inf, 0.0) is None  # already closed
    assert next_write(0.5, None, 0.4) == Write(timeout=0.09999999999999998)
    assert next_write(0.5 + REFRESH_STEP / 2, 0.5, 0.45) is None  # too little gained
    assert next_write(0.52, 0.5, 0.45) is not None
    assert next_write(0.45, 0.5, 0.40) is not None  # an earlier deadline is written at once
    assert next_write(0.3, 0.5, 0.4) == Write(None)  # already past: close


def test_names_and_intervals() -> None:
    a, b = table_name("a-b", "c"), table_name("a", "b-c")
    assert a.startswith("hacluster_a_b_c_") and b.startswith("hacluster_a_b_c_") and a != b
    assert len(table_name("n" * 63, "c" * 253)) < 256  # nftables' limit
    assert sync_interval(0.2) == 0.025 and sync_interval(0.1) == 0.1 / 8


def test_a_late_refresh_is_counted_as_a_lapse_and_a_certificate_end_is_not() -> None:
    """The agent was not scheduled for longer than the horizon while it could serve: the VIP went
    dark without any fault of the pair's (seen as a 100 ms client outage in the chaos campaign,
    sigkill-standby on a loaded host). The operator sees it in the log and a counter."""
    from ipaddress import IPv4Address

    from hacluster_agent.resources.kernelfence import KernelFence

    now = [100.0]
    written: list[str] = []
    f = KernelFence("t", [IPv4Address("192.0.2.100")], run=written.append, clock=lambda: now[0])
    f.install()
    f.keep(now[0] + FENCE_HORIZON)  # capped by the horizon: refreshes are due
    now[0] += FENCE_HORIZON + 0.05  # the writer stalled: it ran out 50 ms ago
    f.keep(now[0] + FENCE_HORIZON)
    assert f.lapses == 1 and abs(f.last_lapse - 0.05) < 1e-6
    f.keep(now[0] + 0.03)  # a certificate ends in 30 ms (below the horizon): it is let run out
    now[0] += 0.2
    f.keep(now[0] + FENCE_HORIZON)  # a renewal granted later opens it again: not the writer's fault
    assert f.lapses == 1
