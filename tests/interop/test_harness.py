"""The real-daemon harness: two real Heartbeat 3.0.6 daemons in namespaces."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import netns
from tests.support.realheartbeat import RealHeartbeat, start_all

pytestmark = [pytest.mark.netns, pytest.mark.interop]


def test_two_real_daemons_see_each_other_active(
    ucast_pair: tuple[RealHeartbeat, RealHeartbeat],
) -> None:
    hb1, hb2 = ucast_pair
    start_all([hb1, hb2])
    hb1.wait_node_status("hb2", "active", 30)
    hb2.wait_node_status("hb1", "active", 30)
    assert hb1.node_status("hb1") == "active"
    assert set(hb1.cl_status("listnodes").split()) == {"hb1", "hb2"}
    assert "running" in hb2.cl_status("hbstatus")
    hb1.wait_for_log(r"Link hb2:eth0 up")
    # each instance has its own hostname and state
    assert hb1.exec(["uname", "-n"]).stdout.strip() == "hb1"
    assert hb2.exec(["uname", "-n"]).stdout.strip() == "hb2"
    assert (hb1.var_lib / "hb_uuid").exists()
    assert (hb1.var_lib / "hb_uuid").read_bytes() != (hb2.var_lib / "hb_uuid").read_bytes()


def test_sigkill_of_one_daemon_is_seen_dead_by_the_other(
    ucast_pair: tuple[RealHeartbeat, RealHeartbeat],
) -> None:
    hb1, hb2 = ucast_pair
    start_all([hb1, hb2])
    hb1.wait_node_status("hb2", "active", 30)
    mark = hb1.log_size()
    killed_at = time.monotonic()
    hb2.kill()
    assert not hb2.running()
    assert hb2.heartbeat_pids() == []
    hb1.wait_for_log(r"node hb2: is dead", 20, since=mark)
    detected = time.monotonic() - killed_at
    assert hb1.node_status("hb2") == "dead"
    assert 4.0 < detected < 12.0  # deadtime 5 s, checked every 250 ms at most
    hb1.wait_for_log(r"Link hb2:eth0 dead", 5, since=mark)


def test_stop_ends_every_process_and_restart_bumps_generation(
    ucast_pair: tuple[RealHeartbeat, RealHeartbeat],
) -> None:
    hb1, hb2 = ucast_pair
    # with its peer up, a SIGTERMed daemon shuts down at once (alone, it would first wait
    # for initdead: "Shutdown delayed until Communication is up")
    start_all([hb1, hb2])
    hb1.wait_node_status("hb2", "active", 30)
    first_pids = hb1.pids()
    assert len(hb1.heartbeat_pids()) >= 4  # master, FIFO reader, ucast read + write
    gen1 = int(hb1.wait_for_log(r"Heartbeat generation: (\d+)").group(1))
    mark = hb2.log_size()
    hb1.stop()
    assert not hb1.running()
    assert hb1.pids() == []
    assert all(not Path(f"/proc/{p}").exists() for p in first_pids)
    hb2.wait_for_log(r"Received shutdown notice from 'hb1'", 10, since=mark)
    hb1.start()
    gen2 = int(hb1.wait_for_log(r"Heartbeat generation: (\d+)", since=hb1.start_offset).group(1))
    assert gen2 == gen1 + 1
    hb1.close()
    assert not hb1.dir.exists()


def test_hb_standby_moves_a_resource_group(
    net2: netns.Network,
    ucast_pair: tuple[RealHeartbeat, RealHeartbeat],
) -> None:
    hb1, hb2 = ucast_pair
    vip = "192.0.2.100"
    for hb in (hb1, hb2):
        hb.write_config(haresources=f"hb1 IPaddr2::{vip}/24/eth0\n")
    start_all([hb1, hb2])

    def has_vip(host: netns.Host) -> bool:
        return f"inet {vip}/" in net2.run(host, ["ip", "-4", "addr", "show", "eth0"]).stdout

    netns.wait_until(lambda: has_vip(net2[0]), 40, message="VIP on hb1")
    assert hb1.rsc_status() == "local"
    hb1.hb_standby()
    netns.wait_until(lambda: has_vip(net2[1]) and not has_vip(net2[0]), 30, message="VIP moved to hb2")
    netns.wait_until(lambda: hb2.rsc_status() == "all", 10, message="hb2 holds all")
