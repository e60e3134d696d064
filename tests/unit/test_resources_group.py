"""The group runner: Heartbeat's start/stop order, release on a failed start, stop retries, monitoring.

Fake drivers and a fake sleep/clock: nothing here waits for real.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hacluster_agent.resources import (
    GroupRunner,
    GroupStartError,
    GroupStopError,
    IPAddrDriver,
    ResourceError,
    ResourceState,
    ScriptDriver,
    ScriptOptions,
    VIPOptions,
    drivers_for,
    runner_for,
)
from hacluster_api.heartbeat.haresources import parse_haresources
from hacluster_api.heartbeat.haresources_model import ResourceGroup, ScriptResource


@dataclass
class FakeClock:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


@dataclass
class Fake:
    """A resource whose behaviour the test scripts; every call lands in the shared `log`."""

    name: str
    log: list[str]
    running: bool = False
    broken: bool = False
    """Status says FAILED (e.g. LSB "dead but pid file exists") until stopped."""
    start_fails: int = 0
    """How many start calls fail (-1: all)."""
    stop_fails: int = 0
    status_error: str | None = None
    refresh_error: str | None = None
    refreshed: int = 0

    async def start(self) -> None:
        self.log.append(f"start {self.name}")
        if self.start_fails:
            self.start_fails -= 1
            raise ResourceError(self.name, "start", "exit code 1: cannot do it")
        self.running = True

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.stop_fails:
            self.stop_fails -= 1
            raise ResourceError(self.name, "stop", "exit code 1: device busy")
        self.running = self.broken = False

    async def status(self) -> ResourceState:
        if self.status_error:
            raise ResourceError(self.name, "status", self.status_error)
        if self.broken:
            return ResourceState.FAILED
        return ResourceState.RUNNING if self.running else ResourceState.STOPPED


@dataclass
class FakeVIP(Fake):
    announced: int = 0

    async def refresh(self) -> None:
        self.refreshed += 1
        if self.refresh_error:
            raise ResourceError(self.name, "refresh", self.refresh_error)

    async def announce(self) -> None:
        self.announced += 1

    async def fence(self) -> None:
        self.log.append(f"fence {self.name}")
        await self.stop()


def make(
    *names: str, clock: FakeClock | None = None, **kw: object
) -> tuple[GroupRunner, list[Fake], list[str]]:
    log: list[str] = []
    fakes = [Fake(n, log) for n in names]
    clock = clock or FakeClock()
    runner = GroupRunner(fakes, sleep=clock.sleep, clock=clock, **kw)  # type: ignore[arg-type]
    return runner, fakes, log


@pytest.mark.asyncio
async def test_starts_left_to_right_and_stops_right_to_left() -> None:
    runner, _, log = make("IPaddr::192.0.2.100", "drbddisk::r0", "httpd")
    assert runner.name == "IPaddr::192.0.2.100"  # Heartbeat names a group by its first resource
    await runner.start()
    await runner.stop()
    assert log == [
        "start IPaddr::192.0.2.100", "start drbddisk::r0", "start httpd",
        "stop httpd", "stop drbddisk::r0", "stop IPaddr::192.0.2.100",
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_failed_start_of_the_second_of_three_releases_the_first_and_says_why(tmp_path: Path) -> None:
    """With real scripts: the 2nd fails, it and the 1st are stopped right to left, the 3rd never runs."""
    config_dir, init_dir = tmp_path / "ha.d", tmp_path / "init.d"
    (config_dir / "resource.d").mkdir(parents=True)
    init_dir.mkdir()
    calls = tmp_path / "calls"
    for name, start in (("first", "exit 0"), ("second", "echo 'mount: /dev/sdz1 does not exist' >&2; exit 1"),
                        ("third", "exit 0")):  # fmt: skip
        script = init_dir / name
        script.write_text(
            f'#!/bin/sh\necho "{name} $1" >> {calls}\n[ "$1" = start ] && {{ {start}; }}\nexit 0\n'
        )
        script.chmod(0o755)
    group = ResourceGroup(
        home="node1", resources=[ScriptResource(script=n) for n in ("first", "second", "third")]
    )
    clock = FakeClock()
    runner = GroupRunner(
        drivers_for(group, config_dir, init_dir=init_dir), name=group.key, sleep=clock.sleep, clock=clock
    )
    with pytest.raises(GroupStartError) as e:
        await runner.start()
    assert calls.read_text().splitlines() == ["first start", "second start", "second stop", "first stop"]
    err = e.value
    assert err.resource == "second" and err.action == "start" and err.released
    msg = str(err)
    assert msg.startswith("second: start failed: exit code 1: mount: /dev/sdz1 does not exist")
    assert "released cleanly" in msg
    assert clock.sleeps == []


@pytest.mark.asyncio
async def test_failed_start_whose_release_also_fails_says_so() -> None:
    runner, (a, b), _log = make("a", "b")
    b.start_fails = 1
    a.stop_fails = -1  # never stops
    with pytest.raises(GroupStartError) as e:
        await runner.start()
    assert not e.value.released
    assert "b: start failed" in str(e.value)
    assert "could NOT be released" in str(e.value) and "device busy" in str(e.value)


@pytest.mark.asyncio
async def test_failing_stop_is_retried_then_succeeds() -> None:
    clock = FakeClock()
    runner, (_a, b), log = make("a", "b", clock=clock)
    await runner.start()
    b.stop_fails = 2
    await runner.stop()
    assert log[2:] == ["stop b", "stop b", "stop b", "stop a"]
    assert clock.sleeps == [1.0, 1.0]


@pytest.mark.asyncio
async def test_stop_that_keeps_failing_is_retried_ten_times_then_surfaced() -> None:
    clock = FakeClock()
    runner, (_a, b, _c), log = make("a", "b", "c", clock=clock)
    await runner.start()
    b.stop_fails = -1
    with pytest.raises(GroupStopError) as e:
        await runner.stop()
    assert log.count("stop b") == 11  # the first try and HA_STOPRETRYMAX=10 retries
    assert clock.sleeps == [1.0] * 10
    assert "stop a" not in log  # what b may still use is left alone, as Heartbeat would
    err = e.value
    assert err.resource == "b" and err.action == "stop"
    assert err.held == ["a", "b"]
    assert "device busy" in str(err) and "NOT released" in str(err) and "11 attempts" in str(err)
    assert "then status says running" in str(err)


@pytest.mark.asyncio
async def test_failed_stop_of_a_resource_that_reports_stopped_is_tolerated() -> None:
    """Heartbeat: "probably not LSB-compliant ... Machine reboot narrowly avoided"."""
    runner, (_a, b), log = make("a", "b", stop_retries=2, retry_interval=0.5)
    b.stop_fails = -1  # fails, but status says stopped
    await runner.stop()
    assert log == ["stop b", "stop b", "stop b", "stop a"]


@pytest.mark.asyncio
async def test_probe_reports_each_state_and_unknown_as_failed() -> None:
    runner, (a, _b, c), _ = make("a", "b", "c")
    a.running = True
    c.status_error = "timed out after 20 s"
    assert await runner.probe() == {
        "a": ResourceState.RUNNING,
        "b": ResourceState.STOPPED,
        "c": ResourceState.FAILED,
    }


@pytest.mark.asyncio
async def test_monitor_restarts_a_failed_resource_then_asks_to_migrate_at_the_threshold() -> None:
    runner, (vip, _httpd), log = make("IPaddr::192.0.2.100", "httpd")
    await runner.start()
    log.clear()

    assert (await runner.monitor_once()).healthy

    for expected_count in (1, 2):
        vip.running = False  # e.g. the address was removed from its interface
        out = await runner.monitor_once()
        assert out.failed == {"IPaddr::192.0.2.100": "status says stopped"}
        assert out.restarted == ["IPaddr::192.0.2.100"] and not out.migrate
        assert out.failures == {"IPaddr::192.0.2.100": expected_count, "httpd": 0}
        assert vip.running

    vip.running = False
    out = await runner.monitor_once()
    assert out.migrate and out.restarted == []
    assert "IPaddr::192.0.2.100 failed 3 times (threshold 3)" in out.reason
    assert log == ["start IPaddr::192.0.2.100", "start IPaddr::192.0.2.100"]  # no third restart


@pytest.mark.asyncio
async def test_monitor_stops_a_failed_resource_before_restarting_it() -> None:
    runner, (a,), log = make("a")
    await runner.start()
    a.broken = True
    log.clear()
    out = await runner.monitor_once()
    assert log == ["stop a", "start a"] and out.restarted == ["a"]


@pytest.mark.asyncio
async def test_monitor_asks_to_migrate_when_the_restart_fails() -> None:
    runner, (_a, b), _ = make("a", "b")
    await runner.start()
    b.running, b.start_fails = False, 1
    out = await runner.monitor_once()
    assert out.migrate and "b could not be restarted" in out.reason and "cannot do it" in out.reason


@pytest.mark.asyncio
async def test_old_failures_expire_after_failure_timeout() -> None:
    clock = FakeClock()
    runner, (a,), _ = make("a", clock=clock, migration_threshold=2, failure_timeout=60.0)
    await runner.start()
    a.running = False
    assert not (await runner.monitor_once()).migrate
    clock.now += 61
    a.running = False
    out = await runner.monitor_once()
    assert not out.migrate and out.failures == {"a": 1}
    a.running = False
    assert (await runner.monitor_once()).migrate


@pytest.mark.asyncio
async def test_refresh_and_announce_reach_every_vip_and_refresh_errors_surface() -> None:
    log: list[str] = []
    vip1, svc, vip2 = (
        FakeVIP("IPaddr::192.0.2.100", log),
        Fake("httpd", log),
        FakeVIP("IPaddr::192.0.2.101", log),
    )
    runner = GroupRunner([vip1, svc, vip2])
    await runner.refresh()
    await runner.announce()
    assert (vip1.refreshed, vip2.refreshed, vip1.announced, vip2.announced) == (1, 1, 1, 1)
    vip1.refresh_error = "its 3 s lifetime ran out before it was renewed"
    with pytest.raises(ResourceError, match="lifetime ran out"):
        await runner.refresh()
    assert vip2.refreshed == 2  # the others were still renewed


def test_drivers_for_maps_haresources_to_drivers(tmp_path: Path) -> None:
    cfg, findings = parse_haresources(
        "node1 192.0.2.100 IPaddr2::192.0.2.101/24/eth0 IPv6addr::2001:db8::100/64 "
        "Filesystem::/dev/sda1::/data::ext3 httpd\n"
    )
    assert cfg is not None, findings
    group = cfg.groups[0]
    drivers = drivers_for(group, tmp_path, init_dir=tmp_path / "init.d", address_lifetime=5)
    assert [type(d) for d in drivers] == [
        IPAddrDriver,
        IPAddrDriver,
        IPAddrDriver,
        ScriptDriver,
        ScriptDriver,
    ]
    assert [d.name for d in drivers] == [r.name for r in group.resources]
    vip = drivers[0]
    assert isinstance(vip, IPAddrDriver) and vip.lifetime == 5
    fs = drivers[3]
    assert isinstance(fs, ScriptDriver)
    assert fs.args == ["/dev/sda1", "/data", "ext3"]
    assert fs.search_path == (tmp_path / "resource.d", tmp_path / "init.d")


def test_ipaddr_named_as_a_script_gets_the_vip_driver_not_a_script(tmp_path: Path) -> None:
    group = ResourceGroup(
        home="node1", resources=[ScriptResource(script="IPaddr", args=["192.0.2.102/24/eth1"])]
    )
    (d,) = drivers_for(group, tmp_path, vip=VIPOptions(lifetime=None), scripts=ScriptOptions())
    assert isinstance(d, IPAddrDriver)
    assert d.resource.interface == "eth1" and d.lifetime is None
    assert runner_for(group, tmp_path).name == "IPaddr::192.0.2.102/24/eth1"


@pytest.mark.asyncio
async def test_self_fencing_removes_every_address_before_any_service_stops() -> None:
    """A database must not keep answering clients through the VIP while it stops: the VIPs of a
    fencing release go first (sim: overlap = the service's stop time when the VIP went last)."""
    log: list[str] = []
    vip1, svc, vip2 = (
        FakeVIP("IPaddr::192.0.2.100", log),
        Fake("db", log),
        FakeVIP("IPaddr::198.51.100.7", log),
    )
    runner = GroupRunner([vip1, svc, vip2])
    await runner.start()
    log.clear()
    assert await runner.drop_addresses() == []
    assert not vip1.running and not vip2.running and svc.running
    await runner.stop()
    assert log[:4] == ["fence IPaddr::192.0.2.100", "stop IPaddr::192.0.2.100",
                       "fence IPaddr::198.51.100.7", "stop IPaddr::198.51.100.7"]  # fmt: skip
    assert log.index("stop db") > 3 and not svc.running


@pytest.mark.asyncio
async def test_after_a_takeover_the_addresses_start_at_once_and_the_services_at_services_at() -> None:
    """Taken over from a silent peer with a node fence: its copy may run until its budget and its
    watchdog are over (Acquire.services_at): the VIP answers now, the database starts then."""
    log: list[str] = []
    clock = FakeClock()
    vip, db = FakeVIP("IPaddr::192.0.2.100", log), Fake("db", log)
    runner = GroupRunner([vip, db], sleep=clock.sleep, clock=clock)
    await runner.start(services_at=clock.now + 11.0)
    assert log == ["start IPaddr::192.0.2.100", "start db"]
    assert clock.sleeps == [11.0] and vip.running and db.running
    clock.sleeps.clear()
    await runner.stop()
    await runner.start(services_at=clock.now - 1.0)  # already over: no wait
    assert clock.sleeps == []


@pytest.mark.asyncio
async def test_a_service_the_engine_refuses_after_the_wait_never_starts_and_the_vip_goes() -> None:
    """The right to hold was lost while the database waited for the peer's node fence (the
    engine's services_refused, sim seed 551716): it never starts, the VIP is removed, and the
    start fails saying why."""
    log: list[str] = []
    clock = FakeClock()
    vip, db = FakeVIP("IPaddr::192.0.2.100", log), Fake("db", log)
    runner = GroupRunner([vip, db], sleep=clock.sleep, clock=clock)
    asked: list[str] = []

    def refused() -> str | None:
        asked.append("db")
        return "the Lease is no longer ours"

    with pytest.raises(GroupStartError, match="not started: the Lease is no longer ours"):
        await runner.start(services_at=clock.now + 11.0, refused=refused)
    assert "start db" not in log and not db.running and not vip.running
    assert asked == ["db"]  # asked once, after the wait, and never for the address
