"""A resource group as Heartbeat's ResourceManager runs it: start left to right, stop right to left.

The runner only sequences drivers and counts failures; what to do about an outcome (hand the group
to the peer, fence this node after a failed stop) is the agent's decision.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hacluster_api.heartbeat.haresources import parse_ip_spec
from hacluster_api.heartbeat.haresources_model import IP_AGENTS, IPResource, ResourceGroup, ScriptResource
from hacluster_api.models import ArpSpec

from .base import Announcing, Fenceable, Renewable, Resource, ResourceError, ResourceState
from .ipaddr import IPAddrDriver, VIPOptions
from .script import ScriptDriver, ScriptOptions

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class GroupStartError(ResourceError):
    """A member failed to start; the group was then released (`released`) or not (see message)."""

    def __init__(self, group: str, cause: ResourceError, released: bool, release_note: str) -> None:
        super().__init__(cause.resource, "start", f"{cause.reason}; group {group} {release_note}")
        self.group = group
        self.cause = cause
        self.released = released


class GroupStopError(ResourceError):
    """A member could not be stopped even after retries and still reports running (or its state is
    unknown). Heartbeat reboots the node here; `held` lists what may still be running, in start order."""

    def __init__(self, group: str, cause: ResourceError, held: Sequence[str], attempts: int) -> None:
        super().__init__(
            cause.resource,
            "stop",
            f"{cause.reason} (after {attempts} attempts); group {group} is NOT released, "
            f"still held: {', '.join(held)}",
        )
        self.group = group
        self.cause = cause
        self.held = list(held)
        self.attempts = attempts


@dataclass
class MonitorOutcome:
    """What one monitoring pass found and did."""

    failed: dict[str, str] = field(default_factory=dict)
    """Resources found not running, with why."""
    restarted: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    """Failure count of every resource (within `failure_timeout`), after this pass."""
    migrate: bool = False
    """True: the group cannot stay here; the caller should release it and let the peer take it."""
    reason: str = ""

    @property
    def healthy(self) -> bool:
        return not self.failed


class GroupRunner:
    """Starts, stops, probes and monitors one resource group through injected drivers."""

    def __init__(
        self,
        resources: Sequence[Resource],
        *,
        name: str | None = None,
        stop_retries: int = 10,
        retry_interval: float = 1.0,
        migration_threshold: int = 3,
        failure_timeout: float | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [r.name for r in resources]
        if name is None:
            name = names[0] if names else "(empty group)"
        if len(set(names)) != len(names):
            raise ValueError(f"group {name}: resource names must be unique: {names}")
        if migration_threshold < 1:
            raise ValueError("migration_threshold must be >= 1")
        self.name = name
        self.resources = list(resources)
        self.stop_retries = stop_retries
        self.retry_interval = retry_interval
        self.migration_threshold = migration_threshold
        self.failure_timeout = failure_timeout
        self._sleep = sleep
        self._clock = clock
        self._failures: dict[str, list[float]] = {r.name: [] for r in self.resources}
        # Set while the group is being stopped: a monitor pass restarts nothing then (and undoes a
        # restart that was under way), but never delays the stop (a release may be a self-fence).
        self._stopping = False

    # -- start / stop ----------------------------------------------------------------------

    async def start(
        self, services_at: float | None = None, refused: Callable[[], str | None] | None = None
    ) -> None:
        """Start left to right. If one fails, stop it and those before it right to left, and raise
        GroupStartError saying which failed, why, and whether the release was clean.

        `services_at` (our clock): the addresses start now, every other member no earlier than then
        (the engine's Acquire.services_at: the peer we took over from may still run its copy).
        `refused` (the engine's services_refused): asked right before each member that is not an
        address; a reason stops the start there, as a failure would."""
        self._stopping = False
        self.reset_failures()
        for i, res in enumerate(self.resources):
            fenceable = isinstance(res, Fenceable)
            wait = 0.0 if services_at is None or fenceable else services_at - self._clock()
            if wait > 0:
                log.warning(
                    "group %s: starting %s in %.1fs, once the peer's node fence is over (docs/safety.md)",
                    self.name,
                    res.name,
                    wait,
                )
                await self._sleep(wait)
            try:
                why_not = None if fenceable or refused is None else refused()
                if why_not is not None:
                    raise ResourceError(res.name, "start", f"not started: {why_not}")
                log.info("group %s: starting %s", self.name, res.name)
                await res.start()
            except ResourceError as e:
                cause = e
            except Exception as e:  # a driver bug must not leave the group half-started
                cause = ResourceError(res.name, "start", f"{type(e).__name__}: {e}")
            else:
                continue
            log.error("group %s: %s; releasing the group", self.name, cause)
            # The failed one too: a start that failed half way may have left something running.
            try:
                await self._stop_members(self.resources[: i + 1])
            except GroupStopError as stop_err:
                raise GroupStartError(
                    self.name, cause, False, f"could NOT be released: {stop_err}"
                ) from cause
            stopped = ", ".join(r.name for r in reversed(self.resources[: i + 1]))
            raise GroupStartError(self.name, cause, True, f"released cleanly (stopped {stopped})") from cause

    async def stop(self) -> None:
        """Stop right to left; each failing stop is retried. Raises GroupStopError at the first
        resource that cannot be stopped, leaving the ones before it running (as Heartbeat would)."""
        self._stopping = True
        await self._stop_members(self.resources)

    async def drop_addresses(self) -> list[ResourceError]:
        """Self-fencing's first step: remove the group's addresses at once, whatever the order,
        so that no client reaches this node while its services stop. Errors are returned (the
        stop that follows retries them); the monitor restarts nothing from now on."""
        self._stopping = True
        errors: list[ResourceError] = []
        for res in self.resources:
            if isinstance(res, Fenceable):
                try:
                    await res.fence()
                except ResourceError as e:
                    errors.append(e)
        return errors

    async def _stop_members(self, members: Sequence[Resource]) -> None:
        for pos in range(len(members) - 1, -1, -1):
            res = members[pos]
            error = await self._stop_with_retries(res)
            if error is None:
                continue
            # Heartbeat: if it now reports stopped, the script is just not LSB-compliant.
            state, why = await self._state(res)
            if state == ResourceState.STOPPED:
                log.warning(
                    "group %s: stop of %s failed but it reports stopped; probably not LSB-compliant "
                    "(stop MUST succeed when already stopped)",
                    self.name,
                    res.name,
                )
                continue
            cause = ResourceError(
                error.resource, "stop", f"{error.reason}; then {why or 'status says running'}"
            )
            raise GroupStopError(
                self.name, cause, [r.name for r in members[: pos + 1]], self.stop_retries + 1
            )

    async def _stop_with_retries(self, res: Resource) -> ResourceError | None:
        """None once a stop succeeded; else the last error after 1 + stop_retries attempts."""
        last: ResourceError | None = None
        for attempt in range(self.stop_retries + 1):
            if attempt:
                await self._sleep(self.retry_interval)
                log.info("group %s: retrying failed stop of %s (%d/%d)", self.name, res.name, attempt,
                         self.stop_retries)  # fmt: skip
            try:
                log.info("group %s: stopping %s", self.name, res.name)
                await res.stop()
                return None
            except ResourceError as e:
                last = e
            except Exception as e:
                last = ResourceError(res.name, "stop", f"{type(e).__name__}: {e}")
            log.warning("group %s: %s", self.name, last)
        return last

    # -- state ------------------------------------------------------------------------------

    async def _state(self, res: Resource) -> tuple[ResourceState, str]:
        try:
            state = await res.status()
        except ResourceError as e:
            return ResourceState.FAILED, e.reason
        except Exception as e:
            return ResourceState.FAILED, f"status: {type(e).__name__}: {e}"
        return state, "" if state == ResourceState.RUNNING else f"status says {state}"

    async def probe(self) -> dict[str, ResourceState]:
        """The state of every member (status errors count as FAILED), e.g. to learn at agent start-up
        what is already running outside our control."""
        return {res.name: (await self._state(res))[0] for res in self.resources}

    async def refresh(self) -> None:
        """Renew every member that holds something with a lifetime (VIPs); raise the first failure
        after trying all of them."""
        errors: list[ResourceError] = []
        for res in self.resources:
            if isinstance(res, Renewable):
                try:
                    await res.refresh()
                except ResourceError as e:
                    errors.append(e)
        if errors:
            raise errors[0]

    async def announce(self) -> None:
        """Re-announce every member that announces itself (gratuitous ARP / unsolicited NA for VIPs)."""
        for res in self.resources:
            if isinstance(res, Announcing):
                await res.announce()

    # -- monitoring --------------------------------------------------------------------------

    @property
    def failures(self) -> Mapping[str, int]:
        return {name: len(self._recent(name)) for name in self._failures}

    def reset_failures(self) -> None:
        for times in self._failures.values():
            times.clear()

    def _recent(self, name: str) -> list[float]:
        times = self._failures[name]
        if self.failure_timeout is not None:
            horizon = self._clock() - self.failure_timeout
            times[:] = [t for t in times if t > horizon]
        return times

    async def monitor_once(self) -> MonitorOutcome:
        """Check each member; restart a failed one in place (stop, then start), counting failures.

        Asks for migration (and restarts nothing more) when a member reaches `migration_threshold`
        failures or its restart fails.
        """
        out = MonitorOutcome()
        for res in self.resources:
            if self._stopping:
                break
            state, why = await self._state(res)
            if state == ResourceState.RUNNING:
                continue
            out.failed[res.name] = why
            recent = self._recent(res.name)
            recent.append(self._clock())
            log.warning("group %s: %s is %s (%s), failure %d/%d", self.name, res.name, state, why,
                        len(recent), self.migration_threshold)  # fmt: skip
            if len(recent) >= self.migration_threshold:
                out.migrate = True
                out.reason = (
                    f"{res.name} failed {len(recent)} times (threshold {self.migration_threshold}): {why}"
                )
                break
            try:
                if state == ResourceState.FAILED:
                    error = await self._stop_with_retries(res)
                    if error is not None:
                        raise error
                if self._stopping:
                    break
                await res.start()
            except ResourceError as e:
                out.migrate = True
                out.reason = f"{res.name} could not be restarted: {e}"
                break
            if self._stopping:  # the group was stopped while this restart ran: undo it
                log.warning(
                    "group %s: stopped during the restart of %s; stopping it again", self.name, res.name
                )
                await self._stop_with_retries(res)
                break
            out.restarted.append(res.name)
        out.failures = dict(self.failures)
        return out


def drivers_for(
    group: ResourceGroup,
    config_dir: Path | str = Path("/etc/ha.d"),
    *,
    vip: VIPOptions | None = None,
    scripts: ScriptOptions | None = None,
    init_dir: Path | str | None = None,
    address_lifetime: int | None = None,
    arp: Mapping[str, ArpSpec] | None = None,
) -> list[Resource]:
    """Drivers for a parsed haresources group, in start order.

    IP resources, and IPaddr/IPaddr2/IPv6addr named as scripts, get our own VIP driver rather than
    a resource.d script. `init_dir` and `address_lifetime` (seconds, 0 = permanent) override the
    same fields of `scripts` and `vip`. `arp`: each VIP's announcements by its name (agent.json);
    a VIP not named keeps `vip`'s.
    """
    vip = vip or VIPOptions()
    scripts = scripts or ScriptOptions()
    if address_lifetime is not None:
        vip = dataclasses.replace(vip, lifetime=address_lifetime)
    if init_dir is not None:
        scripts = dataclasses.replace(scripts, init_dir=Path(init_dir))
    out: list[Resource] = []
    for res in group.resources:
        if isinstance(res, ScriptResource) and res.script in IP_AGENTS:
            if len(res.args) != 1:
                raise ValueError(f"{res.name}: {res.script} takes one address argument")
            res = parse_ip_spec(res.script, res.args[0])
        if isinstance(res, IPResource):
            a = (arp or {}).get(res.name)
            options = vip if a is None else with_arp(vip, a)
            out.append(IPAddrDriver(res, options))
        else:
            out.append(ScriptDriver(res.script, res.args, config_dir=config_dir, options=scripts))
    return out


def with_arp(vip: VIPOptions, arp: ArpSpec) -> VIPOptions:
    """`vip` with one VIP's ARP settings (spec.resources[].ip.arp, via agent.json)."""
    return dataclasses.replace(
        vip, arp_count=arp.count, arp_interval=arp.interval_ms / 1000, arp_refresh=float(arp.refresh_seconds)
    )


def runner_for(
    group: ResourceGroup,
    config_dir: Path | str = Path("/etc/ha.d"),
    *,
    vip: VIPOptions | None = None,
    scripts: ScriptOptions | None = None,
    stop_retries: int = 10,
    retry_interval: float = 1.0,
    migration_threshold: int = 3,
) -> GroupRunner:
    """A GroupRunner for a parsed haresources group, named as Heartbeat names it (its first resource)."""
    return GroupRunner(
        drivers_for(group, config_dir, vip=vip, scripts=scripts),
        name=group.key,
        stop_retries=stop_retries,
        retry_interval=retry_interval,
        migration_threshold=migration_threshold,
    )


def vip_names(groups: Sequence[ResourceGroup]) -> set[str]:
    """The names of every VIP in these groups, as drivers_for names them (agent.json's `arp` keys)."""
    names: set[str] = set()
    for group in groups:
        for res in group.resources:
            if isinstance(res, ScriptResource) and res.script in IP_AGENTS and len(res.args) == 1:
                res = parse_ip_spec(res.script, res.args[0])
            if isinstance(res, IPResource):
                names.add(res.name)
    return names
