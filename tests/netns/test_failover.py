"""End to end: two real agents in network namespaces, a client probing the VIP every 10 ms.

What a user cares about: the service answers through the VIP, and after the owner dies (agent
killed, cable pulled, machine gone) it answers from the other node; policies behave as in
Heartbeat; forged packets change nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hacluster_agent.wire.codec import encode
from hacluster_agent.wire.message import Message
from hacluster_api.heartbeat.authkeys import parse_authkeys
from tests.support.lab import NODE_ADDR, Lab, gap_after

pytestmark = pytest.mark.netns


def _start_pair(lab: Lab) -> None:
    lab.start_agent("n1")
    lab.start_agent("n2")
    lab.wait_for("n1", timeout=30)


def _only_owner(lab: Lab, node: str) -> None:
    other = "n2" if node == "n1" else "n1"
    assert lab.holds_vip(node)
    assert not lab.holds_vip(other)


def test_owner_killed_and_cable_pulled_client_reaches_peer(lab: Lab) -> None:
    _start_pair(lab)
    _only_owner(lab, "n1")
    probe = lab.probe(seconds=4.0)
    time.sleep(0.5)
    t0 = time.time()
    lab.kill_agent("n1")
    lab.cut("n1")
    out, _ = probe.communicate(timeout=30)
    gap = gap_after(out.splitlines(), t0, "n2")
    assert gap is not None, "the client never reached the service through n2"
    assert lab.holds_vip("n2")
    status = lab.hactl("n2", "status", "--json").stdout
    assert '"holds": "foreign"' in status


def test_agent_sigkill_alone_vip_expires_on_dead_node_and_peer_serves(lab: Lab) -> None:
    """SIGKILL leaves no stale VIP behind: its kernel lifetime runs out (Heartbeat keeps it)."""
    _start_pair(lab)
    lab.kill_agent("n1")
    lab.wait_for("n2", timeout=10)
    deadline = time.monotonic() + 5
    while lab.holds_vip("n1") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not lab.holds_vip("n1"), "the killed agent's VIP outlived its lifetime"
    assert lab.holds_vip("n2")


def test_namespace_torn_down_peer_takes_over(lab: Lab) -> None:
    _start_pair(lab)
    lab.kill_agent("n1")
    lab.lose("n1")  # every process of the namespace killed, the namespace deleted
    lab.wait_for("n2", timeout=10)


@pytest.mark.parametrize(
    "lab", [{"auto_failback": "on"}, {"auto_failback": "off"}], indirect=True, ids=["on", "off"]
)
def test_auto_failback_as_heartbeat(lab: Lab) -> None:
    _start_pair(lab)
    lab.kill_agent("n1")
    lab.wait_for("n2", timeout=10)
    lab.start_agent("n1")
    if lab.auto_failback == "on":
        lab.wait_for("n1", timeout=15)
        _only_owner(lab, "n1")
    else:
        time.sleep(3.0)  # give a wrong failback every chance to happen
        assert lab.fetch() == "n2"
        _only_owner(lab, "n2")


def test_standby_and_takeover_move_the_group_gracefully(lab: Lab) -> None:
    _start_pair(lab)
    assert lab.hactl("n1", "standby").returncode == 0
    lab.wait_for("n2", timeout=10)
    _only_owner(lab, "n2")
    time.sleep(1.0)
    assert lab.fetch() == "n2", "standby must stick"
    assert lab.hactl("n1", "takeover").returncode == 0
    lab.wait_for("n1", timeout=10)
    _only_owner(lab, "n1")


def test_clean_stop_hands_over_at_once(lab: Lab) -> None:
    _start_pair(lab)
    t0 = time.monotonic()
    lab.kill_agent("n1", signal.SIGTERM)
    lab.wait_for("n2", timeout=10)
    # shutdone: no deadtime to wait for
    assert time.monotonic() - t0 < 5
    assert not lab.holds_vip("n1")


def test_forged_and_replayed_packets_change_nothing(lab: Lab) -> None:
    _start_pair(lab)
    wrong, _ = parse_authkeys("auth 1\n1 sha1 not-the-key\n")
    right, _ = parse_authkeys("auth 1\n1 sha1 hacluster-lab-key\n")
    assert wrong is not None and right is not None
    forged = Message.of(
        ("t", "shutdone"),
        ("st", "dead"),
        ("src", "n1"),
        ("seq", "ffff"),
        ("hg", "ffffff"),
        ("ts", "6b07fa08"),
    )
    replay = Message.of(
        ("t", "shutdone"), ("st", "dead"), ("src", "n1"), ("seq", "1"), ("hg", "0"), ("ts", "6b07fa08")
    )
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "for h in sys.argv[2:]:\n"
        f" [s.sendto(bytes.fromhex(h),('{NODE_ADDR['n2']}',694)) for _ in range(int(sys.argv[1]))]\n"
    )
    packets = [encode(forged, wrong).hex(), encode(replay, right).hex()]
    subprocess.run(
        ["ip", "netns", "exec", lab.ns("client"), sys.executable, "-c", code, "20", *packets], check=True
    )
    time.sleep(1.0)
    _only_owner(lab, "n1")
    assert lab.fetch() == "n1"
    status = lab.hactl("n2", "status", "--json").stdout
    assert '"bad_auth": 20' in status
    assert '"rejected_replay": 20' in status


@pytest.mark.parametrize("lab", [{"media": "serial"}], indirect=True, ids=["serial"])
def test_failover_over_serial_alone(lab: Lab) -> None:
    _start_pair(lab)
    status = lab.hactl("n2", "status").stdout
    assert "tty-n2 up" in status  # links are named by the local device, as Heartbeat does
    lab.kill_agent("n1")
    lab.wait_for("n2", timeout=15)


@pytest.mark.parametrize("lab", [{"media": "ucast+serial"}], indirect=True, ids=["ucast+serial"])
def test_one_medium_cut_is_not_a_failover(lab: Lab) -> None:
    _start_pair(lab)
    # pull the serial cable: the UDP link still carries the heartbeats
    proc = lab.procs.pop("socat")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.5)
    assert lab.fetch() == "n1"
    _only_owner(lab, "n1")
    status = lab.hactl("n2", "status").stdout
    assert "dead" in status and "eth0 up" in status


def test_partition_both_take_then_heal_leaves_one_owner_the_home_node(lab: Lab) -> None:
    """Standalone (no arbiter): a cut heartbeat link makes both take the VIP, as in Heartbeat.
    When it heals, ours resolves at once: the home node keeps it, the other releases."""
    _start_pair(lab)
    lab.deafen("n1")
    lab.deafen("n2")
    deadline = time.monotonic() + 5
    while not (lab.holds_vip("n1") and lab.holds_vip("n2")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lab.holds_vip("n1") and lab.holds_vip("n2"), "split brain expected without an arbiter"
    # Both answer ARP. Asked up to three times: on a loaded machine one round of five requests
    # 20 ms apart can end before the second owner's answers arrive.
    seen = []
    for _ in range(3):
        split, _ = lab.arp_probe(count=5).communicate(timeout=30)
        seen.append((Lab.extra_arp_answers(split), len(lab.arp_owners())))
        if seen[-1][0] > 0 and seen[-1][1] == 2:
            break
    assert seen[-1][0] > 0 and seen[-1][1] == 2, f"the client should see two owners answer ARP: {seen}"
    probe = lab.probe(seconds=3.0)
    time.sleep(0.3)
    t0 = time.time()
    lab.deafen("n1", on=False)
    lab.deafen("n2", on=False)
    out, _ = probe.communicate(timeout=30)
    deadline = time.monotonic() + 3
    while lab.holds_vip("n2") and time.monotonic() < deadline:
        time.sleep(0.05)
    _only_owner(lab, "n1")
    assert len(lab.arp_owners()) == 1
    assert lab.fetch() == "n1"
    assert "release local" not in lab.agent_log("n1"), "the home node must keep the VIP through the heal"
    assert gap_after(out.splitlines(), t0, "n1") is not None


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process on the host."""
    out: dict[int, tuple[int, str]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()  # noqa: SIM115
                cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode()  # noqa: SIM115
            except OSError:
                continue
            out[int(d)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)
    return out


def _policy(pid: int) -> int:
    return os.sched_getscheduler(pid) & ~os.SCHED_RESET_ON_FORK


def test_the_agent_runs_realtime_and_its_service_does_not(lab: Lab) -> None:
    """Heartbeat's `realtime on` (the default): the agent and its fence guard at SCHED_FIFO 50, so
    a busy host does not delay them; the service it starts at the normal policy, never real-time."""
    _start_pair(lab)
    agent = lab.procs["n1"].pid
    assert _policy(agent) == os.SCHED_FIFO, "the agent is not real-time"
    assert os.sched_getparam(agent).sched_priority == 50
    procs = _processes()
    guard = [p for p, (pp, cmd) in procs.items() if pp == agent and "fenceguard.py" in cmd]
    assert guard and _policy(guard[0]) == os.SCHED_FIFO, "the fence guard is not real-time"
    web = [p for p, (_, cmd) in procs.items() if "http.server" in cmd and str(lab.root) in cmd]
    web = web or [p for p, (_, cmd) in procs.items() if f"http.server {8080}" in cmd]
    assert web, "the demo service is not running"
    for p in web:
        assert _policy(p) == os.SCHED_OTHER, "the service inherited the agent's real-time policy"
    threads = os.listdir(f"/proc/{agent}/task")
    assert all(_policy(int(t)) == os.SCHED_FIFO for t in threads), "a thread of the agent is not real-time"
