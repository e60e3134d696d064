"""Kubernetes mode on a fake clock: the engine asks a (simulated) Lease before taking over, the
owner renews when it loses its peer and fences itself when it cannot. Never two owners."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hacluster_agent.engine.actions import Acquire, Action, Arbitrate, FenceNode, Note, Release, Send, Side
from hacluster_agent.engine.membership import FENCE, UNHEARD, Engine
from hacluster_agent.wire.message import Message
from hacluster_api.transition import TransitionKind
from tests.unit.test_engine import DEADTIME, Pair, cfg

W, F = 0.2, 0.1  # arbitration window W, owner's renewal deadline F = W/2 (docs/safety.md)


@dataclass
class Lease:
    holder: str = ""
    transitions: int = 0
    renewed_at: float = -1.0
    written_at: float = 0.0  # its last write: the arbiter's `since` (it reads the Lease every 0.5 s)
    api_ok: dict[str, bool] = field(default_factory=lambda: {"a": True, "b": True})


class ArbitratedPair(Pair):
    def __init__(self, **kw: object) -> None:
        super().__init__(cfg("a", "b", arbitrated=True, **kw), cfg("b", "a", arbitrated=True, **kw))
        self.lease = Lease()
        self.later: list[tuple[float, str, Arbitrate, float]] = []

    def apply(self, name: str, actions: list[Action]) -> None:
        rest: list[Action] = []
        for act in actions:
            if isinstance(act, Arbitrate):
                self.nodes[name].log.append(act)
                if rest:
                    super().apply(name, rest)
                    rest = []
                self.arbitrate(name, act)
            else:
                rest.append(act)
        if rest:
            super().apply(name, rest)

    def arbitrate(self, name: str, act: Arbitrate) -> None:
        lease, ok = self.lease, self.lease.api_ok[name]
        eng = self.nodes[name].engine
        if not ok:
            delay = F if act.kind == "renew" else W
            self.later.append((self.now + delay, name, act, self.now))
            return
        if act.kind == "release":
            if lease.holder == name:
                lease.holder = ""
            return
        if act.kind == "handback":
            if lease.holder == name:
                lease.holder, lease.transitions = ("b" if name == "a" else "a"), lease.transitions + 1
            return
        if act.kind == "renew":
            if lease.holder == name:
                lease.renewed_at = lease.written_at = self.now
                self.apply(
                    name,
                    eng.arbitrated(act.op, True, "renewed", self.now, lease.transitions, sent_at=self.now),
                )
            else:
                self.apply(name, eng.arbitrated(act.op, False, "lost", self.now))
            return
        if lease.holder in ("", name):
            self._grant(name, act)
        elif act.hold_off is None:
            self.later.append((self.now + W, name, act, self.now))
        else:  # the window counts from the Lease's last write (lease.Arbiter.since)
            when = max(lease.written_at + W, self.now + act.hold_off)
            self.later.append((when, name, act, min(self.now, when - W)))

    def _grant(self, name: str, act: Arbitrate) -> None:
        taken_over = self.lease.holder not in ("", name)
        if self.lease.holder != name:
            self.lease.holder, self.lease.transitions = name, self.lease.transitions + 1
            self.lease.written_at = self.now
        self.apply(
            name,
            self.nodes[name].engine.arbitrated(
                act.op,
                True,
                "granted",
                self.now,
                self.lease.transitions,
                sent_at=self.now,
                taken_over=taken_over,
            ),
        )

    def settle(self, name: str, act: Arbitrate, asked: float) -> None:
        eng = self.nodes[name].engine
        if not self.lease.api_ok[name]:
            self.apply(
                name, eng.arbitrated(act.op, False, "API server unavailable", self.now, unavailable=True)
            )
        elif self.lease.holder in ("", name) or self.lease.renewed_at <= asked:
            # (the real arbiter compares resourceVersions: a write after its first read = alive)
            self._grant(name, act)
        else:
            self.apply(name, eng.arbitrated(act.op, False, "the owner renewed", self.now))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            live = [(n.engine.next_deadline(), k) for k, n in self.nodes.items() if n.up]
            when, name = min(live) if live else (end + 1, "")
            pending = min(self.later, default=None, key=lambda x: x[0])
            if pending is not None and pending[0] <= min(when, end):
                self.later.remove(pending)
                self.now = max(self.now, pending[0])
                if self.nodes[pending[1]].up:
                    self.settle(pending[1], pending[2], pending[3])
                continue
            if when > end:
                self.now = end
                return
            self.now = max(self.now, when)
            self.apply(name, self.nodes[name].engine.tick(self.now))

    def never_two_owners(self) -> None:
        held: dict[str, frozenset[str]] = {}
        for t, name, h in self.timeline:
            held[name] = h
            assert sum(1 for x in held.values() if x) <= 1, f"two owners at {t}: {self.timeline}"


def engine(p: Pair, name: str) -> Engine:
    return p.nodes[name].engine


def test_start_takes_the_lease_at_epoch_1() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    assert p.owners() == {"a": {"local"}}
    assert p.lease.holder == "a" and p.lease.transitions == 1 and engine(p, "a").epoch == 1


def _owner_killed(**kw: object) -> tuple[ArbitratedPair, float, float]:
    """The owner `a` killed after 0.5 s: the pair, when, and when `b` took the group."""
    p = ArbitratedPair(**kw)
    p.start()
    p.run(0.5)
    killed = p.now
    p.kill("a")
    p.run(DEADTIME + W + 0.2)
    assert p.owners() == {"b": {"foreign"}}
    assert p.lease.holder == "b" and p.lease.transitions == 2
    p.never_two_owners()
    return p, killed, next(t for t, n, h in p.timeline if n == "b" and h)


def test_dead_owner_standby_takes_after_window_epoch_rises() -> None:
    """The Lease unchanged for W already when the owner went silent: the standby takes it `hold_off`
    (3W/4 - k + drift, engine/window.py) after declaring it dead, not W after."""
    p, killed, took = _owner_killed()
    hold_off = 0.75 * W - 0.1 + 0.001 * DEADTIME
    assert killed + DEADTIME - 0.1 + hold_off - 1e-9 <= took <= killed + DEADTIME + hold_off + 1e-9
    take = next(a for a in p.nodes["b"].log if isinstance(a, Arbitrate) and a.kind == "take")
    assert take.hold_off is not None and abs(take.hold_off - hold_off) < 1e-9
    assert take.window == W  # the longer of ours and the peer's (hacwindow)


def test_dead_owner_without_the_early_window_costs_a_full_window() -> None:
    """The rule before issue 11 (`early_window=False`, kept for bench/failover.py's comparison):
    the window starts when the standby declares the owner dead."""
    _, killed, took = _owner_killed(early_window=False)
    assert took >= killed + DEADTIME - 0.1 + W - 1e-9


def test_a_take_at_initdead_watches_a_full_window() -> None:
    """Never heard (initdead): nothing says the owner has been proving itself, so the window
    starts at the take, as it always did."""
    b = Engine(cfg("b", "a", arbitrated=True))
    out = b.start(0.0, 1_700_000_000.0)
    t = 0.0
    while t < 2.0:
        t = b.next_deadline()
        out += b.tick(t)
    take = next(a for a in out if isinstance(a, Arbitrate) and a.kind == "take")
    assert take.hold_off is None


def test_cut_heartbeat_link_is_not_a_failover() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    p.cut_link()
    p.run(3.0)
    assert p.owners() == {"a": {"local"}}
    assert engine(p, "b").link_down and engine(p, "a").link_down
    assert p.lease.holder == "a" and p.lease.transitions == 1
    p.never_two_owners()
    p.cut.clear()
    p.run(1.0)
    assert p.owners() == {"a": {"local"}}
    assert not engine(p, "b").link_down


def test_owner_cut_from_peer_and_api_fences_before_standby_takes() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    p.cut_link()
    p.lease.api_ok["a"] = False
    p.run(2.0)
    assert p.owners() == {"b": {"foreign"}}
    a_release = next(t for t, n, h in p.timeline if n == "a" and not h)
    b_take = next(t for t, n, h in p.timeline if n == "b" and h)
    assert a_release < b_take
    p.never_two_owners()
    assert engine(p, "a").counters.get("self_fenced") == 1
    # the Note the daemon turns into hacluster_self_fencings_total
    assert len([a for a in p.nodes["a"].log if getattr(a, "counter", None) == "self_fenced"]) == 1


def test_api_server_down_for_both_stay_put_means_no_takeover() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    p.lease.api_ok["a"] = p.lease.api_ok["b"] = False
    p.kill("a")
    p.run(3.0)
    assert p.owners() == {}, "StayPut: without the arbiter the standby must not take over"


def test_api_server_down_take_over_policy_behaves_like_heartbeat() -> None:
    p = ArbitratedPair(take_over_without_arbiter=True)
    p.start()
    p.run(0.5)
    p.lease.api_ok["a"] = p.lease.api_ok["b"] = False
    p.kill("a")
    p.run(3.0)
    assert p.owners() == {"b": {"foreign"}}


def test_standby_releases_the_lease_and_peer_takes_it_with_a_new_epoch() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    p.apply("a", engine(p, "a").request_standby(p.now))
    p.run(1.0)
    assert p.owners() == {"b": {"foreign"}}
    assert p.lease.holder == "b" and p.lease.transitions == 2
    p.never_two_owners()


def test_frozen_pair_makes_no_automatic_move() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    p.apply("b", engine(p, "b").set_frozen(True, p.now))
    p.kill("a")
    p.run(2.0)
    assert p.owners() == {}
    p.apply("b", engine(p, "b").set_frozen(False, p.now))
    p.run(0.1)
    p.run(1.5)
    assert p.owners() == {"b": {"foreign"}}


def test_home_node_retries_the_lease_after_the_api_server_was_unreachable_at_start() -> None:
    """Found in CI: a cold first connection timed out, and the home node never asked again."""
    p = ArbitratedPair()
    p.lease.api_ok["a"] = False
    p.start()
    p.run(0.5)
    assert p.owners() == {}
    p.lease.api_ok["a"] = True
    p.run(2.0)
    assert p.owners() == {"a": {"local"}} and p.lease.holder == "a"


def test_an_unanswered_take_is_asked_again_every_second_not_every_deadtime() -> None:
    """Chaos, compound at 1 s / 10 s: the owner fenced itself while the API server was away and
    served again only 6.2 s after the API server was back (its next take was a deadtime later). A
    take the Lease refused still waits a deadtime; one nobody answered is retried every second."""
    p = ArbitratedPair(keepalive=1.0, deadtime=10.0, warntime=5.0, initdead=20.0)
    p.lease.api_ok["a"] = False
    p.start()
    p.run(2.0)
    assert p.owners() == {}
    p.lease.api_ok["a"] = True
    p.run(1.5)  # W for the unanswered take to come back, then at most a second to the next
    assert p.owners() == {"a": {"local"}} and p.lease.holder == "a"


def test_one_way_cut_owner_unheard_is_not_a_failover() -> None:
    """Found by bench/chaos.py: the standby cannot hear the owner, the owner still hears the
    standby (and so never lost its peer). The standby's statuses say so; the owner proves itself
    in the Lease, and nothing moves."""
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    p.cut_link(one_way=("a", "b"))
    p.run(3.0)
    assert p.owners() == {"a": {"local"}}
    assert p.lease.holder == "a" and p.lease.transitions == 1
    assert engine(p, "b").link_down and not engine(p, "a").link_down
    p.never_two_owners()
    p.cut.clear()
    p.run(1.0)
    assert p.owners() == {"a": {"local"}} and not engine(p, "b").link_down


def test_one_way_cut_owner_deaf_is_not_a_failover() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    p.cut_link(one_way=("b", "a"))
    p.run(3.0)
    assert p.owners() == {"a": {"local"}}
    assert p.lease.holder == "a" and p.lease.transitions == 1
    p.never_two_owners()


def test_both_holding_is_settled_by_the_lease_not_by_the_home_node_rule() -> None:
    """The home node comes back from a freeze still believing it holds its group while the peer
    holds it with the Lease: the Lease decides, the home node fences itself."""
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    p.nodes["a"].up = False  # frozen: no ticks, hears and says nothing, keeps its state
    p.run(DEADTIME + W + 0.5)
    assert "b" in p.owners() and p.lease.holder == "b" and p.lease.transitions == 2
    p.nodes["a"].up = True  # resumed, still holding (its fence guard aside)
    p.run(2.0)
    assert p.owners() == {"b": {"foreign"}}
    assert p.lease.holder == "b" and p.lease.transitions == 2


def test_a_vip_lost_while_frozen_is_restarted_only_after_the_lease_confirms() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    a = engine(p, "a")
    asked = a.hold_lost(p.now, "the address is gone from eth0")
    assert [x.kind for x in asked if isinstance(x, Arbitrate)] == ["renew"] and a.renewing
    p.apply("a", asked)  # the Lease still names a: confirmed, nothing released
    assert not a.renewing and a.lease_held and p.owners() == {"a": {"local"}}
    p.lease.holder, p.lease.transitions = "b", 2  # replaced meanwhile: the next loss fences
    p.apply("a", a.hold_lost(p.now, "the address is gone from eth0"))
    assert "a" not in p.owners() and a.counters.get("self_fenced") == 1
    assert engine(p, "b").hold_lost(p.now, "x") == []  # holds nothing: nothing to ask


class LossyPair(ArbitratedPair):
    """Drops every status that says "I cannot hear you" (the loss-delay trial lost it)."""

    def deliver(self, src: str, msg: Message) -> None:
        if msg.get(UNHEARD) is None:
            super().deliver(src, msg)


def test_peer_heard_again_during_the_window_is_not_taken_over() -> None:
    """Found by bench/chaos.py (loss and delay): the standby lost the owner for a deadtime, the owner
    never lost the standby and never learnt it (the "cannot hear you" status was lost too), then the
    standby heard the owner again while its take was still watching the Lease. The take is granted
    by then, but the owner is alive and holding: the standby hands the Lease back, starts nothing."""
    p = LossyPair()
    p.start()
    p.run(0.5)
    p.cut_link(one_way=("a", "b"))
    p.run(DEADTIME + 0.05)
    p.cut.clear()
    p.run(2.0)
    p.never_two_owners()
    assert p.owners() == {"a": {"local"}}
    # b's statuses over the working direction say which of a's statuses b last heard (hacheard): a renews
    # before b can declare it dead, so b's take is refused and nothing changes hands. (Before that
    # field: taken by b at epoch 2, handed back at 3.)
    assert p.lease.holder == "a" and p.lease.transitions == 1
    assert p.lease.renewed_at > 0.5
    assert not engine(p, "b").counters.get("handed_back")


def test_a_take_granted_after_the_peer_was_heard_holding_is_handed_back() -> None:
    """The race the rule above now rarely reaches: the grant lands after the owner was heard again
    holding the groups. Starting them would make two owners: the Lease goes back to it."""
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    b = engine(p, "b")
    assert b.peer.alive and b.peer.hold == frozenset({Side.FOREIGN})
    b.arbitration = Acquire(frozenset({Side.FOREIGN}), "peer a dead", TransitionKind.FAILOVER, 99)
    out = b.arbitrated(99, True, "granted", p.now, 2)
    assert [a for a in out if isinstance(a, Arbitrate)] == [Arbitrate("handback", 99, "a is alive")]
    assert not b.lease_held and b.flux is None and b.counters.get("handed_back") == 1


def test_a_status_heard_before_start_does_not_leave_the_node_up_instead_of_active() -> None:
    """Found by bench/chaos.py: a restarted agent opened its media, heard the peer while it waited
    for the API server, then start() reset its state to "up" for good: the operator saw it never
    become active and held a declared switchover back for 30 s."""
    p = ArbitratedPair()
    p.start("a")
    p.run(0.5)
    p.nodes["b"].up = True  # b's medium is open, its engine not started yet
    p.run(0.3)  # a's statuses reach b now
    assert engine(p, "b").counters.get("before_start", 0) > 0
    p.start("b")
    p.run(0.5)
    assert engine(p, "b").snapshot(p.now)["state"] == "active"


def test_take_is_still_wanted_only_while_the_peer_is_silent_or_holds_nothing_we_take() -> None:
    p = ArbitratedPair()
    b = engine(p, "b")
    assert not b.take_still_wanted()  # nothing pending
    p.start()
    p.run(0.5)
    p.kill("a")
    p.later.clear()
    p.run(DEADTIME + 0.05)  # b asks the Lease; keep its take pending
    assert b.arbitration is not None and b.take_still_wanted()  # a is silent
    b.peer.alive, b.peer.hold = True, None
    assert not b.take_still_wanted()  # heard again, holdings unknown: an owner proving itself
    b.peer.hold = frozenset(b.arbitration.sides)
    assert not b.take_still_wanted()  # heard again holding them
    b.peer.hold, b.peer.epoch = frozenset(), 3
    assert not b.take_still_wanted()  # holding nothing yet, but it holds the Lease (sim seed 1337)
    b.peer.epoch = None
    assert b.take_still_wanted()  # heard again holding nothing: a stale holder (both restarted)


def test_home_node_takes_its_group_again_after_a_renewal_answered_late() -> None:
    """Found by bench/chaos.py (a long run): the owner fenced itself (a renewal timed out under
    load); another renewal was in flight when the release ended, so the policy waited for it; its
    answer must wake the policy up, or nobody ever takes the group again."""
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    a = engine(p, "a")
    a.renewing = True
    fence = a.arbitrated(-1, False, "Lease renewal timed out", p.now, unavailable=True)
    a.renewing = True  # hold_lost's renewal, still in flight when the release ends
    p.apply("a", fence)
    assert not p.owners()
    p.run(0.5)
    assert not p.owners()  # waiting for the Lease's answer
    p.apply("a", a.arbitrated(-1, True, "renewed", p.now, p.lease.transitions))
    assert p.owners() == {"a": {"local"}}
    p.never_two_owners()


# -- rules that were the daemon's (issue 11: the daemon dispatches, the engine decides) ------------


def test_a_renewal_carries_its_deadline_of_half_the_window() -> None:
    """The renewal deadline is the engine's: W/2, so a slow API server makes the owner fence itself
    before the peer may take the Lease (W after the last granted write)."""
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    p.cut_link()
    p.run(1.0)
    renewals = [a for a in p.nodes["a"].log if isinstance(a, Arbitrate) and a.kind == "renew"]
    assert renewals and all(a.timeout == W / 2 for a in renewals)
    takes = [a for a in p.nodes["a"].log if isinstance(a, Arbitrate) and a.kind == "take"]
    assert takes and all(a.timeout is None for a in takes)  # a take waits for its answer


def test_a_declared_switchover_is_accepted_once_per_reading_of_the_lease() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    a = engine(p, "a")
    reading = ("a", p.lease.transitions)
    out = a.directives(p.now, *reading, handover_to="b")
    assert "switchover to b" in notes(out), "the owner hands its group over"
    p.apply("a", out)
    p.run(1.0)
    assert p.owners() == {"b": {"foreign"}}
    # the operator keeps the annotation until the move is done: the same reading asks nothing more
    assert "switchover to b" not in notes(a.directives(p.now, *reading, handover_to="b"))
    p.run(1.0)
    assert p.owners() == {"b": {"foreign"}}
    p.never_two_owners()


def notes(actions: list[Action]) -> list[str]:
    return [a.text for a in actions if isinstance(a, Note)]


def test_a_switchover_to_ourselves_or_while_holding_nothing_asks_nothing() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    b = engine(p, "b")
    p.apply("b", b.directives(p.now, "a", p.lease.transitions, handover_to="a"))  # b holds nothing
    a = engine(p, "a")
    p.apply("a", a.directives(p.now, "a", p.lease.transitions, handover_to="a"))  # to itself
    assert a.standby_asked_at is None and b.standby_asked_at is None
    assert p.owners() == {"a": {"local"}}


def test_the_hacluster_deleted_releases_everything_once() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    a = engine(p, "a")
    out = a.directives(p.now, "a", p.lease.transitions, release=True)
    assert "the HACluster is being deleted: releasing everything" in notes(out)
    p.apply("a", out)
    p.run(0.5)
    assert a.shutting_down and not a.hold
    assert "the HACluster is being deleted: releasing everything" not in notes(
        a.directives(p.now, "a", p.lease.transitions, release=True)
    )


def test_maintenance_freezes_and_thaws_through_the_same_reading() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    a = engine(p, "a")
    p.apply("a", a.directives(p.now, "a", p.lease.transitions, freeze=True))
    assert a.frozen
    p.apply("a", a.directives(p.now, "a", p.lease.transitions, freeze=False))
    assert not a.frozen


def test_restart_in_place_only_on_a_confirmed_claim() -> None:
    """The monitor's rule (was the daemon's): a stopped member is restarted in place only while we
    hold the Lease with nothing in flight and no renewal out, and the peer does not say it holds
    the group."""
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    a = engine(p, "a")
    held = frozenset({Side.LOCAL})
    assert a.restart_refused(held) is None
    a.renewing = True
    assert a.restart_refused(held) == "the Lease is being renewed"
    a.renewing = False
    a.lease_held = False
    assert a.restart_refused(held) == "the Lease is not ours"
    a.lease_held = True
    a.peer.hold = frozenset({Side.LOCAL})  # the peer claims our group (a healed partition)
    assert a.restart_refused(held) == "b says it holds the group"
    a.peer.hold = frozenset()
    a.flux = Acquire(frozenset({Side.LOCAL}), "test", TransitionKind.START)
    assert a.restart_refused(held) == "resources in flux"


# -- the node fence (EngineConfig.stop_budget: ha.cf's watchdog in Kubernetes mode) ----------------

BUDGET, WATCHDOG = 2.0, 5.0


class HangingPair(ArbitratedPair):
    """Fencing stops on the nodes in `hang` never end (a stop script stuck); in `fail`, they fail."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)
        self.hang: set[str] = set()
        self.fail: set[str] = set()

    def apply(self, name: str, actions: list[Action]) -> None:
        rest: list[Action] = []
        for act in actions:
            if isinstance(act, Release) and act.fence and name in self.hang | self.fail:
                super().apply(name, rest)
                rest = []
                self.nodes[name].log.append(act)
                if name in self.fail:
                    self.apply(
                        name, engine(self, name).resources_done(act.op, False, "stop failed", self.now)
                    )
            else:
                rest.append(act)
        super().apply(name, rest)


def fenced_pair(hang: str = "", fail: str = "") -> HangingPair:
    """A pair with a node fence whose owner `a` loses its peer and the API server after 0.5 s."""
    p = HangingPair(stop_budget=BUDGET, watchdog_timeout=WATCHDOG)
    p.start()
    p.run(0.5)
    p.hang |= {hang} - {""}
    p.fail |= {fail} - {""}
    p.cut_link()
    p.lease.api_ok["a"] = False
    return p


def test_a_self_fencing_stop_that_hangs_resets_the_node_at_the_budget() -> None:
    p = fenced_pair(hang="a")
    fencing = _step_until(p, "a", lambda act: isinstance(act, Release) and act.fence)
    reset = _step_until(p, "a", lambda act: isinstance(act, FenceNode))
    assert fencing + BUDGET - 0.011 <= reset <= fencing + BUDGET + 0.011, (fencing, reset)
    assert "2s" in p.events("a", FenceNode)[0].reason  # type: ignore[attr-defined]


def test_a_self_fencing_stop_that_fails_resets_the_node_at_once() -> None:
    p = fenced_pair(fail="a")
    p.run(1.0)
    (reset,) = p.events("a", FenceNode)
    assert "stop failed" in reset.reason


def test_the_standby_starts_services_after_the_peers_node_fence() -> None:
    """Statuses carry the node fence (hacfence = max(budget, T) + 2T, ms: an agent killed after its
    FenceNode, before the reset, feeds the watchdog once more; sim seed 856788); a take from a
    silent peer starts the addresses at once and the rest that long after the grant."""
    p = HangingPair(stop_budget=BUDGET, watchdog_timeout=WATCHDOG)
    p.start()
    p.run(0.5)
    status = next(a for a in p.nodes["a"].log if isinstance(a, Send) and a.message.get("t") == "status")
    assert status.message.get(FENCE) == "15000"  # max(2, 5) + 2 * 5 s
    assert engine(p, "b").peer.fence == 15.0
    p.kill("a")
    p.run(DEADTIME + W + 0.2)
    acquire = next(a for a in p.nodes["b"].log if isinstance(a, Acquire))
    granted = next(t for t, n, h in p.timeline if n == "b" and h)
    assert acquire.services_at is not None
    assert granted + 15.0 < acquire.services_at < granted + 15.0 + 0.03  # (+ 1000 ppm of drift)


def test_without_a_node_fence_nothing_is_advertised_or_waited_for() -> None:
    p = ArbitratedPair()
    p.start()
    p.run(0.5)
    assert all(FENCE not in a.message for a in p.nodes["a"].log if isinstance(a, Send))
    p.kill("a")
    p.run(DEADTIME + W + 0.2)
    assert next(a for a in p.nodes["b"].log if isinstance(a, Acquire)).services_at is None


def test_certificates_run_out_for_the_budget_while_holding_resets_the_node() -> None:
    """A loop that ran late learns of its loss late, but the peer takes over only once our
    certificates have run out: the budget counts from then (sim seed 3241)."""
    e = Engine(cfg("a", "b", arbitrated=True, stop_budget=BUDGET, watchdog_timeout=WATCHDOG))
    e.start(0.0, 1_700_000_000.0)
    e.tick(2.0)  # initdead: the peer dead, a take
    e.arbitrated(1, True, "granted", 2.0, 1, sent_at=2.0)  # Lease certificate: 2.0 + W
    e.resources_done(1, True, "ok", 2.01)
    assert e.hold
    out = e.tick(2.0 + W + BUDGET + 0.01)  # no renewal ever answered (a stalled loop, say)
    assert [a for a in out if isinstance(a, FenceNode)], out


def _step_until(p: Pair, name: str, seen: Callable[[Action], bool], limit: float = 10.0) -> float:
    """Run in 10 ms steps until `name` has emitted an action `seen` picks; the time it was seen."""
    end = p.now + limit
    while p.now < end:
        if any(seen(a) for a in p.nodes[name].log):
            return p.now
        p.run(0.01)
    raise AssertionError(f"not seen within {limit}s")


def test_an_unanswered_take_is_asked_again_at_once_when_the_lease_reads_again() -> None:
    """Chaos, compound at 100 ms / 300 ms (session 8): the API server restarted and the Lease was
    deleted; the operator recreated it 17 ms after the home node's last try, whose next try came
    1.1 s later, 95 ms past the campaign's recovery target. The agent's periodic read of the Lease
    (every 0.5 s) now asks again at once."""
    p = ArbitratedPair(keepalive=1.0, deadtime=10.0, warntime=5.0, initdead=20.0)
    p.lease.api_ok["a"] = False
    p.start()
    p.run(2.0)
    a = engine(p, "a")
    assert p.owners() == {} and a.next_arbitration is not None and a.next_arbitration > p.now + 0.1
    p.lease.api_ok["a"] = True
    p.apply("a", a.lease_observed("", 0, p.now))  # read: the Lease is there again
    assert a.next_arbitration is not None and a.next_arbitration <= p.now
    p.apply("a", a.tick(p.now))  # asked again at once, and granted (it is free)
    assert p.owners() == {"a": {"local"}} and p.lease.holder == "a"


def test_a_take_granted_but_read_later_than_w_starts_nothing_and_asks_again() -> None:
    """Sim seed 349654 (CI form): a take sent at 5.98 s was read at 9.0 s after a stalled loop; the
    peer had seen the write, waited out W and taken the Lease meanwhile; the stale grant started
    the VIP beside the peer's (12 ms). A grant read more than W after it was sent proves nothing:
    it starts nothing, and the take is asked again at once. The retry finds the Lease "already
    ours" but still waits out the peer's node fence when the late grant took it from the peer
    (seeds 115780, 119638: the retry lost that, and a service ran beside the peer's)."""
    e = Engine(cfg("a", "b", arbitrated=True, stop_budget=BUDGET, watchdog_timeout=WATCHDOG))
    e.start(0.0, 1_700_000_000.0)
    (take,) = [a for a in e.tick(2.0) if isinstance(a, Arbitrate)]  # initdead: the peer dead
    late = 2.0 + W + 0.05
    out = e.arbitrated(take.op, True, "granted", late, 1, sent_at=2.0, taken_over=True)
    assert not [a for a in out if isinstance(a, Acquire)] and not e.lease_held, out
    assert e.counters["late_grant"] == 1 and e.next_arbitration == late
    (again,) = [a for a in e.tick(late) if isinstance(a, Arbitrate)]
    assert again.kind == "take"
    out = e.arbitrated(again.op, True, "already ours", late + 0.01, 1, sent_at=late)
    (acquire,) = [a for a in out if isinstance(a, Acquire)]
    assert acquire.services_at is not None and acquire.services_at >= late + 0.01 + 10.0  # hacfence
    assert not e.late_take_over


def test_in_kubernetes_mode_planned_moves_are_the_operators_not_hactls() -> None:
    """One owner per kind of move (docs/architecture.md): hactl standby/takeover on a node would race
    the operator's handover-to; in Kubernetes mode they are refused, naming kubectl ha. The
    operator's switchover still moves the groups (test_a_declared_switchover_...)."""
    p = ArbitratedPair()
    p.start()
    p.run(3.0)
    owners = p.owners()
    assert owners == {"a": {"local"}}
    for name, kind in (("a", "standby"), ("b", "takeover")):
        refused, actions = engine(p, name).manual_move(p.now, kind)
        assert refused is not None and f"kubectl ha {kind}" in refused
        assert not [a for a in actions if isinstance(a, Send)]
        p.apply(name, actions)
        p.run(2.0)
        assert p.owners() == owners


def test_in_standalone_mode_hactl_moves_the_groups_as_heartbeat_does() -> None:
    p = Pair(cfg("a", "b"), cfg("b", "a"))
    p.start()
    p.run(3.0)
    assert p.owners() == {"a": {"local"}}
    refused, actions = p.nodes["a"].engine.manual_move(p.now, "standby")
    assert refused is None
    p.apply("a", actions)
    p.run(3.0)
    assert p.owners() == {"b": {"foreign"}}


def test_a_service_waiting_for_the_peers_node_fence_is_refused_once_the_lease_is_lost() -> None:
    """Sim seed 551716: the services of a take wait for the peer's node fence (Acquire.services_at);
    the Lease lost meanwhile means they must never start (services_refused), and the acquisition
    that ends without them is abandoned: no start failure, no standby, nothing left to fence."""
    e = Engine(cfg("a", "b", arbitrated=True, stop_budget=BUDGET, watchdog_timeout=WATCHDOG))
    e.start(0.0, 1_700_000_000.0)
    (take,) = [a for a in e.tick(2.0) if isinstance(a, Arbitrate)]
    out = e.arbitrated(take.op, True, "granted", 2.0, 1, sent_at=2.0, taken_over=True)
    (acquire,) = [a for a in out if isinstance(a, Acquire)]
    assert acquire.services_at is not None and e.services_refused() is None
    (renew,) = [a for a in e.clock_jumped(2.5, 1.0) if isinstance(a, Arbitrate)]
    e.arbitrated(renew.op, False, "the Lease is held by nobody: we lost it", 2.6)  # deleted
    refused = e.services_refused()
    assert refused is not None and "lost" in refused
    out = e.resources_done(acquire.op, False, f"service: not started: {refused}", 3.0)
    assert e.counters.get("acquire_abandoned") == 1 and not e.counters.get("acquire_failed")
    assert not e.hold and not e.self_standby and e.start_failed_at is None
    assert not [a for a in out if isinstance(a, (Acquire, Release))]
