"""Two nodes, one Lease, one heartbeat link, one fault schedule: one deterministic run."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from hacluster_agent.engine.window import default_window
from hacluster_agent.resources.ipaddr import default_address_lifetime

from .faults import Fault, apply
from .invariants import Checker, Violation
from .lease import LeaseServer
from .network import Network
from .node import Node, NodeParams, close_coroutines
from .runtime import Event, Sim

RUN_SALT = 0x5EED_CAFE


def parse_timing(text: str) -> tuple[float, float]:
    """ "100ms/300ms" or "1s/10s" -> (keepalive, deadtime) in seconds."""

    def one(s: str) -> float:
        s = s.strip()
        if s.endswith("ms"):
            return float(s[:-2]) / 1000
        if s.endswith("s"):
            return float(s[:-1])
        return float(s)

    k, d = text.split("/")
    return one(k), one(d)


@dataclass
class Config:
    keepalive: float = 0.1
    deadtime: float = 0.3
    kube: bool = True
    window: float | None = None
    """W (--arbitration-window). None: the agents' default for the timing (engine/window.py)."""
    span: float = 60.0  # T: seconds of faults
    auto_failback: bool | None = None
    """The agents' own (Heartbeat) failback. None: as the product renders it: on standalone, off in
    Kubernetes mode, where failback is the operator's (render.py). True: the seeds pinned before that
    change replay the runs that found them."""
    params: NodeParams = field(default_factory=NodeParams)
    agents_may_create: bool = False
    kernel_fence: bool = True  # Kubernetes mode: the agents' nftables fence (resources/kernelfence.py)
    node_fence: float = 0.5
    """Kubernetes mode: the share of seeds whose pair has a node fence (ha.cf's `watchdog` and a stop
    budget: EngineConfig.stop_budget); those runs also check (e). Drawn per seed apart from every
    other random number, so the fault schedule and the rest of the run do not move with it."""
    early_window: bool = True  # EngineConfig.early_window (False: seeds pinned before it replay as found)
    node_fence_rules: bool = True
    """False: (e) is checked but the agents get no stop budget (no FenceNode, no `hacfence`, no
    wait before the services): the run before the node fence existed, to show what it closes."""
    stop_budget: float = 1.0  # --stop-budget (s)
    watchdog_timeout: float = 1.0  # the watchdog device's timeout (s): softdog's smallest
    reboot: tuple[float, float] = (1.0, 3.0)  # a reset node's power-on, after the watchdog fired
    recreation_rules: bool = True
    """False: the operator recreates a deleted Lease as before arbiter/recreate.py (its status's owner
    at its epoch + 1, not marked), to show what the rules close."""
    settled_exit: float | None = None
    """CI's short form: end a run once the pair has stayed settled this long (s) after the faults
    (more than HALF_TOLERANCE, so a half-started group is still caught). None: run the whole
    bound + 5 s after the faults, as the long form does."""

    @property
    def w(self) -> float:
        return default_window(self.keepalive, self.deadtime) if self.window is None else self.window

    @property
    def initdead(self) -> float:
        return max(2 * self.deadtime, 1.0)

    @property
    def warntime(self) -> float:
        return max(self.deadtime * 0.6, self.keepalive * 1.5)

    @property
    def bound(self) -> float:
        """(c): exactly one owner within initdead + deadtime + 4 W + a boot, a service start and a
        stop, + 5 s (a Lease recreated by the operator, the arbiter's retry after max(deadtime, 1))."""
        p = self.params
        return (
            self.initdead
            + self.deadtime
            + 4 * self.w
            + p.boot[1]
            + p.start_service[1]
            + p.stop_service[1]
            + 5.0
            + (
                max(self.stop_budget, self.watchdog_timeout) + self.watchdog_timeout + self.reboot[1]
                if self.kube and self.node_fence
                else 0.0
            )
        )

    @property
    def warmup(self) -> float:
        return self.initdead + 3.0


@dataclass
class RunResult:
    seed: int
    schedule: list[Fault]
    violations: list[Violation]
    heal: float | None
    steps: int
    trace: list[str]
    overlaps: list[tuple[float, float]]
    resumed: list[float] = field(default_factory=list)  # overlaps opened by a VM resume, within bound
    resumed_services: list[float] = field(default_factory=list)  # (e): service overlaps a resume opened

    @property
    def failed(self) -> bool:
        return bool(self.violations)


class World:
    def __init__(self, seed: int, schedule: list[Fault], cfg: Config, *, tracing: bool = False) -> None:
        self.seed, self.schedule, self.cfg = seed, schedule, cfg
        self.sim = Sim(seed ^ RUN_SALT)
        self.tracing = tracing
        self.lines: list[str] = []
        self.keepalive, self.deadtime, self.window = cfg.keepalive, cfg.deadtime, cfg.w
        self.initdead, self.warntime = cfg.initdead, cfg.warntime
        # In Kubernetes mode failback is the operator's (render.py writes auto_failback off; it hands
        # the group over through the Lease, as the switchover faults do): the agents never start one.
        self.kube = cfg.kube
        self.auto_failback = not cfg.kube if cfg.auto_failback is None else cfg.auto_failback
        self.kernel_fence = cfg.kube and cfg.kernel_fence
        # its own stream: the schedule and the run's other draws do not depend on it
        self.node_fence = cfg.kube and random.Random(f"node-fence {seed}").random() < cfg.node_fence
        self.home = "n1"
        self.api = LeaseServer(
            self.sim, agents_may_create=cfg.agents_may_create, recreation_rules=cfg.recreation_rules
        )
        self.api.reports = self.reports_at
        if tracing:
            self.api.trace = self.trace
        self.net = Network(self.sim)
        self.directive: tuple[int, str] | None = None
        self.directive_seq = 0
        self.check = Checker(self)
        self.nodes: dict[str, Node] = {}
        params = cfg.params
        if params.address_lifetime is None:  # as the daemon: derived from the timings
            lifetime = default_address_lifetime(
                round(cfg.deadtime * 1000), round(cfg.keepalive * 1000), cfg.w if cfg.kube else 0.0
            )
            params = dataclasses.replace(params, address_lifetime=float(lifetime))
        for name in ("n1", "n2"):
            node = Node(self, name, params)
            self.nodes[name] = node
            self.net.attach(node)

    # -- helpers used by the parts ------------------------------------------------------------------
    def reports_at(self, t: float) -> dict[str, tuple[bool, int | None]]:
        """The agents' reports as the operator would have read them at `t`."""
        out: dict[str, tuple[bool, int | None]] = {}
        for name, node in self.nodes.items():
            r = node.report_at(t)
            if r is not None:
                out[name] = r
        return out

    def peer_of(self, name: str) -> str:
        return "n2" if name == "n1" else "n1"

    def resolve(self, target: str) -> Node:
        if target in self.nodes:
            return self.nodes[target]
        holders = [n for n in self.nodes.values() if n.vip]
        if not holders:
            view = self.api.view
            holders = [self.nodes[view.holder]] if view is not None and view.holder in self.nodes else []
        owner = holders[0] if holders else self.nodes[self.home]
        return owner if target == "owner" else self.nodes[self.peer_of(owner.name)]

    def trace(self, text: str) -> None:
        if self.tracing:
            self.lines.append(f"{self.sim.now:9.4f} {text}")

    def violation(self, kind: str, detail: str) -> None:
        self.check.violation(kind, detail)

    def vip_changed(self, node: Node) -> None:
        self.check.vip_changed()

    def clear_directive(self, seq: int) -> None:
        if self.directive is not None and self.directive[0] == seq:
            self.directive = None

    def schedule_restart(self, node: Node) -> None:
        self.sim.later(1.0, node.boot_agent)

    def why_holding(self) -> str:
        parts = []
        for n in self.nodes.values():
            a = n.agent
            if a is None:
                parts.append(f"{n.name}: no agent, guard {'up' if n.guard_alive else 'down'}")
                continue
            e = a.engine
            parts.append(
                f"{n.name}: hold={sorted(e.hold)} lease_held={e.lease_held} renewing={e.renewing} "
                f"peer_alive={e.peer.alive} epoch={e.epoch} stalled={n.stalled}"
            )
        view = self.api.view
        parts.append(f"Lease={view.holder or '-'}@{view.transitions}" if view else "Lease=deleted")
        return "; ".join(parts)

    def state_line(self) -> str:
        nodes = ", ".join(
            f"{n.name}[vip={int(n.vip)} svc={int(n.service)} agent={'up' if n.agent else 'down'}"
            f" hold={sorted(n.agent.engine.hold) if n.agent else '-'}]"
            for n in self.nodes.values()
        )
        return f"{nodes}; {self.why_holding().split('; ')[-1]}"

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        cfg, sim = self.cfg, self.sim
        for node in self.nodes.values():
            sim.at(0.5 * sim.rng.random(), node.boot_agent)
        warm = cfg.warmup
        faults_end = warm
        for f in self.schedule:
            sim.at(warm + f.at, apply, self, f)
            extra = 1.0 if f.kind == "stall_in_refresh" else 0.0
            if f.kind in ("agent_kill", "agent_kill_nostate", "tree_kill", "power_cycle"):
                extra = 0.0
            if f.kind == "cold_start_cut":
                extra = f.param + 0.2
            faults_end = max(faults_end, warm + f.end + extra)
        sim.at(faults_end, self._faults_over)
        # A hung stop holds everything up until it ends (as in Heartbeat), unless it is a self-fencing
        # one under a node fence (reset within the budget and the watchdog: in cfg.bound). Which
        # one hangs is not known here: allow for the hang (seed 100686: a failed start's rollback).
        bound = cfg.bound + sum(f.param for f in self.schedule if f.kind == "stop_hangs")
        self.check.faults_end, self.check.bound = faults_end, bound
        sim.after_step = self.check.step
        end = faults_end + bound + 5.0
        if cfg.settled_exit is None:
            sim.run_until(end)
        else:
            sim.run_until(faults_end)
            check = self.check
            while sim.now < end:
                sim.run_until(min(end, sim.now + 0.25))
                if check.healed_at is not None and sim.now - check.healed_at >= cfg.settled_exit:
                    break
        heal = self.check.finish()
        self._dispose()
        return RunResult(
            self.seed,
            self.schedule,
            self.check.violations,
            heal,
            sim.steps,
            self.lines,
            self.check.overlaps,
            self.check.resumed,
            self.check.resumed_services,
        )

    def _dispose(self) -> None:
        """The run is over: close every coroutine still pending (in the queue, in a stalled loop or
        a paused VM, or suspended in a task), so none is left for the garbage collector."""
        events: list[Event] = [ev for _, _, ev in self.sim.pending()]
        for n in self.nodes.values():
            events += [*n.stall_queue, *n.deferred]
        close_coroutines(events)
        for n in self.nodes.values():  # every task is an agent's: the live ones end as a killed one's do
            if n.agent is not None:
                n.agent.dead()

    def _faults_over(self) -> None:
        self.trace("faults over")
        for n in self.nodes.values():
            n.fail_starts = n.fail_stops = 0
            n.stall_in_refresh = None


def run_one(
    seed: int, cfg: Config, schedule: list[Fault] | None = None, *, tracing: bool = False
) -> RunResult:
    from .faults import nemesis

    if schedule is None:
        schedule = nemesis(seed, cfg.span, cfg.deadtime)
    return World(seed, schedule, cfg, tracing=tracing).run()
