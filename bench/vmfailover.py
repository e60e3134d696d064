"""Failover of whole machines on the VM cluster (issue 13): `bench/failover.py --vm`.

A benchmark, not a test: it prints figures and never passes or fails on time.

The cluster of tests/support/vmcluster.py (two Debian guests as kubelet nodes n1/n2, the images
built here, the chart installed with helm), one HACluster `bench` with production-like timing for
software emulation (keepalive 1 s, deadtime 5 s; shared/vm-lab.md): heartbeats over the null-modem
cable (/dev/ttyS0) and unicast UDP on the heartbeat LAN (eth1), the VIP 192.0.2.100 on eth0 and a
web script serving the node's name on port 8080. The client (a namespace on the nodes' LAN) fetches
the VIP every 100 ms and sends ARP requests for it every 50 ms. Each run starts from a settled pair,
hits the owner (or the links) with one fault, and measures from the client:

* outage: from the fault to the first answer from the node that serves afterwards (0: no fetch
  failed), and the longest run of failed fetches;
* two MACs: ARP requests answered by both nodes (arping's "extra" answers) during the run.

Faults: power-off (QEMU killed: the plug pulled) with both media and with the serial cable alone
(UDP cut); pause-3s, pause-10s and pause-60s (QMP stop/cont: the guest's clocks stop too);
agent-killed (kill -9 of the agent container's PID 1: its PID namespace dies with it, the fence
guard too); agent-pod-deleted (kubectl delete pod); udp-cut-15s (the heartbeat LAN down 15 s, the
cable still up: nothing must move); all-cut-15s (LAN and cable: the Lease decides, the owner stays).

Usage (root; everything is built or found in the caches first): see bench/README.md.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path[:0] = [str(ROOT), str(ROOT / "api"), str(ROOT / "node-agent"), str(ROOT / "operator")]

from tests.support import netns, vmcluster  # noqa: E402

NODES = ("n1", "n2")
VIP = "192.0.2.100"
PORT = 8080
NAMESPACE = "bench"
FETCH_EVERY = 0.1
ARP_EVERY = 0.05

MANIFEST = f"""\
apiVersion: v1
kind: Secret
metadata: {{name: bench-auth}}
stringData: {{authkeys: vm-bench-key-0123456789abcdef}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: bench-scripts}}
data:
  web: |
    #!/bin/sh
    # The node's name on port {PORT}, while this node holds the group.
    PIDFILE=/var/lib/hacluster/web.pid
    case "$1" in
      start)
        [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && exit 0
        mkdir -p /var/lib/hacluster/www && hostname > /var/lib/hacluster/www/index.html
        python3 -m http.server {PORT} --bind 0.0.0.0 --directory /var/lib/hacluster/www >/dev/null 2>&1 &
        echo $! > "$PIDFILE" ;;
      stop)
        [ -s "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null
        rm -f "$PIDFILE" ;;
      status)
        if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then echo running; else echo stopped; exit 3; fi ;;
      *) exit 2 ;;
    esac
---
apiVersion: hacluster.dev/v1alpha1
kind: HACluster
metadata: {{name: bench}}
spec:
  nodes: [n1, n2]
  preferredNode: n1
  heartbeat:
    keepalive: 1s
    warntime: 3s
    deadtime: 5s
    initdead: 15s
    media:
      serial:
        - device: /dev/ttyS0
          baud: 115200
      udp:
        - interface: eth1
          mode: unicast
          peers: {{n1: "203.0.113.193", n2: "203.0.113.194"}}
  auth:
    method: sha1
    secretRef: {{name: bench-auth}}
  resources:
    - ip: {{address: {VIP}/24, interface: eth0}}
    - script: {{name: web, configMapRef: {{name: bench-scripts}}}}
  failover:
    autoFailback: false
"""


@dataclass
class Run:
    fault: str
    victim: str
    outage_s: float
    longest_gap_s: float
    extra_arp: int
    served_by: str | None


@dataclass
class Client:
    """The client's fetches of the VIP (a thread) and its ARP requests (arping), while a run lasts."""

    cluster: vmcluster.VmCluster
    answers: list[tuple[float, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _arping: subprocess.Popen[str] | None = None

    def __enter__(self) -> Client:
        script = textwrap.dedent(f"""
            import sys, time, urllib.request
            while True:
                t = time.time()
                try:
                    with urllib.request.urlopen("http://{VIP}:{PORT}/", timeout={FETCH_EVERY * 3}) as r:
                        who = r.read().decode().strip() or "?"
                except Exception:
                    who = "-"
                print(f"{{t:.3f}} {{who}}", flush=True)
                time.sleep(max(0.0, {FETCH_EVERY} - (time.time() - t)))
        """)
        self._fetcher = subprocess.Popen(
            ["ip", "netns", "exec", self.cluster.client_ns, sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._arping = subprocess.Popen(
            ["ip", "netns", "exec", self.cluster.client_ns, "arping", "-c", "100000000",
             "-W", str(ARP_EVERY), "-I", "eth0", VIP],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        return self

    def _read(self) -> None:
        assert self._fetcher.stdout is not None
        for line in self._fetcher.stdout:
            t, who = line.split()
            self.answers.append((float(t), None if who == "-" else who))

    def __exit__(self, *exc: object) -> None:
        self._fetcher.terminate()
        self._fetcher.wait(10)
        if self._arping is not None:
            self._arping.send_signal(2)  # SIGINT: arping prints its summary
            out, _ = self._arping.communicate(timeout=10)
            m = re.search(r"\((\d+) extra\)", out)
            self.extra_arp = int(m.group(1)) if m else 0

    extra_arp: int = 0

    def outage(self, since: float) -> tuple[float, float, str | None]:
        """(time from `since` to the first answer of the node serving at the end, the longest run of
        failed fetches, that node)."""
        after = [(t, who) for t, who in self.answers if t >= since]
        if not after:
            return float("nan"), float("nan"), None
        final = after[-1][1]
        first = next((t for t, who in after if who == final), after[-1][0])
        failed_from = [t for t, who in after if who is None]
        longest = gap = 0.0
        prev_ok = since
        for t, who in after:
            if who is None:
                gap = t - prev_ok
                longest = max(longest, gap)
            else:
                prev_ok = t
        outage = 0.0 if not failed_from and after[0][1] == final else first - since
        return outage, longest, final


def owner(cluster: vmcluster.VmCluster) -> str | None:
    return vmcluster.ready_owner(cluster, "bench", NAMESPACE)


def settle(cluster: vmcluster.VmCluster, timeout: float = 600.0) -> str:
    def settled() -> str | None:
        o = owner(cluster)
        return o if o and vmcluster.pair_joined(cluster, "bench", NAMESPACE) else None

    return netns.wait_until(settled, timeout, interval=2.0, message="the bench pair settled")


def run_fault(cluster: vmcluster.VmCluster, fault: str, victim: str) -> Run:
    plan = {n.name: n for n in cluster.nodes}
    sw = cluster.net.switch_ns
    with Client(cluster) as client:
        time.sleep(2.0)  # a baseline of answers
        t0 = time.time()
        if fault.startswith("power-off"):
            cluster.power_off(victim)
            time.sleep(20.0)
        elif fault.startswith("pause-"):
            seconds = float(fault.removeprefix("pause-").removesuffix("s"))
            cluster.guests[victim].pause()
            time.sleep(seconds)
            cluster.guests[victim].resume()
            time.sleep(15.0)
        elif fault == "agent-killed":
            cluster.guests[victim].check("kill -9 $(pgrep -o -f 'hacluster-agent --config-dir')")
            time.sleep(20.0)
        elif fault == "agent-pod-deleted":
            pod = vmcluster.kubectl(
                cluster, "-n", NAMESPACE, "get", "pods", "-o", "name",
                "--field-selector", f"spec.nodeName={victim}", "-l", "app.kubernetes.io/component=agent",
            ).split()[0]  # fmt: skip
            vmcluster.kubectl(cluster, "-n", NAMESPACE, "delete", pod, "--wait=false")
            time.sleep(20.0)
        elif fault in ("udp-cut-15s", "all-cut-15s"):
            for p in plan.values():
                subprocess.run(["ip", "-n", sw, "link", "set", p.tap_heartbeat, "down"], check=True)
            if fault == "all-cut-15s":
                cluster.guests[victim].check("stty -F /dev/ttyS0 0")  # hang up: the cable carries nothing
            time.sleep(15.0)
            for p in plan.values():
                subprocess.run(["ip", "-n", sw, "link", "set", p.tap_heartbeat, "up"], check=True)
            time.sleep(10.0)
        else:
            raise ValueError(fault)
    outage, gap, served = client.outage(t0)
    run = Run(fault, victim, outage, gap, client.extra_arp, served)
    if victim not in cluster.guests:
        cluster.power_on(victim)
    return run


@contextlib.contextmanager
def bench_cluster() -> Iterator[vmcluster.VmCluster]:
    with vmcluster.vm_cluster(NODES) as cluster:
        vmcluster.helm_install(cluster)
        vmcluster.kubectl(cluster, "create", "namespace", NAMESPACE)
        manifest = cluster.workdir / "bench.yaml"
        manifest.write_text(MANIFEST)
        vmcluster.kubectl(cluster, "-n", NAMESPACE, "apply", "-f", str(manifest))
        yield cluster


FAULTS = (
    "power-off",
    "pause-3s",
    "pause-10s",
    "pause-60s",
    "agent-killed",
    "agent-pod-deleted",
    "udp-cut-15s",
    "all-cut-15s",
)


def main(runs: int, faults: tuple[str, ...], say: Callable[..., None]) -> int:
    results: list[Run] = []
    t_start = time.monotonic()
    with bench_cluster() as cluster:
        say("cluster up: " + ", ".join(f"{k} {v:.0f} s" for k, v in cluster.timings.items()))
        for fault in faults:
            for i in range(runs):
                victim = settle(cluster)
                r = run_fault(cluster, fault, victim)
                results.append(r)
                say(f"{fault} #{i + 1}: victim {victim}, outage {r.outage_s:.1f} s (longest gap {r.longest_gap_s:.1f} s), "
                    f"served by {r.served_by}, ARP requests answered twice {r.extra_arp}")  # fmt: skip
    print(f"\n{'fault':<20} {'runs':>4} {'median_s':>9} {'worst_s':>8} {'two_MACs':>9}")
    worst_all = 0.0
    for fault in faults:
        rs = [r for r in results if r.fault == fault]
        if not rs:
            continue
        outs = [r.outage_s for r in rs]
        worst_all = max(worst_all, max(outs))
        print(f"{fault:<20} {len(rs):>4} {statistics.median(outs):>9.1f} {max(outs):>8.1f} "
              f"{sum(r.extra_arp for r in rs):>9}")  # fmt: skip
    print(f"RESULT mode=vm keepalive=1s deadtime=5s runs={len(results)} worst_outage_s={worst_all:.1f} "
          f"two_mac_answers={sum(r.extra_arp for r in results)} wall_s={time.monotonic() - t_start:.0f}")  # fmt: skip
    return 0
