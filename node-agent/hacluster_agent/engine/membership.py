"""The heartbeat membership engine: a sans-I/O state machine in the spirit of h11.

Events in (a verified message, a tick of the clock, a finished resource operation, an operator
request); actions out (send, acquire, release, announce, notes). Every timing rule of Heartbeat v1
(keepalive, warntime, deadtime, initdead, per-medium liveness, generation and sequence handling)
lives here and is testable with a fake clock.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec

from hacluster_api.transition import TransitionKind

from ..wire.errors import Reject
from ..wire.message import Message
from .actions import (
    Acquire,
    Action,
    Announce,
    Arbitrate,
    FenceNode,
    LinkChanged,
    Note,
    PeerChanged,
    Release,
    Send,
    Side,
    flip,
    hold_word,
    sides_of,
)
from .ordering import Ordering, Verdict
from .ownership import SERVES, Own, state_of, transitions
from .window import DRIFT, take_hold_off

HISTORY = 500  # sequenced messages kept for retransmission, as Heartbeat
STATUS_SENT_KEPT = 512  # send times of our last statuses, for the peer's HEARD reports
REXMIT_FIRST = 0.05
REXMIT_EVERY = 0.25
REXMIT_TRIES = 8
HOPFUDGE_TTL = "3"
FENCE_MARGIN = 0.005
"""Seconds the kernel fence closes before a certificate runs out: the kernel's timer granularity
(a jiffy, 1-4 ms) and the netlink call that installs it."""
FENCE_HORIZON = 0.1
"""The kernel fence is never written further ahead than this (s), whatever the certificates allow:
a VM paused while its agent was dead (killed just before the pause, or at the resume, before
its first look) answers for at most this long after it resumes, since the kernel's timers
stopped with it (sim seed 1463: 124 ms at 100 ms / 300 ms, up to 2.5 s at 500 ms / 3 s with the
certificates alone). The agent refreshes it every 25 ms (kernelfence.sync_interval), so its loop
may be late by 75 ms before the VIP blinks; a loop stalled longer is fenced by its guard anyway."""
CLOCK_JUMP = 0.02
"""Seconds the monotonic clock may fall behind the wall clock between two readings before we take
it for a stopped clock (a paused VM). NTP slews at most 0.5 ms/s; a loop stall moves both."""
FENCE_DRIFT = DRIFT
"""The clock-rate difference between the two nodes the fence allows for (1000 ppm; crystals are
within 100 ppm): each certificate is an interval the peer measures on its own clock."""
UNAVAILABLE_RETRY = 1.0
START_RETRIES = 3
"""Kubernetes mode: a group that failed to start on both nodes is started again by its home node
this many times (START_RETRY_AFTER apart) before the pair gives up on it (sim seed 311464: each
node's start failed once, and nobody ever started it again)."""
"""Seconds between takes while the API server does not answer (a refused take waits a deadtime)."""
RESEND_EVERY = 0.24  # Heartbeat resends (or naks) a given seq at most once per ~240 ms
# Heartbeat's message types (section 8 of the protocol notes): counted by name; anything else is
# counted as rx_unknown, so a peer cannot grow the counters (and the status snapshot) without bound.
KNOWN_TYPES = frozenset({"status", "starting", "resource", "ask_resources", "ip-request", "ip-request-resp",
                         "shutdone", "stonith", "reqnodes", "repnodes", "hb_takeover", "NS_rexmit",
                         "NS_nak_rexmit", "NS_ackmsg", "NS_st"})  # fmt: skip


@dataclass(frozen=True)
class EngineConfig:
    """Times are seconds (floats), so millisecond settings work."""

    node: str
    peer: str
    keepalive: float
    deadtime: float
    warntime: float
    initdead: float
    generation: int
    uuid: bytes = b"\0" * 16
    auto_failback: bool = True
    has_local: bool = True
    has_foreign: bool = True
    standby_timeout: float | None = None
    arbitrated: bool = False  # Kubernetes mode: a Lease decides who may hold the resources
    take_over_without_arbiter: bool = False  # whenArbiterUnavailable: TakeOver (Heartbeat's way)
    arbitration_window: float = 0.2  # W in docs/safety.md; the owner renews every W/4 meanwhile
    stop_budget: float | None = None
    """The node fence (Kubernetes mode): once we lose the right to hold the groups, everything must
    be stopped within this (s), or the node resets (FenceNode: its watchdog stops being fed). None:
    no node fence: a self-fencing stop that hangs is retried, and a service may outlive its VIP."""
    watchdog_timeout: float = 0.0
    """The watchdog's timeout (s): after FenceNode the node is down within it. With stop_budget, the
    bound the peer waits before starting services after taking over from us (`hacfence`)."""
    early_window: bool = True
    """A take after the owner went silent counts W from when the Lease last changed, not from the
    declaration (docs/safety.md, engine/window.py). False: the rule before issue 11, which costs a
    failover W; only `bench/failover.py` sets it, to print both side by side."""

    @property
    def present(self) -> frozenset[Side]:
        return frozenset(s for s, p in ((Side.LOCAL, self.has_local), (Side.FOREIGN, self.has_foreign)) if p)


@dataclass
class _Link:
    last: float
    up: bool = True


@dataclass
class _Peer:
    alive: bool | None = None  # None: not heard yet, still within initdead
    st: str | None = None
    last_status: float | None = None
    status_seq: int | None = None  # the seq of its last status we heard (we report it back)
    generation: int = 0  # its generation (hg), to report with status_seq
    heard_us_at: float | None = None  # when we sent the last status of ours it says it heard (our clock)
    deadtime: float = 0.0
    links: dict[str, _Link] = field(default_factory=dict)
    ordering: Ordering = field(default_factory=Ordering)
    hold: frozenset[Side] | None = None  # in OUR terms (their local is our foreign)
    epoch: int | None = None  # the Lease epoch it says it holds the groups at (Kubernetes mode)
    standby: bool = False
    flow_control: bool = True
    since: float = 0.0
    joined: bool = False  # first contact or return: failback and partition rules apply once
    stable: bool = True  # its last `resource` said isstable=1 (Heartbeat: take only when the other is stable)
    giving_up: str | None = None  # it sent ask_resources me (this rsc_hold): take nothing until its done
    giving_up_since: float = 0.0
    state_seq: tuple[int, int] | None = None  # (generation, seq) of its newest state message applied
    window: float | None = None  # its W (hacwindow), seconds
    lost_after_heard: bool = False  # declared dead after silence (not at initdead, nor shutdone)
    fence: float | None = None  # its node fence (hacfence): stopped or reset this long after losing the right


UNHEARD = "hacunheard"
"""Status field (Kubernetes mode): the sender hears nothing from the node it names."""
HEARD = "hacheard"
"""Status field (Kubernetes mode): `GEN:SEQ` (hex) of the last status the sender heard from the node
it sends to, or `-` if none. That node knows when it sent that status, on its own clock, so it
knows the sender cannot declare it dead before deadtime after that: it renews the Lease from then
on if it holds the groups, even while it still hears the sender (a link that loses or delays
more one way: the simulation's seeds 27 and 1254), whatever the transit time of the report."""
FENCE = "hacfence"
"""Status field (Kubernetes mode): the sender's node fence, in ms: once it loses the right to hold
the groups, its services are stopped or its node reset (watchdog) within this. A node that takes the
groups over from it silent starts their services only this long after its take (docs/safety.md)."""
HOLDS = "hacholds"
"""Status field (Kubernetes mode): what the sender holds (rsc_hold's word), in every status, so a
lost `resource` message cannot leave the peer believing it forever (sim seed 1081: a stale "it
holds my group" after a cut kept the home node from taking it back; nobody owned it)."""
STANDBY = "hacstandby"
"""Status field (Kubernetes mode): `1` while the sender is in standby (it gave its groups up, or
could not start them): the peer must take them. Only a `resource` message said so, and a lost one
left both nodes waiting for the other (sim seeds 1697, 2156 at 500 ms / 3 s)."""
WINDOW = "hacwindow"
"""Status field (Kubernetes mode): the sender's W in ms. The Lease certificate of serve_until
assumes the peer watches the Lease for W before it takes it: with a shorter W on the peer (a
change of W reaches the two agents one after the other) the shorter one counts."""
BUSY = "hacbusy"
"""Status field (Kubernetes mode): `1` while the sender's resources are starting or stopping
(Heartbeat's `isstable=0`). Only a `resource` message said when that ended, and a lost one left
the home node waiting for good (sim seed 2134 at 500 ms / 3 s)."""
EPOCH = "hacepoch"
"""Status and resource field (Kubernetes mode): the Lease epoch the sender holds the Lease (and so
the groups, or the right to start them) at.
A node that finds the peer holding its groups at a higher epoch was replaced (it was paused or
cut off): it removes its VIPs at once, without waiting for an API round trip."""


P = ParamSpec("P")


def _event(
    fn: Callable[Concatenate[Engine, P], list[Action]],
) -> Callable[Concatenate[Engine, P], list[Action]]:
    """An event entry point: after it, the ownership state must have moved along the table."""

    def run(self: Engine, /, *args: P.args, **kw: P.kwargs) -> list[Action]:
        out = fn(self, *args, **kw)
        return self._moved(fn.__name__, out)

    functools.update_wrapper(run, fn)  # its name and docstring
    return run


class Engine:
    """One node's view of a Heartbeat pair. Feed it events; execute the actions it returns."""

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        self.st = "init"
        self.seq = 0
        self.history: OrderedDict[int, Message] = OrderedDict()
        self.status_sent: OrderedDict[int, float] = OrderedDict()  # our status seq -> when sent
        self.ask_again_at: float | None = None  # Kubernetes mode: ask the peer again what it holds
        self.peer = _Peer(deadtime=cfg.deadtime)
        self.hold: frozenset[Side] = frozenset()
        self.flux: Acquire | Release | None = None
        self.op = 0
        self.self_standby = False
        self.standby_failed = False  # our standby came from a failed start, not a planned move
        self.start_failed_at: float | None = None  # our last failed start (reset by one that works)
        self.start_failures = 0  # failed starts in a row
        self.standby_asked_at: float | None = None
        self.standby_sides: frozenset[Side] = frozenset(Side)  # what our pending ask_resources me gives up
        self.done_owed: str | None = None  # taker's ask_resources done, sent once the acquisition ends
        self.shutting_down = False
        self.lease_held = False
        self.epoch: int | None = None
        self.arbitration: Acquire | None = None  # an acquisition waiting for the Lease
        self.renewing = False
        self.proven_at: float | None = None  # when our last granted take/renewal was sent
        self.took_at: float | None = None  # when our last take of the Lease was granted
        self.release_retry: tuple[float, Release] | None = None  # a failed release, tried again then
        self.clock_jump_at = -math.inf  # when our clock was last found to have stopped (clock_jumped)
        self.wall_skew: float | None = None  # wall - monotonic at the last clocks() reading
        self.renewal_early = False
        """The renewal in flight is a precaution (a quiet peer's take, a Lease the operator
        recreated), not an answer to a peer known to be taking over."""
        self.fence_owed: str | None = None  # the Lease was lost while resources were in flux
        self.node_fence_at: float | None = None  # stopped by then, or FenceNode (cfg.stop_budget)
        self.node_fenced = False  # FenceNode sent: the node is going down
        self.lapsed_at: float | None = None  # our certificates ran out then, while something may run
        self.next_arbitration: float | None = None
        self.retry_unanswered = False  # next_arbitration retries a take the API server did not answer
        self.late_take_over = False
        """A take granted from the peer was read too late to trust and is being asked again: the
        retry will find the Lease already ours, but the peer's services may still run (sim seeds
        115780, 119638)."""
        self.link_down = False  # the peer is silent but alive per the Lease
        self.unheard_until = (
            0.0  # the peer says it cannot hear us (a one-way cut): prove ourselves until then
        )
        self.frozen = False  # maintenance: no automatic moves
        self.last_directives: tuple[object, ...] | None = None  # the operator's word, as last read
        self.started = 0.0
        self.running = False  # start() was called: messages before it are not ours to judge
        self.wall0 = 0.0
        self.next_keepalive = 0.0
        self.rexmit: dict[int, tuple[float, int]] = {}
        self.resent: dict[int, float] = {}  # seq -> when we last answered an NS_rexmit for it
        self.counters: dict[str, int] = {}
        self.hold_since = 0.0
        self.last_transition: dict[str, Any] | None = None
        self.own = Own.STANDBY  # ownership.py: checked against its table after every event
        self.illegal: list[str] = []  # moves outside the table (a bug: the simulation fails on one)

    def _moved(self, event: str, out: list[Action]) -> list[Action]:
        new = state_of(self)
        old = self.own
        if new is not old:
            if new not in transitions(self.cfg.arbitrated)[old]:
                text = f"ownership: {old.value} -> {new.value} on {event} is not in the table (ownership.py)"
                self.illegal.append(text)
                self._count("illegal_transition")
                out.append(Note("error", text))
            self.own = new
        return out

    # -- events -------------------------------------------------------------------------------
    @_event
    def start(self, now: float, wall: float) -> list[Action]:
        """Begin: Heartbeat's start-up burst (status init, up, up), then one status per keepalive."""
        self.started, self.wall0, self.running = now, wall, True
        self.peer.since = self.hold_since = now
        out: list[Action] = [self._status(now, "init")]
        self.st = "up"
        out += [self._status(now, "up"), self._status(now, "up")]
        self.next_keepalive = now + self.cfg.keepalive
        return out

    @_event
    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        if now >= self.next_keepalive:
            out.append(self._status(now, self.st))
            self.next_keepalive += self.cfg.keepalive
            if self.next_keepalive <= now:
                self.next_keepalive = now + self.cfg.keepalive
        out += self._check_peer(now)
        out += self._check_links(now)
        out += self._ask_again(now)
        out += self._check_rexmit(now)
        early = self._early_renewal_at()
        if early is not None and now >= early:
            # The peer may declare us dead from now on (_quiet_at). Renew before it can read the
            # Lease, so its window sees us alive whatever the skew between our two detections (it
            # was up to a keepalive; sim: a single cut at 500 ms / 3 s overlapped 345 ms).
            self._count("early_renewal")
            quiet_ms = (now - (self.peer.last_status or now)) * 1000
            out += self._renew(
                f"{self.cfg.peer} may declare us dead from now on (heard {quiet_ms:.0f}ms ago)", early=True
            )
        if self.next_arbitration is not None and now >= self.next_arbitration:
            self.next_arbitration, self.retry_unanswered = None, False
            if self._must_prove(now):
                out += self._renew(
                    "peer still silent" if self.peer.alive is False else "peer still deaf to us"
                )
            else:  # the Lease said no (or could not answer): ask again, whatever the peer's state
                out += self._reconcile(now, "asking the Lease again")
        out += self._giving_up_expired(now)
        retry_at = self._start_retry_pending()
        if retry_at is not None and now >= retry_at:
            out += self._reconcile(now, "retrying the start")
        out += self._check_node_fence(now)
        out += self._retry_release(now)
        if (
            self.standby_asked_at is not None
            and self.cfg.standby_timeout is not None
            and now - self.standby_asked_at > self.cfg.standby_timeout
        ):
            self.standby_asked_at = None
            out.append(Note("warning", "standby: the peer did not answer; standby abandoned"))
            if not self.self_standby:  # an auto_failback request: ask again
                self.peer.joined = True
            out += self._reconcile(now)
        return out

    def next_deadline(self) -> float:
        """When tick() next has something to do: the driver sleeps exactly until then."""
        times = [self.next_keepalive]
        p = self.peer
        if p.alive is None:
            times.append(self.started + self.cfg.initdead)
        elif p.alive and p.last_status is not None:
            times.append(p.last_status + p.deadtime)
        times += [link.last + p.deadtime for link in p.links.values() if link.up]
        times += [t for t, _ in self.rexmit.values()]
        if self.standby_asked_at is not None and self.cfg.standby_timeout is not None:
            times.append(self.standby_asked_at + self.cfg.standby_timeout)
        given = self._giving_up_deadline()
        if given is not None:
            times.append(given)
        if self.release_retry is not None:
            times.append(self.release_retry[0])
        fence_due = self._node_fence_next()
        if fence_due is not None:
            times.append(fence_due)
        retry_at = self._start_retry_pending()
        if retry_at is not None:
            times.append(retry_at)
        if self.next_arbitration is not None:
            times.append(self.next_arbitration)
        early = self._early_renewal_at()
        if early is not None:
            times.append(early)
        if self.ask_again_at is not None:
            times.append(self.ask_again_at)
        return min(times)

    @_event
    def receive(self, msg: Message, medium: str, now: float) -> list[Action]:
        """A message that has already passed authentication."""
        if not self.running:
            # A medium opened before start(): the peer says it again within keepalive. Judged now,
            # it would make the peer known and then start() would reset our state under it.
            self._count("before_start")
            return []
        src = msg.get("src")
        if src is None or msg.type is None:
            return [self._reject(Reject.BAD_FIELDS, "message without t or src")]
        src = src.lower()
        if src == self.cfg.node:
            self._count("from_self")
            return []
        if src != self.cfg.peer:
            return [self._reject(Reject.NOT_A_MEMBER, f"message from {src!r}, not a node of the pair")]
        ts = msg.get("ts")
        if not ts or not _hex(ts):
            return [self._reject(Reject.BAD_FIELDS, "message without a valid ts")]
        t = msg.type
        gen = _hex(msg.get("hg") or "0") or 0
        seq_text = msg.get("seq")
        seq = _hex(seq_text) if seq_text is not None else None
        if not t.startswith("NS_") and seq is None:
            return [self._reject(Reject.BAD_FIELDS, f"{t} without a valid seq")]
        if self.peer.alive is None and t != "status" and not t.startswith("NS_"):
            # Before its first status no generation is known: a replayed shutdone (or resource) of
            # an earlier generation would pass as new. A live peer's next status comes within keepalive.
            return [self._reject(Reject.PEER_NOT_UP, f"{t} from {src} before its first status")]
        verdict, missing = self.peer.ordering.check(gen, seq)
        if verdict is Verdict.REPLAY:
            return [self._reject(Reject.REPLAY, f"{t} from {src} with old generation {gen}")]
        out = self._link_heard(medium, now)
        if verdict is Verdict.DUPLICATE:
            self._count("duplicate")
            return out
        for s in missing:
            self.rexmit[s] = (now + REXMIT_FIRST, 0)
        if seq is not None:
            self.rexmit.pop(seq, None)
        still_missing = self.peer.ordering.missing
        if len(self.rexmit) > len(still_missing):  # the ordering gave up on some (MAX_MISSING, MAX_GAP)
            for s in [s for s in self.rexmit if s not in still_missing]:
                del self.rexmit[s]
        if verdict is Verdict.RESTARTED:
            self.rexmit.clear()
            out.append(Note("info", f"{src} restarted (generation {gen})"))
            self.peer.hold = None
            self.peer.joined = True
            self.peer.stable, self.peer.giving_up = True, None
            if self.peer.alive:
                # It asks with `starting`, but that may arrive before its restart is known here (the
                # sim reordered starting/resource: n2 dropped `starting` as old, n1 waited forever for
                # what n2 holds): tell it now.
                out.append(self._resource_msg(now))
        dest = msg.get("dest")
        if dest is not None and dest.lower() != self.cfg.node:
            self._count("not_for_us")
            return out
        handler = getattr(self, "_on_" + t.replace("-", "_"), None)
        if handler is not None:
            out += handler(msg, now, seq)
        self._count(f"rx_{t}" if handler is not None or t in KNOWN_TYPES else "rx_unknown")
        return out

    def services_refused(self) -> str | None:
        """Asked by the driver right before it starts a member of a group other than its addresses
        (those an Acquire defers to `services_at` wait for the peer's node fence): why not, if the
        right to hold the groups was lost meanwhile; None: go on. Sim seed 551716 (the long run): a
        take's services waited 2 s for the peer's fence, the Lease was lost 0.4 s into the wait
        (deleted), and the service started 1.6 s later anyway, 237 ms beside the peer's."""
        if self.node_fenced:
            return "this node is being fenced"
        if self.fence_owed is not None:
            return f"the right to hold them was lost meanwhile ({self.fence_owed})"
        if self.cfg.arbitrated and not self.lease_held and not self.cfg.take_over_without_arbiter:
            return "the Lease is no longer ours"
        return None

    @_event
    def resources_done(self, op: int, ok: bool, reason: str, now: float) -> list[Action]:
        """The driver finished the Acquire or Release numbered `op`."""
        flux = self.flux
        if flux is None or flux.op != op:
            return [Note("warning", f"resource result for unknown operation {op}")]
        self.flux = None
        out: list[Action] = []
        if isinstance(flux, Release) and flux.fence and self.node_fence_at is not None:
            if not ok:  # (and it is retried below, in case the watchdog cannot act)
                out += self._node_fence(f"a self-fencing stop failed ({reason})")
            elif not (self.hold - flux.sides) and self.fence_owed is None:
                self.node_fence_at = None  # everything stopped within the budget
        if self.fence_owed is not None:
            after = self.hold
            if ok:
                after = self.hold | flux.sides if isinstance(flux, Acquire) else self.hold - flux.sides
            if after:
                self._set_hold(after, now, flux)
                reason, self.fence_owed = self.fence_owed, None
                return [self._fence(now, after, reason)]
            self.fence_owed = None
            if isinstance(flux, Acquire) and not ok:
                # Stopped before its services started (services_refused: the right to hold was lost
                # while they waited for the peer's node fence): nothing held, nothing to fence, and
                # not a start failure (no standby, no retry).
                self._count("acquire_abandoned")
                return [
                    Note("warning", f"acquisition abandoned: {reason}"),
                    self._resource_msg(now),
                    *self._reconcile(now),
                ]
        if isinstance(flux, Acquire):
            if ok:
                self._set_hold(self.hold | flux.sides, now, flux)
                self.start_failed_at, self.start_failures = None, 0
                out.append(self._resource_msg(now))
            else:
                self._count("acquire_failed")
                self.self_standby, self.standby_failed = True, True
                self.start_failed_at, self.start_failures = now, self.start_failures + 1
                if self.cfg.arbitrated and self.lease_held and not self.hold:
                    # Nothing started (the driver rolled back): free the Lease for the peer, and take
                    # it again before any later acquisition (sim seed 38).
                    self.lease_held = False
                    out.append(Arbitrate("release", 0, f"could not start resources: {reason}"))
                out.append(Note("error", f"could not start resources ({reason}); handing over to peer"))
                out.append(self._resource_msg(now, info="standby"))
        else:
            if ok:
                self._set_hold(self.hold - flux.sides, now, flux)
                if self.cfg.arbitrated and self.lease_held and not self.hold:
                    self.lease_held = False  # stopped first, then the Lease is freed for the peer
                    out.append(Arbitrate("release", 0, flux.reason))
            else:
                self._count("release_failed")
                out.append(Note("error", f"could not stop resources: {reason}; still holding them"))
                if self.cfg.arbitrated:
                    # Try again later, as long as it takes: a group left half-stopped (its VIP gone
                    # first, its service still up) was never touched again (sim seed 2838: the
                    # node won the Lease back and nobody owned the VIP for good).
                    again = Release(flux.sides, flux.reason, flux.kind, fence=flux.fence)
                    self.release_retry = (now + max(self.cfg.deadtime, 1.0), again)
            if self.shutting_down:
                if not self.hold:
                    out.append(self._send(now, Message.of(("t", "shutdone"), ("st", "dead"))))
                return out
            if self.standby_asked_at is not None:  # hb_standby, or auto_failback (foreign only)
                self.standby_asked_at = None
                word, self.standby_sides = hold_word(self.standby_sides), frozenset(Side)
                out.append(self._resource_msg(now, info="standby" if self.self_standby else None))
                out.append(self._send(now, _ask("done", word)))
            else:
                out.append(self._resource_msg(now))
        out += self._reconcile(now)
        if self.done_owed is not None and self.flux is None:
            # the taker's half of the standby handshake: Heartbeat leaves its standby state on it
            out.append(self._send(now, _ask("done", self.done_owed)))
            self.done_owed = None
        return out

    @_event
    def request_standby(self, now: float, reason: str = "standby requested") -> list[Action]:
        """hb_standby: hand everything we hold to the peer, gracefully."""
        if self.peer.alive is not True:
            return [Note("warning", f"{reason}: refused, the peer is not up")]
        if not self.hold and self.flux is None:
            return [Note("info", f"{reason}: nothing held here")]
        self.self_standby, self.standby_failed = True, False
        self.standby_asked_at = now
        self.standby_sides = frozenset(Side)
        return [Note("info", reason), self._send(now, _ask("me", "all"))]

    def manual_move(self, now: float, kind: str) -> tuple[str | None, list[Action]]:
        """hactl standby / takeover on this node: (why it is refused, or None; the actions). One
        owner per kind of move (docs/architecture.md): in Kubernetes mode every planned move is the
        operator's, through the Lease's handover-to (kubectl ha standby / takeover), so the agents
        never race it with one of their own."""
        if self.cfg.arbitrated:
            refused = f"hactl {kind}: in Kubernetes mode planned moves are the operator's: kubectl ha {kind}"
            return refused, [Note("warning", refused)]
        if kind == "standby":
            return None, self.request_standby(now, "hactl standby")
        return None, self.request_takeover(now)

    @_event
    def request_takeover(self, now: float) -> list[Action]:
        """hb_takeover: ask the peer to go standby so we take its groups."""
        if self.peer.alive is not True:
            return [Note("warning", "takeover: refused, the peer is not up")]
        self.self_standby = False
        # as Heartbeat's hb_takeover: the peer's rc.d/hb_takeover answers with hb_standby
        takeover = Message.of(("t", "hb_takeover"), ("rsc_hold", "all"))
        return [Note("info", "takeover requested"), self._send(now, takeover)]

    @_event
    def shutdown(self, now: float) -> list[Action]:
        """Release everything, then tell the peer with shutdone so it takes over at once."""
        self.shutting_down = True
        if self.flux is not None:
            return []  # resources_done will continue
        if self.hold:
            return [self._begin(Release(self.hold, "shutdown", TransitionKind.STOP))]
        return [self._send(now, Message.of(("t", "shutdone"), ("st", "dead")))]

    # -- message handlers ---------------------------------------------------------------------
    def _on_status(self, msg: Message, now: float, seq: int | None) -> list[Action]:
        p = self.peer
        out: list[Action] = []
        if p.last_status is not None and p.alive:
            gap = now - p.last_status
            if gap > self.cfg.warntime:
                self._count("late_heartbeat")
                out.append(Note("warning", f"Late heartbeat: node {self.cfg.peer}: interval "
                                f"{gap * 1000:.0f} ms", counter="late_heartbeat"))  # fmt: skip
        p.last_status = now
        p.st = msg.get("st")
        dt = msg.get("dt")
        p.deadtime = (_hex(dt) or 0) / 1000 if dt and _hex(dt) else self.cfg.deadtime
        if "protocol" not in msg and p.flow_control:
            p.flow_control = False
            out.append(Note("info", "flow control disabled due to different version heartbeat"))
        if not p.alive:
            if p.alive is False and Side.LOCAL in self.hold and not self.cfg.arbitrated:
                # Standalone, back after a partition: it may have taken our home groups and answered
                # ARP meanwhile. It releases as soon as it hears us (the home node keeps them), maybe
                # before we learn it held them: announce now, not only when we see it holding (the
                # client kept its MAC: 2.7 s without service after a heal, test_failover.py). In
                # Kubernetes mode the Lease decides who announces.
                out.append(Announce("the peer is back after a partition: it may have answered for our VIPs"))
            self.link_down, self.next_arbitration, self.retry_unanswered = False, None, False
            p.alive, p.since, p.joined, p.hold = True, now, True, None
            p.stable, p.giving_up = True, None
            self.st = "active"
            out.append(PeerChanged(self.cfg.peer, True, f"status {p.st}"))
            out.append(self._send(now, Message.of(("t", "starting"))))
            out.append(self._resource_msg(now))
        stale_hold = False
        if self.cfg.arbitrated:
            gen = _hex(msg.get("hg") or "0") or 0
            self._heard_report(msg.get(HEARD))  # (only ever moves forward)
            if self._fresh(gen, seq):
                # What it holds and claims, from its newest message only: a status retransmitted
                # on our NS_rexmit, or reordered, is an old state (sim seed 1818 at 500 ms / 3 s:
                # an old "holds nothing, no Lease" let a take win from the live holder: 505 ms).
                p.epoch = _dec(msg.get(EPOCH))
                p.generation, p.status_seq = gen, seq
                holds = sides_of(msg.get(HOLDS))
                if holds is not None and p.hold is not None and flip(holds) != p.hold:
                    p.hold, stale_hold = flip(holds), True
                window = _dec(msg.get(WINDOW))
                p.window = window / 1000 if window else None
                fence = _dec(msg.get(FENCE))
                p.fence = fence / 1000 if fence is not None else None
                if msg.get(STANDBY) is not None and msg.get(BUSY) is not None:
                    standby, stable = msg.get(STANDBY) == "1", msg.get(BUSY) != "1"
                    if standby != p.standby or stable != p.stable:
                        p.standby, p.stable, stale_hold = standby, stable, True
                out += self._check_outranked(now)
        if self.cfg.arbitrated and (msg.get(UNHEARD) or "").lower() == self.cfg.node:
            out += self._unheard(now)
        trigger = seq is not None and seq % 10 == self.cfg.generation % 10
        if p.flow_control and trigger and seq is not None and not p.ordering.missing:
            ack = Message.of(("t", "NS_ackmsg"), ("dest", self.cfg.peer), ("ackseq", f"{seq:x}"))
            out.append(self._send(now, ack))
        if stale_hold:
            self._count("hold_corrected")
            out += self._reconcile(now, f"{self.cfg.peer} holds {hold_word(flip(p.hold or frozenset()))}")
        return out

    def _on_starting(self, msg: Message, now: float, seq: int | None) -> list[Action]:
        return [self._resource_msg(now)]

    def _on_resource(self, msg: Message, now: float, seq: int | None) -> list[Action]:
        sides = sides_of(msg.get("rsc_hold"))
        if sides is None:
            return [self._reject(Reject.BAD_FIELDS, f"resource with rsc_hold={msg.get('rsc_hold')!r}")]
        if self.cfg.arbitrated and not self._fresh(_hex(msg.get("hg") or "0") or 0, seq):
            self._count("stale_state")
            return []  # an older state than one we applied already (a retransmission, reordered)
        self.peer.hold = flip(sides)
        stable = msg.get("isstable")  # absent (mach_down): unchanged, as Heartbeat
        if stable is not None:
            self.peer.stable = stable == "1"
        info = msg.get("info")
        if info == "standby":
            self.peer.standby = True
        elif sides:
            self.peer.standby = False
        if self.cfg.arbitrated:
            self.peer.epoch = _dec(msg.get(EPOCH))
            outranked = self._check_outranked(now)
            if outranked:
                return outranked
        if info == "mach_down" and self.peer.hold & self.hold:
            return [Note("warning", "peer took over resources we still hold"), *self._reconcile(now)]
        return self._reconcile(now)

    def _on_ask_resources(self, msg: Message, now: float, seq: int | None) -> list[Action]:
        info = msg.get("info")
        word = msg.get("rsc_hold") or "all"
        if sides_of(word) is None:  # it would be echoed back in our other/done and kept as giving_up
            return [self._reject(Reject.BAD_FIELDS, f"ask_resources with rsc_hold={word!r}")]
        if info == "me":  # the peer goes standby: it releases first, then says done
            if word != "foreign":  # foreign only: an auto_failback handing our groups back
                self.peer.standby = True
            self.peer.giving_up, self.peer.giving_up_since = word, now
            return [self._send(now, _ask("other", word))]
        if info == "other" and self.standby_asked_at is not None:
            if self.flux is not None:
                return []
            give = self.hold & self.standby_sides
            if not give:
                self.standby_asked_at = None
                word, self.standby_sides = hold_word(self.standby_sides), frozenset(Side)
                tag = "standby" if self.self_standby else None
                return [self._resource_msg(now, info=tag), self._send(now, _ask("done", word))]
            return [
                self._begin(
                    Release(
                        give,
                        "standby" if self.self_standby else "auto_failback: going home",
                        TransitionKind.HANDOVER,
                    )
                )
            ]
        if info == "takeover":
            return self.request_standby(now, "standby: the peer asked to take over")
        if info == "done" and self.peer.giving_up is not None:
            # the peer has released: take now, then answer done as Heartbeat's taker does
            self.done_owed, self.peer.giving_up, self.peer.stable = self.peer.giving_up, None, True
            out = self._reconcile(now)
            if self.flux is None:
                out.append(self._send(now, _ask("done", self.done_owed)))
                self.done_owed = None
            return out
        if info == "done":
            return self._reconcile(now)
        return []

    def _on_hb_takeover(self, msg: Message, now: float, seq: int | None) -> list[Action]:
        """The peer ran hb_takeover: go standby, as Heartbeat's rc.d/hb_takeover does."""
        return self.request_standby(now, "standby: the peer asked to take over (hb_takeover)")

    def _on_shutdone(self, msg: Message, now: float, seq: int | None) -> list[Action]:
        return self._peer_dead(now, "shutdone: the peer stopped cleanly")

    def _on_NS_rexmit(self, msg: Message, now: float, seq: int | None) -> list[Action]:
        first, last = _dec(msg.get("firstseq")), _dec(msg.get("lastseq"))
        if first is None or last is None or last < first:
            return [self._reject(Reject.BAD_FIELDS, "NS_rexmit with bad firstseq/lastseq")]
        out: list[Action] = []
        for s in range(first, min(last, first + 49) + 1):
            # NS_rexmit has no seq, so a replayed request looks new: answer a seq once per RESEND_EVERY
            answered = self.resent.get(s)
            if answered is not None and now - answered < RESEND_EVERY:
                self._count("rexmit_throttled")
                continue
            self.resent[s] = now
            old = self.history.get(s)
            if old is not None:
                out.append(Send(old))
            else:
                nak = Message.of(("t", "NS_nak_rexmit"), ("firstseq", f"{s:x}"),
                                 ("dest", self.cfg.peer), ("info", "not in history"))  # fmt: skip
                out.append(self._send(now, nak))
        if len(self.resent) > 2 * HISTORY:
            self.resent = {s: t for s, t in self.resent.items() if now - t < RESEND_EVERY}
            if len(self.resent) > 2 * HISTORY:
                self.resent.clear()
        self._count("rexmit_served")
        return out

    def _on_reqnodes(self, msg: Message, now: float, seq: int | None) -> list[Action]:
        nodelist = f"{self.cfg.node} {self.cfg.peer} "
        rep = Message.of(("dest", self.cfg.peer), ("t", "repnodes"), ("nodelist", nodelist),
                         ("delnodelist", " "))  # fmt: skip
        return [self._send(now, rep)]

    # -- timers -------------------------------------------------------------------------------
    def _check_peer(self, now: float) -> list[Action]:
        p = self.peer
        if p.alive is None and now >= self.started + self.cfg.initdead:
            self.st = "active"
            return self._peer_dead(now, f"not heard within initdead ({self.cfg.initdead:g}s)")
        if p.alive and p.last_status is not None and now >= p.last_status + p.deadtime:
            silent = now - p.last_status
            return self._peer_dead(now, f"silent for {silent * 1000:.0f}ms", silent)
        return []

    def _check_links(self, now: float) -> list[Action]:
        out: list[Action] = []
        for name, link in self.peer.links.items():
            if link.up and now >= link.last + self.peer.deadtime:
                link.up = False
                out.append(LinkChanged(self.cfg.peer, name, False))
        return out

    def _check_rexmit(self, now: float) -> list[Action]:
        out: list[Action] = []
        for s, (when, tries) in list(self.rexmit.items()):
            if now < when:
                continue
            if tries >= REXMIT_TRIES or not self.peer.alive:
                del self.rexmit[s]
                continue
            self.rexmit[s] = (now + REXMIT_EVERY, tries + 1)
            req = Message.of(("t", "NS_rexmit"), ("dest", self.cfg.peer),
                             ("firstseq", str(s)), ("lastseq", str(s)))  # fmt: skip
            out.append(self._send(now, req))
        return out

    def _link_heard(self, medium: str, now: float) -> list[Action]:
        link = self.peer.links.get(medium)
        if link is None:
            self.peer.links[medium] = _Link(now)
            return [LinkChanged(self.cfg.peer, medium, True)]
        link.last = now
        if not link.up:
            link.up = True
            return [LinkChanged(self.cfg.peer, medium, True)]
        return []

    def _peer_dead(self, now: float, reason: str, silent: float = 0.0) -> list[Action]:
        p = self.peer
        was = p.alive
        p.alive, p.since, p.hold, p.standby, p.joined = False, now, None, False, False
        p.status_seq, p.heard_us_at = None, None
        p.last_status = None
        p.lost_after_heard = silent > 0
        p.stable, p.giving_up = True, None
        self.rexmit.clear()
        self.standby_asked_at = None
        self.standby_sides, self.done_owed = frozenset(Side), None
        self.self_standby = False
        out: list[Action] = []
        if was is not False:
            self._count("peer_dead")
            out.append(PeerChanged(self.cfg.peer, False, reason, silent))
        for name, link in p.links.items():
            if link.up:
                link.up = False
                out.append(LinkChanged(self.cfg.peer, name, False))
        if self.cfg.arbitrated:
            # Tell the peer at once, in case only our direction is cut: it proves itself in the Lease.
            out.append(self._status(now, self.st))
        if self.cfg.arbitrated and self.hold and not self.shutting_down:
            out += self._renew(f"peer {self.cfg.peer} {reason}")
        return out + self._reconcile(now, reason)

    # -- resource policy ----------------------------------------------------------------------
    def _reconcile(self, now: float, why: str = "") -> list[Action]:
        """Decide what to acquire or release. Runs only when no resource operation is in flight."""
        if self.flux is not None or self.shutting_down or self.standby_asked_at is not None:
            return []
        if self.arbitration is not None or self.renewing:
            return []
        p = self.peer
        present = self.cfg.present
        if p.alive is False and self.frozen:
            return []
        if p.alive is False and self.next_arbitration is not None:
            return []  # the Lease said no: ask again when next_arbitration comes
        if p.alive is False:
            want = present - self.hold
            acquire = Acquire(want, f"peer {self.cfg.peer} dead: {why}", TransitionKind.FAILOVER)
            return [self._begin(acquire)] if want else []
        if p.alive is None or p.hold is None:
            return []  # still waiting for the peer's report: never guess while it may hold them
        out: list[Action] = []
        both = self.hold & p.hold
        if both and self.cfg.arbitrated:
            # Two holders can only mean one of us missed the Lease moving (a freeze): the Lease, not
            # the home-node rule, decides. The holder's renewal succeeds, the other one fences itself.
            p.joined = False
            return self._renew("both nodes hold the groups: the Lease decides")
        if both:
            # A healed partition: the groups' home node keeps them without interruption.
            keep = frozenset(s for s in both if s is Side.LOCAL)
            drop = both - keep
            if keep:
                out.append(Announce("partition healed: home node keeps its groups"))
            if drop:
                out.append(
                    self._begin(
                        Release(drop, "partition healed: the home node keeps them", TransitionKind.HANDOVER)
                    )
                )
            p.joined = False
            return out
        if not p.stable or p.giving_up is not None:
            return out  # the peer is moving resources: wait for its isstable=1 or its done
        if p.joined and self.cfg.auto_failback and Side.FOREIGN in self.hold and not p.standby:
            # Heartbeat's failback is the standby handshake (me/other/done) for the foreign groups:
            # the home node takes them only on our done, so they are never held twice.
            p.joined = False
            self.standby_asked_at, self.standby_sides = now, frozenset({Side.FOREIGN})
            return [
                Note("info", "auto_failback: handing the peer's groups back"),
                self._send(now, _ask("me", "foreign")),
            ]
        p.joined = False
        free = present - self.hold - p.hold
        if self.self_standby:
            if not free:
                self.self_standby = False
                return []
            if not (self.cfg.arbitrated and p.standby and p.alive):
                return []
            if self.standby_failed:
                # Both starts failed: nobody would ever start them again (sim seed 311464). The home
                # node tries again, START_RETRIES times, START_RETRY_AFTER apart.
                retry_at = self._start_retry_at()
                if retry_at is None or Side.LOCAL not in free or now < retry_at:
                    return []
                self.self_standby = self.standby_failed = False
                self._count("start_retried")
                out.append(
                    Note(
                        "warning",
                        f"the groups failed to start on both nodes: starting them again "
                        f"(try {self.start_failures + 1} of {START_RETRIES + 1})",
                    )
                )
                free = frozenset({Side.LOCAL})
            else:
                # Kubernetes mode: we went standby for a planned move and the peer went standby too
                # (it could not start them): nobody would ever own them (sim seed 112447). We can
                # run them: take them back; the Lease decides.
                self.self_standby = False
                self._count("standby_taken_back")
                out.append(
                    Note("warning", f"{self.cfg.peer} could not take the groups over: taking them back")
                )
        want = frozenset(s for s in free if s is Side.LOCAL or p.standby)
        if want:
            if p.standby:
                out.append(self._begin(Acquire(want, "peer in standby", TransitionKind.HANDOVER)))
            else:
                out.append(self._begin(Acquire(want, "home node, nobody holds them", TransitionKind.START)))
        return out

    def _start_retry_at(self) -> float | None:
        """When the home node starts again groups that failed to start on both nodes (None: not
        due: no failed start of ours, or the retries are spent)."""
        if self.start_failed_at is None or self.start_failures > START_RETRIES:
            return None
        return self.start_failed_at + max(self.cfg.deadtime, 1.0)

    def _start_retry_pending(self) -> float | None:
        """When (None: never) the home node will start again groups that failed to start on both
        nodes, if nothing changes meanwhile: every condition of _reconcile's retry but the time,
        so that next_deadline never names a time at which tick would do nothing."""
        p = self.peer
        if not (self.cfg.arbitrated and self.cfg.has_local and self.self_standby and self.standby_failed):
            return None
        if not (p.alive and p.standby) or Side.LOCAL in self.hold | (p.hold or frozenset()):
            return None
        if self.flux is not None or self.shutting_down or self.standby_asked_at is not None:
            return None
        if self.arbitration is not None or self.renewing or not p.stable or p.giving_up is not None:
            return None
        return self._start_retry_at()

    def _begin(self, action: Acquire | Release) -> Acquire | Release | Arbitrate:
        self.op += 1
        numbered = dataclasses.replace(action, op=self.op)
        if isinstance(numbered, Acquire) and self.cfg.arbitrated and not self.lease_held:
            self.arbitration = numbered  # resources start only once the Lease is ours
            window = max(self.cfg.arbitration_window, self.peer.window or 0.0)
            return Arbitrate("take", self.op, action.reason, hold_off=self._take_hold_off(), window=window)
        self.flux = numbered
        return numbered

    # -- arbitration (Kubernetes mode) --------------------------------------------------------
    @_event
    def arbitrated(
        self,
        op: int,
        granted: bool,
        reason: str,
        now: float,
        epoch: int | None = None,
        unavailable: bool = False,
        sent_at: float | None = None,
        taken_over: bool = False,
    ) -> list[Action]:
        """The Lease answered an Arbitrate action. `sent_at`: when the granted write was sent (on our
        clock); without it the grant proves nothing to the kernel fence (serve_until). `taken_over`:
        the take was granted from another holder (lease.Verdict.taken_over)."""
        if epoch is not None:
            self.epoch = epoch
        if (
            granted
            and sent_at is not None
            and sent_at >= self.clock_jump_at
            and (self.proven_at is None or sent_at > self.proven_at)
        ):
            self.proven_at = sent_at
        pending = self.arbitration
        if pending is not None and pending.op == op:
            self.arbitration = None
            if granted and self.peer.alive and self.peer.hold and self.peer.hold & pending.sides:
                # The peer was heard again while the Lease was being taken, and it holds the groups:
                # it is alive. Starting them now would make two owners: give the Lease back to it.
                self._count("handed_back")
                return [
                    Note("warning", f"Lease taken (epoch {self.epoch}) but {self.cfg.peer} is alive and "
                         "holds the groups: handing the Lease back"),
                    Arbitrate("handback", op, f"{self.cfg.peer} is alive"),
                ]  # fmt: skip
            if granted and sent_at is not None and now - sent_at > self._trusted_answer():
                # Read more than W after it was sent (a stalled loop, a paused VM, a slow API
                # server): the peer may have seen our write and waited out its own W since, so the
                # Lease may have changed hands (sim seed 349654: a take sent at 5.98 s, read at
                # 9.0 s after the peer had taken the Lease, started the VIP: 12 ms of two owners).
                # It proves nothing: ask again, now.
                self._count("late_grant")
                self.next_arbitration, self.retry_unanswered = now, False
                self.late_take_over = self.late_take_over or taken_over
                late_ms = (now - sent_at) * 1000
                return [
                    Note(
                        "warning",
                        f"Lease take granted but read {late_ms:.0f}ms after it was sent: asking again",
                    )
                ]
            if granted:
                self.lease_held, self.link_down = True, False
                self.took_at = now
                taken_over, self.late_take_over = taken_over or self.late_take_over, False
                bound = self._node_fence_bound() if taken_over else None
                if bound is not None:
                    # Taken from the peer (not free): its services may run until its node fence is
                    # over, whether or not it is heard again by now (sim seed 105157, CI form).
                    pending = dataclasses.replace(pending, services_at=now + bound)
                self.flux = pending
                taken: list[Action] = [Note("info", f"Lease taken, epoch {self.epoch}: {reason}"), pending]
                # A holder the peer cannot hear must prove itself from now on, or the peer's next
                # take succeeds after W (a cold start or a take during a cut: sim seeds 4, 0).
                self._arm_renewal(now)
                return taken
            if unavailable and self.cfg.take_over_without_arbiter and self.peer.alive is False:
                self.flux = pending
                return [
                    Note(
                        "warning",
                        f"taking over without the arbiter (whenArbiterUnavailable: TakeOver): {reason}",
                    ),
                    pending,
                ]
            self.link_down = not unavailable and self.peer.alive is False
            # Refused by a live holder: ask again after a deadtime. No answer at all: every second,
            # so the pair is served again as soon as the API server is back, not up to a deadtime
            # later (chaos, compound at 1s/10s: the owner fenced itself while the API server was
            # away and came back 6.2 s after it did).
            again = UNAVAILABLE_RETRY if unavailable else max(self.cfg.deadtime, 1.0)
            self.next_arbitration, self.retry_unanswered = now + again, unavailable
            self._count("arbitration_denied")
            return [Note("warning", f"not taking over: {reason}")]
        if self.renewing and op == -1:
            early, self.renewing, self.renewal_early = self.renewal_early, False, False
            if granted and not self.hold and not isinstance(self.flux, Acquire):
                # Sent while we held, answered after we released (and freed the Lease): the grant
                # is stale. Taking it as "held" would skip the next take (sim seed 126).
                self._count("stale_renewal")
                return self._reconcile(now, "the Lease answered")
            if granted:
                self.lease_held = True
                self.link_down = self.peer.alive is False
                if self._must_prove(now):
                    # keep proving we are alive: a standby watches for W > R + F
                    self.next_arbitration, self.retry_unanswered = (
                        now + self.cfg.arbitration_window / 4,
                        False,
                    )
                notes: list[Action] = (
                    [Note("info", f"still the owner (epoch {self.epoch}): {reason}")]
                    if self.link_down
                    else []
                )
                # Whatever waited for this answer (a release that ended meanwhile, the peer's
                # report) is decided now: nothing else would wake the policy up. Not while both
                # hold: the peer's own renewal fails and it fences itself.
                if self.peer.hold is not None and self.hold & self.peer.hold:
                    return notes
                return notes + self._reconcile(now, "the Lease answered")
            if unavailable and self.cfg.take_over_without_arbiter:
                return [Note("warning", f"keeping resources without the arbiter: {reason}")]
            if unavailable and early and self.peer.alive is True and not self._must_prove(now):
                # An early renewal (the peer was quiet for d - k) that the API server did not answer,
                # and the peer has been heard since: it cannot be taking over. Keep the groups.
                self._count("early_renewal_unanswered")
                note: list[Action] = [
                    Note("warning", f"Lease renewal unanswered ({reason}); the peer is heard again")
                ]
                # Whatever waited for this answer is decided now (a fence that ended meanwhile left
                # nothing held: the home node must take its group again; sim seed 44).
                return note + (self._reconcile(now, "the Lease answered") if not self.hold else [])
            self.lease_held = False
            if not self.hold and not isinstance(self.flux, Acquire):
                return self._reconcile(now, "the Lease answered")  # nothing to fence
            self._count("self_fenced")
            out: list[Action] = [Note("error", f"self-fencing: {reason}", counter="self_fenced")]
            if self.flux is None:
                out.append(self._fence(now, self.hold, reason))
            else:
                # An acquisition (or release) is running: fence as soon as it ends. A renewal refused
                # while the groups were starting left them held without the Lease (sim seed 4).
                self.fence_owed = reason
                self._arm_node_fence(now)
            return out
        return []

    # -- the node fence (Kubernetes mode) ------------------------------------------------------
    def _fence(self, now: float, sides: frozenset[Side], reason: str) -> Acquire | Release | Arbitrate:
        """Self-fencing: every VIP first, then the services, under the node fence's budget."""
        self._arm_node_fence(now)
        return self._begin(Release(sides, f"self-fencing: {reason}", TransitionKind.FENCE, fence=True))

    def _arm_node_fence(self, now: float) -> None:
        """We lost the right to hold: the budget runs from now (the peer may take the Lease any
        moment after this), not from when the stop begins."""
        if self.cfg.stop_budget is not None and self.node_fence_at is None:
            self.node_fence_at = now + self.cfg.stop_budget

    def _node_fence_idle(self) -> bool:
        """No node fence to watch: none configured, already sent, or nothing that can run here."""
        return self.cfg.stop_budget is None or self.node_fenced or (not self.hold and self.flux is None)

    def _node_fence(self, why: str) -> list[Action]:
        if self.node_fenced or self.cfg.stop_budget is None:
            return []
        self.node_fenced, self.node_fence_at = True, None
        self._count("node_fenced")
        return [
            Note("critical", f"node fence: {why}: resetting this node (its watchdog)", counter="node_fence"),
            FenceNode(why),
        ]

    def _check_node_fence(self, now: float) -> list[Action]:
        """Two deadlines, whichever comes first: `stop_budget` after we learned we lost the right to
        hold (`node_fence_at`), and `stop_budget` after our certificates ran out (`_right_until`)
        while anything may still run here. The second needs no decision of ours: a loop that ran
        late (a stall shorter than the watchdog's timeout) learns of the loss late, but the peer may
        take over only once the certificates have run out, and waits our budget plus our watchdog's
        timeout from its take before starting its services (sim seed 3241 at 100 ms / 300 ms)."""
        if self._node_fence_idle():
            self.node_fence_at = self.lapsed_at = None
            return []
        # lost_too: a renewal that timed out while the loop stalled (answered, refused, after it)
        # took the Lease's certificate away, and the budget ran from the answer, not from when
        # the certificate ran out: the service ran 283 ms beside the peer's (sim seed 334152)
        right = math.inf if self.cfg.take_over_without_arbiter else self._right_until(lost_too=True)
        if right > now:
            self.lapsed_at = None
        elif self.lapsed_at is None:
            self.lapsed_at = right if right > -math.inf else now
        due = self._node_fence_next()
        if due is None or now < due:
            return []
        if self.node_fence_at is not None and now >= self.node_fence_at:
            return self._node_fence(
                f"self-fencing has not stopped everything within {self.cfg.stop_budget:g}s"
            )
        return self._node_fence(
            f"no right to hold the groups for {self.cfg.stop_budget:g}s and still running them"
        )

    def _node_fence_next(self) -> float | None:
        """When _check_node_fence next has to look (without changing anything)."""
        budget = self.cfg.stop_budget
        if budget is None or self._node_fence_idle():
            return None
        times = [] if self.node_fence_at is None else [self.node_fence_at]
        if self.lapsed_at is not None:
            times.append(self.lapsed_at + budget)
        elif not self.cfg.take_over_without_arbiter:  # (TakeOver keeps the groups without the Lease)
            times.append(
                self._right_until(lost_too=True) + budget
            )  # (-inf: look now, to note when it lapsed)
        return min(times)

    def _trusted_answer(self) -> float:
        """How long after sending a take its grant may still be read and acted on: the shortest
        wait either node makes before taking a Lease from its holder (its own W, on a clock that
        may run DRIFT fast). Our write applied after we sent it, so before this nobody took it."""
        peer_w = self.peer.window if self.peer.window is not None else self.cfg.arbitration_window
        return min(self.cfg.arbitration_window, peer_w) * (1 - DRIFT)

    def _node_fence_bound(self) -> float | None:
        """How long after our take the peer we took the groups from may still run services: its
        advertised node fence (ours, if it never said), with the clocks' drift. None: unbounded (no
        node fence on either side): nothing is waited for."""
        fence = self.peer.fence if self.peer.fence is not None else self._own_fence()
        return None if fence is None else fence * (1 + DRIFT) + FENCE_MARGIN

    def _own_fence(self) -> float | None:
        """Our node fence (`hacfence`): once we may have lost the right to hold, our services are
        stopped or our node reset within this: `max(B, T) + 2T`. The budget, then the watchdog's
        timeout `T` (FenceNode stops feeding it); and one `T` more if the agent is killed before
        the watchdog fired, after a FenceNode (sim seed 856788: 460 ms of two services with
        `max(B, T) + T`) or a stall: the kernel feeds a watchdog one last time when its last
        descriptor closes without the magic close (tests/vm/test_watchdog.py: the reset came `T`
        after the kill)."""
        budget, t = self.cfg.stop_budget, self.cfg.watchdog_timeout
        return None if budget is None else max(budget, t) + 2 * t

    def _retry_release(self, now: float) -> list[Action]:
        retry = self.release_retry
        if retry is None or now < retry[0]:
            return []
        if self.flux is not None or self.arbitration is not None or self.renewing:
            # something else runs (a take waiting for the Lease would start over it): look again
            self.release_retry = (now + max(self.cfg.deadtime, 1.0), retry[1])
            return []
        self.release_retry = None
        sides = retry[1].sides & self.hold
        if not sides or self.shutting_down:
            return []
        self._count("release_retried")
        return [self._begin(dataclasses.replace(retry[1], sides=sides, reason=f"{retry[1].reason} (again)"))]

    def _giving_up_deadline(self) -> float | None:
        p, timeout = self.peer, self.cfg.standby_timeout
        if not self.cfg.arbitrated or p.giving_up is None or timeout is None:
            return None
        return p.giving_up_since + timeout

    def _giving_up_expired(self, now: float) -> list[Action]:
        """Kubernetes mode: the peer said it would give groups up and never said done (its done
        was lost, or it abandoned the standby after its own standby_timeout): stop waiting after
        that timeout. The pair stayed unowned for good (sim seed 1702). Safe because the Lease
        decides: a peer still holding it is heard claiming it, and our take is refused."""
        deadline = self._giving_up_deadline()
        if deadline is None or now < deadline:
            return []
        self.peer.giving_up = None
        self._count("giving_up_expired")
        return [
            Note("warning", f"{self.cfg.peer} said it would give its groups up and never said done"),
            *self._reconcile(now, "the peer's handover timed out"),
        ]

    @_event
    def clocks(self, now: float, wall: float) -> list[Action]:
        """Both clocks, read by the driver at every dispatch: the monotonic one falling behind the
        wall clock by more than CLOCK_JUMP between two readings means it stopped (clock_jumped).
        A wall clock stepped forward by NTP looks the same: one needless revalidation, no harm."""
        skew, last = wall - now, self.wall_skew
        self.wall_skew = skew
        if last is None or skew - last <= CLOCK_JUMP:
            return []
        return self.clock_jumped(now, skew - last)

    @_event
    def clock_jumped(self, now: float, lost: float) -> list[Action]:
        """Our monotonic clock lost `lost` seconds against the wall clock: the VM was paused (its
        clocks stop with it, the kernel's timers too), so every interval we measured across the
        pause is short by that much. Our certificates (serve_until) were such intervals: drop them,
        and every status sent or renewal written before now, so the kernel fence closes at once;
        then prove ourselves again (a renewal granted, or the peer reporting a status sent from now
        on). Sim seed 1126: a VM paused through a cut served 57 ms beside the new owner on resume,
        until its next renewal came back refused."""
        if not self.cfg.arbitrated:
            return []
        self._count("clock_jumped")
        self.clock_jump_at = now
        self.proven_at = None
        self.status_sent.clear()  # a report naming one of them would restore a stale certificate
        if self.peer.heard_us_at is not None:
            self.peer.heard_us_at = -math.inf
        out: list[Action] = [
            Note(
                "warning",
                f"our clock stopped for {lost * 1000:.0f} ms (a paused VM?): proving ourselves again",
            )
        ]
        if (self.hold or self.lease_held) and not self.shutting_down:
            out += self._renew("our clock stopped: revalidating")
        return out

    @_event
    def set_frozen(self, frozen: bool, now: float) -> list[Action]:
        """Maintenance: no automatic takeover or failback while frozen (planned moves still go)."""
        if frozen == self.frozen:
            return []
        self.frozen = frozen
        if frozen:
            return [Note("info", "maintenance: automatic moves frozen")]
        return [Note("info", "maintenance over"), *self._reconcile(now, "maintenance over")]

    def take_still_wanted(self) -> bool:
        """Asked by the Lease's take right before its compare-and-swap: still silent, or heard again
        but holding none of what we take (a stale holder that restarted, a standby)? A peer heard
        again that holds them, or whose holdings are unknown yet, is an owner proving it is alive."""
        pending, p = self.arbitration, self.peer
        if pending is None:
            return False
        if p.alive is not True:
            return True
        if p.epoch is not None:
            return False  # it says it holds the Lease (its groups may be starting): not stale
        return p.hold is not None and not (p.hold & pending.sides)

    @_event
    def hold_lost(self, now: float, reason: str) -> list[Action]:
        """A held resource vanished under us (the VIP, after a freeze). In Kubernetes mode, ask the
        Lease before anything restarts it: we may have been replaced while we were frozen."""
        if not self.cfg.arbitrated or not self.hold or self.shutting_down:
            return []
        return self._renew(f"lost a held resource: {reason}")

    def _unheard(self, now: float) -> list[Action]:
        """The peer hears nothing from us, but we hear it: a one-way cut. It will ask the Lease; if
        we hold the groups, renew it now and every W/4 while this lasts, so it sees us alive."""
        out: list[Action] = []
        if now >= self.unheard_until:
            self._count("unheard")
            out.append(Note("warning", f"{self.cfg.peer} cannot hear us (one-way link failure)"))
        self.unheard_until = now + self.cfg.deadtime
        if self.hold and not self.shutting_down and self.next_arbitration is None:
            out += self._renew(f"{self.cfg.peer} cannot hear us")
        return out

    def _quiet_at(self) -> float | None:
        """When the live peer may start to declare us dead: deadtime after it received the last status
        of ours it reports having heard (HEARD), which we sent at `heard_us_at` on our own clock; less
        a keepalive of margin for our renewal to land first. The report's own transit time does not
        matter: a late report only names an older status, which makes this earlier (sim seeds 27,
        1254)."""
        p = self.peer
        if not self.cfg.arbitrated or p.alive is not True or p.last_status is None:
            return None
        # Without reports (a peer that does not send them): it last heard us no earlier than a
        # keepalive before we last heard it, if the link is symmetric.
        base = p.last_status - self.cfg.keepalive if p.heard_us_at is None else p.heard_us_at
        return base + max(self.cfg.deadtime - self.cfg.keepalive, 0.0)

    def _ask_again(self, now: float) -> list[Action]:
        """Kubernetes mode: the peer is up but we still do not know what it holds (its `resource`
        answer to our `starting` was lost, or came before its first status and was dropped): ask
        again every two keepalives. Both nodes cold-started over a lossy link waited forever for
        each other's report, the group unowned (sim seed 1013 at 1 s / 10 s)."""
        p = self.peer
        if not self.cfg.arbitrated or p.alive is not True or p.hold is not None:
            self.ask_again_at = None
            return []
        if self.ask_again_at is None:
            self.ask_again_at = now + 2 * self.cfg.keepalive
            return []
        if now < self.ask_again_at:
            return []
        self.ask_again_at = now + 2 * self.cfg.keepalive
        self._count("asked_again")
        return [self._send(now, Message.of(("t", "starting"))), self._resource_msg(now)]

    def _fresh(self, generation: int, seq: int | None) -> bool:
        """Kubernetes mode: is this status or resource message newer than every one whose state
        (hacholds, hacepoch, rsc_hold) we applied? Then it is applied and becomes the newest."""
        p = self.peer
        if seq is None:
            return True
        last = p.state_seq
        if last is not None and last[0] == generation and seq <= last[1]:
            return False
        if last is not None and generation < last[0]:
            return False
        p.state_seq = (generation, seq)
        return True

    def _heard_report(self, text: str | None) -> None:
        """The peer's HEARD field: when, on our clock, we sent the last status it heard."""
        p = self.peer
        if text is None:
            return  # not our agent's report: keep the symmetric-link rule
        gen, _, seq_text = text.partition(":")
        seq = _hex(seq_text)
        if text == "-" or _hex(gen) != self.cfg.generation or seq is None:
            p.heard_us_at = float("-inf")  # it has heard nothing of ours (this generation)
            return
        sent = self.status_sent.get(seq)
        if sent is None:
            p.heard_us_at = float("-inf")  # older than we remember: as good as nothing
        elif p.heard_us_at is None or sent > p.heard_us_at:
            p.heard_us_at = sent

    def _check_outranked(self, now: float) -> list[Action]:
        """The peer holds the Lease at a higher epoch (its groups held or still starting): it took
        over while we were paused or cut off. Remove our VIPs now (sim: a resumed VM served until
        its renewal came back refused; seed 1949: the peer's groups were still starting)."""
        p = self.peer
        if p.epoch is None or not self.hold:
            return []
        return self._outranked(now, f"{self.cfg.peer} holds the Lease at epoch {p.epoch}", p.epoch)

    @_event
    def directives(
        self,
        now: float,
        holder: str,
        epoch: int | None,
        *,
        handover_to: str | None = None,
        freeze: bool = False,
        release: bool = False,
        recreated: bool = False,
    ) -> list[Action]:
        """The ownership Lease as the agent's periodic read found it (Kubernetes mode, every 0.5 s):
        its holder and epoch (and whether the operator recreated it), and the operator's word on it: maintenance (`freeze`), the HACluster
        being deleted (`release`), a planned move to `handover_to`. A switchover is accepted once per
        reading that differs from the last, and only while we hold the groups with nothing in flight
        and no standby asked yet: the operator keeps the annotation until the move is done."""
        out = self.lease_observed(holder, epoch, now, recreated=recreated)
        out += self.set_frozen(freeze, now)
        seen = (holder, epoch, handover_to, freeze, release)
        if release and not self.shutting_down:
            out.append(Note("warning", "the HACluster is being deleted: releasing everything"))
            out += self.shutdown(now)
        elif (
            handover_to == self.cfg.peer
            and self.hold
            and self.flux is None
            and self.standby_asked_at is None
            and seen != self.last_directives
        ):
            out += self.request_standby(now, f"switchover to {self.cfg.peer}")
        self.last_directives = seen
        return out

    def restart_refused(self, held: frozenset[Side]) -> str | None:
        """Why a member of a held group that stopped may not be restarted in place now (None: it
        may). Never on an unconfirmed claim: while resources are in flux, or (Kubernetes mode) while
        a renewal is out or the Lease is not ours: we may have been replaced while frozen; never
        while the peer says it holds the group (a healed partition: the engine settles who keeps
        it, and the loser stops its copy)."""
        if self.flux is not None:
            return "resources in flux"
        if self.cfg.arbitrated and self.renewing:
            return "the Lease is being renewed"
        if self.cfg.arbitrated and not self.lease_held:
            return "the Lease is not ours"
        p = self.peer
        if p.alive and p.hold and p.hold & held:
            return f"{self.cfg.peer} says it holds the group"
        return None

    @_event
    def lease_observed(
        self, holder: str, epoch: int | None, now: float, *, recreated: bool = False
    ) -> list[Action]:
        """The Lease as the agent's periodic read of it saw it (every 0.5 s, with the operator's
        directives). Another holder at a higher epoch while we hold the groups: we were replaced
        while paused or cut off, and our own timers may not know it (a paused VM's clocks stop, so
        its renewals are not due yet on resume: sim seed 1273, 2.3 s). Drop the VIPs now.

        A Lease the operator recreated while we hold the groups: renew, which claims it if it is
        free or names us, and loses (we fence) if it names the peer. Its holder is the operator's
        last knowledge, which can be stale (a take it had not recorded yet: the full stack's
        campaign, `lease-deleted` right after a move, named the old owner at the new owner's epoch
        and the pair never settled); and the peer waits a window before taking a recreated Lease,
        so our renewal, or our loss, comes first."""
        if not self.cfg.arbitrated or epoch is None:
            return []
        if self.retry_unanswered and self.next_arbitration is not None and self.next_arbitration > now:
            # A take the API server did not answer (down, or the Lease missing: agents may not
            # create it) waits UNAVAILABLE_RETRY; the Lease is readable again: ask now, not up to a
            # second later (the campaign: API server restarted and the Lease deleted, the operator
            # recreated it 17 ms after the agent's last try, which came back 1.1 s later)
            self.next_arbitration = now
        if recreated and (self.hold or self.lease_held) and not self.shutting_down:
            if isinstance(self.flux, Release) or self.fence_owed is not None:
                return []  # giving them up anyway
            # a precaution, as an early renewal: unanswered while the peer is heard, we keep them
            return self._renew(
                f"the operator recreated the Lease ({holder or 'no holder'}, epoch {epoch})", early=True
            )
        if not holder or holder == self.cfg.node:
            return []
        # At our own epoch too: no read that went out before our take can show it (a take writes
        # above the epoch it replaced), only a Lease recreated below an epoch the operator never
        # saw and then taken by the peer at ours (sim seed 100382).
        return self._outranked(now, f"the Lease names {holder} at epoch {epoch}", epoch, equal=True)

    def _outranked(self, now: float, why: str, epoch: int, *, equal: bool = False) -> list[Action]:
        if (
            not self.hold
            or (self.epoch is not None and (epoch < self.epoch if equal else epoch <= self.epoch))
            or self.shutting_down
            or self.fence_owed is not None
            or (isinstance(self.flux, Release) and self.flux.fence)
        ):
            return []  # (already fencing: once is enough)
        self.lease_held = False
        self._count("outranked")
        reason = f"{why} (ours: {self.epoch})"
        out: list[Action] = [Note("error", f"self-fencing: {reason}", counter="self_fenced")]
        if self.flux is None:
            out.append(self._fence(now, self.hold, reason))
        elif isinstance(self.flux, Acquire):
            self.fence_owed = reason
            self._arm_node_fence(now)
        return out

    def _early_renewal_at(self) -> float | None:
        """When to start renewing although the peer is alive (quiet for d - k), if nothing else
        is already renewing: the same condition for tick() and next_deadline()."""
        if (
            not (self.hold or self.lease_held)
            or self.shutting_down
            or self.renewing
            or self.next_arbitration is not None
            or isinstance(self.flux, Release)  # giving them up anyway
        ):
            return None
        return self._quiet_at()

    def serve_until(self, now: float) -> float | None:
        """Kubernetes mode: until when (our clock) this node may answer for its VIPs, whatever
        happens to its processes from now on. The kernel fence (resources/kernelfence.py) drops the
        VIPs' traffic after it, so an agent killed with its fence guard (a container's PID 1 died)
        or frozen stops answering before the peer can serve, not a kernel lifetime later (whole
        seconds: up to 0.6 s of two owners at 100 ms / 300 ms, sim seed 1018). None: no fence
        (standalone, or whenArbiterUnavailable: TakeOver, which chose Heartbeat's availability).

        The later of two certificates, each a time before which the peer cannot serve:
        - the peer hears us and does not claim the Lease: it declares us dead no earlier than
          deadtime after it received the last status of ours it reports having heard (HEARD, sent
          at `heard_us_at`);
        - the Lease: the peer takes it no earlier than W after our last granted write, which the
          API server applied after we sent it (`proven_at`).
        Less FENCE_MARGIN for the two clocks' drift and the kernel's timer granularity."""
        cfg = self.cfg
        if not cfg.arbitrated or cfg.take_over_without_arbiter:
            return None
        if state_of(self) not in SERVES:
            # standby, taking the Lease, fencing (closed at once, before the VIPs are even removed,
            # and while a failed fencing stop is owed): ownership.py's table
            return -math.inf
        if not (self.hold or self.lease_held):
            return -math.inf  # holds nothing and no Lease to start anything under
        return min(self._right_until(), now + FENCE_HORIZON)

    def _right_until(self, *, lost_too: bool = False) -> float:
        """The later of our certificates (serve_until): until then the peer cannot serve; from then on
        it may have taken the groups over. -inf: no certificate. `lost_too`: count our last granted
        write's window even once we know the Lease is no longer ours: the peer could not take it
        before then all the same, so our right ran out then, not when we learned we lost it."""
        cfg = self.cfg
        certs = [-math.inf]
        p = self.peer
        if p.alive is True and p.heard_us_at is not None and p.epoch is None and not self._take_unseen():
            # Not while it claims the Lease (it declared us dead once already; sim seed 1949), nor
            # before it has heard us since our take: until then it may be taking the Lease itself
            # without declaring us dead (a home node reclaiming a group it saw nobody hold), and a
            # slow answer to our take left us no time to renew (sim seed 105288, 51 ms).
            certs.append(p.heard_us_at + cfg.deadtime)
        if (self.lease_held or lost_too) and self.proven_at is not None:
            # the peer's W, if it says a shorter one (a change of W rolls the agents one by one)
            window = min(cfg.arbitration_window, p.window or cfg.arbitration_window)
            certs.append(self.proven_at + window)
        return max(certs) - (FENCE_MARGIN + FENCE_DRIFT * (cfg.deadtime + cfg.arbitration_window))

    def proving(self, now: float) -> bool:
        """We hold and the peer may be taking over: renewals run every W/4, and the fence guard
        must remove the VIP within W/2 of a stall (its tight timeout)."""
        return self.cfg.arbitrated and self._must_prove(now)

    def _must_prove(self, now: float) -> bool:
        """We hold (or hold the Lease) and the peer may be about to take over: it is dead to us,
        it says it cannot hear us, or it has been quiet for d - k. Renew every W/4 meanwhile."""
        if not (self.hold or self.lease_held) or self.shutting_down:
            return False
        quiet_at = self._quiet_at()
        return (
            self.peer.alive is False
            or now < self.unheard_until
            or (quiet_at is not None and now >= quiet_at)
            or self._take_unseen()
        )

    def _take_unseen(self) -> bool:
        """We took the Lease and the peer has not yet reported hearing a status we sent after that.
        Its own take may still be in flight (started while we were dead to it, then it heard us
        again): it watches the Lease for W after reading our take and CASes if nothing changed. We
        no longer had to prove ourselves (it hears us), so it took the Lease from under our
        starting groups (sim seed 1337: 551 ms of two owners). Renew until it has heard us since."""
        if not self.lease_held or self.took_at is None:
            return False
        seen = self.peer.heard_us_at
        return seen is None or seen < self.took_at

    def _take_hold_off(self) -> float | None:
        """A take's `hold_off` (Arbitrate): set only when the peer went silent after we heard it. It
        has then been proving itself (renewing) since a keepalive before we declared it dead, by its
        HEARD rule (`_quiet_at`), so the window may count from when the Lease last changed. Not after
        initdead or a shutdone: then the window starts now, as it always did."""
        p, cfg = self.peer, self.cfg
        if not cfg.early_window or p.alive is not False or not p.lost_after_heard:
            return None
        window = max(cfg.arbitration_window, p.window or 0.0)  # its renewal deadline is its W/2
        return take_hold_off(window, cfg.keepalive, cfg.deadtime)

    def _arm_renewal(self, now: float) -> None:
        """Renew every W/4 while the peer cannot hear us (silent, or says it hears nothing), or has
        not heard us since our take."""
        if self.peer.alive is not True or now < self.unheard_until or self._take_unseen():  # noqa: SIM102
            if self.next_arbitration is None:
                self.next_arbitration, self.retry_unanswered = now + self.cfg.arbitration_window / 4, False

    def _renew(self, reason: str, early: bool = False) -> list[Action]:
        if self.renewing:
            return []
        self.renewing, self.renewal_early = True, early
        return [Arbitrate("renew", -1, reason, timeout=self.cfg.arbitration_window / 2)]

    def _set_hold(self, hold: frozenset[Side], now: float, why: Acquire | Release) -> None:
        if hold != self.hold:
            self.last_transition = {
                "from": hold_word(self.hold),
                "to": hold_word(hold),
                "kind": why.kind.value,
                "reason": why.reason,
                "at": self.wall0 + (now - self.started),
            }
            self.hold, self.hold_since = hold, now

    # -- sending ------------------------------------------------------------------------------
    def _status(self, now: float, st: str) -> Send:
        dt = f"{int(self.cfg.deadtime * 1000):x}"
        fields: list[tuple[str, str | bytes]] = [("t", "status"), ("st", st), ("dt", dt), ("protocol", "1")]
        if self.cfg.arbitrated and self.peer.alive is False:
            fields.append((UNHEARD, self.cfg.peer))  # Kubernetes mode only: our peers are our agents
        if self.cfg.arbitrated and self.peer.alive is not False:
            p = self.peer
            heard = f"{p.generation:x}:{p.status_seq:x}" if p.alive and p.status_seq is not None else "-"
            fields.append((HEARD, heard))
        if self.cfg.arbitrated:
            fields.append((HOLDS, hold_word(self.hold)))
            # always sent, 0 or 1: an agent from before these fields sends neither, and its own
            # `resource` messages stay the word on them
            fields.append((STANDBY, "1" if self.self_standby else "0"))
            fields.append((BUSY, "1" if self.flux is not None else "0"))
            fields.append((WINDOW, str(round(self.cfg.arbitration_window * 1000))))
            fence = self._own_fence()
            if fence is not None:
                fields.append((FENCE, str(math.ceil(fence * 1000))))
        fields += self._epoch_field()
        sent = self._send(now, Message.of(*fields))
        self.status_sent[self.seq] = now
        while len(self.status_sent) > STATUS_SENT_KEPT:
            self.status_sent.popitem(last=False)
        return sent

    def _epoch_field(self) -> list[tuple[str, str | bytes]]:
        # Also while the groups are only starting: a peer whose take is still in flight must learn
        # that we hold the Lease before its CAS (take_still_wanted; sim seed 1337).
        if self.cfg.arbitrated and self.lease_held and self.epoch is not None:
            return [(EPOCH, str(self.epoch))]
        return []

    def _resource_msg(self, now: float, info: str | None = None) -> Send:
        fields: list[tuple[str, str | bytes]] = [
            ("t", "resource"),
            ("rsc_hold", hold_word(self.hold)),
            ("rtype", "full"),
            ("isstable", "1" if self.flux is None else "0"),
        ]
        if info:
            fields.append(("info", info))
        fields += self._epoch_field()
        return self._send(now, Message.of(*fields))

    def _send(self, now: float, body: Message) -> Send:
        """Append Heartbeat's standard fields: src, srcuuid, seq (not on NS_ types), hg, ts, ttl."""
        t = body.type or ""
        head: list[tuple[str, str | bytes]] = [("src", self.cfg.node), ("srcuuid", self.cfg.uuid)]
        seq = None
        if not t.startswith("NS_"):
            self.seq += 1
            seq = self.seq
            head.append(("seq", f"{seq:x}"))
        ts = int(self.wall0 + (now - self.started))
        msg = body.extend(*head, ("hg", f"{self.cfg.generation:x}"), ("ts", f"{ts:x}"), ("ttl", HOPFUDGE_TTL))
        if seq is not None:
            self.history[seq] = msg
            while len(self.history) > HISTORY:
                self.history.popitem(last=False)
        self._count(f"tx_{t}")
        return Send(msg)

    # -- bookkeeping --------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _reject(self, reason: Reject, detail: str) -> Note:
        self._count(f"rejected_{reason.value}")
        return Note("warning", f"dropped: {detail}", counter="rejected", labels={"reason": reason.value})

    def snapshot(self, now: float) -> dict[str, Any]:
        """A cl_status-like view: nodes, their state per medium, who holds what, since when."""
        p = self.peer
        peer_state = {None: "unknown", True: p.st or "up", False: "dead"}[p.alive]
        return {
            "node": self.cfg.node,
            "state": self.st,
            "generation": self.cfg.generation,
            "holds": hold_word(self.hold),
            "holds_for_s": round(now - self.hold_since, 3),
            "in_flux": self.flux is not None,
            "standby": self.self_standby,
            "peer": {
                "node": self.cfg.peer,
                "state": peer_state,
                "holds": hold_word(flip(p.hold)) if p.hold is not None else "unknown",  # its own terms
                "since_s": round(now - p.since, 3),
                "deadtime_ms": int(p.deadtime * 1000),
                "links": {
                    name: {"up": link.up, "last_heard_ms_ago": int((now - link.last) * 1000)}
                    for name, link in sorted(p.links.items())
                },
            },
            "last_transition": self.last_transition,
            "epoch": self.epoch,
            "lease_held": self.lease_held if self.cfg.arbitrated else None,
            "heartbeat_link_down": self.link_down,
            "frozen": self.frozen,
            "counters": dict(sorted(self.counters.items())),
        }


def _ask(info: str, hold: str) -> Message:
    return Message.of(("t", "ask_resources"), ("rsc_hold", hold), ("info", info))


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _hex(text: str | None) -> int | None:
    """Plain hex digits only: int(x, 16) alone also takes '-1f', '+5', ' 5', '0x5' and '1_f'."""
    if not text or len(text) > 16 or not _HEX_DIGITS.issuperset(text):
        return None
    return int(text, 16)


def _dec(text: str | None) -> int | None:
    """ASCII digits only: str.isdigit() is also true for '²', which int() refuses."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 12:
        return None
    return int(text)
