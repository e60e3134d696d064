"""Lease arbitration rules on an in-memory store with the API server's CAS semantics, fake clock."""

from __future__ import annotations

import asyncio

import pytest

from hacluster_agent.arbiter.lease import Arbiter, LeaseView, MemoryLeaseStore

WINDOW = 0.2


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.hooks: list[tuple[float, object]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.now += s
        for when, fn in list(self.hooks):
            if self.now >= when:
                self.hooks.remove((when, fn))
                await fn()  # type: ignore[operator]


def pair(store: MemoryLeaseStore, t: FakeTime) -> tuple[Arbiter, Arbiter]:
    a = Arbiter(store, "a", window=WINDOW, clock=t.clock, sleep=t.sleep)
    b = Arbiter(store, "b", window=WINDOW, clock=t.clock, sleep=t.sleep)
    return a, b


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_first_taker_creates_the_lease_at_epoch_1() -> None:
    store, t = MemoryLeaseStore(), FakeTime()
    a, _ = pair(store, t)
    v = run(a.take())
    assert v.granted and v.epoch == 1 and store.view and store.view.holder == "a"


def test_silent_dead_owner_is_replaced_after_the_window_and_epoch_rises() -> None:
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    run(a.take())
    v = run(b.take())
    assert v.granted and v.epoch == 2
    assert t.now >= WINDOW, "must wait a full window for a renewal"


def test_live_owner_renewing_within_the_window_keeps_it() -> None:
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    run(a.take())
    t.hooks.append((WINDOW / 2, a.renew))
    v = run(b.take())
    assert not v.granted and "heartbeat link is down" in v.reason
    assert store.view and store.view.holder == "a" and store.view.transitions == 1


def test_owner_that_lost_the_lease_learns_it_on_renew() -> None:
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    run(a.take())
    run(b.take())
    v = run(a.renew())
    assert not v.granted and "lost" in v.reason


def test_released_lease_is_taken_at_once() -> None:
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    run(a.take())
    assert run(a.release()).granted
    v = run(b.take())
    assert v.granted and v.epoch == 2 and t.now == 0.0


def test_api_server_down_is_unavailable_never_granted() -> None:
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    run(a.take())
    store.down = True
    v = run(b.take())
    assert not v.granted and v.unavailable
    r = run(a.renew())
    assert not r.granted and r.unavailable


def test_cas_race_only_one_wins() -> None:
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    run(a.take())
    run(a.release())

    async def both() -> tuple[bool, bool]:
        va, vb = await asyncio.gather(a.take(), b.take())
        return va.granted, vb.granted

    ga, gb = run(both())
    assert ga != gb


def test_owner_heard_again_during_the_window_is_not_replaced() -> None:
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    run(a.take())
    heard = {"again": False}

    async def hear() -> None:
        heard["again"] = True

    t.hooks.append((WINDOW / 2, hear))
    v = run(b.take(lambda: not heard["again"]))
    assert not v.granted and "heard again holding the groups" in v.reason
    assert store.view and store.view.holder == "a" and store.view.transitions == 1


def test_hand_back_gives_the_lease_to_the_peer_with_a_new_epoch() -> None:
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    run(a.take())
    run(b.take())
    v = run(b.hand_back("a"))
    assert v.granted and v.epoch == 3 and store.view and store.view.holder == "a"
    assert run(a.renew()).granted  # the peer keeps proving itself as before
    assert run(b.hand_back("a")).reason == "not ours"


def test_renew_of_a_free_lease_that_loses_its_swap_is_lost_not_an_exception() -> None:
    """The Lease was recreated empty and the peer wrote it between our read and our claim: the
    renewal answers "lost" (the owner fences itself) instead of raising Conflict out of the agent's
    request task, which left the engine waiting for an answer for good."""
    store, t = MemoryLeaseStore(), FakeTime()
    a, _ = pair(store, t)
    assert run(a.take()).granted
    assert store.view is not None
    run(store.swap(store.view, "", store.view.transitions))  # recreated empty (the operator)
    real_get = store.get

    async def get_then_peer_writes():  # type: ignore[no-untyped-def]
        seen = await real_get()
        if seen is not None and seen.holder == "":
            await store.swap(seen, "b", seen.transitions + 1)  # the peer claims it meanwhile
        return seen

    store.get = get_then_peer_writes  # type: ignore[method-assign]
    v = run(a.renew())
    assert not v.granted and "someone else" in v.reason


def test_a_take_with_a_hold_off_counts_the_window_from_the_last_change() -> None:
    """The owner went silent after we heard it (the engine's `hold_off`): the Lease unchanged since
    our periodic read long ago means no renewal since, so the take need not watch a new window."""
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    run(a.take())
    t.now = 0.05
    run(b.look())  # the agent's periodic read
    t.now = 1.0
    v = run(b.take(hold_off=0.0))
    assert v.granted and v.epoch == 2 and t.now == 1.0
    assert "unchanged for 950ms" in v.reason


@pytest.mark.parametrize(
    ("hold_off", "window", "granted_at"),
    [(0.03, None, 1.03), (None, None, 1.0 + WINDOW), (None, 0.5, 1.5)],  # (the peer's W, if longer)
)
def test_a_take_long_after_the_last_change_waits_its_hold_off_or_without_one_a_window(
    hold_off: float | None, window: float | None, granted_at: float
) -> None:
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    run(a.take())
    run(b.look())
    t.now = 1.0
    v = run(b.take(hold_off=hold_off, window=window))
    assert v.granted and t.now >= granted_at - 1e-9


def test_a_write_since_the_last_look_means_a_full_window_and_a_live_owner_keeps_it() -> None:
    """The owner renewed after our last read: its version is new to the take, whose window starts
    now; a renewal within it proves the owner alive."""
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    run(a.take())
    run(b.look())
    t.now = 0.5
    run(a.renew())
    t.now = 1.0
    t.hooks.append((1.0 + WINDOW / 2, a.renew))
    v = run(b.take(hold_off=0.0))
    assert not v.granted and "heartbeat link is down" in v.reason
    t.now = 2.0
    v = run(b.take(hold_off=0.0))  # the renewal at 1.1 was read by the refused take: since = 1.1
    assert v.granted and t.now == 2.0


def test_a_take_from_a_silent_holder_says_it_took_it_over_and_a_free_one_does_not() -> None:
    """lease.Verdict.taken_over: the engine then waits for the old holder's node fence."""
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    assert not run(a.take()).taken_over  # created
    v = run(b.take())
    assert v.granted and v.taken_over
    run(b.release())
    v = run(a.take())
    assert v.granted and not v.taken_over  # free


# -- a Lease the operator recreated (arbiter/recreate.py) ------------------------------------------


def _recreated(store: MemoryLeaseStore, holder: str, transitions: int) -> None:
    store.counter += 1
    store.view = LeaseView(holder, transitions, str(store.counter), recreated=True)


@pytest.mark.parametrize("holder", ["", "a", "b"])
def test_a_recreated_lease_is_taken_only_after_a_window_whoever_it_names(holder: str) -> None:
    """Its holder is the operator's stale guess: "already ours" or "free" proves nothing (the full
    stack: recreated naming the old owner at the new owner's epoch)."""
    store, t = MemoryLeaseStore(), FakeTime()
    a, _ = pair(store, t)
    _recreated(store, holder, 5)
    v = run(a.take())
    assert v.granted and v.taken_over and t.now >= WINDOW
    assert v.epoch == 6 and store.view is not None and not store.view.recreated  # above it, ours


def test_a_recreated_lease_renewed_by_its_real_owner_within_the_window_is_not_taken() -> None:
    store, t = MemoryLeaseStore(), FakeTime()
    a, b = pair(store, t)
    _recreated(store, "", 5)
    t.hooks.append((WINDOW / 2, b.renew))  # b serves: its read of the recreated Lease renews it
    v = run(a.take())
    assert not v.granted and store.view is not None and store.view.holder == "b"
    assert store.view.transitions == 6 and not store.view.recreated


def test_the_owner_renewing_a_recreated_lease_naming_the_peer_has_lost() -> None:
    store, t = MemoryLeaseStore(), FakeTime()
    a, _ = pair(store, t)
    run(a.take())
    _recreated(store, "b", 3)
    v = run(a.renew())
    assert not v.granted and "held by b" in v.reason
    _recreated(store, "a", 3)  # naming us: renewed, ours again (above every epoch we saw)
    v = run(a.renew())
    assert v.granted and store.view is not None and not store.view.recreated
