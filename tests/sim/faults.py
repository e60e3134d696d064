"""The nemesis: a schedule of faults drawn from one seed, and how each fault is applied.

A schedule is plain data (a list of `Fault`), so a failing run can be printed, edited and shrunk;
the run itself draws its other random numbers (latencies, losses) from its own stream of the seed.
Targets "owner" and "standby" are resolved when the fault fires (who has the VIP then).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .lease import ApiWindow
from .network import LinkWindow

if TYPE_CHECKING:
    from .world import World

KINDS: dict[str, float] = {  # kind -> weight in the nemesis
    "link_cut": 3.0,
    "link_oneway": 1.5,
    "link_loss": 1.0,
    "link_delay": 0.7,
    "api_slow": 1.2,
    "api_freeze": 1.2,
    "api_lose_requests": 0.8,
    "api_lose_answers": 0.8,
    "api_unreachable": 0.8,
    "agent_kill": 1.5,
    "agent_kill_nostate": 0.6,
    "tree_kill": 1.0,
    "guard_kill": 0.6,
    "stall": 1.2,
    "stall_in_refresh": 0.5,
    "vm_pause": 1.0,
    "power_cycle": 0.6,
    "cold_start_cut": 0.6,
    "lease_delete": 0.6,
    "switchover": 0.8,
    "stop_fails": 0.5,
    "start_fails": 0.3,
}

ADDED: dict[str, float] = {  # kind -> the share of seeds that get one, from a stream of their own
    "stop_hangs": 0.12,
}
"""Kinds added after seeds were pinned: drawn apart from KINDS, so every earlier seed keeps its
schedule and replays as it was found, plus at most one of these."""

WINDOWED = {"link_cut", "link_oneway", "link_loss", "link_delay", "api_slow", "api_freeze",
            "api_lose_requests", "api_lose_answers", "api_unreachable"}  # fmt: skip


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float  # seconds of true time after the start of the fault phase
    duration: float = 0.0  # a window's length, a process's time down, a stall's or pause's length
    target: str = "owner"  # owner | standby | n1 | n2 | both (links: a direction "n1>n2")
    param: float = 0.0  # a probability, an added latency, a count

    @property
    def end(self) -> float:
        return self.at + self.duration

    def describe(self) -> str:
        extra = f" param={self.param:g}" if self.param else ""
        return f"{self.kind:<18} at {self.at:7.3f}s for {self.duration:6.3f}s target={self.target}{extra}"


def _duration(rng: random.Random, kind: str, deadtime: float) -> tuple[float, float, str]:
    """(duration, param, target) for one fault kind."""
    u = rng.random
    if kind == "link_cut":
        return 1 + 29 * u() ** 2, 0.0, "both"
    if kind == "link_oneway":
        return 1 + 29 * u() ** 2, 0.0, rng.choice(["n1>n2", "n2>n1"])
    if kind == "link_loss":
        return 1 + 20 * u(), round(0.2 + 0.75 * u(), 2), "both"
    if kind == "link_delay":
        return 1 + 10 * u(), round(deadtime * u(), 3), "both"
    if kind == "api_slow":
        return 0.5 + 10 * u(), round(0.05 + 0.6 * u() ** 2, 3), "both"
    if kind == "api_freeze":
        return 0.2 + 5 * u() ** 2, 0.0, "both"
    if kind in ("api_lose_requests", "api_lose_answers"):
        return 1 + 10 * u(), round(0.2 + 0.8 * u(), 2), "both"
    if kind == "api_unreachable":
        return 1 + 15 * u(), 1.0, rng.choice(["owner", "standby"])
    if kind in ("agent_kill", "agent_kill_nostate", "tree_kill"):
        return 0.2 + 8 * u(), 0.0, rng.choice(["owner", "owner", "standby"])
    if kind == "guard_kill":
        return 0.0, 0.0, rng.choice(["owner", "standby"])
    if kind in ("stall", "stall_in_refresh"):
        return 0.05 + 3 * deadtime * u() + (2 * u() if u() < 0.3 else 0), 0.0, "owner"
    if kind == "vm_pause":
        return 0.1 + 4 * deadtime * u() + (10 * u() if u() < 0.3 else 0), 0.0, "owner"
    if kind == "power_cycle":
        return 1 + 10 * u(), 0.0, rng.choice(["owner", "standby"])
    if kind == "cold_start_cut":
        return 5 + 25 * u(), round(0.3 + 2 * u(), 2), "both"
    if kind == "lease_delete":
        return 0.0, 0.0, "both"
    if kind == "switchover":
        return 5.0, 0.0, "owner"
    if kind == "stop_fails":
        return 0.0, rng.choice([1, 1, 2, 3, 12]), "owner"
    if kind == "stop_hangs":
        return 0.0, round(2 + 18 * u(), 3), "owner"
    if kind == "start_fails":
        return 0.0, rng.choice([1, 2, 3]), rng.choice(["n1", "n2"])
    raise ValueError(kind)


def nemesis(
    seed: int,
    span: float,
    deadtime: float,
    *,
    kinds: dict[str, float] | None = None,
    max_faults: int = 6,
) -> list[Fault]:
    """A random schedule of 1..max_faults faults, all ended by `span`. Faults tend to pile up: most
    start inside an earlier one, so compound faults are the rule."""
    rng = random.Random(seed)
    table = kinds or KINDS
    names, weights = list(table), list(table.values())
    out: list[Fault] = []
    for _ in range(rng.randint(1, max_faults)):
        kind = rng.choices(names, weights)[0]
        duration, param, target = _duration(rng, kind, deadtime)
        duration = min(duration, span * 0.9)
        if out and rng.random() < 0.65:
            anchor = rng.choice(out)
            at = anchor.at + rng.random() * max(anchor.duration, 0.5)
        else:
            at = rng.random() * span
        at = round(min(at, span - duration), 3)
        out.append(Fault(kind, max(0.0, at), round(duration, 3), target, param))
    if kinds is None:
        extra = random.Random(f"nemesis added {seed}")
        for kind, share in ADDED.items():
            if extra.random() < share:
                duration, param, target = _duration(extra, kind, deadtime)
                anchor = extra.choice(out)
                at = anchor.at + extra.random() * max(anchor.duration, 0.5)
                out.append(Fault(kind, round(min(at, span - duration), 3), round(duration, 3), target, param))
    out.sort(key=lambda f: (f.at, f.kind))
    return out


def shorter(f: Fault) -> Fault:
    return replace(f, duration=round(f.duration / 2, 3))


# -- applying a fault -----------------------------------------------------------------------------


PROCESS_FAULTS = frozenset(
    {"agent_kill", "agent_kill_nostate", "tree_kill", "guard_kill", "stall", "stall_in_refresh"}
)


def apply(world: World, f: Fault) -> None:
    """Called at time f.at (+ the warm-up) of the run."""
    sim, now = world.sim, world.sim.now
    end = now + f.duration
    if f.kind in ("link_cut", "link_oneway", "link_loss", "link_delay"):
        kind = {"link_cut": "cut", "link_oneway": "cut", "link_loss": "loss", "link_delay": "delay"}[f.kind]
        world.net.windows.append(LinkWindow(kind, now, end, f.target, f.param))
        world.trace(f"nemesis: {f.kind} {f.target} for {f.duration:g}s")
        return
    if f.kind.startswith("api_"):
        kind = {"api_slow": "slow", "api_freeze": "freeze", "api_lose_requests": "lose_requests",
                "api_lose_answers": "lose_answers", "api_unreachable": "lose_requests"}[f.kind]  # fmt: skip
        who = world.resolve(f.target).name if f.kind == "api_unreachable" else None
        world.api.windows.append(ApiWindow(kind, now, end, who, f.param))
        world.trace(f"nemesis: {f.kind} {who or ''} for {f.duration:g}s param {f.param:g}")
        return
    if f.kind == "lease_delete":
        world.trace("nemesis: the Lease is deleted")
        world.api.delete()
        return
    if f.kind == "switchover":
        owner = world.resolve("owner")
        world.directive_seq += 1
        world.directive = (world.directive_seq, world.peer_of(owner.name))
        world.trace(f"nemesis: the operator asks a switchover to {world.peer_of(owner.name)}")
        seq = world.directive_seq
        sim.later(f.duration, world.clear_directive, seq)
        return
    if f.kind == "cold_start_cut":
        world.trace(f"nemesis: both nodes power-cycled with the link cut for {f.duration:g}s")
        world.net.windows.append(LinkWindow("cut", now, end, "both"))
        for n in world.nodes.values():
            n.power_off()
        for n in world.nodes.values():
            sim.later(f.param + 0.2 * sim.rng.random(), n.power_on)
        return
    node = world.resolve(f.target)
    if node.paused and f.kind in PROCESS_FAULTS:
        # A paused VM runs nothing: a signal or a stall reaches its processes once it runs again.
        sim.later(0.01, apply, world, f)
        return
    world.trace(f"nemesis: {f.kind} on {node.name} ({f.duration:g}s)")
    if f.kind in ("agent_kill", "agent_kill_nostate", "tree_kill"):
        node.kill_agent(with_guard=f.kind == "tree_kill", service_dies=f.kind == "tree_kill")
        sim.later(f.duration, _restart, node, f.kind != "agent_kill_nostate")
    elif f.kind == "guard_kill":
        node.kill_guard()
    elif f.kind == "stall":
        node.stall(f.duration)
    elif f.kind == "stall_in_refresh":
        node.stall_in_refresh = f.duration
    elif f.kind == "vm_pause":
        node.pause()
        sim.later(f.duration, node.resume)
    elif f.kind == "power_cycle":
        node.power_off()
        sim.later(f.duration, node.power_on)
    elif f.kind == "stop_fails":
        node.fail_stops = int(f.param)
    elif f.kind == "stop_hangs":
        node.hang_stop = f.param
    elif f.kind == "start_fails":
        node.fail_starts = int(f.param)


def _restart(node: object, keep_state: bool) -> None:
    from .node import Node

    assert isinstance(node, Node)
    node.boot_agent(keep_state=keep_state)
