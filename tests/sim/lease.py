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
- the operator creates the Lease marked `recreated` (arbiter/recreate.py, as
  `operator/hacluster_operator/resources.py: ownership_lease`): first at 0 naming nobody, and
  again after a deletion from what it last observed, which may be stale: its status records the
  Lease as it was up to STATUS_LAG before the deletion, and each agent's report is its state up to
  REPORT_LAG before the recreation (a take the operator had not seen yet named the old owner at
  the new owner's epoch in the full stack's campaign).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hacluster_agent.arbiter.lease import Conflict, LeaseView, Unavailable
from hacluster_api.recreate import recreation

from .runtime import Future, Sim, last_at

if TYPE_CHECKING:
    from .node import Node

CLIENT_TIMEOUT = 2.0  # KubeLeaseStore(timeout=2.0) in daemon.py
STATUS_LAG = 1.5  # the operator's status: the Lease as it saw it on a tick (every 1 s) and wrote it
REPORT_LAG = 2.0  # an agent's report: written after each transition, through the API's faults


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

    def __init__(
        self,
        sim: Sim,
        *,
        base_latency: float = 0.004,
        agents_may_create: bool = False,
        recreation_rules: bool = True,
    ) -> None:
        self.sim = sim
        self.recreation_rules = recreation_rules
        """False: as before arbiter/recreate.py (the status's owner at its epoch + 1, unmarked)."""
        self.view: LeaseView | None = LeaseView("", 0, "1", recreated=recreation_rules)  # the operator's
        self.counter = 1
        self.base_latency = base_latency
        self.agents_may_create = agents_may_create
        self.windows: list[ApiWindow] = []
        self.max_epoch = 0
        self.epoch_drops: list[tuple[float, int, int, str]] = []  # (time, from, to, by)
        self.writes: list[tuple[float, str, str, int]] = []  # (time, by, holder, transitions)
        self.recreate_delay = (0.5, 3.0)
        self.recorded_at = 0.0  # the operator's status: the Lease as of then
        self.status_lag = (0.0, STATUS_LAG)  # how old the status is at a deletion (s)
        self.report_lag = (0.0, REPORT_LAG)  # how old a report is at the recreation (s)
        self.reports: Callable[[float], dict[str, tuple[bool, int | None]]] | None = None
        """Each agent's report as of a time (the World's: node -> holds anything, epoch)."""
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
        lo, hi = self.status_lag
        self.recorded_at = self.sim.now - (lo + (hi - lo) * self.sim.rng.random())
        self.view = None
        lo, hi = self.recreate_delay
        self.sim.later(lo + (hi - lo) * self.sim.rng.random(), self._recreate)

    def recorded(self, at: float) -> tuple[str, int] | None:
        """The Lease as it was at `at` (what a status recorded then): (holder, epoch)."""
        w = last_at(self.writes, at)
        return None if w is None else (w[2], w[3])

    def _recreate(self) -> None:
        """As operator/hacluster_operator/resources.py `ownership_lease`: arbiter/recreate.py's rule
        on the operator's (possibly stale) status and the agents' (possibly stale) reports."""
        if self.view is not None:
            return
        rec = self.recorded(self.recorded_at)
        if not self.recreation_rules:
            if rec is None or rec[1] <= 0:
                self._write("", 0, "operator")
            else:
                self._write(rec[0], rec[1] + 1, "operator")
            return
        now = self.sim.now
        lo, hi = self.report_lag
        reports = self.reports(now - (lo + (hi - lo) * self.sim.rng.random())) if self.reports else {}
        r = recreation(rec[0] if rec else None, rec[1] if rec else None, reports)
        self._write(r.holder, r.transitions, "operator", recreated=True)

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

    def _write(self, holder: str, transitions: int, by: str, *, recreated: bool = False) -> LeaseView:
        self.counter += 1
        self.view = LeaseView(holder, transitions, str(self.counter), recreated=recreated)
        now = self.sim.now
        self.writes.append((now, by, holder, transitions))
        if recreated:
            # Above every epoch the operator observed (arbiter/recreate.py), but it cannot know one
            # written just before the deletion: the agents' writes are checked from here on (they
            # write above every epoch they have seen, and each node's never goes down).
            self.max_epoch = transitions
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
