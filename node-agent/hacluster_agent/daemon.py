"""hacluster-agent: the standalone node agent. Thin edges around the membership engine.

Media deliver bytes; the codec authenticates them; the engine decides; resource drivers act;
a local control socket serves `hactl`. Only this module touches clocks, sockets and signals.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hacluster_api.agentconfig import (
    AGENT_CONFIG_FILE,
    AgentConfig,
    AgentConfigError,
    check_agent_config,
    check_groups,
    load_agent_config,
)
from hacluster_api.heartbeat.directory import ClusterConfig, load_directory
from hacluster_api.heartbeat.hacf_model import HaCf
from hacluster_api.heartbeat.haresources_model import ResourceGroup
from hacluster_api.heartbeat.issues import ConfigError
from hacluster_api.models import ArpSpec
from hacluster_api.names import report_lease_name

from .arbiter.kube import KubeLeaseStore
from .arbiter.lease import Arbiter, Verdict
from .engine.actions import (
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
)
from .engine.membership import Engine, EngineConfig
from .engine.window import MAX_WINDOW, MIN_WINDOW, default_window
from .kube.client import api_client
from .kube.config import materialize
from .kube.directives import read_directives
from .kube.leases import LeaseApi
from .kube.reporter import Reporter, report_of
from .logs import fields, setup
from .media.base import Medium, open_media
from .metrics import AgentMetrics, serve
from .realtime import become_realtime
from .realtime import executor as realtime_executor
from .reload import ConfigSource, Reloader
from .resources.base import ResourceError
from .resources.fenceguard import FenceGuard, current_log_format, guarded_addresses
from .resources.group import GroupRunner, GroupStopError, drivers_for, vip_names
from .resources.ipaddr import default_address_lifetime
from .resources.kernelfence import IDLE_WAKE, FenceError, KernelFence, sync_interval, table_name
from .resources.script import ScriptOptions
from .resources.watchdog import Watchdog, WatchdogError
from .state import next_generation, node_uuid
from .wire.codec import Decoded, decode, encode
from .wire.errors import Rejected
from .wire.message import GROUP_TAG, Message

log = logging.getLogger("hacluster.agent")


@dataclass
class AgentOptions:
    node: str
    state_dir: Path = Path("/var/lib/hacluster")
    control_socket: Path = Path("/run/hacluster/agent.sock")
    release_on_exit: bool = True
    address_lifetime: int = 3
    monitor_interval: float = 5.0
    status_timeout: float = 20.0  # seconds a script's `status` may take before it counts as failed
    init_dir: Path = Path("/etc/init.d")
    lock_dir: Path = Path("/var/lock")
    kube: KubeOptions | None = None
    metrics_port: int | None = None  # Prometheus metrics over HTTP when set (0: any free port)
    metrics_address: str = "0.0.0.0"
    config_source: ConfigSource | None = None  # when set: reload on SIGHUP and on file changes
    fence_after: int | None = None  # ms without a beat before the fence guard removes the VIPs (None:
    # deadtime/2, 0: no guard); see resources/fenceguard.py
    watchdog_timeout: int | None = None  # s, set on ha.cf's watchdog device (None: the device's own)
    stop_budget: float = 10.0  # s a self-fencing stop may take before the watchdog resets the node
    arp: dict[str, ArpSpec] = field(default_factory=dict)  # each VIP's announcements (agent.json)
    tag: str | None = None
    """One group of several (groups.py): the name its heartbeats carry (GROUP_TAG); None: untagged."""
    groups: list[str] | None = None
    """agent.json's `groups`: the group of each haresources line, each run by its own engine
    (groups.py). None: one group, or Heartbeat's rules (standalone)."""


@dataclass
class Shared:
    """What the agents of several groups in one process share (groups.py): the media (the
    runner's hub routes each message to its group), the watchdog (opened and fed once: any
    group's FenceNode stops the feeding) and the realtime priority the runner took."""

    media: list[Medium]
    watchdog: Watchdog | None
    rtprio: int | None


@dataclass
class KubeOptions:
    """Kubernetes mode: the ownership Lease arbitrates; reports go to the operator."""

    namespace: str
    cluster: str
    kubeconfig: str | None = None
    window: float = 0.2
    take_over_without_arbiter: bool = False
    early_window: bool = True  # EngineConfig.early_window (False only for bench/failover.py)


class Agent:
    """One node of the pair: owns the engine, the media and the resource groups."""

    def __init__(self, cfg: ClusterConfig, opts: AgentOptions) -> None:
        self.cfg = cfg
        self.opts = opts
        self.node = opts.node
        self.peer = cfg.peer_of(opts.node)
        hacf = cfg.hacf
        self.groups: dict[Side, list[ResourceGroup]] = {
            Side.LOCAL: cfg.haresources.groups_of(self.node),
            Side.FOREIGN: cfg.haresources.groups_of(self.peer),
        }
        self.generation = next_generation(opts.state_dir)
        self.engine = Engine(
            EngineConfig(
                node=self.node,
                peer=self.peer,
                keepalive=hacf.keepalive_ms / 1000,
                deadtime=hacf.deadtime_ms / 1000,
                warntime=hacf.warntime_ms / 1000,
                initdead=hacf.initdead_ms / 1000,
                generation=self.generation,
                uuid=node_uuid(opts.state_dir),
                auto_failback=agent_fails_back(hacf, kube=opts.kube is not None),
                has_local=bool(self.groups[Side.LOCAL]),
                has_foreign=bool(self.groups[Side.FOREIGN]),
                standby_timeout=max(5.0, 4 * hacf.deadtime_ms / 1000),
                arbitrated=opts.kube is not None,
                take_over_without_arbiter=bool(opts.kube and opts.kube.take_over_without_arbiter),
                arbitration_window=opts.kube.window if opts.kube else 0.2,
                early_window=opts.kube.early_window if opts.kube else True,
            )
        )
        self.api: Any = None
        self.arbiter: Arbiter | None = None
        if opts.kube is not None:
            k = opts.kube
            self.api = api_client(k.kubeconfig)
            self.leases = LeaseApi(self.api, k.namespace, timeout=2.0)
            # A call may take longer than W/2 (a cold TLS connection): the renewal deadline that safety
            # needs is enforced around renew() itself, in _arbitrate.
            store = KubeLeaseStore(self.leases, k.cluster)
            self.arbiter = Arbiter(store, self.node, window=k.window, poll=min(0.05, k.window / 5))
        self.runners: dict[Side, list[GroupRunner]] = {
            side: [
                GroupRunner(
                    drivers_for(
                        g,
                        cfg.directory,
                        scripts=ScriptOptions(status_timeout=opts.status_timeout),
                        init_dir=opts.init_dir,
                        address_lifetime=opts.address_lifetime,
                        arp=opts.arp,
                    ),
                    name=g.key,
                )
                for g in groups
            ]
            for side, groups in self.groups.items()
        }
        self.media: list[Medium] = []
        self.wake = asyncio.Event()
        self.monitor_now = asyncio.Event()  # a held address was lost: check the groups at once
        self.stopping = asyncio.Event()
        self.rejected: dict[str, int] = {}
        self.media_state: dict[str, dict[str, Any]] = {}
        self.held: set[Side] = set()
        self.last_gap: float | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.metrics = AgentMetrics(self.node, self.peer, self.generation)
        self.reloader = Reloader(opts.config_source, self, self.metrics) if opts.config_source else None
        self.kfence: KernelFence | None = None
        self.fence_open = asyncio.Event()
        self.slow_lease_warned = -math.inf  # the last "renewal slow for W" warning (one a minute)
        self.watchdog: Watchdog | None = None  # ha.cf's `watchdog` (opened last at start-up)
        self.started = False  # the engine runs: messages reach it

    # -- media events (MediumEvents) ------------------------------------------------------------
    def packet_received(self, medium: str, data: bytes) -> None:
        got = decode(data, self.cfg.authkeys)
        if isinstance(got, Rejected):
            self.dropped(medium, got.reason.value, got)
            return
        assert isinstance(got, Decoded)
        self.message_received(medium, got.message)

    def dropped(self, medium: str, reason: str, what: object) -> None:
        """A packet that is not for us (forged, corrupt, another group's unknown to this node)."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.metrics.rejected(reason)
        if self.rejected[reason] <= 5 or self.rejected[reason] % 100 == 0:
            log.warning("dropped packet: %s", what, extra=fields(medium=medium, reason=reason))

    def message_received(self, medium: str, message: Message) -> None:
        """A message that passed authentication, for this engine."""
        heard = self.engine.counters.get("rx_status")
        actions = self.engine.receive(message, medium, time.monotonic())
        if self.engine.counters.get("rx_status") != heard:  # a heartbeat the engine accepted
            self.metrics.heartbeat_received(medium)
        self.execute(actions)

    def medium_state(self, medium: str, up: bool, reason: str) -> None:
        self.media_state[medium] = {"up": up, "reason": reason, "since": time.time()}
        self.metrics.medium_state(medium, up)
        level = logging.INFO if up else logging.ERROR
        log.log(
            level, "medium %s %s: %s", medium, "up" if up else "DOWN", reason, extra=fields(medium=medium)
        )

    # -- actions --------------------------------------------------------------------------------
    def execute(self, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, Send):
                self._send(act)
            elif isinstance(act, (Acquire, Release)):
                self._spawn(self._resources(act))
            elif isinstance(act, Announce):
                self._spawn(self._announce(act.reason))
            elif isinstance(act, Arbitrate):
                self._spawn(self._arbitrate(act))
            elif isinstance(act, PeerChanged):
                self.metrics.peer_changed(act.alive, act.silent_for)
                if not act.alive:
                    self.last_gap = act.silent_for
                log.warning(
                    "node %s: is %s (%s)",
                    act.peer,
                    "up" if act.alive else "dead",
                    act.reason,
                    extra=fields(peer=act.peer, alive=act.alive, generation=self.generation),
                )
            elif isinstance(act, FenceNode):
                # (the engine emits it only with a watchdog: EngineConfig.stop_budget)
                if self.watchdog is not None:
                    self.watchdog.fence(act.reason)  # (the engine's Note counts it)
            elif isinstance(act, LinkChanged):
                log.info("Link %s:%s %s", act.peer, act.medium, "up" if act.up else "dead")
            elif isinstance(act, Note):
                if act.counter is not None:
                    self.metrics.note(act.counter, act.labels)
                log.log(logging.getLevelName(act.level.upper()), act.text)
        self._fence_sync()  # before any spawned release runs: a fencing node goes dark first
        self.wake.set()

    def _fence_sync(self) -> None:
        """The kernel fence follows the engine's deadline (resources/kernelfence.py); first the
        engine hears whether our clock stopped (a paused VM) since the last look."""
        if self.kfence is not None:
            jumped = self.engine.clocks(time.monotonic(), time.time())
            if jumped:
                self.execute(jumped)  # (which syncs the fence itself)
                return
            lapses = self.kfence.lapses
            self.kfence.keep(self.engine.serve_until(time.monotonic()))
            if self.kfence.lapses > lapses:
                log.warning(
                    "kernel fence: ran out %.0f ms before this write although we may serve "
                    "(the agent was not scheduled in time: the VIP was dark meanwhile)",
                    self.kfence.last_lapse * 1000,
                )
            installed = self.kfence.installed
            if installed != -math.inf:
                self.fence_open.set()  # the loop keeps it fresh from now on
            left = installed - time.monotonic() if installed is not None else 0.0
            self.metrics.kernel_fence(left, self.kfence.failures, self.kfence.lapses)

    async def _fence_loop(self) -> None:
        """Certificates run out with time alone, and the peer's reports extend them: look often
        while the fence is open; while it is closed, only the event that opens it matters."""
        assert self.kfence is not None
        every = sync_interval(self.engine.cfg.arbitration_window)
        while True:
            if self.kfence.installed == -math.inf:
                self.fence_open.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.fence_open.wait(), IDLE_WAKE)
            else:
                await asyncio.sleep(every)
            self._fence_sync()

    def _send(self, act: Send) -> None:
        cache: dict[str, bytes] = {}
        heartbeat = act.message.type == "status"
        message = act.message if self.opts.tag is None else act.message.add(GROUP_TAG, self.opts.tag)
        for m in self.media:
            data = cache.get(m.encoding)
            if data is None:
                data = cache[m.encoding] = encode(message, self.cfg.authkeys, m.encoding)
            m.send(data)
            if heartbeat and m.up:
                self.metrics.heartbeat_sent(m.name)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _resources(self, act: Acquire | Release) -> None:
        verb = "acquire" if isinstance(act, Acquire) else "release"
        t0 = time.monotonic()
        sides = [s for s in (Side.LOCAL, Side.FOREIGN) if s in act.sides]
        ok, reason = True, "ok"
        try:
            if isinstance(act, Acquire):
                started: list[GroupRunner] = []
                try:
                    for side in sides:
                        for runner in self.runners[side]:
                            await runner.start(act.services_at, self.engine.services_refused)
                            started.append(runner)
                        self.held.add(side)
                except ResourceError:
                    for runner in reversed(started):
                        with contextlib.suppress(ResourceError):
                            await runner.stop()
                    for side in sides:
                        self.held.discard(side)
                    raise
            else:
                if act.fence:
                    # Self-fencing: the peer may own the group already. Clients must stop reaching
                    # us before anything else, so every VIP goes first, then the services stop.
                    for side in sides:
                        for runner in self.runners[side]:
                            for err in await runner.drop_addresses():
                                log.error("self-fencing: could not remove an address at once: %s", err)
                for side in reversed(sides):
                    for runner in reversed(self.runners[side]):
                        await runner.stop()
                    self.held.discard(side)
        except ResourceError as e:
            ok, reason = False, str(e)
        ms = (time.monotonic() - t0) * 1000
        log.log(
            logging.INFO if ok else logging.ERROR,
            "%s %s: %s (%s, %.0f ms)",
            verb,
            "+".join(s.value for s in sides) or "nothing",
            "done" if ok else "FAILED",
            act.reason if ok else reason,
            ms,
            extra=fields(op=act.op, generation=self.generation),
        )
        self.metrics.resource_operation("start" if isinstance(act, Acquire) else "stop", ms / 1000, ok)
        self.metrics.set_holds(self.held)
        if ok and isinstance(act, Acquire):
            self.metrics.acquired(act.reason)
        self.execute(self.engine.resources_done(act.op, ok, reason, time.monotonic()))

    async def _arbitrate(self, act: Arbitrate) -> None:
        """Ask the Lease within the engine's deadline (a renewal: W/2, or the owner fences itself);
        whatever happens, the engine hears an answer."""
        assert self.arbiter is not None
        t0 = time.monotonic()
        if act.kind in ("release", "handback"):
            v = await (self.arbiter.release() if act.kind == "release" else self.arbiter.hand_back(self.peer))
            log.log(logging.INFO if v.granted else logging.WARNING, "Lease %s: %s", act.kind, v.reason)
            return
        request = (
            self.arbiter.renew()
            if act.kind == "renew"
            else self.arbiter.take(self.engine.take_still_wanted, act.hold_off, act.window)
        )
        limit = act.timeout  # the engine's deadline (renewals: W/2)
        try:
            v = await (request if limit is None else asyncio.wait_for(request, limit))
        except TimeoutError:
            assert limit is not None
            v = Verdict(
                False,
                f"Lease {act.kind} timed out: no answer within {limit * 1000:.0f} ms (an API server "
                "this slow needs a longer spec.failover.arbitrationWindow; docs/safety.md)",
                unavailable=True,
            )
        except Exception as e:
            # A bug, or an answer the arbiter does not know: the engine waits for an answer to
            # this request (a refused take, a failed renewal fences us), so it must get one.
            log.exception("Lease %s failed unexpectedly; counted as unavailable", act.kind)
            v = Verdict(False, f"Lease {act.kind} failed: {type(e).__name__}: {e}", unavailable=True)
        took = time.monotonic() - t0
        if act.kind == "renew":
            self.metrics.lease_request("renew", took)
            if v.granted and limit and took > limit / 2 and time.monotonic() >= self.slow_lease_warned + 60:
                self.slow_lease_warned = time.monotonic()
                log.warning(
                    "Lease renewal took %.0f ms, over half of its W/2 = %.0f ms: a slower API server makes "
                    "this owner fence itself; consider a longer spec.failover.arbitrationWindow",
                    took * 1000,
                    limit * 1000,
                )
        elif act.kind == "take":
            self.metrics.lease_request("take", took)
        log.log(
            logging.INFO if v.granted else logging.WARNING,
            "Lease %s: %s (%s, %.0f ms)",
            act.kind,
            "granted" if v.granted else "refused",
            v.reason,
            (time.monotonic() - t0) * 1000,
            extra=fields(epoch=v.epoch, op=act.op),
        )
        self.execute(
            self.engine.arbitrated(
                act.op, v.granted, v.reason, time.monotonic(), v.epoch, v.unavailable, v.sent_at, v.taken_over
            )
        )
        self.metrics.set_epoch(self.engine.epoch)

    async def _directives(self) -> None:
        """Follow the operator's annotations on the ownership Lease (planned moves, maintenance)."""
        assert self.opts.kube is not None
        k = self.opts.kube
        while not self.stopping.is_set():
            try:
                d = await read_directives(self.leases, k.cluster)
            except Exception as e:
                log.debug("cannot read the ownership Lease: %s", e)
                d = None
            if d is not None:
                if self.arbiter is not None and d.version:
                    self.arbiter.saw(d.version, d.epoch or 0)
                self.execute(
                    self.engine.directives(
                        time.monotonic(),
                        d.holder,
                        d.epoch,
                        handover_to=d.handover_to,
                        freeze=d.freeze,
                        release=d.release,
                        recreated=d.recreated,
                    )
                )
            await asyncio.sleep(0.5)

    def _feed_every(self) -> float:
        assert self.watchdog is not None
        return min(int(self.watchdog.timeout) / 4, 1.0)

    async def _feed(self) -> None:
        """Feed the watchdog from the event loop itself: a loop that stalls stops feeding it."""
        assert self.watchdog is not None
        every = self._feed_every()
        while not self.watchdog.closed:
            self.watchdog.feed()
            await asyncio.sleep(every)

    async def _announce(self, reason: str) -> None:
        log.info("re-announcing held addresses: %s", reason)
        for side in list(self.held):
            for runner in self.runners[side]:
                await runner.announce()

    # -- loops ----------------------------------------------------------------------------------
    async def _clock(self) -> None:
        while not self.stopping.is_set():
            delay = self.engine.next_deadline() - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delay)
            self.execute(self.engine.tick(time.monotonic()))
            # execute() sets `wake` so other events re-arm the timer; our own tick must not, or
            # the loop would spin without ever sleeping.
            self.wake.clear()

    async def _maintain(self) -> None:
        """Renew VIP lifetimes often. Its own task: a monitor waiting on a hung `status` must never
        starve the renewals (the kernel would drop the VIP when its lifetime runs out)."""
        refresh_every = max(0.2, self.opts.address_lifetime / 3) if self.opts.address_lifetime else 1.0
        while not self.stopping.is_set():
            await asyncio.sleep(refresh_every)
            await self._refresh_held()

    async def _refresh_held(self) -> None:
        for side in list(self.held):
            for runner in self.runners[side]:
                try:
                    await runner.refresh()
                except ResourceError as e:
                    # The VIP is gone (the fence guard or the kernel removed it: we were frozen or
                    # stalled). The monitor restarts it in place while the engine says we hold it;
                    # in Kubernetes mode only once the Lease confirms we still own it.
                    log.error("lost a held address: %s", e)
                    self.metrics.resource_failure("refresh")
                    self.monitor_now.set()
                    self.execute(self.engine.hold_lost(time.monotonic(), str(e)))

    async def _monitor(self) -> None:
        """Check held groups every monitor_interval (at once after a lost address)."""
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.monitor_now.wait(), self.opts.monitor_interval)
            if not self.held:
                self.monitor_now.clear()
                continue
            await self._refresh_held()  # a VIP lost while we were frozen is noticed before any restart
            if self.monitor_now.is_set():
                # A VIP was lost (we were frozen?): first take in the heartbeats queued meanwhile, so
                # that the engine knows whether the peer holds the group now.
                await asyncio.sleep(self.cfg.hacf.keepalive_ms / 1000)
            if self.engine.restart_refused(frozenset(self.held)) is not None:
                await asyncio.sleep(0.05)  # the engine's rule; asked again until it allows it
                continue
            self.monitor_now.clear()
            for side in list(self.held):
                for runner in self.runners[side]:
                    outcome = await runner.monitor_once()
                    if outcome.failed:
                        self.metrics.resource_failure("monitor")
                    if outcome.migrate:
                        self.execute(
                            self.engine.request_standby(
                                time.monotonic(), f"migration threshold: {outcome.reason}"
                            )
                        )

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            req = json.loads(line or b"{}")
            cmd = req.get("cmd")
            now = time.monotonic()
            if cmd == "status":
                reply = {"ok": True, "status": self.status()}
            elif cmd in ("standby", "takeover"):
                refused, actions = self.engine.manual_move(now, cmd)
                self.execute(actions)
                reply = {"ok": True} if refused is None else {"ok": False, "error": refused}
            else:
                reply = {"ok": False, "error": f"unknown command {cmd!r}"}
        except (ValueError, TimeoutError) as e:
            reply = {"ok": False, "error": str(e)}
        writer.write(json.dumps(reply).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def status(self) -> dict[str, Any]:
        snap = self.engine.snapshot(time.monotonic())
        snap["groups"] = {
            side.value: [g.key for g in groups] for side, groups in self.groups.items() if groups
        }
        snap["media"] = self.media_state
        snap["rejected"] = dict(self.rejected)
        snap["config"] = self.reloader.status() if self.reloader is not None else None
        return snap

    async def run(self, shared: Shared | None = None) -> int:
        """Until SIGTERM (or `stopping`). `shared`: one group of several in this process
        (groups.py): the process's signals, realtime priority, metrics endpoint, media, reload
        and watchdog are the runner's; this agent runs its engine on them."""
        loop = asyncio.get_running_loop()
        exporter = None
        if shared is None and self.opts.metrics_port is not None:
            try:
                exporter = serve(self.metrics, self.opts.metrics_port, self.opts.metrics_address)
            except OSError as e:
                log.error(
                    "cannot serve metrics on %s:%s: %s", self.opts.metrics_address, self.opts.metrics_port, e
                )
                return 1
            log.info("metrics on http://%s:%d/metrics", self.opts.metrics_address, exporter.server_address[1])
        if shared is not None:
            rtprio = shared.rtprio
        else:
            rtprio = self.cfg.hacf.realtime_prio
            if rtprio is not None and become_realtime(rtprio):  # ha.cf realtime/rtprio (realtime.py)
                loop.set_default_executor(realtime_executor(rtprio))
            else:
                rtprio = None
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stopping.set)
            if self.reloader is not None:  # Heartbeat's reload: authkeys live, the rest needs a restart
                loop.add_signal_handler(signal.SIGHUP, self.reloader.request)
        guard = FenceGuard.for_agent(
            [g for groups in self.groups.values() for g in groups],
            self.opts.fence_after,
            self.cfg.hacf.deadtime_ms,
            self.cfg.hacf.keepalive_ms,
            log_format=current_log_format(),
            on_up=self.metrics.fence_guard,
            on_restart=self.metrics.fence_guard_restarted,
            # While the owner proves itself in the Lease the peer may take it W after a renewal: a
            # stalled owner must lose its VIP within W/2 then (docs/safety.md).
            tight_after_ms=int(self.engine.cfg.arbitration_window * 500)
            if self.engine.cfg.arbitrated
            else None,
            tight=lambda: self.engine.proving(time.monotonic()),
            rtprio=rtprio,
        )
        if guard is not None:
            guard.start()
        k = self.opts.kube
        addresses = [a.ip for a in guarded_addresses(g for groups in self.groups.values() for g in groups)]
        if k is not None and not k.take_over_without_arbiter and addresses:
            # Kubernetes mode: the VIPs answer only until the engine's deadline, enforced by the
            # kernel (docs/safety.md). A restarted agent keeps its predecessor's deadline.
            try:
                self.kfence = KernelFence(table_name(k.namespace, k.cluster), addresses)
                self.kfence.install()
            except FenceError as e:
                log.error("cannot install the kernel fence: %s", e)
                return 1
            log.info(
                "kernel fence: nftables tables inet/arp %s guard %d VIPs", self.kfence.name, len(addresses)
            )
        self.opts.control_socket.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.opts.control_socket.unlink()
        server = await asyncio.start_unix_server(self._control, path=str(self.opts.control_socket))
        os.chmod(self.opts.control_socket, 0o660)
        for side, runners in self.runners.items():
            for runner in runners:
                states = await runner.probe()
                running = [n for n, s in states.items() if s.value == "running"]
                if not running:
                    continue
                # A node starts holding nothing: what a dead agent left running (its service, after a
                # SIGKILL) would be half a group beside the owner's. Stop it before joining. With
                # --no-release-on-exit the operator asked to keep resources across restarts: only warn.
                if not self.opts.release_on_exit:
                    log.warning("already running before start-up (%s): %s", side.value, ", ".join(running))
                    continue
                log.warning(
                    "already running before start-up (%s): %s; stopping them before joining",
                    side.value,
                    ", ".join(running),
                )
                try:
                    await runner.stop()
                except GroupStopError as e:
                    log.error("cannot stop what was left running: %s", e)
                    return 1
        if self.arbiter is not None:
            with contextlib.suppress(Exception):  # open the API connection before it is urgent
                await asyncio.wait_for(self.arbiter.store.get(), 5)
        if shared is not None:
            self.media = shared.media
        else:
            self.media = await open_media(self.cfg.hacf.media, self, lock_dir=self.opts.lock_dir)
        log.info(
            "starting: node %s, peer %s, generation %d, keepalive %dms, deadtime %dms%s",
            self.node,
            self.peer,
            self.generation,
            self.cfg.hacf.keepalive_ms,
            self.cfg.hacf.deadtime_ms,
            f", group {self.opts.tag}" if self.opts.tag else "",
            extra=fields(generation=self.generation),
        )
        if shared is not None and shared.watchdog is not None:
            self.watchdog = shared.watchdog  # opened and fed by the runner; our FenceNode stops it
            if self.engine.cfg.arbitrated:
                self.engine.cfg = dataclasses.replace(
                    self.engine.cfg,
                    stop_budget=self.opts.stop_budget,
                    watchdog_timeout=float(self.watchdog.timeout),
                )
        elif self.cfg.hacf.watchdog is not None:
            # Opened last: from here on a stalled or dead agent resets the node.
            try:
                self.watchdog = Watchdog(self.cfg.hacf.watchdog, self.opts.watchdog_timeout)
            except WatchdogError as e:
                log.error("%s (ha.cf: watchdog %s)", e, self.cfg.hacf.watchdog)
                return 1
            if self.engine.cfg.arbitrated:
                self.engine.cfg = dataclasses.replace(
                    self.engine.cfg,
                    stop_budget=self.opts.stop_budget,
                    watchdog_timeout=float(self.watchdog.timeout),
                )
            log.info(
                "watchdog %s: fed every %.2fs, resets the node %ds after the agent stops feeding it%s",
                self.watchdog.path,
                self._feed_every(),
                self.watchdog.timeout,
                f"; a self-fencing stop may take {self.opts.stop_budget:g}s"
                if self.engine.cfg.arbitrated
                else "",
            )
            self._spawn(self._feed())
        self.started = True
        self.execute(self.engine.start(time.monotonic(), time.time()))
        clock = loop.create_task(self._clock())
        maint = loop.create_task(self._maintain())
        if self.kfence is not None:
            self._spawn(self._fence_loop())
        monitor = loop.create_task(self._monitor())
        if self.reloader is not None:
            self._spawn(self.reloader.run(self.stopping))
        if self.opts.kube is not None:
            k = self.opts.kube
            reporter = Reporter(
                self.leases,
                report_lease_name(k.cluster, self.node),
                self.node,
                lambda: report_of(self.status(), self.engine.epoch, self.peer, self.last_gap),
            )
            self._spawn(reporter.run())
            self._spawn(self._directives())
        await self.stopping.wait()
        log.info("stopping%s", ": releasing resources" if self.opts.release_on_exit else "")
        if self.opts.release_on_exit:
            self.stopping.clear()
            self.execute(self.engine.shutdown(time.monotonic()))
            deadline = time.monotonic() + 120
            while (self.held or self.engine.flux) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)  # let shutdone leave
            self.stopping.set()
        if guard is not None:  # after the release: the guard finds nothing left and exits
            await guard.close(keep=not self.opts.release_on_exit)
        if self.kfence is not None and self.opts.release_on_exit and not self.held:
            try:
                self.kfence.remove()
            except FenceError as e:
                log.warning("could not remove the kernel fence's tables: %s", e)
        if self.watchdog is not None and shared is None:
            self.watchdog.close()  # disarmed, unless the node is being fenced
        for task in (clock, maint, monitor, *self.tasks):
            task.cancel()
        server.close()
        if exporter is not None:
            await asyncio.to_thread(exporter.shutdown)
        if shared is None:
            for m in self.media:
                await m.close()
        with contextlib.suppress(FileNotFoundError):
            self.opts.control_socket.unlink()
        return 0


DEFAULT_STOP_BUDGET = 10.0


def agent_fails_back(hacf: HaCf, *, kube: bool) -> bool:
    """Whether the engine fails back by itself (Heartbeat's auto_failback). One owner per kind of
    move (docs/architecture.md): in Kubernetes mode failback is the operator's, through the Lease's
    handover-to, whatever ha.cf says (the operator renders it off; a hand-written one may not)."""
    return hacf.auto_failback_effective and not kube


@dataclass
class GivenOptions:
    """The options agent.json and the flags may both give: from one of them, never both."""

    arbitration_window: float | None
    when_arbiter_unavailable: str
    watchdog_timeout: int | None
    stop_budget: float
    metrics_port: int | None


def given_options(a: argparse.Namespace, file: AgentConfig | None) -> GivenOptions:
    """Merge the flags with agent.json. One source per option: a flag that agent.json also sets is
    an error naming both (the operator passes none of these flags; a hand-run agent may)."""
    fence = file.node_fence if file is not None else None
    pairs: list[tuple[str, str, Any, Any]] = [
        ("--arbitration-window", "arbitrationWindowSeconds", a.arbitration_window,
         file.arbitration_window_s if file else None),
        ("--when-arbiter-unavailable", "whenArbiterUnavailable", a.when_arbiter_unavailable,
         file.when_arbiter_unavailable if file and "when_arbiter_unavailable" in file.model_fields_set else None),
        ("--watchdog-timeout", "nodeFence.watchdogTimeoutSeconds", a.watchdog_timeout,
         fence.watchdog_timeout_s if fence else None),
        ("--stop-budget", "nodeFence.stopBudgetSeconds", a.stop_budget, fence.stop_budget_s if fence else None),
        ("--metrics-port", "metricsPort", a.metrics_port, file.metrics_port if file else None),
    ]  # fmt: skip
    both = [f"{flag} {flag_value} and agent.json's {key} {file_value}"
            for flag, key, flag_value, file_value in pairs
            if flag_value is not None and file_value is not None]  # fmt: skip
    if both:
        raise AgentConfigError(f"set in two places (keep one): {'; '.join(both)}")
    value = [flag_value if flag_value is not None else file_value for _, _, flag_value, file_value in pairs]
    return GivenOptions(
        arbitration_window=value[0],
        when_arbiter_unavailable=value[1] or "StayPut",
        watchdog_timeout=value[2],
        stop_budget=value[3] if value[3] is not None else DEFAULT_STOP_BUDGET,
        metrics_port=value[4],
    )


def main(argv: list[str] | None = None) -> int:
    configured = configure(argv)
    if isinstance(configured, int):
        return configured
    cfg, opts = configured
    if opts.groups is not None:
        from .groups import run_groups  # (it builds on Agent: imported here, not at the top)

        return asyncio.run(run_groups(cfg, opts, opts.groups))
    return asyncio.run(Agent(cfg, opts).run())


def configure(argv: list[str] | None = None) -> tuple[ClusterConfig, AgentOptions] | int:
    """Everything the agent is told (flags, Heartbeat's files, agent.json) as its config and options;
    an exit code when something is wrong (said on stderr, naming the file or the flag)."""
    p = argparse.ArgumentParser(prog="hacluster-agent", description=__doc__)
    p.add_argument("--config-dir", default="/etc/ha.d", help="Heartbeat config directory")
    p.add_argument("--node", default=socket.gethostname().split(".")[0].lower(), help="this node's name")
    p.add_argument("--state-dir", default="/var/lib/hacluster")
    p.add_argument("--control-socket", default="/run/hacluster/agent.sock")
    p.add_argument("--init-dir", default="/etc/init.d")
    p.add_argument("--lock-dir", default="/var/lock")
    p.add_argument("--no-release-on-exit", action="store_true", help="keep resources on SIGTERM")
    p.add_argument(
        "--address-lifetime",
        type=int,
        default=None,
        help="VIP valid_lft seconds (0: permanent); default: deadtime - keepalive (+ W), between 1 and 3",
    )
    p.add_argument(
        "--monitor-interval", type=float, default=5.0, help="seconds between checks of held groups"
    )
    p.add_argument(
        "--status-timeout", type=float, default=20.0, help="seconds a script's status may take (then: failed)"
    )
    p.add_argument("--log-format", choices=("json", "text"), default="json")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (0: any)")
    p.add_argument("--metrics-address", default="0.0.0.0", help="address for --metrics-port")
    p.add_argument(
        "--fence-after",
        type=int,
        help="ms without a beat from this agent before its fence guard removes the VIPs "
        "(default deadtime/2; 0: no guard)",
    )
    p.add_argument(
        "--watchdog-timeout",
        type=int,
        help="seconds: set on ha.cf's watchdog device (default: the device's own timeout)",
    )
    p.add_argument(
        "--stop-budget",
        type=float,
        help="Kubernetes mode with ha.cf's watchdog: seconds a self-fencing stop may take before the "
        f"watchdog resets the node (docs/safety.md; default {DEFAULT_STOP_BUDGET:g})",
    )
    k = p.add_argument_group("Kubernetes mode (the ownership Lease arbitrates)")
    k.add_argument("--kube", action="store_true", help="arbitrate through the HACluster's Lease")
    k.add_argument("--kubeconfig", help="default: in-cluster credentials")
    k.add_argument("--namespace", default="default")
    k.add_argument("--cluster", help="the HACluster's name (= its ownership Lease)")
    k.add_argument("--config-prefix", default="", help="read <prefix>ha.cf etc. (the operator's Secret)")
    k.add_argument(
        "--arbitration-window",
        type=float,
        help="W in docs/safety.md, seconds (default: from keepalive and deadtime, engine/window.py)",
    )
    k.add_argument("--no-early-window", action="store_true", help=argparse.SUPPRESS)  # bench/failover.py
    k.add_argument(
        "--when-arbiter-unavailable",
        choices=("StayPut", "TakeOver"),
        help="see docs/safety.md (default StayPut)",
    )
    a = p.parse_args(argv)
    if a.arbitration_window is not None and not MIN_WINDOW <= a.arbitration_window <= MAX_WINDOW:
        # the CRD's rule (spec.failover.arbitrationWindow): below 100 ms a renewal has under 50 ms
        p.error(f"--arbitration-window {a.arbitration_window:g}: must be between 0.1 and 10 seconds")
    setup(a.log_format)
    config_dir = Path(a.config_dir)
    if a.config_prefix:
        config_dir = materialize(config_dir, a.config_prefix, Path(a.state_dir) / "ha.d")
    if a.kube and not a.cluster:
        print("hacluster-agent: --kube needs --cluster (the HACluster's name)", file=sys.stderr)
        return 2
    try:
        cfg = load_directory(config_dir)
        file = load_agent_config(config_dir)
        if file is not None:
            check_agent_config(file, config_dir / AGENT_CONFIG_FILE, vip_names(cfg.haresources.groups))
            check_groups(
                file.groups, len(cfg.haresources.groups), config_dir / AGENT_CONFIG_FILE, kube=a.kube
            )
        given = given_options(a, file)
    except ConfigError as e:
        for f in e.findings:
            print(f, file=sys.stderr)
        return 1
    except AgentConfigError as e:
        print(e, file=sys.stderr)
        return 1
    for w in cfg.warnings:
        log.warning(str(w))
    if a.kube and cfg.hacf.auto_failback_effective:
        log.warning(
            "%s: auto_failback %s is ignored in Kubernetes mode: the operator fails back "
            "(spec.failover.autoFailback)",
            cfg.directory / "ha.cf",
            cfg.hacf.auto_failback,
        )
    if given.arbitration_window is None:
        given.arbitration_window = default_window(cfg.hacf.keepalive_ms / 1000, cfg.hacf.deadtime_ms / 1000)
    opts = AgentOptions(
        node=a.node.lower(),
        state_dir=Path(a.state_dir),
        control_socket=Path(a.control_socket),
        release_on_exit=not a.no_release_on_exit,
        address_lifetime=(
            a.address_lifetime
            if a.address_lifetime is not None
            else default_address_lifetime(
                cfg.hacf.deadtime_ms, cfg.hacf.keepalive_ms, given.arbitration_window if a.kube else 0.0
            )
        ),
        monitor_interval=a.monitor_interval,
        status_timeout=a.status_timeout,
        metrics_port=given.metrics_port,
        metrics_address=a.metrics_address,
        fence_after=a.fence_after,
        watchdog_timeout=given.watchdog_timeout,
        stop_budget=given.stop_budget,
        arp=dict(file.arp) if file is not None else {},
        groups=list(file.groups) if file is not None and file.groups else None,
        init_dir=Path(a.init_dir),
        lock_dir=Path(a.lock_dir),
        config_source=ConfigSource(Path(a.config_dir), a.config_prefix),
        kube=KubeOptions(
            namespace=a.namespace,
            cluster=a.cluster,
            kubeconfig=a.kubeconfig,
            window=given.arbitration_window,
            take_over_without_arbiter=given.when_arbiter_unavailable == "TakeOver",
            early_window=not a.no_early_window,
        )
        if a.kube
        else None,
    )
    if opts.node not in cfg.hacf.nodes:
        print(
            f"{cfg.directory / 'ha.cf'}: node {opts.node!r} is not listed (nodes: {cfg.hacf.nodes})",
            file=sys.stderr,
        )
        return 1
    return cfg, opts


if __name__ == "__main__":
    sys.exit(main())
