"""A two-node lab on one machine: network namespaces, a bridge, two agents and a client.

Used by the README demo, the end-to-end tests and the failover benchmark. Documentation
addresses only (192.0.2.0/24 on the heartbeat LAN, 198.51.100.0/24 on an optional second link).
Everything it creates is removed by close(), even after a failure.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute

from tests.support import netns, tree

VIP = "192.0.2.100"
# The labs' links to this host (a test API server served to the nodes): one /28 of
# 198.51.100.0/24 per lab, the first one free. Not 192.0.2.0/24: this machine's own eth0 may use
# that range, and lab traffic must never leave the lab. Not 203.0.113.0/24: the package registry
# resolves into it here, and a lab's connected route there cut pip and apt off. A /28 each: two
# labs (a test beside a campaign) never share the host's route.
API_NET = ipaddress.IPv4Network("198.51.100.0/24")
WEB_PORT = 8080
NODE_ADDR = {"n1": "192.0.2.11", "n2": "192.0.2.12"}  # netns.network: host i is 192.0.2.(10 + i)
CLIENT_ADDR = "192.0.2.13"
HOSTS = ("n1", "n2", "client")

WEB_SCRIPT = """#!/bin/sh
# demo-web: a heartbeat-style resource script serving this node's name on port {port}
PIDFILE={state}/web.pid
# fault hooks for bench/chaos.py: these files in the state dir make start fail or status hang
case "$1" in
  start)
    [ -f {state}/fault-start-fail ] && {{ echo "start refused: {state}/fault-start-fail"; exit 1; }}
    [ -f $PIDFILE ] && kill -0 "$(cat $PIDFILE)" 2>/dev/null && exit 0
    mkdir -p {state}/www && echo "{node}" > {state}/www/index.html
    cd {state}/www && setsid {python} -m http.server {port} --bind 0.0.0.0 >/dev/null 2>&1 &
    echo $! > $PIDFILE ;;
  stop)
    [ -f $PIDFILE ] && kill "$(cat $PIDFILE)" 2>/dev/null; rm -f $PIDFILE; exit 0 ;;
  status)
    [ -f {state}/fault-status-hang ] && sleep 3600
    if [ -f $PIDFILE ] && kill -0 "$(cat $PIDFILE)" 2>/dev/null; then echo running; else echo stopped; exit 3; fi ;;
esac
exit 0
"""

PROBE = r"""
import socket, sys, time
end = time.monotonic() + float(sys.argv[1]); every = float(sys.argv[2])
while time.monotonic() < end:
    t = time.time()
    try:
        s = socket.create_connection(("{vip}", {port}), timeout=every * 5)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n"); data = c = s.recv(4096)
        while c and len(data) < 65536:  # headers and body may come in separate segments
            c = s.recv(4096); data += c
        s.close()
        who = data.split(b"\r\n\r\n", 1)[-1].strip().decode() or "?"
    except OSError:
        who = "-"
    print(f"{{t:.4f}} {{who}}", flush=True)
    time.sleep(max(0.0, every - (time.time() - t)))
"""


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


@dataclass
class Lab:
    """Namespaces sw (bridge), n1, n2, client; `serial` adds a pty null-modem pair."""

    keepalive: str = "100ms"
    deadtime: str = "500ms"
    warntime: str = "250ms"
    initdead: str = "2"
    auto_failback: str = "on"
    auth: str = "sha1"
    vip_agent: str = "IPaddr"  # IPaddr | IPaddr2 (what the real daemon runs best in a namespace)
    media: str = "ucast"  # ucast | bcast | serial | ucast+serial
    agent_args: list[str] = field(default_factory=list)
    agent_wrapper: list[str] = field(default_factory=list)  # e.g. unshare --pid --fork: a container's PID 1
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hacluster-lab-")))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    net: netns.Network | None = None  # the namespaces, from tests/support/netns.py
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    host_links: list[str] = field(default_factory=list)
    api_addr: str = ""  # this host's address on the lab's LAN, once attach_host() ran
    kube_node_addr: dict[str, str] = field(default_factory=dict)  # node -> address/prefix, likewise

    @property
    def network(self) -> netns.Network:
        if self.net is None:
            raise RuntimeError("the lab is not built (use it as a context manager)")
        return self.net

    @property
    def prefix(self) -> str:
        """The namespaces' common prefix (netns's id: `<prefix>-sw`, `<prefix>-h1` …)."""
        return self.network.id

    def host(self, name: str) -> netns.Host:
        """n1, n2 and the client are hosts 1, 2 and 3 of the network."""
        return self.network[HOSTS.index(name)]

    def ns(self, name: str) -> str:
        return self.network.switch_ns if name == "sw" else self.host(name).ns

    def port(self, node: str) -> str:
        """`node`'s eth0 as seen from the switch (its veth peer on the bridge)."""
        return self.host(node).link(0).port

    # -- topology -------------------------------------------------------------------------------
    def build(self) -> Lab:
        """The namespaces (tests/support/netns.py's network: one harness for every test) and
        each node's Heartbeat files; `serial` adds a pty null-modem pair."""
        self.net = self._stack.enter_context(netns.network(len(HOSTS)))
        if "serial" in self.media:
            self._serial()
        for node in NODE_ADDR:
            self._config(node)
        return self

    def lose(self, node: str, keep: frozenset[int] = frozenset()) -> None:
        """The node is gone: every process in its namespace killed (but `keep`), the namespace
        deleted with its NIC and the VIP on it. Its disk (config, state dir) survives for revive()."""
        self.network.unplug(self.host(node), keep=sorted(keep))
        self._reap(node)

    def kill_all(self, node: str, keep: frozenset[int] = frozenset()) -> None:
        """SIGKILL every process in the node's namespace except `keep`, as a power cut would."""
        for pid in netns.ns_pids(self.ns(node)):
            if pid not in keep:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._reap(node)

    def _reap(self, node: str) -> None:
        proc = self.procs.get(node)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def netns_pids(self, node: str) -> list[int]:
        """The host PIDs of every process in the node's network namespace."""
        return netns.ns_pids(self.ns(node))

    def revive(self, node: str) -> None:
        """The lost node is back: a fresh namespace with the same addresses (agent not started)."""
        self.network.plug(self.host(node))
        if node in self.kube_node_addr:
            _run("ip", "-n", self.ns(node), "addr", "add", self.kube_node_addr[node], "dev", "eth0")

    def attach_host(self) -> str:
        """Join this host (the root namespace) to the lab's LAN on a free /28 of API_NET: the
        host is its first address (`api_addr`, where a test API server listens), the nodes get
        two more beside their 192.0.2.x (`kube_node_addr`). Removed by close(). Returns the
        host-side interface."""
        subnet = free_api_subnet()
        hosts = list(subnet.hosts())
        self.api_addr = str(hosts[0])
        self.kube_node_addr = {
            n: f"{hosts[10 + i]}/{subnet.prefixlen}" for i, n in enumerate(sorted(NODE_ADDR))
        }
        ifname = f"{self.prefix}-h"
        self.network.attach_root(ifname)
        self.host_links.append(ifname)
        _run("ip", "addr", "add", f"{self.api_addr}/{subnet.prefixlen}", "dev", ifname)
        _run("ip", "link", "set", ifname, "up")
        for node, addr in self.kube_node_addr.items():
            _run("ip", "-n", self.ns(node), "addr", "add", addr, "dev", "eth0")
        return ifname

    def block(self, node: str, address: str) -> None:
        """`node` can no longer reach `address` (e.g. the API server), everything else works."""
        rules = f"table inet hacluster_block {{\n chain output {{\n  type filter hook output priority 0;\n  ip daddr {address} drop\n }}\n}}\n"
        subprocess.run(
            ["ip", "netns", "exec", self.ns(node), "nft", "-f", "-"], input=rules, text=True, check=True
        )

    def _serial(self) -> None:
        """Two ptys joined like a null-modem cable (socat), one end per node."""
        a, b = self.root / "tty-n1", self.root / "tty-n2"
        self.procs["socat"] = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 5
        while not (a.exists() and b.exists()):
            if time.monotonic() > deadline:
                raise RuntimeError("socat did not create the pty pair")
            time.sleep(0.02)

    def _config(self, node: str) -> None:
        d = self.root / node / "ha.d"
        (d / "resource.d").mkdir(parents=True)
        state = self.root / node / "state"
        state.mkdir(parents=True)
        media = []
        if "ucast" in self.media:
            media += [f"ucast eth0 {ip}" for ip in NODE_ADDR.values()]
        if "bcast" in self.media:
            media.append("bcast eth0")
        if "serial" in self.media:
            media.append(f"serial {self.root / f'tty-{node}'}")
        (d / "ha.cf").write_text(
            f"keepalive {self.keepalive}\ndeadtime {self.deadtime}\nwarntime {self.warntime}\n"
            f"initdead {self.initdead}\nudpport 694\n" + "\n".join(media) + "\n"
            f"node n1\nnode n2\nauto_failback {self.auto_failback}\n"
        )
        (d / "haresources").write_text(f"n1 {self.vip_agent}::{VIP}/24/eth0 demo-web\n")
        key = "" if self.auth == "crc" else " hacluster-lab-key"
        fd = os.open(d / "authkeys", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, f"auth 1\n1 {self.auth}{key}\n".encode())
        os.close(fd)
        script = d / "resource.d" / "demo-web"
        script.write_text(WEB_SCRIPT.format(port=WEB_PORT, state=state, node=node, python=sys.executable))
        script.chmod(0o755)

    def config_texts(self, node: str) -> tuple[str, str, str, dict[str, str]]:
        """`node`'s ha.cf, authkeys, haresources and resource.d scripts, as text: what a real
        Heartbeat daemon run on that node instead of our agent is given (same files)."""
        d = self.root / node / "ha.d"
        scripts = {p.name: p.read_text() for p in sorted((d / "resource.d").iterdir())}
        texts = [(d / f).read_text() for f in ("ha.cf", "authkeys", "haresources")]
        return texts[0], texts[1], texts[2], scripts

    # -- agents ---------------------------------------------------------------------------------
    def state_dir(self, node: str, instance: str = "") -> Path:
        """A node's agent's state directory; `instance`: a second agent on the node (another
        HACluster's), with its own."""
        return self.root / node / (f"state-{instance}" if instance else "state")

    def socket(self, node: str, instance: str = "") -> Path:
        return self.state_dir(node, instance) / "agent.sock"

    def start_agent(self, node: str, instance: str = "") -> subprocess.Popen[bytes]:
        """Start `node`'s agent (`instance`: one more agent on that node, e.g. a second
        HACluster's, with its own state, socket and log; kept as procs["<node>:<instance>"])."""
        state = self.state_dir(node, instance)
        state.mkdir(parents=True, exist_ok=True)
        log = open(self.agent_log_path(node, instance), "ab")  # noqa: SIM115 - owned by the process
        cmd = [
            "ip", "netns", "exec", self.ns(node), *self.agent_wrapper, sys.executable, "-m", "hacluster_agent.daemon",
            "--config-dir", str(self.root / node / "ha.d"), "--node", node,
            "--state-dir", str(state), "--control-socket", str(self.socket(node, instance)),
            "--lock-dir", str(state), "--log-format", "text", *self.agent_args,
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True, env=tree.environ())
        self.procs[f"{node}:{instance}" if instance else node] = proc
        return proc

    def agent_log_path(self, node: str, instance: str = "") -> Path:
        return self.root / node / (f"agent-{instance}.log" if instance else "agent.log")

    def agent_log(self, node: str, instance: str = "") -> str:
        p = self.agent_log_path(node, instance)
        return p.read_text(errors="replace") if p.exists() else ""

    def kill_agent(self, node: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(node)
        if proc and proc.poll() is None:
            os.kill(proc.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                proc.wait(timeout=30)

    def cut(self, node: str) -> None:
        """The node's cable is pulled: heartbeat and clients alike."""
        _run("ip", "-n", self.ns("sw"), "link", "set", self.port(node), "down")

    def deafen(self, node: str, on: bool = True) -> None:
        """`node` stops hearing heartbeats (UDP to its port 694 dropped); clients still reach it.
        Deafen both nodes to cut the heartbeat link in both directions."""
        ns = self.ns(node)
        if on:
            rules = "table inet hacluster_lab {\n chain input {\n  type filter hook input priority 0;\n  udp dport 694 drop\n }\n}\n"
            subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True)
        else:
            _run("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "hacluster_lab", check=False)

    def impair(self, node: str, loss_percent: int = 0) -> None:
        """Drop `loss_percent` % (at random) of the heartbeats `node` receives; 0 removes it."""
        ns = self.ns(node)
        _run("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "hacluster_loss", check=False)
        if loss_percent:
            rules = (
                "table inet hacluster_loss {\n chain input {\n  type filter hook input priority 0;\n"
                f"  udp dport 694 numgen random mod 100 < {loss_percent} drop\n }}\n}}\n"
            )
            subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True)

    def arp_owners(self) -> set[str]:
        """MAC addresses answering ARP for the VIP, as seen from the client (arping)."""
        out = _run(
            "ip",
            "netns",
            "exec",
            self.ns("client"),
            "arping",
            "-c",
            "2",
            "-w",
            "1",
            "-I",
            "eth0",
            VIP,
            check=False,
        ).stdout
        return {w.strip("[]").lower() for line in out.splitlines() for w in line.split() if w.count(":") == 5}

    def arp_probe(self, count: int, interval: float = 0.02) -> subprocess.Popen[str]:
        """Start ARP requests for the VIP from the client, `count` of them `interval` apart; read
        the result with max_arp_answers()."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns("client"), "arping", "-c", str(count), "-W", str(interval),
             "-I", "eth0", VIP],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    @staticmethod
    def extra_arp_answers(output: str) -> int:
        """How many ARP requests were answered more than once (arping's "N extra"): answers from
        two owners at once. 0 with one owner or none."""
        m = re.search(r"\((\d+) extra\)", output)
        return int(m.group(1)) if m else 0

    def restore(self, node: str) -> None:
        _run("ip", "-n", self.ns("sw"), "link", "set", self.port(node), "up")

    def hactl(self, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        return _run(
            sys.executable,
            "-m",
            "hacluster_agent.cli.hactl",
            *args,
            "--socket",
            str(self.socket(node)),
            check=False,
        )

    def agent_status(self, node: str) -> dict[str, object]:
        """`hactl status --json` of the node's agent ({} if it does not answer)."""
        try:
            status: dict[str, object] = json.loads(self.hactl(node, "status", "--json").stdout)
        except ValueError:
            return {}
        return status

    def agents_agree(self, owner: str) -> bool:
        """Both agents see each other, nothing in flux, and only `owner` says it holds resources."""
        for node in NODE_ADDR:
            st = self.agent_status(node)
            peer = st.get("peer")
            if not isinstance(peer, dict) or peer.get("state") not in ("up", "active") or st.get("in_flux"):
                return False
            if (st.get("holds") != "none") != (node == owner):
                return False
        return True

    def holds_vip(self, node: str, vip: str = VIP) -> bool:
        out = _run("ip", "-n", self.ns(node), "-4", "addr", "show", "dev", "eth0").stdout
        return f"inet {vip}/" in out

    def fetch(self, timeout: float = 1.0) -> str | None:
        """One request to the VIP from the client; the answering node's name, or None."""
        code = (
            "import socket,sys\n"
            f"s=socket.create_connection(('{VIP}',{WEB_PORT}),timeout={timeout})\n"
            "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n');d=b''\n"
            "while True:\n c=s.recv(4096)\n if not c: break\n d+=c\n"
            "print(d.split(b'\\r\\n\\r\\n',1)[-1].decode().strip())\n"
        )
        r = _run("ip", "netns", "exec", self.ns("client"), sys.executable, "-c", code, check=False)
        return r.stdout.strip() or None if r.returncode == 0 else None

    def wait_for(self, node: str | None, timeout: float = 15.0) -> float:
        """Poll the VIP from the client until `node` answers; returns the time it first did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.fetch(0.3) == node:
                return time.time()
            time.sleep(0.02)
        raise TimeoutError(f"the VIP was not answered by {node} within {timeout}s")

    def probe(self, seconds: float, every: float = 0.01) -> subprocess.Popen[str]:
        """Start a client that tries the VIP every `every` s and prints `<time> <node or ->`."""
        code = PROBE.format(vip=VIP, port=WEB_PORT)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("client"), sys.executable, "-c", code, str(seconds), str(every)],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        self.procs[f"probe-{len(self.procs)}"] = proc  # type: ignore[assignment]
        return proc

    # -- teardown -------------------------------------------------------------------------------
    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for ifname in self.host_links:
            _run("ip", "link", "del", ifname, check=False)
        self.host_links.clear()
        # netns's close: every process left in the namespaces (those our resource scripts
        # started are ours too) stopped, the namespaces deleted.
        self._stack.close()
        self.net = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Lab:
        try:
            return self.build()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


def gap_after(lines: list[str], t0: float, node: str) -> float | None:
    """From probe output: ms from t0 to the first answer by `node` at or after t0."""
    for line in lines:
        t, who = line.split(" ", 1)
        if float(t) >= t0 and who.strip() == node:
            return (float(t) - t0) * 1000
    return None


def free_api_subnet() -> ipaddress.IPv4Network:
    """The first /28 of API_NET that no address of this host falls in (another lab's)."""
    with IPRoute() as ipr:
        used = [ipaddress.ip_address(a.get("IFA_ADDRESS")) for a in ipr.get_addr(family=socket.AF_INET)]
    for subnet in API_NET.subnets(new_prefix=28):
        if not any(addr in subnet for addr in used):
            return subnet
    raise RuntimeError(f"every /28 of {API_NET} is taken by this host's addresses (other labs?): {used}")
