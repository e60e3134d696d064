"""The namespace harness itself: connectivity, link faults, cleanup."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import netns

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]

# Receives UDP datagrams on PORT for up to WAIT seconds; prints "ready" once bound and
# "got <n>" at the end.
_RECEIVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
s.settimeout(float(sys.argv[2]))
n = 0
try:
    while True:
        s.recv(2048)
        n += 1
        if n >= 3:
            break
except socket.timeout:
    pass
print("got", n, flush=True)
"""

_SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(b"probe", (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.05)
"""


def udp_delivered(
    net: netns.Network, src: netns.Host, dst: netns.Host, port: int = 694, wait: float = 1.0
) -> bool:
    """Send 5 datagrams src -> dst:port; True if at least one arrived within ``wait`` s."""
    rx = net.spawn(dst, [sys.executable, "-c", _RECEIVER, str(port), str(wait)], stdout=subprocess.PIPE)
    assert rx.popen.stdout is not None
    assert rx.popen.stdout.readline().strip() == b"ready"
    net.run(src, [sys.executable, "-c", _SENDER, dst.ip, str(port)])
    out = rx.popen.stdout.read().decode()
    rx.wait(10)
    m = re.search(r"got (\d+)", out)
    assert m is not None, out
    return int(m.group(1)) > 0


def test_hosts_reach_each_other_on_both_links_and_ipv6(netns_ok: None) -> None:
    with netns.network(3, second_link=True, ipv6=True) as net:
        a, b, c = net[0], net[1], net[2]
        assert a.ip == "192.0.2.11" and c.ip == "192.0.2.13"
        assert b.link(1).addr == "198.51.100.12"
        assert b.ip6 == "2001:db8::12"
        assert net.ping(a, b.ip)
        assert net.ping(a, c.link(1).addr)
        assert b.ip6 is not None and net.ping(a, b.ip6)
        # host names and addresses stay inside the documentation ranges
        for h in net.hosts:
            for ln in h.links:
                assert any(ln.ipv4 in n or ln.ipv4.ip in n for n in netns.LINK_NETS4)
        # nothing was created in the root namespace
        root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert "p1l0" not in root_links and net.id not in root_links


def test_bcast_address_is_set(net2: netns.Network) -> None:
    out = net2.run(net2[0], ["ip", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert "brd 192.0.2.255" in out


def test_one_direction_cut(net2: netns.Network) -> None:
    a, b = net2[0], net2[1]
    assert udp_delivered(net2, a, b)
    assert udp_delivered(net2, b, a)
    net2.cut(a, direction="egress")
    assert not udp_delivered(net2, a, b)
    assert udp_delivered(net2, b, a)  # ARP still answered: the cut really is one-way
    net2.restore(a)
    assert udp_delivered(net2, a, b)


def test_ingress_cut_on_one_udp_port_only(net2: netns.Network) -> None:
    a, b = net2[0], net2[1]
    net2.cut(b, direction="ingress", udp_port=694)
    assert not udp_delivered(net2, a, b, port=694)
    assert udp_delivered(net2, a, b, port=695)
    assert udp_delivered(net2, b, a, port=694)
    net2.restore(b)
    assert udp_delivered(net2, a, b, port=694)


def test_carrier_cut(net2: netns.Network) -> None:
    a, b = net2[0], net2[1]
    net2.cut(a, mode="carrier")
    link = net2.run(a, ["ip", "link", "show", "dev", "eth0"]).stdout
    assert "NO-CARRIER" in link or "LOWERLAYERDOWN" in link
    assert not net2.ping(a, b.ip, timeout_s=1)
    net2.restore(a)
    netns.wait_until(lambda: net2.ping(a, b.ip, timeout_s=1), 10, message="link back")


def test_loss_and_delay(net2: netns.Network) -> None:
    a, b = net2[0], net2[1]
    net2.set_loss(a, 100, direction="egress")
    assert not udp_delivered(net2, a, b)
    net2.set_loss(a, 0)
    assert udp_delivered(net2, a, b)
    mechanism = net2.set_delay(a, 150, direction="egress")
    assert mechanism in ("netem", "nfqueue")
    out = net2.run(a, ["ping", "-n", "-c", "2", "-i", "0.2", b.ip]).stdout
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    assert rtts and min(rtts) >= 145, out
    net2.set_delay(a, 0)
    out = net2.run(a, ["ping", "-n", "-c", "1", b.ip]).stdout
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    assert rtts and max(rtts) < 100, out


def test_cleanup_on_exception_kills_processes_and_removes_namespaces(netns_ok: None) -> None:
    names: list[str] = []
    pid = 0
    workdir = Path()
    with pytest.raises(RuntimeError, match="boom"), netns.network(2) as net:
        names = net.namespaces
        workdir = net.workdir
        proc = net.spawn(net[0], ["sleep", "1000"])
        pid = proc.pid
        # a process started behind the harness's back is found through the namespace
        stray = subprocess.Popen(["ip", "netns", "exec", net[1].ns, "sleep", "1000"])
        assert set(netns.list_prefixed_netns()) >= set(names)
        raise RuntimeError("boom")
    stray.wait(10)
    left = set(netns.list_prefixed_netns())
    assert not left & set(names)
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    assert not workdir.exists()
    assert not (netns.MARKER_DIR / names[0].rsplit("-", 1)[0]).exists()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_stale_namespaces_of_a_killed_run_are_removed(netns_ok: None) -> None:
    code = (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.support import netns\n"
        "cm = netns.network(2)\n"
        "net = cm.__enter__()\n"
        "print(net.id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == -9, proc.stderr
    dead_id = proc.stdout.strip()
    assert dead_id.startswith(netns.PREFIX)
    assert any(n.startswith(dead_id) for n in netns.list_prefixed_netns())
    removed = netns.cleanup_stale()
    assert {f"{dead_id}-sw", f"{dead_id}-h1", f"{dead_id}-h2"} <= set(removed)
    assert not any(n.startswith(dead_id) for n in netns.list_prefixed_netns())
    assert not (netns.MARKER_DIR / dead_id).exists()


def test_sigterm_of_the_owner_cleans_up(netns_ok: None) -> None:
    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.support import netns\n"
        "cm = netns.network(1)\n"
        "net = cm.__enter__()\n"
        "net.spawn(net[0], ['sleep', '1000'])\n"
        "print(net.id, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    net_id = proc.stdout.readline().strip()
    assert any(n.startswith(net_id) for n in netns.list_prefixed_netns())
    proc.terminate()
    assert proc.wait(30) != 0
    assert not any(n.startswith(net_id) for n in netns.list_prefixed_netns())
    assert os.path.exists(netns.MARKER_DIR / net_id) is False
