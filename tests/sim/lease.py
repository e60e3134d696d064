"""The ownership Lease as the API server keeps it, and each agent's client of it.

Semantics of the real thing (`hacluster_agent/arbiter/kube.py` against a kube-apiserver):
- every write is a compare-and-swap on resourceVersion (409 -> Conflict);
- `get` of a deleted Lease is None (404); a `swap` on it is a 404, which KubeLeaseStore turns into
  Unavailable; `create` is forbidden to agents (their Role has get/update/patch only: 403 ->
  Unavailable), unless `agents_may_create`;
- a request takes a latency each way; it can be lost (the client sees Unavailable after its
  timeout, 2 s in the daemon); the answer of an APPLIED write can be lost (the write happened, the
  client sees Unavailable); during an API freeze requests hang until it ends (and are applied
  then, even if the client gave up);
- the operator recreates a deleted Lease naming the owner its status recorded, at the recorded
  epoch + 1 (`operator/hacluster_operator/resources.py: ownership_lease`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hacluster_agent.arbiter.lease import Conflict, LeaseView, Unavailable

from .runtime import Future, Sim

if TYPE_CHECKING:
    from .node import Node

CLIENT_TIMEOUT = 2.0  # KubeLeaseStore(timeout=2.0) in daemon.py


@dataclass
class ApiWindow:
    """An API fault in force over [start, end) of true time; `node` None: for every client."""

    kind: str  # slow | freeze | lose_requests | lose_answers
    start: float
    end: float
    node: str | None = None
    extra: float = 0.0  # slow: added latency each way (s); lose_*: probability


class LeaseServer:
    """The API server's copy of the Lease, on the true clock."""

    def __init__(self, sim: Sim, *, base_latency: float = 0.004, agents_may_create: bool = False) -> None:
        self.sim = sim
        self.view: LeaseView | None = LeaseView("", 0, "1")
        self.counter = 1
        self.base_latency = base_latency
        self.agents_may_create = agents_may_create
        self.windows: list[ApiWindow] = []
        self.max_epoch = 0
        self.epoch_drops: list[tuple[float, int, int, str]] = []  # (time, from, to, by)
        self.writes: list[tuple[float, str, str, int]] = []  # (time, by, holder, transitions)
        self.recreate_delay = (0.5, 3.0)
        self.last_recorded: LeaseView | None = None
        self.trace: Any = None  # a callable(text) when tracing

    # -- faults ---------------------------------------------------------------------------
    def _active(self, kind: str, t: float, node: str) -> ApiWindow | None:
        for w in self.windows:
            if w.kind == kind and w.start <= t < w.end and (w.node is None or w.node == node):
                return w
        return None

    def _latency(self, t: float, node: str) -> float:
        lat = self.base_latency * (0.5 + self.sim.rng.random())
        slow = self._active("slow", t, node)
        if slow is not None:
            lat += slow.extra * (0.5 + self.sim.rng.random())
        return lat

    # -- the operator ---------------------------------------------------------------------
    def delete(self) -> None:
        if self.view is None:
            return
        self._log(f"Lease deleted (was {self.view.holder or '-'} epoch {self.view.transitions})")
        self.last_recorded = self.view  # what the operator's status recorded (its last observation)
        self.view = None
        lo, hi = self.recreate_delay
        self.sim.later(lo + (hi - lo) * self.sim.rng.random(), self._recreate)

    def _recreate(self) -> None:
        """As operator/hacluster_operator/resources.py `ownership_lease`: the recorded owner, at the
        recorded epoch + 1 (empty at 0 only for a Lease never written)."""
        if self.view is None:
            last = self.last_recorded
            if last is None or last.transitions <= 0:
                self._write("", 0, "operator")
            else:
                self._write(last.holder, last.transitions + 1, "operator")

    # -- requests -------------------------------------------------------------------------
    def submit(self, node: Node, op: str, args: tuple[Any, ...]) -> Future:
        """One request from `node`'s agent: answered to the agent (through the node: a paused VM or a
        dead process gets nothing) or failed with Unavailable after the client timeout."""
        fut = Future()
        sim, now, name = self.sim, self.sim.now, node.name
        gen = node.proc_gen
        node.agent_later(CLIENT_TIMEOUT, _timeout, fut, op)
        lose = self._active("lose_requests", now, name)
        if lose is not None and sim.rng.random() < lose.extra:
            return fut
        arrive = now + self._latency(now, name)
        freeze = self._active("freeze", arrive, name)
        if freeze is not None:
            arrive = freeze.end
        sim.at(arrive, self._apply, node, gen, op, args, fut)
        return fut

    def _apply(self, node: Node, gen: int, op: str, args: tuple[Any, ...], fut: Future) -> None:
        now = self.sim.now
        result: Any
        try:
            result = self._do(node.name, op, args)
            exc: BaseException | None = None
        except (Conflict, Unavailable) as e:
            result, exc = None, e
        lose = self._active("lose_answers", now, node.name)
        if lose is not None and op != "get" and exc is None and self.sim.rng.random() < lose.extra:
            return  # applied, but the answer never comes: the client times out
        back = now + self._latency(now, node.name)
        node.agent_at_global(back, _answer, fut, result, exc, gen=gen)

    def _do(self, by: str, op: str, args: tuple[Any, ...]) -> LeaseView | None:
        if op == "get":
            return self.view
        if op == "create":
            if not self.agents_may_create:
                raise Unavailable("HTTP 403")
            if self.view is not None:
                raise Conflict("exists")
            return self._write(args[0], 1, by)
        seen, holder, transitions = args
        if self.view is None:
            raise Unavailable("HTTP 404")
        if self.view.version != seen.version:
            raise Conflict("resourceVersion changed")
        return self._write(holder, transitions, by)

    def _write(self, holder: str, transitions: int, by: str) -> LeaseView:
        self.counter += 1
        self.view = LeaseView(holder, transitions, str(self.counter))
        now = self.sim.now
        self.writes.append((now, by, holder, transitions))
        if transitions < self.max_epoch:
            self.epoch_drops.append((now, self.max_epoch, transitions, by))
        self.max_epoch = max(self.max_epoch, transitions)
        self._log(f"Lease <- holder={holder or '-'} epoch={transitions} by {by}")
        return self.view

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace(f"api: {text}")


def _timeout(fut: Future, op: str) -> None:
    fut.set_exception(Unavailable(f"{op}: timed out after {CLIENT_TIMEOUT:g}s"))


def _answer(fut: Future, result: Any, exc: BaseException | None) -> None:
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class SimLeaseStore:
    """The LeaseStore one agent's Arbiter uses (the Protocol of hacluster_agent/arbiter/lease.py)."""

    def __init__(self, server: LeaseServer, node: Node) -> None:
        self.server, self.node = server, node

    async def get(self) -> LeaseView | None:
        view: LeaseView | None = await self.server.submit(self.node, "get", ())
        return view

    async def create(self, holder: str) -> LeaseView:
        view: LeaseView = await self.server.submit(self.node, "create", (holder,))
        return view

    async def swap(self, seen: LeaseView, holder: str, transitions: int) -> LeaseView:
        view: LeaseView = await self.server.submit(self.node, "swap", (seen, holder, transitions))
        return view
