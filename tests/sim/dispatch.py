"""The daemon's dispatch, modelled on `hacluster_agent/daemon.py` line for line where it matters:
`execute` (every call wakes `_clock`, which ticks once more), `_spawn` (a task starts on the next
loop iteration), `_resources` (acquire left to right, release right to left: the VIP, first in
the group, is stopped LAST, each stop retried every 1 s up to 10 times as `GroupRunner`),
`_arbitrate` (renew under `wait_for(W/2)`, a timeout = unavailable), `_clock` (sleeps until
`next_deadline()`), `_maintain` / `_refresh_held` (the VIP driver's refresh: a presence check,
then `addr replace` — which re-creates an address removed in between —, a lost VIP calls
`engine.hold_lost`), `_monitor` (restarts a lost member in place unless flux, or arbitrated and
(renewing or not lease_held), or the peer holds the group), `_directives` (the operator's
switchover), and `run` (the guard first, stop what a dead agent left running, open the API
connection, open the media, `engine.start`).

The engine and the Arbiter are the real ones; only their I/O is simulated. The synchronous half
(`execute`, the fence sync, `_clock`) is `agentbase.AgentBase`, compiled with the engine; the loops
stay here, interpreted.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Coroutine
from typing import Any

from hacluster_agent.arbiter.lease import Unavailable, Verdict
from hacluster_agent.engine.actions import (
    Acquire,
    Arbitrate,
    Release,
    Side,
)
from hacluster_agent.resources.base import ResourceError
from hacluster_agent.resources.ipaddr import STALE_CHECK

from .agentbase import AgentBase
from .node import KERNEL
from .runtime import Future, Task

STOP_RETRIES = 10  # GroupRunner defaults
RETRY_INTERVAL = 1.0
MIGRATION_THRESHOLD = 3


class Agent(AgentBase):
    """One agent process: the daemon's loops (coroutines) around AgentBase's dispatch."""

    async def _startup(self) -> None:
        node = self.node
        await node.sleep(self._rand(node.params.boot))
        if node.fence_until is not None:  # KernelFence.install(): the tables afresh, closed
            self.fence_installed = -math.inf
            self.fence_last_write = node.local_now()
            node.fence_write(None)
        if node.vip or node.service:
            # "already running before start-up: stopping them before joining"
            self.trace("already running before start-up: stopping them before joining")
            try:
                await self._group_stop()
            except ResourceError as e:
                self.trace(f"cannot stop what was left running: {e}; exiting")
                node.kill_agent(why="exit 1")
                node.world.schedule_restart(node)
                return
        if self.world.kube:
            with contextlib.suppress(Unavailable):
                await self.arbiter.store.get()  # open the API connection before it is urgent
        self.listening = True
        if self.world.node_fence:  # daemon.run: the watchdog opened last, then fed from the loop
            self.spawn(self._feed())
        self.execute(self.engine.start(self.now(), node.wall()))
        self.spawn(self._maintain())
        self.spawn(self._monitor())
        self.start_fence_loop()
        if self.world.kube:
            self.spawn(self._directives())

    async def _resources(self, act: Acquire | Release) -> None:
        sides = [s for s in (Side.LOCAL, Side.FOREIGN) if s in act.sides]
        ok, reason = True, "ok"
        try:
            if isinstance(act, Acquire):
                started: list[Side] = []
                try:
                    for side in sides:
                        for _ in range(self._runners(side)):
                            await self._group_start(act.services_at)
                            started.append(side)
                        self.held.add(side)
                except ResourceError:
                    for _ in reversed(started):
                        with contextlib.suppress(ResourceError):
                            await self._group_stop()
                    for side in sides:
                        self.held.discard(side)
                    raise
            else:
                if act.fence:  # as the daemon: every VIP first, then the services
                    self.stopping = True
                    for side in sides:
                        for _ in range(self._runners(side)):
                            with contextlib.suppress(ResourceError):
                                await self._vip_stop()
                for side in reversed(sides):
                    for _ in range(self._runners(side)):
                        await self._group_stop()
                    self.held.discard(side)
        except ResourceError as e:
            ok, reason = False, str(e)
        self.trace(
            f"{'acquire' if isinstance(act, Acquire) else 'release'} op {act.op}: {'done' if ok else 'FAILED ' + reason}"
        )
        self.execute(self.engine.resources_done(act.op, ok, reason, self.now()))

    async def _vip_start(self) -> None:
        node = self.node
        await self._netlink(lambda: None)
        t0 = self.now()
        node.vip_write("start")
        self.placed = True
        lifetime = node.lifetime
        self.deadline = t0 + lifetime if lifetime > 0 else None

    async def _vip_stop(self) -> None:
        await self._netlink(lambda: self.node.vip_remove("stop"))
        self.placed, self.deadline = False, None

    async def _service_start(self) -> None:
        node = self.node
        await node.sleep(self._rand(node.params.start_service))
        if node.fail_starts > 0:
            node.fail_starts -= 1
            raise ResourceError("service", "start", "exit status 1")
        node.set_service(True, "start")

    async def _service_stop_once(self) -> None:
        node = self.node
        hang, node.hang_stop = node.hang_stop, 0.0
        await node.sleep(hang or self._rand(node.params.stop_service))
        if node.fail_stops > 0:
            node.fail_stops -= 1
            raise ResourceError("service", "stop", "exit status 1")
        node.set_service(False, "stop")

    async def _service_stop(self) -> None:
        last: ResourceError | None = None
        for attempt in range(STOP_RETRIES + 1):
            if attempt:
                await self.node.sleep(RETRY_INTERVAL)
            try:
                await self._service_stop_once()
                return
            except ResourceError as e:
                last = e
        if self.node.service and last is not None:
            raise ResourceError(
                "service", "stop", f"{last.reason} (after {STOP_RETRIES + 1} attempts); NOT released"
            )

    async def _group_start(self, services_at: float | None = None) -> None:
        """GroupRunner.start: VIP, then the service (no earlier than `services_at`); a failure
        stops both, right to left."""
        self.stopping = False
        self.failures = {"vip": 0, "service": 0}
        await self._vip_start()
        if services_at is not None and services_at > self.now():
            await self.node.sleep(services_at - self.now())
        try:
            refused = self.engine.services_refused()  # (GroupRunner.start's `refused`)
            if refused is not None:
                raise ResourceError("service", "start", f"not started: {refused}")
            await self._service_start()
        except ResourceError:
            await self._service_stop()
            await self._vip_stop()
            raise

    async def _group_stop(self) -> None:
        """GroupRunner.stop: right to left: the service (with retries), then the VIP."""
        self.stopping = True
        await self._service_stop()
        await self._vip_stop()

    # -- the watchdog (daemon._feed) ------------------------------------------------------------------
    async def _feed(self) -> None:
        node = self.node
        every = min(self.world.cfg.watchdog_timeout / 4, 1.0)  # daemon._feed_every
        while not self.node_fenced:
            node.watchdog_feed()
            await node.sleep(every)

    # -- the VIP's lifetime -----------------------------------------------------------------------
    async def _maintain(self) -> None:
        lifetime = self.node.lifetime
        every = max(0.2, lifetime / 3) if lifetime else 1.0
        while True:
            await self.node.sleep(every)
            await self._refresh_held()

    async def _refresh_held(self) -> None:
        for side in list(self.held):
            for _ in range(self._runners(side)):
                try:
                    await self._vip_refresh()
                except ResourceError as e:
                    self.trace(f"lost a held address: {e}")
                    self.monitor_now.set()
                    self.execute(self.engine.hold_lost(self.now(), str(e)))

    async def _lose(self, why: str) -> None:
        with contextlib.suppress(ResourceError):
            await self._vip_stop()
        raise ResourceError("vip", "refresh", why)

    async def _vip_refresh(self) -> None:
        """IPaddr.refresh: check presence, then `addr replace` (re-creates a removed address)."""
        node = self.node
        deadline = self.deadline
        if not self.placed or deadline is None:
            return
        if self.now() >= deadline:
            await self._lose("its lifetime ran out before it was renewed")
        for _attempt in range(3):  # as IPAddrDriver.refresh: only a fresh presence check counts
            t_check = self.now()
            present_fut = self._netlink(lambda: node.vip)
            if node.stall_in_refresh is not None:  # the nemesis: stall right after the check was sent
                duration, node.stall_in_refresh = node.stall_in_refresh, None
                node.sys_later(KERNEL, 0.0, node.stall, duration)
            if not await present_fut:
                await self._lose("the address is gone")
            if self.now() - t_check < STALE_CHECK:
                break
        else:
            return
        t0 = self.now()
        node.vip_write("refresh")  # the write leaves with the call; its answer comes later
        await self._netlink(lambda: None)
        if self.now() >= deadline:
            await self._lose("its lifetime ran out while it was being renewed")
        self.deadline = t0 + node.lifetime

    # -- the monitor ------------------------------------------------------------------------------
    async def _monitor(self) -> None:
        node, engine = self.node, self.engine
        while True:
            await self.monitor_now.wait(node.params.monitor_interval)
            if not self.held:
                self.monitor_now.clear()
                continue
            await self._refresh_held()
            if self.monitor_now.flag:
                await node.sleep(self.world.keepalive)
            if engine.restart_refused(frozenset(self.held)) is not None:
                await node.sleep(0.05)
                continue
            self.monitor_now.clear()
            for side in list(self.held):
                for _ in range(self._runners(side)):
                    migrate = await self._monitor_once()
                    if migrate:
                        self.execute(engine.request_standby(self.now(), f"migration threshold: {migrate}"))

    async def _monitor_once(self) -> str:
        node = self.node
        for name in ("vip", "service"):
            if self.stopping:
                break
            if name == "vip":
                running = await self._netlink(lambda: node.vip)
            else:
                await node.sleep(0.01)
                running = node.service
            if running:
                continue
            self.failures[name] += 1
            self.trace(f"monitor: {name} is stopped, failure {self.failures[name]}/{MIGRATION_THRESHOLD}")
            if self.failures[name] >= MIGRATION_THRESHOLD:
                return f"{name} failed {self.failures[name]} times"
            try:
                if self.stopping:
                    break
                if name == "vip":
                    await self._vip_start()
                    self.trace("monitor: VIP restarted in place")
                else:
                    await self._service_start()
            except ResourceError as e:
                return f"{name} could not be restarted: {e}"
            if self.stopping:
                if name == "vip":
                    await self._vip_stop()
                else:
                    await self._service_stop()
                break
        return ""

    # -- the operator's directives ------------------------------------------------------------------
    async def _directives(self) -> None:
        node, engine = self.node, self.engine
        await node.sleep(0.5 * node.sim.rng.random())
        while True:
            # as daemon._directives: the Lease is read every 0.5 s (through the API, with its faults)
            try:
                view = await self.arbiter.look()
            except Unavailable:
                view = None
            if view is not None:  # read_directives: nothing when the Lease cannot be read
                d = self.world.directive
                self.execute(
                    engine.directives(
                        self.now(),
                        view.holder,
                        view.transitions,
                        handover_to=d[1] if d is not None else None,
                        recreated=view.recreated,
                    )
                )
            await node.sleep(0.5)

    # -- the Lease ----------------------------------------------------------------------------------
    async def _arbitrate(self, act: Arbitrate) -> None:
        arbiter = self.arbiter
        if act.kind in ("release", "handback"):
            v = await (arbiter.release() if act.kind == "release" else arbiter.hand_back(self.peer))
            self.trace(f"Lease {act.kind}: {v.reason}")
            return
        # An exception out of the arbiter is not caught here, unlike the daemon (which answers it
        # 'unavailable'): it ends the run as a crash, so the bug behind it is found (seed 205195).
        request = (
            arbiter.renew()
            if act.kind == "renew"
            else arbiter.take(self.engine.take_still_wanted, act.hold_off, act.window)
        )
        if act.timeout is None:  # (two awaits: mypyc mishandles `await (a if c else b)`, seed 104960)
            v = await request
        else:
            v = await self._wait_for(request, act.timeout)
        self.trace(f"Lease {act.kind}: {'granted' if v.granted else 'refused'} ({v.reason}) epoch {v.epoch}")
        self.execute(
            self.engine.arbitrated(
                act.op, v.granted, v.reason, self.now(), v.epoch, v.unavailable, v.sent_at, v.taken_over
            )
        )

    def _wait_for(self, coro: Coroutine[Any, Any, Verdict], timeout: float) -> Future:
        """asyncio.wait_for(request, timeout): on timeout the request is cancelled (a write already
        sent may still be applied by the API server) and counts as unavailable."""
        out = Future()
        task = Task(coro, out.set_result)
        self.tasks.append(task)

        def expire() -> None:
            if not out.done:
                task.close()
                out.set_result(Verdict(False, "Lease request timed out", unavailable=True))

        self.node.agent_later(timeout, expire)
        return out
