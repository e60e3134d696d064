"""The heartbeat link between the two nodes: per-direction cuts, loss, delay and reordering.

Messages are the engine's own `Message` objects (authentication and encoding are tested
elsewhere); each is handed to the receiving node's agent, which feeds `Engine.receive(msg, "eth0",
now)` if the agent is up, running and listening.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hacluster_agent.wire.message import Message

from .runtime import Sim

if TYPE_CHECKING:
    from .node import Node

MEDIUM = "eth0"


@dataclass
class LinkWindow:
    """A fault on the link over [start, end) of true time. `direction` is "a>b" (from a to b) or
    "both". kind: cut | loss (extra = probability) | delay (extra = added seconds, random 0..extra:
    this reorders)."""

    kind: str
    start: float
    end: float
    direction: str = "both"
    extra: float = 0.0

    def applies(self, src: str, dst: str) -> bool:
        return self.direction == "both" or self.direction == f"{src}>{dst}"


class Network:
    def __init__(self, sim: Sim, *, base_delay: float = 0.0003, jitter: float = 0.0004) -> None:
        self.sim = sim
        self.nodes: dict[str, Node] = {}
        self.windows: list[LinkWindow] = []
        self.base_delay, self.jitter = base_delay, jitter
        self.sent = self.delivered = 0

    def attach(self, node: Node) -> None:
        self.nodes[node.name] = node

    def send(self, src: Node, msg: Message) -> None:
        sim = self.sim
        now = sim.now
        rng = sim.rng
        for dst in self.nodes.values():
            if dst is src:
                continue
            self.sent += 1
            delay = self.base_delay + self.jitter * rng.random()
            dropped = False
            for w in self.windows:
                if w.start <= now < w.end and w.applies(src.name, dst.name):
                    if w.kind == "cut" or (w.kind == "loss" and rng.random() < w.extra):
                        dropped = True
                        break
                    if w.kind == "delay":
                        delay += w.extra * rng.random()
            if dropped or not src.on_air():
                continue
            sim.at(now + delay, dst.packet_arrives, msg)

    def cut_now(self, a: str, b: str, t: float) -> bool:
        return any(w.kind == "cut" and w.start <= t < w.end and w.applies(a, b) for w in self.windows)
