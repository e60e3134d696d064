"""The agent's synchronous dispatch (daemon.py's execute, the kernel fence's sync, the clock):
compiled with the engine, as the simulation's hot path. Its coroutines (the daemon's loops) are
`dispatch.Agent`'s, a subclass left interpreted: compiled, a killed agent's coroutines crashed the
garbage collector when it finalized them (seed 104960 of the CI form)."""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Any

from mypy_extensions import mypyc_attr

from hacluster_agent.arbiter.lease import Arbiter
from hacluster_agent.engine.actions import (
    Acquire,
    Action,
    Announce,
    Arbitrate,
    FenceNode,
    Note,
    PeerChanged,
    Release,
    Send,
    Side,
)
from hacluster_agent.engine.fencewrite import IDLE_WAKE, next_write, sync_interval
from hacluster_agent.engine.membership import Engine, EngineConfig
from hacluster_agent.wire.message import Message

from .lease import SimLeaseStore
from .node import KERNEL, Node
from .runtime import Future, Task


class SimFlag:
    """asyncio.Event on the node's clock."""

    def __init__(self, node: Node) -> None:
        self.node, self.flag = node, False
        self.waiters: list[Future] = []

    def set(self) -> None:
        self.flag = True
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            w.set_result(True)

    def clear(self) -> None:
        self.flag = False

    def wait(self, timeout: float) -> Future:
        fut = Future()
        if self.flag:
            fut.set_result(True)
            return fut
        self.waiters.append(fut)
        self.node.agent_later(timeout, fut.set_result, False)
        return fut


@mypyc_attr(allow_interpreted_subclasses=True)
class AgentBase:
    """One agent process: the real Engine and Arbiter, and the daemon's synchronous dispatch around
    them (compiled: the hot path). The loops, coroutines, are `dispatch.Agent`'s (interpreted)."""

    def __init__(self, node: Node, generation: int) -> None:
        world = node.world
        self.node, self.world, self.generation = node, world, generation
        self.side = Side.LOCAL if node.name == world.home else Side.FOREIGN
        self.peer = world.peer_of(node.name)
        self.engine = Engine(
            EngineConfig(
                node=node.name,
                peer=self.peer,
                keepalive=world.keepalive,
                deadtime=world.deadtime,
                warntime=world.warntime,
                initdead=world.initdead,
                generation=generation,
                auto_failback=world.auto_failback,
                has_local=self.side is Side.LOCAL,
                has_foreign=self.side is Side.FOREIGN,
                standby_timeout=max(5.0, 4 * world.deadtime),
                arbitrated=world.kube,
                arbitration_window=world.window,
                early_window=world.cfg.early_window,
                stop_budget=world.cfg.stop_budget
                if world.node_fence and world.cfg.node_fence_rules
                else None,
                watchdog_timeout=world.cfg.watchdog_timeout if world.node_fence else 0.0,
            )
        )
        self.arbiter = Arbiter(
            SimLeaseStore(world.api, node),
            node.name,
            window=world.window,
            poll=min(0.05, world.window / 5),
            clock=node.local_now,
            sleep=node.sleep,
        )
        self.held: set[Side] = set()
        self.listening = False
        self.clock_ev: Any = None
        self.wake_pending = False
        self.monitor_now = SimFlag(node)
        # the VIP driver's state (resources/ipaddr.py) and the group runner's
        self.placed = False
        self.deadline: float | None = None
        self.stopping = False
        self.failures: dict[str, int] = {"vip": 0, "service": 0}
        self.fence_installed: float | None = None  # the deadline last written (None: unknown)
        self.fence_last_write = -math.inf  # when the last fence write reaches the kernel (node's clock)
        self.fence_open = SimFlag(node)
        self.fence_every = sync_interval(world.window)
        self.gone = False  # the process died: its loops never run again
        self.tasks: list[Task] = []  # the process's asyncio tasks (closed when it dies)
        self.node_fenced = False  # FenceNode: the watchdog is fed no more
        self.now: Callable[[], float] = node.local_now  # the agent's clock (a bound method: the hot path)

    # -- helpers ------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """asyncio.create_task: the coroutine starts on the next loop iteration."""
        self.node.agent_later(0.0, self._start, coro)

    def _start(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.tasks.append(Task(coro))

    def _rand(self, lo_hi: tuple[float, float]) -> float:
        lo, hi = lo_hi
        return lo + (hi - lo) * self.node.sim.rng.random()

    def _netlink(self, fn: Callable[[], Any]) -> Future:
        """A netlink request: the kernel answers after a short latency (even while the agent's loop
        is stalled); the agent reads the answer when its loop runs."""
        fut = Future()
        node = self.node
        node.sys_later(KERNEL, self._rand(node.params.netlink), self._kernel_answer, fn, fut, node.proc_gen)
        return fut

    def _kernel_answer(self, fn: Callable[[], Any], fut: Future, gen: int) -> None:
        if gen != self.node.proc_gen:
            return
        value = fn()
        self.node.agent_at_global(self.node.sim.now, fut.set_result, value)

    def trace(self, text: str) -> None:
        if self.world.tracing:
            self.node.trace(text)

    # -- the process ----------------------------------------------------------------------------
    def run(self) -> None:
        self.node.guard_spawn()  # FenceGuard.start() before anything else
        self.spawn(self._startup())

    def dead(self) -> None:
        """The process is gone, and its tasks with it: closed now, not left to the garbage collector
        (the compiled form's coroutines crashed it when it finalized them: seed 104960)."""
        self.listening, self.gone = False, True
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task.close()

    def resumed(self) -> None:
        pass  # the queued events ran in order; the guard gets beats again

    # -- the daemon's loops (coroutines): dispatch.Agent ----------------------------------------
    def _startup(self) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    def _resources(self, act: Acquire | Release) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    def _arbitrate(self, act: Arbitrate) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    # -- media ----------------------------------------------------------------------------------
    def packet(self, msg: Message) -> None:
        if not self.listening:
            return
        self.execute(self.engine.receive(msg, "eth0", self.now()))

    # -- execute ----------------------------------------------------------------------------------
    def execute(self, actions: list[Action], wake: bool = True) -> None:
        world, node = self.world, self.node
        for act in actions:
            if isinstance(act, Send):
                world.net.send(node, act.message)
            elif isinstance(act, (Acquire, Release)):
                self.trace(f"-> {type(act).__name__} {'+'.join(sorted(act.sides))} op {act.op}: {act.reason}")
                self.spawn(self._resources(act))
            elif isinstance(act, Arbitrate):
                self.trace(f"-> Arbitrate {act.kind} op {act.op}: {act.reason}")
                self.spawn(self._arbitrate(act))
            elif isinstance(act, Announce):
                self.trace(f"-> Announce: {act.reason}")
            elif isinstance(act, FenceNode):
                self.trace(f"-> FenceNode: {act.reason}")
                self.node_fenced = True
            elif isinstance(act, Note):
                if world.tracing and act.level != "debug" and not act.text.startswith("Late heartbeat"):
                    node.trace(f"[{act.level}] {act.text}")
            elif isinstance(act, PeerChanged):
                self.trace(f"peer {act.peer} {'up' if act.alive else 'DEAD'} ({act.reason})")
        self.fence_sync()
        engine = self.engine
        node.report(bool(engine.hold), engine.epoch)
        if engine.illegal:  # a move outside the ownership table (engine/ownership.py)
            for text in self.engine.illegal:
                world.violation("illegal_transition", f"{node.name}: {text}")
            self.engine.illegal.clear()
        epoch = self.engine.epoch
        if epoch is not None:
            if epoch < node.max_epoch_seen:
                world.violation(
                    "epoch_regressed", f"{node.name} saw the epoch go {node.max_epoch_seen} -> {epoch}"
                )
            if epoch > node.max_epoch_seen:
                node.max_epoch_seen = epoch
        if wake and not self.wake_pending:
            # execute() sets `wake`: _clock leaves its wait and ticks once more
            self.wake_pending = True
            if self.clock_ev is not None:
                self.clock_ev.cancel()
            self.clock_ev = node.agent_later(0.0, self._clock)

    # -- the kernel fence (daemon.Agent._fence_sync, resources/kernelfence.KernelFence.keep) -----
    def fence_sync(self) -> None:
        node = self.node
        if node.fence_until is None or not self.listening:
            return
        jumped = self.engine.clocks(self.now(), node.wall())
        if jumped:
            self.execute(jumped)
            return
        now = self.now()
        until = self.engine.serve_until(now)
        write = next_write(until, self.fence_installed, now)
        if write is None:
            return
        self.fence_installed = -math.inf if write.timeout is None or until is None else until
        if self.fence_installed > -math.inf:
            self.fence_open.set()  # the loop keeps it fresh from now on
        timeout = write.timeout
        # libnftables is called synchronously: writes reach the kernel in the order they were made,
        # on the node's own clock (a write made just before a pause lands on resume: one made after
        # it must land later still; in true time it came before, and landed after, the close that
        # the resume made: sim seed 532421, a fence open 31 ms beside the new owner)
        local = node.local_now()
        at = max(local + self._rand(node.params.netlink), self.fence_last_write + 1e-6)
        self.fence_last_write = at
        node.sys_later(KERNEL, at - local, node.fence_write, timeout)

    def start_fence_loop(self) -> None:
        """spawn(_fence_loop()) of the daemon: `while True: wait; fence_sync()`, its first turn on
        the next loop iteration. A chain of callbacks, not a coroutine: it wakes every 25 ms for the
        whole run, the simulation's most frequent event, and compiled it costs a fraction. The
        events, their order and every random draw are the coroutine's (the runs' digests match)."""
        self.node.agent_later(0.0, self._fence_turn)

    def _fence_turn(self) -> None:
        """Wait (closed: until opened or IDLE_WAKE; open: a sync interval), then sync, until a wait
        blocks."""
        while not self.gone:
            if self.fence_installed == -math.inf:  # closed: nothing runs out; opening wakes us
                self.fence_open.clear()
                fut = self.fence_open.wait(IDLE_WAKE)
            else:
                fut = self.node.sleep(self.fence_every)
            if not fut.done:
                fut.callbacks.append(self._fence_woke)
                return
            self.fence_sync()

    def _fence_woke(self, fut: Future) -> None:
        if self.gone:
            return
        self.fence_sync()
        self._fence_turn()

    def _clock(self) -> None:
        self.wake_pending = False
        if not self.engine.running:
            return
        self.execute(self.engine.tick(self.now()), wake=False)
        if self.wake_pending:
            return
        delay = self.engine.next_deadline() - self.now()
        self.clock_ev = self.node.agent_later(delay if delay > 1e-9 else 0.0005, self._clock)

    def _runners(self, side: Side) -> int:
        return 1 if side is self.side else 0
