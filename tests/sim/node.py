"""One simulated machine: its clock, its kernel (the VIP on the interface and its lifetime), the
service, the fence guard, and the agent process (a real Engine driven by `dispatch.Agent`).

Three owners of events, each stopped by different faults:
- the agent process: dies with a crash (its events are dropped: they carry its generation), and
  stops running while its event loop stalls (its events queue and run when the stall ends);
- the fence guard: a separate process with its own timer (G after the agent's last beat);
- the kernel: the VIP's lifetime L after its last write.
A paused VM stops all three: its clock does not advance while paused, so none of their timers
notices the pause; on resume the kernel still has the VIP before the agent runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hacluster_agent.wire.message import Message

from .runtime import Event, Future, last_at

if TYPE_CHECKING:
    from .dispatch import Agent
    from .world import World

WALL_BASE = 1_700_000_000.0
BEAT = 0.05  # the agent feeds its guard every min(G/4, 50 ms)
GUARD_RESTART_BACKOFF = 1.0  # fenceguard.RESTART_BACKOFF

AGENT, GUARD, KERNEL = 0, 1, 2


@dataclass
class NodeParams:
    address_lifetime: float | None = None  # L (--address-lifetime); None: default_address_lifetime
    fence_after: float | None = None  # G; None: deadtime/2 (default_fence_after)
    start_service: tuple[float, float] = (0.05, 0.5)  # service start duration range (s)
    stop_service: tuple[float, float] = (0.05, 0.5)
    boot: tuple[float, float] = (0.3, 1.5)  # agent process start to engine.start()
    netlink: tuple[float, float] = (0.0002, 0.002)
    monitor_interval: float = 5.0


def close_coroutines(events: Iterable[Event]) -> None:
    """Events dropped for good (a killed agent, a powered-off node, the end of a run): close the
    coroutines they would have started, or Python warns that they were never awaited. Any
    Coroutine, not only inspect.iscoroutine's: the compiled form's coroutines are not Python's, and
    one left to the garbage collector crashed it (seed 104960)."""
    for ev in events:
        for arg in ev.args:
            if isinstance(arg, Coroutine):
                arg.close()


class NodeEvent(Event):
    """An event on a node: re-queued while the VM is paused, dropped for a dead agent generation,
    queued while the agent's loop is stalled. `local` set: due at that time of the node's clock."""

    __slots__ = ("gen", "local", "node", "owner")

    def __init__(
        self,
        node: Node,
        owner: int,
        gen: int,
        local: float | None,
        fn: Callable[..., None],
        args: tuple[Any, ...],
    ) -> None:
        self.fn, self.args, self.cancelled = fn, args, False  # Event.__init__, inlined: the hot path
        self.node, self.owner, self.gen, self.local = node, owner, gen, local

    def fire(self) -> None:
        node = self.node
        if not node.powered:
            return
        if node.paused:
            node.deferred.append(self)
            return
        local = self.local
        if local is not None:
            due = local + node.offset
            if due > node.sim.now + 1e-12:  # the clock stopped since this was scheduled
                node.sim.push(due, self)
                return
        if self.owner == AGENT:
            if self.gen != node.proc_gen or node.agent is None:
                return
            if node.stalled:
                node.stall_queue.append(self)
                return
        if local is None:
            self.fn(*self.args)
            return
        # the node's clock reads exactly the time this timer was set for (true time - offset
        # would round, and a timer due at X could see X - 1e-16 and re-arm itself forever)
        outer, node.exact = node.exact, self.local
        try:
            self.fn(*self.args)
        finally:
            node.exact = outer


class Node:
    def __init__(self, world: World, name: str, params: NodeParams) -> None:
        self.world, self.sim, self.name, self.params = world, world.sim, name, params
        assert params.address_lifetime is not None, "World derives L before it makes the nodes"
        self.lifetime: float = params.address_lifetime  # L
        self.offset = 0.0  # true time = local time + offset
        self.exact: float | None = None  # set while a timer of this node runs: its due time
        self.paused = False
        self.paused_at = 0.0
        self.resumed_at: float | None = None
        self.resume_clean = False  # its agent ran undisturbed since the last resume (first look due)
        self.powered = True
        self.deferred: list[NodeEvent] = []
        self.wall_skew = (world.sim.rng.random() - 0.5) * 0.2
        # kernel
        self.vip = False
        self.vip_token = 0  # the current address write; its expiry event carries it
        self.service = False
        # the agent process
        self.agent: Agent | None = None
        self.proc_gen = 0
        self.stalled = False
        self.stall_id = 0
        self.stall_queue: list[NodeEvent] = []
        self.state_dir: dict[str, int] = {}  # what survives a restart: the generation
        self.max_epoch_seen = 0
        # its agent's report (kube/reporter.py), as the operator reads it: (since, holds, epoch)
        self.reports: list[tuple[float, bool, int | None]] = []
        # the fence guard
        self.guard_alive = False
        self.guard_spawned_at = -1e9
        self.guard_killed_with_agent = False
        self.stall_after = 0.0  # the guard's G for the current stall (tight while proving)
        # what the nemesis arms
        self.fail_starts = 0  # the next N service starts fail
        self.fail_stops = 0  # the next N service stops fail
        self.stall_in_refresh: float | None = None  # stall right after the next presence check
        # the kernel fence (resources/kernelfence.py): nftables drops the VIPs' traffic after
        # `fence_until` (this node's clock); None: no fence table (standalone mode)
        self.fence_until: float | None = -math.inf if world.kernel_fence else None
        self.fence_token = 0
        self.fence_pending: float | None = None  # when the one pending expiry check is due (local)
        # the watchdog device (resources/watchdog.py): armed while an agent has it open; a kernel
        # timer, so it stops while the VM is paused
        self.watchdog_armed = False
        self.watchdog_token = 0
        self.hang_stop = 0.0  # the next service stop hangs this long (s): a script stuck in stop
        # bookkeeping for the invariants and the trace
        self.vip_changes = 0

    # -- time ---------------------------------------------------------------------------------
    def local_now(self) -> float:
        if self.exact is not None:
            return self.exact
        return (self.paused_at if self.paused else self.sim.now) - self.offset

    def wall(self) -> float:
        return WALL_BASE + self.sim.now + self.wall_skew  # wall clocks keep running through a pause

    def _push(
        self, owner: int, local: float | None, at: float, fn: Callable[..., None], args: tuple[Any, ...]
    ) -> NodeEvent:
        ev = NodeEvent(self, owner, self.proc_gen, local, fn, args)
        self.sim.push(at, ev)
        return ev

    def agent_later(self, delay: float, fn: Callable[..., None], *args: Any) -> NodeEvent:
        return self.sys_later(AGENT, delay, fn, *args)

    def agent_at_global(
        self, at: float, fn: Callable[..., None], *args: Any, gen: int | None = None
    ) -> NodeEvent:
        ev = self._push(AGENT, None, at, fn, args)
        if gen is not None:
            ev.gen = gen
        return ev

    def sys_later(self, owner: int, delay: float, fn: Callable[..., None], *args: Any) -> NodeEvent:
        exact = self.exact  # local_now() and _push, inlined: every timer of a node comes here
        t = (
            exact if exact is not None else (self.paused_at if self.paused else self.sim.now) - self.offset
        ) + (delay if delay > 0.0 else 0.0)
        ev = NodeEvent(self, owner, self.proc_gen, t, fn, args)
        self.sim.push(t + self.offset, ev)
        return ev

    def sleep(self, delay: float) -> Future:
        """The agent's asyncio.sleep on the node's clock."""
        fut = Future()
        self.agent_later(delay, fut.set_result, None)
        return fut

    def trace(self, text: str) -> None:
        self.world.trace(f"{self.name}: {text}")

    def report(self, holds: bool, epoch: int | None) -> None:
        """The agent's state changed: its report says so from now on."""
        if not self.reports or self.reports[-1][1:] != (holds, epoch):
            self.reports.append((self.sim.now, holds, epoch))

    def report_at(self, t: float) -> tuple[bool, int | None] | None:
        r = last_at(self.reports, t)
        return None if r is None else (r[1], r[2])

    # -- the kernel ---------------------------------------------------------------------------
    def vip_write(self, why: str) -> None:
        """`ip addr replace … valid_lft L`: adds the address if absent, renews its lifetime."""
        if not self.powered:
            return
        self.vip_token += 1
        if not self.vip:
            self.vip = True
            self.vip_changes += 1
            self.trace(f"VIP added ({why})")
            self.world.vip_changed(self)
        lifetime = self.lifetime
        if lifetime > 0:
            self.sys_later(KERNEL, lifetime, self._vip_expire, self.vip_token)

    def vip_remove(self, why: str) -> None:
        self.vip_token += 1
        if self.vip:
            self.vip = False
            self.vip_changes += 1
            self.trace(f"VIP removed ({why})")
            self.world.vip_changed(self)

    def _vip_expire(self, token: int) -> None:
        if token == self.vip_token and self.vip:
            self.vip_remove(f"kernel: lifetime {self.lifetime:g}s ran out")

    def serving(self) -> bool:
        """Clients reach the VIP here: the address is on, the machine runs, the fence is open."""
        if not (self.vip and self.powered and not self.paused):
            return False
        return self.fence_until is None or self.local_now() < self.fence_until

    def fence_write(self, timeout: float | None) -> None:
        """The kernel applies a fence write: open for `timeout` seconds from now, or close (None)."""
        if not self.powered or self.fence_until is None:
            return
        now = self.local_now()
        self.fence_until = now + timeout if timeout is not None and timeout > 0 else -math.inf
        self.world.vip_changed(self)
        # One expiry check pending at a time (writes come every 25 ms, each further out): moved
        # earlier when a write shortens the deadline, re-armed when it fires before the deadline.
        if self.fence_until > now and (self.fence_pending is None or self.fence_pending > self.fence_until):
            self._arm_fence_check(now)

    def _arm_fence_check(self, now: float) -> None:
        assert self.fence_until is not None
        self.fence_token += 1
        self.fence_pending = self.fence_until
        self.sys_later(KERNEL, self.fence_until - now, self._fence_expire, self.fence_token)

    def _fence_expire(self, token: int) -> None:
        if token != self.fence_token or self.fence_until is None:
            return
        self.fence_pending = None
        now = self.local_now()
        if self.fence_until > now:  # written further out since this check was set
            self._arm_fence_check(now)
            return
        if self.vip:
            self.trace("kernel fence: the VIP's traffic is dropped (its time ran out)")
        self.world.vip_changed(self)

    def set_service(self, running: bool, why: str) -> None:
        if running != self.service:
            self.service = running
            self.trace(f"service {'started' if running else 'stopped'} ({why})")
            self.world.vip_changed(self)

    # -- the fence guard ------------------------------------------------------------------------
    @property
    def fence_after(self) -> float:
        g = self.params.fence_after
        return self.world.deadtime / 2 if g is None else g

    def guard_spawn(self) -> None:
        if self.fence_after <= 0:
            return
        self.guard_alive = True
        self.guard_spawned_at = self.local_now()

    def guard_fence(self, why: str) -> None:
        if self.guard_alive and self.vip:
            self.vip_remove(f"fence guard: {why}")

    def _guard_check(self, stall_id: int) -> None:
        if self.stalled and stall_id == self.stall_id and self.guard_alive:
            self.guard_fence(f"no beat for {self.stall_after * 1000:.0f} ms")

    def _guard_eof(self) -> None:
        if self.guard_alive:
            self.guard_fence("the agent is gone (EOF)")
            self.guard_alive = False

    # -- the watchdog -----------------------------------------------------------------------------
    def watchdog_feed(self) -> None:
        """A write to /dev/watchdog (opening it arms it): the reset is `watchdog_timeout` away."""
        if not self.powered:
            return
        self.watchdog_armed = True
        self.watchdog_token += 1
        self.sys_later(KERNEL, self.world.cfg.watchdog_timeout, self._watchdog_fires, self.watchdog_token)

    def _watchdog_fires(self, token: int) -> None:
        if token != self.watchdog_token or not self.watchdog_armed:
            return
        self.trace("watchdog: not fed in time: the node resets")
        self.power_off()
        lo, hi = self.world.cfg.reboot
        self.sim.later(lo + (hi - lo) * self.sim.rng.random(), self.power_on)

    # -- the agent process ----------------------------------------------------------------------
    def boot_agent(self, *, keep_state: bool = True) -> None:
        """Start a new agent process (what the supervisor does)."""
        from .dispatch import Agent

        if not self.powered or self.agent is not None:
            return
        if not keep_state:
            self.state_dir = {}
        prev = self.state_dir.get("generation", 0)
        gen = max(prev + 1, int(self.wall()))  # state.next_generation
        self.state_dir["generation"] = gen
        self.proc_gen += 1
        self.stalled, self.stall_queue = False, []
        self.agent = Agent(self, gen)
        self.trace(f"agent started (generation {gen}{'' if keep_state else ', no state dir'})")
        self.agent.run()

    def kill_agent(
        self, *, with_guard: bool = False, service_dies: bool = False, why: str = "SIGKILL"
    ) -> None:
        if self.agent is None:
            return
        self.trace(f"agent killed ({why}{', guard too' if with_guard else ''})")
        self.resume_clean = False
        if self.watchdog_armed:
            # its descriptor closed without the magic close: the kernel feeds it one last time
            # (watchdog_release: "watchdog did not stop!"; tests/vm/test_watchdog.py)
            self.watchdog_feed()
        self.agent.dead()
        self.agent = None
        self.proc_gen += 1
        close_coroutines(self.stall_queue)
        self.stalled, self.stall_queue = False, []
        if with_guard:
            self.guard_alive = False
        elif self.guard_alive:
            self.sys_later(GUARD, 0.003, self._guard_eof)  # EOF on the pipe: a few ms
        if service_dies:
            self.set_service(False, "killed with the process tree")

    def kill_guard(self) -> None:
        if self.guard_alive:
            self.trace("fence guard killed")
            self.guard_alive = False
            if self.agent is not None:  # FenceGuard.beat restarts a dead guard, at most every 1 s
                wait = max(0.0, self.guard_spawned_at + GUARD_RESTART_BACKOFF - self.local_now())
                self.agent_later(wait + BEAT * self.sim.rng.random(), self._guard_respawn)

    def _guard_respawn(self) -> None:
        if not self.guard_alive:
            self.trace("fence guard restarted by the agent")
            self.guard_spawn()

    def stall(self, duration: float) -> None:
        """The agent's event loop stops running for `duration` (SIGSTOP, a long GC, a blocking call)."""
        if self.agent is None or self.stalled:
            return
        self.resume_clean = False
        self.stalled = True
        self.stall_id += 1
        self.trace(f"agent stalled for {duration * 1000:.0f} ms")
        after, beat = self.fence_after, BEAT
        tight = self.world.window / 2
        if self.world.kube and 0 < tight < after and self.agent.engine.proving(self.local_now()):
            # FenceGuard's TIGHT beats: the owner was proving itself in the Lease
            after, beat = tight, min(tight / 4, BEAT)
        last_beat = self.local_now() - beat * self.sim.rng.random()
        self.stall_after = after
        self.sys_later(GUARD, last_beat + after - self.local_now(), self._guard_check, self.stall_id)
        self.sys_later(KERNEL, duration, self._unstall, self.stall_id, self.proc_gen)

    def _unstall(self, stall_id: int, gen: int) -> None:
        if stall_id != self.stall_id or gen != self.proc_gen or not self.stalled:
            return
        self.stalled = False
        self.trace("agent resumed")
        queue, self.stall_queue = self.stall_queue, []
        for ev in queue:
            if self.stalled or ev.gen != self.proc_gen:
                if ev.gen == self.proc_gen:
                    self.stall_queue.append(ev)
                continue
            ev.fn(*ev.args)
        if self.agent is not None and not self.stalled:
            self.agent.resumed()

    # -- the machine ----------------------------------------------------------------------------
    def pause(self) -> None:
        if self.paused or not self.powered:
            return
        self.trace("VM paused")
        self.paused, self.paused_at = True, self.sim.now
        self.world.vip_changed(self)

    def resume(self) -> None:
        if not self.paused:
            return
        self.offset += self.sim.now - self.paused_at
        self.paused, self.resumed_at = False, self.sim.now
        self.resume_clean = self.agent is not None and self.agent.listening and not self.stalled
        self.trace(f"VM resumed after {(self.sim.now - self.paused_at) * 1000:.0f} ms")
        self.world.vip_changed(self)
        deferred, self.deferred = self.deferred, []
        for ev in deferred:
            ev.fire()

    def power_off(self) -> None:
        if not self.powered:
            return
        self.trace("power off")
        if self.agent is not None:
            self.agent.dead()
        self.agent = None
        self.proc_gen += 1
        self.guard_alive = False
        close_coroutines([*self.stall_queue, *self.deferred])
        self.stalled, self.stall_queue, self.deferred = False, [], []
        self.paused = False
        self.watchdog_armed = False
        self.watchdog_token += 1
        self.vip_remove("power off")
        self.set_service(False, "power off")
        if self.fence_until is not None:  # the nftables table goes with the kernel
            self.fence_token += 1
            self.fence_pending = None
            self.fence_until = -math.inf
        self.powered = False

    def power_on(self) -> None:
        if self.powered:
            return
        self.powered = True
        self.trace("power on")
        self.boot_agent(keep_state=True)

    # -- the network ----------------------------------------------------------------------------
    def on_air(self) -> bool:
        return self.powered and not self.paused

    def packet_arrives(self, msg: Message) -> None:
        if not self.powered:
            return
        self.agent_at_global(self.sim.now, self._deliver, msg)

    def _deliver(self, msg: Message) -> None:
        if self.agent is not None:
            self.agent.packet(msg)
