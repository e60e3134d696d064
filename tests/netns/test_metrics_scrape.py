"""End to end: two agents export Prometheus metrics; a client namespace scrapes them over HTTP
before and after the owner dies, and after a forged packet."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from hacluster_agent.metrics import samples
from hacluster_agent.wire.codec import encode
from hacluster_agent.wire.message import Message
from hacluster_api.heartbeat.authkeys import parse_authkeys
from tests.support.lab import NODE_ADDR, Lab

pytestmark = pytest.mark.netns

PORT = 9100
SCRAPE = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


class Scrape:
    def __init__(self, text: str) -> None:
        self.values = {(name, tuple(sorted(labels.items()))): v for name, labels, v in samples(text)}

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self.values.items() if n == name)


def scrape(lab: Lab, node: str) -> Scrape:
    url = f"http://{NODE_ADDR[node]}:{PORT}/metrics"
    r = subprocess.run(
        ["ip", "netns", "exec", lab.ns("client"), sys.executable, "-c", SCRAPE, url],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return Scrape(r.stdout)


def test_scrape_before_and_after_the_owner_dies(lab: Lab) -> None:
    for node in ("n1", "n2"):  # each binds its own namespace address
        lab.agent_args = ["--metrics-port", str(PORT), "--metrics-address", NODE_ADDR[node]]
        lab.start_agent(node)
    lab.wait_for("n1", timeout=30)

    owner, survivor = scrape(lab, "n1"), scrape(lab, "n2")
    assert owner("hacluster_holds", side="local") == 1
    assert survivor("hacluster_holds", side="local") == 0
    assert survivor("hacluster_holds", side="foreign") == 0
    assert survivor("hacluster_medium_up", medium="eth0") == 1
    assert survivor("hacluster_heartbeats_sent_total", medium="eth0") > 0
    heard = survivor("hacluster_heartbeats_received_total", medium="eth0", peer="n1")
    assert heard > 0
    assert survivor.total("hacluster_failovers_total") == 0
    assert survivor("hacluster_peer_deaths_total", peer="n1") == 0
    time.sleep(0.5)
    assert scrape(lab, "n2")("hacluster_heartbeats_received_total", medium="eth0", peer="n1") > heard

    lab.kill_agent("n1")
    lab.wait_for("n2", timeout=10)
    after = scrape(lab, "n2")
    time.sleep(1.0)
    later = scrape(lab, "n2")
    stopped = after("hacluster_heartbeats_received_total", medium="eth0", peer="n1")
    assert later("hacluster_heartbeats_received_total", medium="eth0", peer="n1") == stopped
    assert later("hacluster_heartbeats_sent_total", medium="eth0") > after(
        "hacluster_heartbeats_sent_total", medium="eth0"
    )
    assert later("hacluster_peer_deaths_total", peer="n1") == 1
    assert later("hacluster_failovers_total", reason="peer_dead") == 1
    assert later.total("hacluster_failovers_total") == 1
    assert later("hacluster_holds", side="foreign") == 1
    assert later("hacluster_holds", side="local") == 0
    assert 0.4 <= later("hacluster_last_failover_gap_seconds") < 2.0  # deadtime 500ms
    assert later("hacluster_resource_operation_seconds_count", operation="start") == 1
    assert later("hacluster_resource_failures_total", operation="start") == 0

    # a forged packet (wrong key) from the client's namespace
    wrong, _ = parse_authkeys("auth 1\n1 sha1 not-the-key\n")
    assert wrong is not None
    forged = Message.of(
        ("t", "shutdone"),
        ("st", "dead"),
        ("src", "n1"),
        ("seq", "ffff"),
        ("hg", "ffffff"),
        ("ts", "6b07fa08"),
    )
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        f"[s.sendto(bytes.fromhex(sys.argv[1]),('{NODE_ADDR['n2']}',694)) for _ in range(3)]\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", lab.ns("client"), sys.executable, "-c", code, encode(forged, wrong).hex()],
        check=True,
    )
    deadline = time.monotonic() + 5
    while (got := scrape(lab, "n2"))("hacluster_packets_rejected_total", reason="bad_auth") < 3:
        assert time.monotonic() < deadline, "bad_auth did not reach 3"
        time.sleep(0.1)
    assert got("hacluster_packets_rejected_total", reason="bad_auth") == 3
    assert got("hacluster_holds", side="foreign") == 1

    # a clean stop still works with the exporter running
    lab.kill_agent("n2", signal.SIGTERM)
    assert lab.procs["n2"].returncode == 0
