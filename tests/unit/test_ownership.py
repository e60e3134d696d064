"""The ownership tables (engine/ownership.py): their shape, docs/safety.md showing them as they are,
and the engine reading a failed fencing stop as fencing (never as an owner that may serve)."""

from __future__ import annotations

import math
from pathlib import Path

from hacluster_agent.engine.actions import Arbitrate, Release
from hacluster_agent.engine.ownership import (
    KUBE_TRANSITIONS,
    SERVES,
    STANDALONE_TRANSITIONS,
    Own,
    render,
    state_of,
)
from tests.unit.test_engine_arbitrated import ArbitratedPair, engine

REPO = Path(__file__).resolve().parents[2]


def reachable(table: dict[Own, frozenset[Own]], start: Own = Own.STANDBY) -> set[Own]:
    seen, todo = {start}, [start]
    while todo:
        for b in table[todo.pop()]:
            if b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def test_every_state_has_a_row_and_every_kubernetes_state_is_reached_and_left() -> None:
    for table in (KUBE_TRANSITIONS, STANDALONE_TRANSITIONS):
        assert set(table) == set(Own)
        assert all(a in table[a] for a in Own)  # an event may leave the state as it is
    assert reachable(KUBE_TRANSITIONS) == set(Own)
    assert reachable(STANDALONE_TRANSITIONS) == set(Own) - {Own.TAKING, Own.FENCING}
    for a in Own:  # no trap: from every state a node can get back to standby
        assert Own.STANDBY in reachable(KUBE_TRANSITIONS, a), a


def test_only_a_node_with_the_lease_serves_and_a_standby_never_starts_without_it() -> None:
    assert Own.TAKING not in SERVES and Own.FENCING not in SERVES and Own.STANDBY not in SERVES
    assert Own.STARTING not in KUBE_TRANSITIONS[Own.STANDBY]  # the Lease first, always
    assert Own.STARTING not in KUBE_TRANSITIONS[Own.FENCING]


def test_safety_md_shows_the_tables_as_they_are() -> None:
    text = (REPO / "docs" / "safety.md").read_text()
    assert render(True) in text, "docs/safety.md: the Kubernetes-mode table is not the engine's"
    assert render(False) in text, "docs/safety.md: the standalone table is not the engine's"


def test_a_failed_fencing_stop_stays_fencing_and_dark_until_a_retry_succeeds() -> None:
    """Before the table, a fencing stop that failed left flux empty and the groups held: the
    engine read as an owner, and only the missing Lease kept the fence closed."""
    p = ArbitratedPair()
    p.start()
    p.run(3.0)
    a = engine(p, "a")
    assert state_of(a) is Own.OWNER and a.epoch is not None
    out = a.lease_observed("b", a.epoch + 1, p.now)  # replaced while away: fence
    release = next(x for x in out if isinstance(x, Release))
    assert release.fence and state_of(a) is Own.FENCING
    a.resources_done(release.op, False, "the service would not stop", p.now + 0.1)
    assert a.hold and a.flux is None and a.release_retry is not None
    assert state_of(a) is Own.FENCING and a.own is Own.FENCING and not a.illegal
    assert a.serve_until(p.now + 0.1) == -math.inf


def test_a_lease_the_operator_recreated_is_renewed_and_one_naming_the_peer_at_our_epoch_fences() -> None:
    """A recreated Lease proves nobody's ownership (arbiter/recreate.py): the owner renews it at
    its next read (claiming it, or learning it lost). One naming the peer at our own epoch can only
    be a recreation below an epoch the operator never saw, then taken by the peer (sim seed
    100382): we are outranked, as by a higher epoch."""
    p = ArbitratedPair()
    p.start()
    p.run(3.0)
    a = engine(p, "a")
    assert state_of(a) is Own.OWNER and a.epoch is not None
    out = a.lease_observed("b", a.epoch, p.now, recreated=True)
    assert [x.kind for x in out if isinstance(x, Arbitrate)] == ["renew"] and state_of(a) is Own.OWNER
    assert a.lease_observed("", a.epoch + 1, p.now, recreated=True) == []  # one renewal at a time
    b = ArbitratedPair()
    b.start()
    b.run(3.0)
    a = engine(b, "a")
    assert a.epoch is not None
    assert a.lease_observed("b", a.epoch - 1, b.now) == []  # an older read: ignored
    out = a.lease_observed("b", a.epoch, b.now)
    assert any(isinstance(x, Release) and x.fence for x in out) and state_of(a) is Own.FENCING
