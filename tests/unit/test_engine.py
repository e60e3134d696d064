"""The membership engine on a fake clock: two engines wired back to back, no sockets, no sleeps."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from hacluster_agent.engine.actions import (
    Acquire,
    Action,
    Announce,
    LinkChanged,
    PeerChanged,
    Release,
    Send,
    Side,
)
from hacluster_agent.engine.membership import Engine, EngineConfig
from hacluster_agent.wire.message import Message

KEEPALIVE, DEADTIME, WARNTIME, INITDEAD = 0.1, 0.5, 0.25, 1.0


def cfg(node: str, peer: str, gen: int = 1, **kw: object) -> EngineConfig:
    base: dict[str, object] = dict(
        node=node, peer=peer, keepalive=KEEPALIVE, deadtime=DEADTIME, warntime=WARNTIME,
        initdead=INITDEAD, generation=gen, has_local=(node == "a"), has_foreign=(node == "b"),
    )  # fmt: skip
    base.update(kw)
    return EngineConfig(**base)  # type: ignore[arg-type]


@dataclass
class Node:
    engine: Engine
    up: bool = True
    holds: set[str] = field(default_factory=set)
    log: list[Action] = field(default_factory=list)


class Pair:
    """Two engines, a wire between them per medium, resources that start and stop instantly."""

    def __init__(self, a: EngineConfig, b: EngineConfig, media: tuple[str, ...] = ("eth0",)) -> None:
        self.now = 0.0
        self.nodes = {"a": Node(Engine(a)), "b": Node(Engine(b))}
        self.media = media
        self.cut: set[tuple[str, str, str]] = set()  # (from, to, medium)
        self.timeline: list[tuple[float, str, frozenset[str]]] = []

    def start(self, *names: str) -> None:
        for n in names or ("a", "b"):
            self.nodes[n].up = True
            self.apply(n, self.nodes[n].engine.start(self.now, 1_700_000_000 + self.now))

    def apply(self, name: str, actions: list[Action]) -> None:
        node = self.nodes[name]
        for act in actions:
            node.log.append(act)
            if isinstance(act, Send):
                self.deliver(name, act.message)
            elif isinstance(act, (Acquire, Release)):
                sides = {s.value for s in act.sides}
                if isinstance(act, Acquire):
                    node.holds |= sides
                else:
                    node.holds -= sides
                self.timeline.append((self.now, name, frozenset(node.holds)))
                self.apply(name, node.engine.resources_done(act.op, True, "ok", self.now))

    def deliver(self, src: str, msg: Message) -> None:
        dst = "b" if src == "a" else "a"
        if not self.nodes[dst].up or not self.nodes[src].up:
            return
        for medium in self.media:
            if (src, dst, medium) not in self.cut:
                self.apply(dst, self.nodes[dst].engine.receive(msg, medium, self.now))

    def run(self, seconds: float) -> None:
        """Advance the fake clock, waking each engine exactly at its next deadline."""
        end = self.now + seconds
        while True:
            live = [(n.engine.next_deadline(), k) for k, n in self.nodes.items() if n.up]
            if not live:
                self.now = end
                return
            when, name = min(live)
            if when > end:
                self.now = end
                return
            self.now = max(self.now, when)
            self.apply(name, self.nodes[name].engine.tick(self.now))

    def kill(self, name: str) -> None:
        """The node dies; its VIP goes with it (the kernel lifetime, or the machine itself)."""
        self.nodes[name].up = False
        self.nodes[name].holds.clear()
        self.timeline.append((self.now, name, frozenset()))

    def owners(self) -> dict[str, set[str]]:
        return {k: set(n.holds) for k, n in self.nodes.items() if n.holds}

    def cut_link(self, medium: str = "eth0", one_way: tuple[str, str] | None = None) -> None:
        pairs = [one_way] if one_way else [("a", "b"), ("b", "a")]
        for s, d in pairs:
            self.cut.add((s, d, medium))

    def events(self, name: str, kind: type) -> list[Action]:
        return [a for a in self.nodes[name].log if isinstance(a, kind)]


def pair(**kw: object) -> Pair:
    return Pair(cfg("a", "b", **kw), cfg("b", "a", **kw))


def test_both_start_home_node_takes_its_group() -> None:
    p = pair()
    p.start()
    p.run(0.5)
    assert p.owners() == {"a": {"local"}}


def test_owner_silence_is_detected_at_deadtime_not_before() -> None:
    p = pair()
    p.start()
    p.run(1.0)
    killed_at = p.now
    p.kill("a")
    p.run(DEADTIME - KEEPALIVE - 0.001)
    assert "b" not in p.owners(), "declared dead before deadtime"
    p.run(0.2)
    assert p.owners() == {"b": {"foreign"}}
    took = next(t for t, n, h in p.timeline if n == "b" and h)
    # the last status left a at most one keepalive before the kill; detection is exact (no 250ms poll)
    assert killed_at - KEEPALIVE + DEADTIME - 1e-9 <= took <= killed_at + DEADTIME + 1e-9
    dead = [e for e in p.events("b", PeerChanged) if isinstance(e, PeerChanged) and not e.alive]
    assert dead and "silent for" in dead[0].reason


def test_lone_node_waits_initdead_then_takes_everything() -> None:
    p = Pair(cfg("a", "b"), cfg("b", "a"))
    p.start("a")
    p.nodes["b"].up = False
    p.run(INITDEAD - 0.01)
    assert p.owners() == {}
    p.run(0.02)
    assert p.owners() == {"a": {"local"}}


def test_late_heartbeat_warns_but_does_not_kill() -> None:
    p = pair()
    p.start()
    p.run(0.5)
    p.cut_link()
    p.run(WARNTIME + 0.05)
    p.cut.clear()
    p.run(0.3)
    notes = [a for a in p.nodes["b"].log if getattr(a, "counter", None) == "late_heartbeat"]
    assert notes and "Late heartbeat" in notes[0].text  # type: ignore[attr-defined]
    assert p.owners() == {"a": {"local"}}


@pytest.mark.parametrize("auto_failback", [True, False])
def test_failback_follows_auto_failback(auto_failback: bool) -> None:
    p = pair(auto_failback=auto_failback)
    p.start()
    p.run(0.5)
    p.kill("a")
    p.run(1.0)
    assert p.owners() == {"b": {"foreign"}}
    # a restarts with a higher generation
    p.nodes["a"] = Node(Engine(cfg("a", "b", gen=2, auto_failback=auto_failback)))
    p.start("a")
    p.run(1.0)
    assert p.owners() == ({"a": {"local"}} if auto_failback else {"b": {"foreign"}})


def test_never_two_owners_during_failback() -> None:
    p = pair()
    p.start()
    p.run(0.5)
    p.kill("a")
    p.run(1.0)
    p.nodes["a"] = Node(Engine(cfg("a", "b", gen=2)))
    p.start("a")
    p.run(1.0)
    holders: dict[str, frozenset[str]] = {}
    for _, name, held in p.timeline:
        holders[name] = held
        assert sum(1 for h in holders.values() if h) <= 1, p.timeline


def test_standby_hands_over_gracefully_and_sticks() -> None:
    p = pair()
    p.start()
    p.run(0.5)
    p.apply("a", p.nodes["a"].engine.request_standby(p.now))
    p.run(0.5)
    assert p.owners() == {"b": {"foreign"}}
    p.run(2.0)
    assert p.owners() == {"b": {"foreign"}}, "standby must not bounce back"
    p.apply("a", p.nodes["a"].engine.request_takeover(p.now))
    p.run(0.5)
    assert p.owners() == {"a": {"local"}}


def test_takeover_refused_when_peer_is_down() -> None:
    p = pair()
    p.start("a")
    p.nodes["b"].up = False
    p.run(2.0)
    actions = p.nodes["a"].engine.request_takeover(p.now)
    assert not any(isinstance(a, Send) for a in actions)


def test_partition_both_take_then_heal_keeps_home_owner_without_interruption() -> None:
    p = pair()
    p.start()
    p.run(0.5)
    p.cut_link()
    p.run(1.0)
    assert p.owners() == {"a": {"local"}, "b": {"foreign"}}  # split brain, as Heartbeat
    p.cut.clear()
    p.run(0.5)
    assert p.owners() == {"a": {"local"}}
    a_released = [x for x in p.events("a", Release)]
    assert not a_released, "the home node must keep the group through the heal"
    assert p.events("a", Announce), "the keeper re-announces the VIP"


def test_the_home_node_announces_when_the_peer_returns_even_if_it_released_first() -> None:
    """The peer hears us first after a cut, releases at once and says it holds nothing: we never
    see two holders, yet the client may still have its MAC (test_failover.py: 2.7 s without
    service). The home node announces on the peer's return itself."""
    p = pair()
    p.start()
    p.run(0.5)
    p.cut_link()
    p.run(1.0)
    assert p.owners() == {"a": {"local"}, "b": {"foreign"}}
    a = p.nodes["a"].engine
    out = a.receive(Message.of(("t", "status"), ("st", "active"), ("src", "b"), ("seq", "ffff"),
                               ("hg", "1"), ("ts", "6b07fa08"), ("dt", "1f4"), ("protocol", "1")), "eth0", p.now)  # fmt: skip
    assert any(isinstance(x, Announce) for x in out), out


def test_shutdone_makes_peer_take_over_at_once() -> None:
    p = pair()
    p.start()
    p.run(0.5)
    before = p.now
    p.apply("a", p.nodes["a"].engine.shutdown(p.now))
    assert p.owners() == {"b": {"foreign"}}
    assert p.now == before


def test_one_medium_cut_marks_link_down_peer_alive() -> None:
    p = Pair(cfg("a", "b"), cfg("b", "a"), media=("eth0", "/dev/ttyS0"))
    p.start()
    p.run(0.5)
    p.cut_link("eth0")
    p.run(1.0)
    assert p.owners() == {"a": {"local"}}
    downs = [e for e in p.events("b", LinkChanged) if isinstance(e, LinkChanged) and not e.up]
    assert [d.medium for d in downs] == ["eth0"]
    snap = p.nodes["b"].engine.snapshot(p.now)
    assert snap["peer"]["links"]["eth0"]["up"] is False
    assert snap["peer"]["links"]["/dev/ttyS0"]["up"] is True
    assert snap["peer"]["state"] in ("up", "active")


def test_one_way_cut_owner_keeps_and_standby_takes() -> None:
    """a hears nothing from b but b still hears a: b stays standby; a only sees b dead."""
    p = pair()
    p.start()
    p.run(0.5)
    p.cut_link(one_way=("b", "a"))
    p.run(1.0)
    assert p.owners() == {"a": {"local"}}


def _status_from(peer: str, seq: int, gen: int, st: str = "active") -> Message:
    return Message.of(("t", "status"), ("st", st), ("dt", "1f4"), ("protocol", "1"), ("src", peer),
                      ("seq", f"{seq:x}"), ("hg", f"{gen:x}"), ("ts", "6b07fa08"))  # fmt: skip


def test_replay_of_old_generation_is_dropped_and_counted() -> None:
    e = Engine(cfg("b", "a"))
    e.start(0.0, 1e9)
    e.receive(_status_from("a", 1, gen=5), "eth0", 0.01)
    out = e.receive(_status_from("a", 2, gen=4), "eth0", 0.02)
    assert e.counters["rejected_replay"] == 1
    assert not any(isinstance(a, (Acquire, Release, Send)) for a in out)


def test_duplicate_seq_dropped_but_refreshes_link() -> None:
    e = Engine(cfg("b", "a"))
    e.start(0.0, 1e9)
    e.receive(_status_from("a", 1, gen=5), "eth0", 0.01)
    e.receive(_status_from("a", 1, gen=5), "ttyS0", 0.02)
    assert e.counters["duplicate"] == 1
    assert set(e.peer.links) == {"eth0", "ttyS0"}


def test_gap_requests_retransmission_and_history_is_served() -> None:
    e = Engine(cfg("b", "a"))
    e.start(0.0, 1e9)
    e.receive(_status_from("a", 1, gen=5), "eth0", 0.01)
    e.receive(_status_from("a", 4, gen=5), "eth0", 0.02)
    out = e.tick(0.2)
    asked = sorted(
        a.message["firstseq"] for a in out if isinstance(a, Send) and a.message.type == "NS_rexmit"
    )
    assert asked == ["2", "3"]
    req = Message.of(("t", "NS_rexmit"), ("dest", "b"), ("firstseq", "1"), ("lastseq", "2"),
                     ("src", "a"), ("hg", "5"), ("ts", "6b07fa08"))  # fmt: skip
    served = [a for a in e.receive(req, "eth0", 0.3) if isinstance(a, Send)]
    assert [m.message["seq"] for m in served] == ["1", "2"]


def test_messages_from_self_and_strangers_change_nothing() -> None:
    e = Engine(cfg("b", "a"))
    e.start(0.0, 1e9)
    assert e.receive(_status_from("b", 1, gen=5), "eth0", 0.01) == []
    out = e.receive(_status_from("mallory", 1, gen=5), "eth0", 0.01)
    assert e.counters["rejected_not_a_member"] == 1
    assert e.peer.alive is None and not any(isinstance(a, PeerChanged) for a in out)


def test_peer_advertised_deadtime_is_honoured() -> None:
    e = Engine(cfg("b", "a"))
    e.start(0.0, 1e9)
    msg = _status_from("a", 1, gen=5).without("dt").add("dt", "7d0")  # 2000 ms
    e.receive(msg, "eth0", 0.0)
    assert e.next_deadline() <= 0.1
    e.tick(1.9)
    assert e.peer.alive is True
    e.tick(2.0)
    assert e.peer.alive is False


# -- the real Heartbeat 3.0.6 as the peer: message sequences captured in tests/interop ------------


class RealPeer:
    """Messages exactly as a real Heartbeat 3.0.6 daemon (auto_failback on) put them on the wire."""

    def __init__(self, name: str = "a", gen: int = 0x6B07FA00) -> None:
        self.name, self.gen, self.seq = name, gen, 0

    def msg(self, *fields: tuple[str, str]) -> Message:
        self.seq += 1
        std = [("src", self.name), ("seq", f"{self.seq:x}"), ("hg", f"{self.gen:x}"),
               ("ts", "6b07fa08"), ("ld", "0.01 0.05 0.07 4/94 23071"), ("ttl", "3")]  # fmt: skip
        return Message.of(*fields, *std)

    def status(self, st: str = "active") -> Message:
        return self.msg(("t", "status"), ("st", st), ("dt", "1f4"), ("protocol", "1"))

    def resource(self, hold: str, stable: str | None, info: str | None = None) -> Message:
        fields = [("t", "resource"), ("rsc_hold", hold), ("rtype", "full")]
        fields += [("isstable", stable)] if stable is not None else []
        return self.msg(*fields, *([("info", info)] if info else []))

    def ask(self, info: str, hold: str = "all") -> Message:
        return self.msg(("t", "ask_resources"), ("rsc_hold", hold), ("info", info))


def _sent(actions: list[Action]) -> list[tuple[str | None, str | None, str | None]]:
    return [
        (a.message.type, a.message.get("info"), a.message.get("rsc_hold"))
        for a in actions
        if isinstance(a, Send)
    ]


def _resources(actions: list[Action]) -> list[Acquire | Release]:
    return [a for a in actions if isinstance(a, (Acquire, Release))]


def test_real_peer_standby_we_take_only_on_its_done_then_answer_done() -> None:
    """hb_standby on the real daemon: me, (our other), resource none isstable=0 info=standby while it
    still releases, then done. Taking at the isstable=0 message put the VIP on both nodes; not
    answering done left the real daemon in its standby state (later standby requests ignored)."""
    e = Engine(cfg("b", "a"))  # ours: b, no home groups; the real a holds its own group
    e.start(0.0, 1e9)
    real = RealPeer()
    e.receive(real.status(), "eth0", 0.01)
    e.receive(real.resource("local", "1"), "eth0", 0.02)
    assert _sent(e.receive(real.ask("me"), "eth0", 0.1)) == [("ask_resources", "other", "all")]
    assert not _resources(e.receive(real.resource("none", "0", "standby"), "eth0", 0.12))
    assert not _resources(e.receive(real.status(), "eth0", 0.2) + e.tick(0.3))
    out = e.receive(real.ask("done"), "eth0", 0.4)
    (take,) = _resources(out)
    assert isinstance(take, Acquire) and take.sides == {Side.FOREIGN}
    done = e.resources_done(take.op, True, "ok", 0.45)
    assert _sent(done) == [("resource", None, "foreign"), ("ask_resources", "done", "all")]


def test_real_home_node_returns_failback_is_the_standby_handshake() -> None:
    """auto_failback on, the real home node restarts while we hold its group: the real daemon only
    takes its group back through ask_resources me/other/done (a bare release left it unowned)."""
    e = Engine(cfg("b", "a"))
    e.start(0.0, 1e9)
    real = RealPeer()
    e.receive(real.status(), "eth0", 0.01)
    e.receive(real.resource("local", "1"), "eth0", 0.02)
    (take,) = _resources(e.tick(2.0))  # the real daemon crashed: silent past deadtime, we take over
    e.resources_done(take.op, True, "ok", 2.12)
    assert e.hold == {Side.FOREIGN}
    back = RealPeer(gen=real.gen + 1)  # restarted: generation + 1, seq from 1
    for st in ("init", "up", "up", "active"):
        e.receive(back.status(st), "eth0", 3.0)
    e.receive(back.msg(("t", "starting")), "eth0", 3.01)
    assert not _resources(e.receive(back.resource("none", "0"), "eth0", 3.02)), "it is still starting"
    out = e.receive(back.resource("none", "1"), "eth0", 3.03)
    assert not _resources(out)
    assert _sent(out) == [("ask_resources", "me", "foreign")]
    (give,) = _resources(e.receive(back.ask("other", "foreign"), "eth0", 3.1))
    assert isinstance(give, Release) and give.sides == {Side.FOREIGN}
    assert _sent(e.resources_done(give.op, True, "ok", 3.15)) == [
        ("resource", None, "none"),
        ("ask_resources", "done", "foreign"),
    ]


def test_real_peer_shutting_down_unstable_resource_report_is_not_a_release() -> None:
    """heartbeat stop on the real daemon: resource none isstable=0 info=shutdown first (it is still
    releasing), shutdone when done. Only shutdone makes the group free."""
    e = Engine(cfg("a", "b"))  # ours: the home node, in standby; the real b holds our group
    e.start(0.0, 1e9)
    real = RealPeer("b")
    e.receive(real.status(), "eth0", 0.01)
    e.receive(real.resource("foreign", "1"), "eth0", 0.02)
    assert not _resources(e.receive(real.resource("none", "0", "shutdown"), "eth0", 1.0))
    (take,) = _resources(e.receive(real.msg(("t", "shutdone"), ("st", "dead")), "eth0", 1.3))
    assert isinstance(take, Acquire) and take.sides == {Side.LOCAL}


def test_hb_takeover_both_ways() -> None:
    """Heartbeat's hb_takeover is t=hb_takeover rsc_hold=all; the holder answers with hb_standby."""
    e = Engine(cfg("a", "b"))
    e.start(0.0, 1e9)
    real = RealPeer("b")
    e.receive(real.status(), "eth0", 0.01)
    (take,) = _resources(e.receive(real.resource("none", "1"), "eth0", 0.02))
    e.resources_done(take.op, True, "ok", 0.06)
    out = e.receive(real.msg(("t", "hb_takeover"), ("rsc_hold", "all")), "eth0", 1.0)
    assert _sent(out) == [("ask_resources", "me", "all")]
    assert _sent(e.request_takeover(2.0)) == [("hb_takeover", None, "all")]
