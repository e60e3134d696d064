"""The properties checked at every step of a run.

(a) one owner (Kubernetes mode): at most one node serves the VIP at any instant. A node serves it
    when the address is on its interface and its VM is running (a paused VM answers nothing; its
    kernel answers again the moment it resumes, before its agent runs). Every interval with two
    is a violation, with its start and length.
(b) the epoch never goes down: not in the Lease (as the API server stores it) and not as any
    node's engine saw it (over all its agent generations).
(c) once the faults stop, exactly one owner within a bound: the VIP and the service on exactly one
    node, whose engine holds the group (not in flux), the other node holds nothing, and (Kubernetes
    mode) the Lease names the owner. Measured: the heal time, from the end of the last fault to the
    moment this last became true (and stayed true to the end of the run).
(d) no half-started group once settled: after the bound, no node has the VIP without the service
    or the reverse for more than a moment.
(e) one service (Kubernetes mode with a node fence: ha.cf's `watchdog` and a stop budget): the
    service never runs on both nodes at once (a paused VM's does not run). A self-fencing stop that
    hangs or fails resets its node; the new owner starts its copy only after the old owner's node
    fence (`hacfence`). What no process can close: a VM resumed from a pause runs its service (and
    finishes a start begun before the pause) until its agent has fenced it, and its budget and its
    watchdog count from the resume (their clocks stopped with it); overlaps that end within the
    budget plus twice the watchdog's timeout of a resume of one of the two nodes are measured and
    reported (RunResult.resumed_services: how long after the resume), not violations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hacluster_agent.engine.fencewrite import SYNC_EVERY
from hacluster_agent.engine.membership import FENCE_HORIZON

if TYPE_CHECKING:
    from .node import Node
    from .world import World

HALF_TOLERANCE = 2.0  # s a node may be half-started after the bound (a restart in place)
# A VM resumed from a pause answers for its VIP from its first instant, before its agent runs
# (its clocks stopped with it: neither its guard nor its kernel fence saw the pause). No process
# can close that: the agent's first look (within kernelfence.sync_interval) closes the fence, and
# when no agent runs (killed just before the pause, or at the resume) the kernel fence's horizon
# does (FENCE_HORIZON, the longest it is ever written ahead), plus the kernel's timer slack. An
# overlap with a node that resumed, ending within this bound of its resume (whenever the peer
# started serving: it may have taken over just after the resume, while the agent had not run
# yet), is measured and reported (RunResult.resumed), not a violation.
RESUMED_VM_BOUND = FENCE_HORIZON + 0.005
RESUMED_LOOK_BOUND = SYNC_EVERY + 0.005
"""The same, when the resumed node's agent ran undisturbed: its first look closes the fence."""


@dataclass
class Violation:
    kind: str  # two_owners | two_services | epoch_regressed | lease_epoch_down | no_single_owner | slow_heal | half_started | illegal_transition | crashed
    at: float
    detail: str
    duration: float = 0.0

    def describe(self) -> str:
        dur = f" for {self.duration * 1000:.0f} ms" if self.duration else ""
        return f"{self.kind} at t={self.at:.3f}s{dur}: {self.detail}"


class Checker:
    """A plain class, not a dataclass: its fields name World and Node, which exist only for the
    type checker here (an import cycle), and the simulator's compiled form needs them at run time
    for a dataclass."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.violations: list[Violation] = []
        self.overlap_since: float | None = None
        self.overlap_info = ""
        self.overlaps: list[tuple[float, float]] = []  # every two-serving interval
        self.faults_end = 0.0
        self.bound = 0.0
        self.healed_at: float | None = None
        self.half_since: dict[str, float] = {}
        self.half_reported = False
        self.overlap_resumed: Node | None = None  # a serving node that had just resumed from a pause
        self.resumed: list[float] = []  # overlaps a VM resume opened (s)
        self.services_since: float | None = None  # (e): both nodes running the service since
        self.services_info = ""
        self.resumed_services: list[float] = []

    def violation(self, kind: str, detail: str, at: float | None = None, duration: float = 0.0) -> None:
        t = self.world.sim.now if at is None else at
        if kind == "epoch_regressed" and any(v.kind == kind for v in self.violations):
            return
        self.violations.append(Violation(kind, t, detail, duration))
        self.world.trace(f"VIOLATION {kind}: {detail}")

    # (a) -------------------------------------------------------------------------------------
    def vip_changed(self) -> None:
        world = self.world
        now = world.sim.now
        serving = [n for n in world.nodes.values() if n.serving()]
        if len(serving) >= 2:
            if self.overlap_since is None:
                self.overlap_since = now
                self.overlap_info = world.why_holding()
                recent = [
                    n for n in serving if n.resumed_at is not None and now - n.resumed_at <= RESUMED_VM_BOUND
                ]
                self.overlap_resumed = max(recent, key=lambda n: n.resumed_at or 0.0) if recent else None
        elif self.overlap_since is not None:
            self._close_overlap(now)
        if world.node_fence:
            self._services(now)

    # (e) -------------------------------------------------------------------------------------
    def _services(self, now: float) -> None:
        world = self.world
        running = [n for n in world.nodes.values() if n.service and n.powered and not n.paused]
        if len(running) >= 2:
            if self.services_since is None:
                self.services_since = now
                self.services_info = world.why_holding()
        elif self.services_since is not None:
            self._close_services(now)

    def _close_services(self, now: float) -> None:
        start = self.services_since
        assert start is not None
        self.services_since = None
        cfg = self.world.cfg
        # After a resume the agent runs within the watchdog's timeout (its last feed came before the
        # pause; a loop stalled longer is reset), learns its clock stopped, and from then on its
        # budget and the watchdog's timeout run: B + 2T (seed 117936: paused, then stalled 649 ms).
        bound = cfg.stop_budget + 2 * cfg.watchdog_timeout + 0.01
        resumes = [
            now - n.resumed_at
            for n in self.world.nodes.values()
            if n.resumed_at is not None and n.resumed_at <= start and now - n.resumed_at <= bound
        ]
        if resumes:
            self.resumed_services.append(min(resumes))  # how long after its resume it still ran
        elif now > start:
            self.violation(
                "two_services", f"the service ran on both nodes ({self.services_info})", start, now - start
            )

    def _close_overlap(self, now: float) -> None:
        start = self.overlap_since
        assert start is not None
        self.overlap_since = None
        self.overlaps.append((start, now - start))
        node = self.overlap_resumed
        if self.world.kube and node is not None and node.resumed_at is not None:
            bound = RESUMED_LOOK_BOUND if node.resume_clean else RESUMED_VM_BOUND
            if now - node.resumed_at <= bound:
                self.resumed.append(now - node.resumed_at)  # how long after its resume it still answered
                return
        if self.world.kube and now > start:
            self.violation(
                "two_owners", f"both nodes served the VIP ({self.overlap_info})", start, now - start
            )

    # (b) is checked where epochs change: LeaseServer._write and Agent.execute ----------------

    # (c), (d) ----------------------------------------------------------------------------------
    def single_owner(self) -> str | None:
        """The owner's name when the pair is settled with exactly one owner, else None."""
        world = self.world
        owner = None
        for n in world.nodes.values():
            agent = n.agent
            if agent is None or not agent.listening or n.paused:
                return None
            eng = agent.engine
            if eng.flux is not None or eng.arbitration is not None:
                return None
            if n.vip or n.service or eng.hold:
                if not (n.vip and n.service and eng.hold) or owner is not None:
                    return None
                owner = n.name
        if owner is None:
            return None
        if world.kube:
            view = world.api.view
            if view is None or view.holder != owner:
                return None
        return owner

    def step(self) -> None:
        world = self.world
        now = world.sim.now
        if now < self.faults_end:
            return
        if self.single_owner() is not None:
            if self.healed_at is None:
                self.healed_at = now
        else:
            self.healed_at = None
        if now > self.faults_end + self.bound and not self.half_reported:
            for n in world.nodes.values():
                if n.vip != n.service and n.powered:
                    since = self.half_since.setdefault(n.name, now)
                    if now - since > HALF_TOLERANCE:
                        self.half_reported = True
                        self.violation(
                            "half_started",
                            f"{n.name}: VIP {'up' if n.vip else 'down'}, service {'up' if n.service else 'down'}",
                            since,
                            now - since,
                        )
                else:
                    self.half_since.pop(n.name, None)

    def finish(self) -> float | None:
        """At the end of the run: close an open overlap, judge (c). Returns the heal time."""
        world = self.world
        now = world.sim.now
        if self.overlap_since is not None:
            self._close_overlap(now)
        if self.services_since is not None:
            self._close_services(now)
        if world.kube and world.api.epoch_drops:
            when, old, new, by = world.api.epoch_drops[0]
            self.violation(
                "lease_epoch_down", f"the Lease's epoch went {old} -> {new} (written by {by})", when
            )
        if self.healed_at is None:
            self.violation("no_single_owner", f"not settled at the end: {world.state_line()}", now)
            return None
        heal = self.healed_at - self.faults_end
        if heal > self.bound:
            self.violation(
                "slow_heal", f"settled {heal:.2f}s after the faults (bound {self.bound:.2f}s)", now
            )
        return heal
