"""Several resource groups in one agent (Kubernetes mode, agent.json's `groups`).

Heartbeat runs every haresources line in one daemon, the groups of one home node moving together.
An HACluster's `spec.groups` asks for more: each group has its own ownership Lease and moves on its
own (one fails over, switches over or fails back while the other stays). So each group runs its own
engine (daemon.Agent, the same code and rules as a single-group pair, proven by the same
simulation), and this module runs them side by side in one process, as Heartbeat runs its groups:

- one set of media, opened once; each group's messages carry its name (`GROUP_TAG`; the main group's
  none), and the hub hands each message to its group's engine (an unknown group's is dropped and
  counted, e.g. a peer whose config has a group this node's has not yet);
- one watchdog (ha.cf's `watchdog`), opened first and fed from this loop; any group's FenceNode
  stops the feeding: a node that cannot stop one group's services is reset, with all of them;
- one reload (authkeys live, into every group), one metrics endpoint (each sample labelled with its
  group), the process's signals and realtime priority.

Each group keeps what is its own: its Lease and reports (hacluster_api.names), kernel fence table,
fence guard, state directory and control socket.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from hacluster_api.heartbeat.directory import ClusterConfig
from hacluster_api.heartbeat.haresources_model import HaResources
from hacluster_api.models import MAIN_GROUP
from hacluster_api.names import ownership_lease_name

from .daemon import Agent, AgentOptions, Shared
from .logs import fields
from .media.base import open_media
from .realtime import become_realtime
from .realtime import executor as realtime_executor
from .reload import Reloader
from .resources.watchdog import Watchdog, WatchdogError
from .wire.codec import Decoded, decode
from .wire.errors import Rejected
from .wire.message import GROUP_TAG

log = logging.getLogger("hacluster.agent")


def group_config(cfg: ClusterConfig, index: int) -> ClusterConfig:
    """The config as if haresources had only its line `index`: what that group's engine runs."""
    return dataclasses.replace(cfg, haresources=HaResources(groups=[cfg.haresources.groups[index]]))


def group_options(opts: AgentOptions, name: str) -> AgentOptions:
    """One group's options: its Lease names (KubeOptions.cluster is its ownership Lease's name, and
    so its reports' and kernel fence's), its state directory and control socket; the main group
    keeps the single-group ones."""
    assert opts.kube is not None
    if name == MAIN_GROUP:
        return dataclasses.replace(opts, tag=None, config_source=None, metrics_port=None)
    sock = opts.control_socket
    return dataclasses.replace(
        opts,
        tag=name,
        config_source=None,
        metrics_port=None,
        state_dir=opts.state_dir / "groups" / name,
        control_socket=sock.with_name(f"{sock.stem}-{name}{sock.suffix}"),
        kube=dataclasses.replace(opts.kube, cluster=ownership_lease_name(opts.kube.cluster, name)),
    )


class Hub:
    """The media's one listener: authenticates each packet once and hands the message to its
    group's agent (MediumEvents)."""

    def __init__(self, agents: dict[str | None, Agent]) -> None:
        self.agents = agents  # by tag (None: the main group)
        self.first = next(iter(agents.values()))

    def packet_received(self, medium: str, data: bytes) -> None:
        got = decode(data, self.first.cfg.authkeys)
        if isinstance(got, Rejected):
            self.first.dropped(medium, got.reason.value, got)
            return
        assert isinstance(got, Decoded)
        tag = got.message.get(GROUP_TAG)
        agent = self.agents.get(tag)
        if agent is None:
            self.first.dropped(
                medium, "unknown_group", f"a message for group {tag or MAIN_GROUP!r}, not run here"
            )
            return
        if agent.started:  # (a group whose engine does not run yet: its peer sends again)
            agent.message_received(medium, got.message if tag is None else got.message.without(GROUP_TAG))

    def medium_state(self, medium: str, up: bool, reason: str) -> None:
        for agent in self.agents.values():
            agent.medium_state(medium, up, reason)


class Authkeys:
    """What the one Reloader reloads (reload.HasConfig): the whole config; a new authkeys goes
    into every group's at once."""

    def __init__(self, cfg: ClusterConfig, agents: Iterable[Agent]) -> None:
        self._cfg, self.agents = cfg, list(agents)

    @property
    def cfg(self) -> ClusterConfig:
        return self._cfg

    @cfg.setter
    def cfg(self, value: ClusterConfig) -> None:
        self._cfg = value
        for agent in self.agents:
            agent.cfg = dataclasses.replace(agent.cfg, authkeys=value.authkeys)


class Labelled(Collector):
    """Every group's metrics in one exposition, each sample labelled `group`."""

    def __init__(self, registries: dict[str, CollectorRegistry]) -> None:
        self.registries = registries

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for group, registry in self.registries.items():
            for family in registry.collect():
                out = families.get(family.name)
                if out is None:
                    out = families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                out.samples.extend(s._replace(labels={**s.labels, "group": group}) for s in family.samples)
        return list(families.values())


async def run_groups(cfg: ClusterConfig, opts: AgentOptions, names: Sequence[str]) -> int:
    """Run one agent per group until SIGTERM; the first to fail (at start-up) stops the others.
    The exit code is the worst of theirs."""
    loop = asyncio.get_running_loop()
    agents = [Agent(group_config(cfg, i), group_options(opts, name)) for i, name in enumerate(names)]
    by_tag = {a.opts.tag: a for a in agents}
    exporter = None
    if opts.metrics_port is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Labelled({name: a.metrics.registry for name, a in zip(names, agents, strict=True)}))
        try:
            exporter, _ = start_http_server(opts.metrics_port, opts.metrics_address, registry=registry)
        except OSError as e:
            log.error("cannot serve metrics on %s:%s: %s", opts.metrics_address, opts.metrics_port, e)
            return 1
    rtprio = cfg.hacf.realtime_prio
    if rtprio is not None and become_realtime(rtprio):
        loop.set_default_executor(realtime_executor(rtprio))
    else:
        rtprio = None

    def stop() -> None:
        for a in agents:
            a.stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    reloader = (
        Reloader(opts.config_source, Authkeys(cfg, agents), agents[0].metrics) if opts.config_source else None
    )
    if reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, reloader.request)
    watchdog = None
    if cfg.hacf.watchdog is not None:
        # Opened before the groups start (they share it), closed on every way out below.
        try:
            watchdog = Watchdog(cfg.hacf.watchdog, opts.watchdog_timeout)
        except WatchdogError as e:
            log.error("%s (ha.cf: watchdog %s)", e, cfg.hacf.watchdog)
            return 1
    tasks: list[asyncio.Task[None]] = []
    try:
        media = await open_media(cfg.hacf.media, Hub(by_tag), lock_dir=opts.lock_dir)
        shared = Shared(media=media, watchdog=watchdog, rtprio=rtprio)
        log.info("running %d resource groups: %s", len(agents), ", ".join(names), extra=fields())
        if watchdog is not None:
            tasks.append(loop.create_task(_feed(watchdog)))
        if reloader is not None:
            stopping = asyncio.Event()
            tasks.append(loop.create_task(reloader.run(stopping)))
        runs = [loop.create_task(a.run(shared)) for a in agents]
        await asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED)
        stop()  # one ended (SIGTERM, or a group that could not start): all stop, releasing
        await asyncio.wait(runs)
        codes = [r.result() if not r.cancelled() and r.exception() is None else 1 for r in runs]
        for name, r in zip(names, runs, strict=True):
            if not r.cancelled() and r.exception() is not None:
                log.error("group %s ended with %r", name, r.exception())
        for m in media:
            await m.close()
        return max(codes)
    finally:
        for t in tasks:
            t.cancel()
        if watchdog is not None:
            watchdog.close()  # disarmed, unless a group fenced the node
        if exporter is not None:
            await asyncio.to_thread(exporter.shutdown)


async def _feed(watchdog: Watchdog) -> None:
    """Fed from the event loop itself: a loop that stalls stops feeding it (as daemon.Agent)."""
    every = min(int(watchdog.timeout) / 4, 1.0)
    while not watchdog.closed:
        watchdog.feed()
        await asyncio.sleep(every)
