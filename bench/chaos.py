#!/usr/bin/env python3
"""The fault campaign: one owner of the VIP under every fault we can throw, checked continuously.

The whole product runs as in production, in Kubernetes mode: a real kube-apiserver, the operator
(a process, with its RBAC) and two agents in network namespaces (tests/support/fullstack.py), with
the Lab's pair (ucast heartbeats, keepalive 100 ms, deadtime 300 ms, sha1; the VIP 192.0.2.100 and
the demo-web service; auto_failback off). Each trial waits for a settled pair, picks a fault and a
moment (0-500 ms later), injects it, clears it, restores what the fault destroyed (a killed agent is
started again, a lost node comes back), and waits for the pair to settle again.

Invariants, watched for the whole campaign and judged per trial:
* VIP: at most one node has the VIP on an interface at any instant (``ip -ts monitor address`` in
  each node's namespace: kernel events, stamped by ``ip`` itself).
* ARP: the client broadcasts an ARP request for the VIP every 20 ms (``arping``) and captures
  the answers (``tcpdump``): never two different MACs answering the same request.
* Epoch: the ownership Lease's ``leaseTransitions`` (read every 100 ms) never goes down.
* Service: the client fetches the VIP every 20 ms; every outage ends within the target
  (``--target-ms``, default 3000 ms, or deadtime + W + 1.5 s when that is longer: a dead owner
  is replaced no sooner than deadtime + W after it died) after the fault is cleared or absorbed.
* Whole groups: once settled, the owner runs the VIP and demo-web, the other node runs neither
  (no half-started group), both agents see each other, and the Lease names the VIP's holder.
* Rejected changes stay out: a bad HACluster spec is refused by the API server naming the field,
  a broken auth Secret never reaches the rendered config; the pair does not notice either.

Prints a table (fault, trials, violations, owner moved, median and worst recovery = the longest
client outage in the trial) and ends with one line:
``RESULT trials=N violations=V worst_recovery_ms=W``. Exit status 0 only with no violation.

Usage (root; the kube-apiserver test binary is built or found as the tests do)::

    python bench/chaos.py --trials 200            # the long run (about 30 minutes)
    python bench/chaos.py --seed 1                # one trial of each fault (CI's short form)
    python bench/chaos.py --faults control-split-brain --trials 1   # the checks' own control
    python bench/chaos.py --faults sigstop-owner,link-cut-both --trials 10
    python bench/chaos.py --faults compound --trials 500 --timing 500ms/3s   # the nemesis, long
    python bench/chaos.py --faults cut-slow-renewal,cold-start-cut,cut-owner-restart,owner-tree-killed,lease-deleted,cut-15s

The last six are issue 11's table, one fault per row; `compound` draws two to four faults of
different kinds at once (a heartbeat link fault, an API server fault, a process fault, a control
plane fault), at random moments, and notes what it ran. With the kernel fence, a node may keep the
VIP's address a while after it may no longer serve (a killed agent's address until its lifetime
runs out): both nodes having the address is a violation only when both answered an ARP request in
that time; otherwise its length is noted.

Everything it creates is removed on exit, on error, on Ctrl-C and on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "api"), str(ROOT / "node-agent"), str(ROOT / "operator")]

from hacluster_agent.resources.kernelfence import table_name  # noqa: E402
from hacluster_api.heartbeat.durations import parse_duration_ms  # noqa: E402
from tests.support.controlplane import find_or_build_apiserver  # noqa: E402
from tests.support.fullstack import NAME, NODES, NS, FullStack, cluster_body, full_stack  # noqa: E402
from tests.support.lab import CLIENT_ADDR, VIP, Lab  # noqa: E402
from tests.support.netns import register_cleanup, unregister_cleanup, wait_until  # noqa: E402
from tests.support.vipevents import held_intervals, overlaps, vip_event  # noqa: E402

NETNS_PY = ROOT / "tests" / "support" / "netns.py"
# the mangle rule that hands a node's outgoing heartbeats to the NFQUEUE delayer (Chaos.delay)
DELAY_RULE = ("POSTROUTING", "-o", "eth0", "-p", "udp", "--dport", "694", "-j", "NFQUEUE",
              "--queue-num", "0", "--queue-bypass")  # fmt: skip


def other(node: str) -> str:
    return "n2" if node == "n1" else "n1"


def say(*args: object) -> None:
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def sh(*argv: str, check: bool = False, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, input=input)


# -- watchers: continuous evidence ----------------------------------------------------------------


class Watcher:
    """A process whose stdout lines are read by a thread (killed by stop() and by Lab.close)."""

    def __init__(self, lab: Lab, argv: list[str], name: str) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
        )
        lab.procs[f"{name}-{self.proc.pid}"] = self.proc  # type: ignore[assignment]
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.line(line.rstrip("\n"))

    def line(self, text: str) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.thread.join(5)


class VipWatch(Watcher):
    """When the VIP comes and goes on one node: kernel address events, timestamped by `ip -ts`."""

    def __init__(self, lab: Lab, node: str) -> None:
        self.node = node
        self.events: list[tuple[float, bool]] = []
        super().__init__(lab, ["ip", "-ts", "-n", lab.ns(node), "monitor", "address"], f"vip-{node}")
        time.sleep(0.1)  # subscribed before the initial state is read
        if lab.holds_vip(node):
            self.events.append((time.time(), True))

    def line(self, text: str) -> None:
        event = vip_event(text, VIP)
        if event is not None:
            self.events.append(event)

    def gone(self, t: float) -> None:
        """The node's namespace was destroyed at `t`: it holds nothing from then on."""
        self.events.append((t, False))

    def intervals(self, until: float) -> list[tuple[float, float]]:
        return held_intervals(sorted(self.events), until)


class ArpWatch(Watcher):
    """The client's view: ARP requests for the VIP (broadcast every 20 ms) and who answered each."""

    def __init__(self, lab: Lab) -> None:
        self.rounds: list[tuple[float, set[str]]] = []
        client = lab.ns("client")
        super().__init__(
            lab,
            ["ip", "netns", "exec", client, "tcpdump", "-i", "eth0", "-l", "-n", "-e", "-tt", "arp"],
            "tcpdump",
        )
        time.sleep(0.3)
        self.pinger = subprocess.Popen(
            ["ip", "netns", "exec", client, "arping", "-q", "-c", "100000000", "-W", "0.02",
             "-I", "eth0", VIP],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        lab.procs[f"arping-{self.pinger.pid}"] = self.pinger

    def line(self, text: str) -> None:
        parts = text.split()
        if len(parts) < 2:
            return
        if f"Request who-has {VIP} tell {CLIENT_ADDR}" in text:
            self.rounds.append((float(parts[0]), set()))
        elif f"Reply {VIP} is-at" in text and self.rounds:
            self.rounds[-1][1].add(parts[1].lower())  # the frame's source MAC

    def doubles(self, start: float, end: float) -> list[tuple[float, set[str]]]:
        return [(t, macs) for t, macs in list(self.rounds) if start <= t <= end and len(macs) > 1]

    def stop(self) -> None:
        if self.pinger.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pinger.pid, signal.SIGKILL)
        self.pinger.wait(10)
        super().stop()


class ProbeWatch(Watcher):
    """The client fetches http://VIP:8080/ every 20 ms: (time, answering node or None)."""

    def __init__(self, lab: Lab) -> None:
        self.samples: list[tuple[float, str | None]] = []
        probe = lab.probe(seconds=10**6, every=0.02)
        assert probe.stdout is not None
        self.proc = probe
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def line(self, text: str) -> None:
        t, who = text.split(" ", 1)
        self.samples.append((float(t), None if who.strip() in ("-", "?") else who.strip()))

    def outages(self, start: float, end: float) -> list[tuple[float, float | None]]:
        """(first failed fetch, first answer after it or None) for each outage in [start, end]."""
        out: list[tuple[float, float | None]] = []
        down: float | None = None
        for t, who in list(self.samples):
            if t < start or t > end:
                continue
            if who is None and down is None:
                down = t
            elif who is not None and down is not None:
                out.append((down, t))
                down = None
        if down is not None:
            out.append((down, None))
        return out


class LeaseWatch:
    """The ownership Lease every 100 ms: (time, holder, leaseTransitions); the API may be down."""

    def __init__(self, st: FullStack) -> None:
        self.st = st
        self.samples: list[tuple[float, str, int]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(0.1):
            with contextlib.suppress(Exception):
                holder, epoch = self.st.lease(timeout=1.0)
                self.samples.append((time.time(), holder, epoch))

    def regressions(self, start: float, end: float) -> list[str]:
        out = []
        best = max((e for t, _, e in self.samples if t < start), default=0)
        for t, holder, epoch in list(self.samples):
            if start <= t <= end:
                if epoch < best:
                    out.append(f"epoch went from {best} to {epoch} (holder {holder!r}) at {t:.3f}")
                best = max(best, epoch)
        return out

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)


# -- the campaign's world ---------------------------------------------------------------------------


class Chaos(FullStack):
    """The full stack plus the campaign's watchers and the fault primitives."""

    vips: dict[str, VipWatch]
    arp: ArpWatch
    probe: ProbeWatch
    lease_watch: LeaseWatch
    delayers: dict[str, subprocess.Popen[bytes]]

    def watch(self) -> None:
        self.vips = {node: VipWatch(self.lab, node) for node in NODES}
        self.arp = ArpWatch(self.lab)
        self.probe = ProbeWatch(self.lab)
        self.lease_watch = LeaseWatch(self)
        self.delayers = {}

    def unwatch(self) -> None:
        for w in (*self.vips.values(), self.arp, self.probe):
            with contextlib.suppress(Exception):
                w.stop()
        self.lease_watch.stop()

    def watcher_pids(self, node: str) -> frozenset[int]:
        return frozenset({self.vips[node].proc.pid})

    def web(self, node: str, action: str = "status") -> bool:
        script = self.lab.root / node / "ha.d" / "resource.d" / "demo-web"
        return sh("ip", "netns", "exec", self.lab.ns(node), str(script), action).returncode == 0

    def resume_api(self) -> str | None:
        """Start the halted API server again; back means it serves the operator's ServiceAccount
        (not only /readyz: a restarted server can say ready and refuse every ServiceAccount for
        seconds more). A note when that took long, for the trial's record."""
        assert self.operator_kubeconfig is not None
        config = yaml.safe_load(self.operator_kubeconfig.read_text())
        token = str(config["users"][0]["user"]["token"])
        t0 = time.monotonic()
        lag = self.cp.resume(authorized=[(token, "/apis/coordination.k8s.io/v1/namespaces/ha/leases")])
        took = time.monotonic() - t0
        if took < 5.0 and lag < 0.5:
            return None
        return f"the API server took {took:.1f} s to restart ({lag:.1f} s of it refusing ServiceAccounts after /readyz)"

    def ensure_operator(self) -> None:
        """What the operator's Deployment does: start it again when it exited (it exits on purpose
        when it loses its leadership Lease, e.g. the API server away for more than 10 s)."""
        if self.operator is not None and self.operator.poll() is not None:
            lines = (self.lab.root / "operator.log").read_text(errors="replace").splitlines()
            why = next((line for line in reversed(lines) if " ERROR " in line), "no error logged")
            say(
                f"the operator exited ({self.operator.returncode}): started again, as its Deployment "
                f"would; its last error: {why[:300]}"
            )
            self.start_operator()

    def settled(self) -> str | None:
        """The owner, if the pair is settled: one node with the VIP and the service, the other with
        neither, both agents up and seeing each other, the client served, the Lease agreeing."""
        self.ensure_operator()
        holders = [n for n in NODES if self.lab.holds_vip(n)]
        if len(holders) != 1:
            return None
        owner = holders[0]
        if not self.web(owner) or self.web(other(owner)):
            return None
        if not self.lab.agents_agree(owner):
            return None
        try:
            if self.lease(timeout=1.0)[0] != owner:
                return None
        except Exception:
            return None
        return owner if self.lab.fetch(0.5) == owner else None

    def describe(self) -> str:
        views = []
        for node in NODES:
            st = self.lab.agent_status(node)
            peer = st.get("peer")
            views.append(
                f"{node}: vip={self.lab.holds_vip(node)} web={self.web(node)} holds={st.get('holds')} "
                f"in_flux={st.get('in_flux')} peer={peer.get('state') if isinstance(peer, dict) else None}"
            )
        with contextlib.suppress(Exception):
            views.append(f"lease={self.lease(timeout=1.0)}")
        for node in NODES:
            with contextlib.suppress(Exception):
                rl = self.leases.read_namespaced_lease(f"{self.hac()['metadata']['name']}-{node}", "ha")
                views.append(f"report {node}: {(rl.metadata.annotations or {}).get('hacluster.dev/report')}")
        return "; ".join(views)

    def probe_answer(self) -> str | None:
        """Who answered the client's latest fetch (None: nobody, or no fetch in the last second)."""
        samples = self.probe.samples
        if not samples or samples[-1][0] < time.time() - 1.0:
            return None
        return samples[-1][1]

    def agent_alive(self, node: str) -> bool:
        proc = self.lab.procs.get(node)
        return proc is not None and proc.poll() is None

    def restart_agent(self, node: str) -> None:
        """Start the node's agent again if it is not running (a killed agent, a lost node)."""
        if not self.agent_alive(node):
            self.start_agent(node)

    # -- faults on the heartbeat path ---------------------------------------------------------
    def delay(self, node: str, ms: float, jitter: float) -> None:
        """Delay the heartbeats `node` sends (NFQUEUE delayer: this kernel has no netem)."""
        ns = self.lab.ns(node)
        sh("ip", "netns", "exec", ns, "iptables-legacy", "-t", "mangle", "-A", *DELAY_RULE, check=True)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-I", "-S", str(NETNS_PY), "nfqueue-delay", "0",
             str(ms), str(jitter)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.lab.procs[f"delay-{proc.pid}"] = proc
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the NFQUEUE delayer did not start")
        self.delayers[node] = proc

    def undelay(self, node: str) -> None:
        ns = self.lab.ns(node)
        sh("ip", "netns", "exec", ns, "iptables-legacy", "-t", "mangle", "-D", *DELAY_RULE)
        proc = self.delayers.pop(node, None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)


# -- faults ------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    st: Chaos
    owner: str
    rng: random.Random
    cleared: float = 0.0
    notes: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # a rejected change got through: violations

    def violated(self, what: str) -> None:
        self.notes.append(what)
        self.broken.append(what)

    @property
    def standby(self) -> str:
        return other(self.owner)

    def clear(self) -> None:
        self.cleared = time.time()


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    run: Callable[[Ctx], None]
    expect: str  # "move", "stay" or "any": where the group should end up
    quiet: bool = False  # the owner is left alone: any client outage is a surprise (logged)


def _pause(ctx: Ctx, node: str, seconds: float) -> None:
    proc = ctx.st.lab.procs[node]
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    ctx.clear()


def f_sigkill_owner(ctx: Ctx) -> None:
    ctx.st.lab.kill_agent(ctx.owner, signal.SIGKILL)
    ctx.clear()
    _wait_served(ctx, ctx.standby)
    ctx.st.restart_agent(ctx.owner)


def f_sigkill_standby(ctx: Ctx) -> None:
    ctx.st.lab.kill_agent(ctx.standby, signal.SIGKILL)
    time.sleep(1.0)
    ctx.st.restart_agent(ctx.standby)
    ctx.clear()


def f_sigstop_owner(ctx: Ctx) -> None:
    _pause(ctx, ctx.owner, 2.0)


def f_sigstop_standby(ctx: Ctx) -> None:
    _pause(ctx, ctx.standby, 2.0)


def f_node_loss(ctx: Ctx) -> None:
    st, node = ctx.st, ctx.owner
    t = time.time()
    st.vips[node].stop()
    st.lab.lose(node)
    st.vips[node].gone(t)
    ctx.clear()
    _wait_served(ctx, ctx.standby)
    time.sleep(0.5)
    st.lab.revive(node)
    st.vips[node] = VipWatch(st.lab, node)
    st.start_agent(node)


def f_link_cut_both(ctx: Ctx) -> None:
    for node in NODES:
        ctx.st.lab.deafen(node)
    time.sleep(2.0)
    for node in NODES:
        ctx.st.lab.deafen(node, on=False)
    ctx.clear()


def f_link_cut_oneway(ctx: Ctx) -> None:
    deaf = ctx.rng.choice(NODES)
    ctx.notes.append(f"{deaf} deaf")
    ctx.st.lab.deafen(deaf)
    time.sleep(2.0)
    ctx.st.lab.deafen(deaf, on=False)
    ctx.clear()


def f_loss_delay(ctx: Ctx) -> None:
    st = ctx.st
    try:
        for node in NODES:
            st.lab.impair(node, 30)
            st.delay(node, 40, 30)
        time.sleep(3.0)
    finally:
        for node in NODES:
            st.lab.impair(node, 0)
            st.undelay(node)
    ctx.clear()


def f_apiserver_stop(ctx: Ctx) -> None:
    ctx.st.cp.halt()
    try:
        time.sleep(3.0)
    finally:
        if note := ctx.st.resume_api():
            ctx.notes.append(note)
    ctx.clear()


def f_apiserver_freeze(ctx: Ctx) -> None:
    pid = ctx.st.cp.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    ctx.clear()


def f_apiserver_down_owner_dies(ctx: Ctx) -> None:
    """The owner dies while nobody can arbitrate: the standby must not take over blind (StayPut);
    it does once the API server is back."""
    st = ctx.st
    st.cp.halt()
    try:
        time.sleep(0.3)
        st.lab.kill_agent(ctx.owner, signal.SIGKILL)
        time.sleep(2.0)
        if st.lab.holds_vip(ctx.standby):
            ctx.notes.append("standby took the VIP without the arbiter")
    finally:
        if note := st.resume_api():
            ctx.notes.append(note)
    ctx.clear()
    _wait_served(ctx, ctx.standby)
    st.restart_agent(ctx.owner)


def f_operator_killed_mid_switchover(ctx: Ctx) -> None:
    st, target = ctx.st, ctx.standby
    st.patch_failover(switchoverTo=target)
    time.sleep(ctx.rng.uniform(0.0, 0.4))
    st.kill_operator(signal.SIGKILL)
    time.sleep(1.0)
    st.start_operator()
    try:
        wait_until(lambda: st.lease(timeout=1.0)[0] == target, 30, message=f"the Lease on {target}")
    finally:
        st.patch_failover(switchoverTo=None)
    ctx.clear()


def _power_off(st: Chaos, node: str) -> None:
    """What a power cut leaves: every process killed, the VIP and the kernel fence's tables gone
    with the kernel's state (the disk, with the state directory, survives)."""
    st.lab.kill_all(node, keep=st.watcher_pids(node))
    ns, table = st.lab.ns(node), table_name(NS, NAME)
    sh("ip", "-n", ns, "addr", "del", f"{VIP}/24", "dev", "eth0")
    gone = f"add table inet {table}\ndelete table inet {table}\nadd table arp {table}\ndelete table arp {table}\n"
    sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=gone)
    (st.lab.root / node / "state" / "web.pid").unlink(missing_ok=True)


def f_both_restart(ctx: Ctx) -> None:
    """Both nodes power-cycled at once: every process of theirs killed, the VIP gone with the
    reboot, both agents started together."""
    st = ctx.st
    for node in NODES:
        _power_off(st, node)
    for node in NODES:
        st.start_agent(node)
    ctx.clear()


# -- issue 11's compound faults (each row of its table, by name) --------------------------------------


def _cut(st: Chaos, on: bool) -> None:
    for node in NODES:
        st.lab.deafen(node, on=on)


def f_cut_slow_renewal(ctx: Ctx) -> None:
    """The heartbeat link cut both ways for 12 s; 3 s in, the API server paused for 400 ms (one
    slow renewal). Before issue 11: both nodes held the VIP for 8.4 s."""
    st = ctx.st
    pid = st.cp.pid
    assert pid is not None
    _cut(st, True)
    try:
        time.sleep(3.0)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(0.4)
        finally:
            os.kill(pid, signal.SIGCONT)
        time.sleep(8.6)
    finally:
        _cut(st, False)
    ctx.clear()


def f_cold_start_cut(ctx: Ctx) -> None:
    """Both nodes power-cycled and started with the heartbeat link already cut (8 s). Before: both
    held the VIP for 8.3 s (the CAS winner never renewed; the loser's next take was granted)."""
    st = ctx.st
    _cut(st, True)
    try:
        for node in NODES:
            _power_off(st, node)
        for node in NODES:
            st.start_agent(node)
        time.sleep(8.0)
    finally:
        _cut(st, False)
    ctx.clear()


def f_cut_owner_restart(ctx: Ctx) -> None:
    """The link cut; the owner's agent SIGKILLed and started again during the cut (6 s in all).
    Before: both held the VIP for 7.9 s."""
    st = ctx.st
    _cut(st, True)
    try:
        time.sleep(1.0)
        st.lab.kill_agent(ctx.owner, signal.SIGKILL)
        time.sleep(0.5)
        st.restart_agent(ctx.owner)
        time.sleep(4.5)
    finally:
        _cut(st, False)
    ctx.clear()


def f_owner_tree_killed(ctx: Ctx) -> None:
    """Every process of the owner's agent killed at once: the agent and its fence guard (what a
    container's PID 1 death does). Before: both held the VIP for 2.2 s (the kernel lifetime)."""
    st = ctx.st
    proc = st.lab.procs[ctx.owner]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the agent leads its process group; the guard is in it
    proc.wait(10)
    ctx.clear()
    _wait_served(ctx, ctx.standby)
    st.restart_agent(ctx.owner)


def f_lease_deleted(ctx: Ctx) -> None:
    """The ownership Lease deleted by hand. Before: recreated empty at epoch 0, the pair never
    settled (45 s+)."""
    ctx.st.leases.delete_namespaced_lease(NAME, "ha")
    ctx.clear()


def f_cut_15s(ctx: Ctx) -> None:
    """The heartbeat link cut both ways for 15 s, nothing else (held before too)."""
    _cut(ctx.st, True)
    try:
        time.sleep(15.0)
    finally:
        _cut(ctx.st, False)
    ctx.clear()


def f_service_crash(ctx: Ctx) -> None:
    """The service dies under the owner: the monitor restarts it in place."""
    pidfile = ctx.st.lab.root / ctx.owner / "state" / "web.pid"
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
    ctx.clear()


def f_script_hang(ctx: Ctx) -> None:
    """The owner's resource script hangs on `status`: the agent times it out (2 s), counts a
    failure and restarts the service in place; hanging again and again, it may reach the migration
    threshold (3) and move the group: either is right."""
    flag = ctx.st.lab.root / ctx.owner / "state" / "fault-status-hang"
    flag.touch()
    try:
        time.sleep(4.0)
    finally:
        flag.unlink(missing_ok=True)
    ctx.clear()


def f_script_fail(ctx: Ctx) -> None:
    """The service dies and its script cannot start it again on the owner: the group moves."""
    flag = ctx.st.lab.root / ctx.owner / "state" / "fault-start-fail"
    flag.touch()
    try:
        f_service_crash(ctx)
        _wait_served(ctx, ctx.standby, timeout=30)
    finally:
        flag.unlink(missing_ok=True)
    ctx.clear()


def f_bad_spec_rejected(ctx: Ctx) -> None:
    """A wrong change through GitOps: deadtime not above 2 x keepalive. The API server refuses it
    with a message naming the field; the running pair must not notice."""
    from kubernetes.client.exceptions import ApiException

    try:
        ctx.st.custom.patch_namespaced_custom_object(
            "hacluster.dev",
            "v1alpha1",
            "ha",
            "haclusters",
            "demo",
            {"spec": {"heartbeat": {"deadtime": "150ms"}}},
        )
        ctx.violated("the bad spec was accepted")
    except ApiException as e:
        if e.status != 422 or "deadtime" not in (e.body or ""):
            ctx.violated(f"refused without naming deadtime: {e.status} {str(e.body)[:200]}")
    time.sleep(2.0)
    ctx.clear()


def f_bad_secret_kept_out(ctx: Ctx) -> None:
    """A broken auth Secret (`auth 3` names no key): the operator cannot render it and must keep
    the rendered config as it was; the agents keep running on the old keys."""
    st = ctx.st
    config = st.core.read_namespaced_secret("demo-config", "ha").data
    original = st.core.read_namespaced_secret("demo-auth", "ha").data
    st.core.patch_namespaced_secret("demo-auth", "ha", {"stringData": {"authkeys": "auth 3\n1 sha1 k\n"}})
    try:
        time.sleep(3.0)  # the operator re-renders at least every second here
        if st.core.read_namespaced_secret("demo-config", "ha").data != config:
            ctx.violated("the config Secret changed after a broken auth Secret")
    finally:
        st.core.patch_namespaced_secret("demo-auth", "ha", {"data": original})
    ctx.clear()


def f_control_split_brain(ctx: Ctx) -> None:
    """Not a fault of ours: the campaign's own check. The VIP is put on the standby by hand for
    1 s, its kernel fence opened by hand as well (a standby's fence is closed: an address added
    there answers nothing); the watchers must report it (two holders, two ARP answers)."""
    ns = ctx.st.lab.ns(ctx.standby)
    table = table_name(NS, NAME)
    opened = (
        f"add element inet {table} live4 {{ {VIP} timeout 1200ms }}\n"
        f"add element arp {table} live4 {{ {VIP} timeout 1200ms }}\n"
    )
    sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=opened, check=True)
    sh("ip", "-n", ns, "addr", "add", f"{VIP}/24", "dev", "eth0", check=True)
    try:
        time.sleep(1.0)
    finally:
        sh("ip", "-n", ns, "addr", "del", f"{VIP}/24", "dev", "eth0")
    ctx.clear()


def f_compound(ctx: Ctx) -> None:
    """A nemesis schedule: two to four faults of different kinds at once, each at a random moment
    in the first 3 s and of random length: a heartbeat link fault (a cut of 1-30 s both ways or one
    way, or loss with delay), an API server fault (a freeze of 0.2-3 s, or a stop), a process fault
    (an agent paused, killed and restarted, or the owner's whole process tree killed), and a control
    plane fault (the Lease deleted, the operator killed). What ran is kept in the trial's notes."""
    st, rng = ctx.st, ctx.rng
    menu: dict[str, list[tuple[str, Callable[[], None]]]] = {
        "link": [],
        "api": [],
        "process": [],
        "control": [],
    }

    def cut(seconds: float, nodes: tuple[str, ...]) -> Callable[[], None]:
        def run() -> None:
            for n in nodes:
                st.lab.deafen(n)
            try:
                time.sleep(seconds)
            finally:
                for n in nodes:
                    st.lab.deafen(n, on=False)

        return run

    def loss(seconds: float) -> Callable[[], None]:
        def run() -> None:
            try:
                for n in NODES:
                    st.lab.impair(n, 30)
                time.sleep(seconds)
            finally:
                for n in NODES:
                    st.lab.impair(n, 0)

        return run

    def freeze(seconds: float) -> Callable[[], None]:
        def run() -> None:
            pid = st.cp.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(seconds)
            finally:
                os.kill(pid, signal.SIGCONT)

        return run

    on_main: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()

    def in_main_thread(fn: Callable[[], None]) -> None:
        """Run fn in the campaign's main thread and wait. The API server dies with the thread that
        started it (PR_SET_PDEATHSIG follows the thread): resumed from this fault's short-lived
        thread it was killed when the thread ended, and the pair never saw it again."""
        done = threading.Event()
        on_main.put((fn, done))
        done.wait(120)

    def stop(seconds: float) -> Callable[[], None]:
        def run() -> None:
            st.cp.halt()
            try:
                time.sleep(seconds)
            finally:

                def resume() -> None:
                    if note := st.resume_api():
                        ctx.notes.append(note)

                in_main_thread(resume)

        return run

    def pause(node: str, seconds: float) -> Callable[[], None]:
        def run() -> None:
            proc = st.lab.procs[node]
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                time.sleep(seconds)
            finally:
                os.kill(proc.pid, signal.SIGCONT)

        return run

    def kill_restart(node: str, seconds: float, tree: bool) -> Callable[[], None]:
        def run() -> None:
            proc = st.lab.procs[node]
            with contextlib.suppress(ProcessLookupError):
                if tree:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            time.sleep(seconds)
            st.restart_agent(node)

        return run

    def lease_delete() -> None:
        # with the API server stopped by another part of the plan: as soon as it is back
        wait_until(lambda: _deleted(st), 30, interval=0.2, message="the Lease deleted")

    def operator_kill() -> None:
        st.kill_operator(signal.SIGKILL)  # its Deployment starts it again (the loop below)

    owner, node = ctx.owner, rng.choice(NODES)
    secs = round(rng.uniform(1.0, 30.0), 1)
    menu["link"] = [
        (f"link cut both ways {secs} s", cut(secs, NODES)),
        (f"{node} deaf {secs} s", cut(secs, (node,))),
        (f"30 % heartbeat loss {min(secs, 8.0)} s", loss(min(secs, 8.0))),
    ]
    short = round(rng.uniform(0.2, 3.0), 1)
    menu["api"] = [
        (f"API server frozen {short} s", freeze(short)),
        (f"API server stopped {short} s", stop(short)),
    ]
    menu["process"] = [
        (f"{node}'s agent paused {short} s", pause(node, short)),
        (f"{node}'s agent killed, restarted {short} s later", kill_restart(node, short, tree=False)),
        (f"{owner}'s process tree killed, restarted {short} s later", kill_restart(owner, short, tree=True)),
    ]
    menu["control"] = [("the Lease deleted", lease_delete), ("the operator killed", operator_kill)]
    kinds = rng.sample(list(menu), rng.randint(2, 4))
    plan = [(rng.uniform(0.0, 3.0), *rng.choice(menu[k])) for k in kinds]
    ctx.notes.append("; ".join(f"{what} at +{at:.1f} s" for at, what, _ in sorted(plan)))
    errors: list[str] = []

    def run_at(at: float, what: str, fn: Callable[[], None]) -> None:
        time.sleep(at)
        try:
            fn()
        except Exception as e:  # reported as a failed fault, not hidden
            errors.append(f"{what}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=run_at, args=p, daemon=True) for p in plan]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    looked = 0.0
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        if time.monotonic() - looked >= DEPLOYMENT_LOOK_S:
            # The operator exits on purpose when it loses its leadership Lease (the API server
            # away for over 10 s): its Deployment starts it again meanwhile, not after the faults.
            looked = time.monotonic()
            st.ensure_operator()
        with contextlib.suppress(queue.Empty):
            fn, done = on_main.get(timeout=0.05)
            try:
                fn()
            except Exception as e:  # reported as a failed fault, not hidden
                errors.append(f"{getattr(fn, '__name__', fn)}: {type(e).__name__}: {e}")
            finally:
                done.set()
    for n in NODES:
        st.restart_agent(n)
    if errors:
        raise RuntimeError("; ".join(errors))
    ctx.clear()


DEPLOYMENT_LOOK_S = 1.0
"""How soon an exited operator is started again during a fault (the kubelet notices a container's
exit within its 1 s relist and restarts it at once the first time)."""


def _deleted(st: Chaos) -> bool:
    try:
        st.leases.delete_namespaced_lease(NAME, "ha", _request_timeout=2)
    except Exception as e:  # the API server is away (stopped or frozen by another fault): again
        return getattr(e, "status", None) == 404
    return True


def _wait_served(ctx: Ctx, node: str, timeout: float = 20.0) -> None:
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: ctx.st.probe_answer() == node, timeout, message=f"the service answered by {node}")


FAULTS = [
    Fault("sigkill-owner", "SIGKILL of the owner's agent", f_sigkill_owner, "move"),
    Fault(
        "sigkill-standby",
        "SIGKILL of the standby's agent, restarted 1 s later",
        f_sigkill_standby,
        "stay",
        quiet=True,
    ),
    Fault("sigstop-owner", "the owner's agent paused (SIGSTOP) for 2 s", f_sigstop_owner, "move"),
    Fault("sigstop-standby", "the standby's agent paused for 2 s", f_sigstop_standby, "stay", quiet=True),
    Fault("node-loss", "the owner's namespace torn down (processes, NIC, VIP)", f_node_loss, "move"),
    Fault("link-cut-both", "heartbeats dropped both ways for 2 s", f_link_cut_both, "stay", quiet=True),
    Fault("link-cut-oneway", "one node deaf to heartbeats for 2 s", f_link_cut_oneway, "stay", quiet=True),
    Fault("loss-delay", "30 % heartbeat loss and 40±30 ms delay for 3 s", f_loss_delay, "stay", quiet=True),
    Fault(
        "apiserver-stop", "kube-apiserver stopped for 3 s, restarted", f_apiserver_stop, "stay", quiet=True
    ),
    Fault(
        "apiserver-freeze", "kube-apiserver paused (SIGSTOP) for 3 s", f_apiserver_freeze, "stay", quiet=True
    ),
    Fault(
        "apiserver-down-owner-dies",
        "API server down, then the owner's agent killed",
        f_apiserver_down_owner_dies,
        "move",
    ),
    Fault(
        "operator-killed-mid-switchover",
        "switchover declared, operator SIGKILLed, restarted",
        f_operator_killed_mid_switchover,
        "move",
    ),
    Fault("both-restart", "both nodes power-cycled at once", f_both_restart, "any"),
    Fault(
        "bad-spec-rejected",
        "an HACluster change with deadtime <= 2 x keepalive",
        f_bad_spec_rejected,
        "stay",
        quiet=True,
    ),
    Fault("bad-secret-kept-out", "the auth Secret broken for 3 s", f_bad_secret_kept_out, "stay", quiet=True),
    Fault("service-crash", "the service killed on the owner", f_service_crash, "stay"),
    Fault("script-hang", "the owner's script hangs on status for 4 s", f_script_hang, "any"),
    Fault("script-fail", "the service dies and cannot start again on the owner", f_script_fail, "move"),
    Fault(
        "cut-slow-renewal", "link cut 12 s, the API server paused 400 ms 3 s in", f_cut_slow_renewal, "any"
    ),
    Fault(
        "cold-start-cut", "both nodes power-cycled, started with the link cut (8 s)", f_cold_start_cut, "any"
    ),
    Fault(
        "cut-owner-restart",
        "link cut, the owner's agent killed and restarted in it",
        f_cut_owner_restart,
        "any",
    ),
    Fault(
        "owner-tree-killed", "the owner's agent and fence guard killed at once", f_owner_tree_killed, "move"
    ),
    Fault("lease-deleted", "the ownership Lease deleted by hand", f_lease_deleted, "stay", quiet=True),
    Fault("cut-15s", "link cut both ways for 15 s, nothing else", f_cut_15s, "stay", quiet=True),
]


COMPOUND = Fault("compound", "two to four faults of different kinds at once (a nemesis)", f_compound, "any")

CONTROL = Fault(
    "control-split-brain",
    "the VIP added by hand on the standby for 1 s (must be caught)",
    f_control_split_brain,
    "stay",
)

# -- trials ------------------------------------------------------------------------------------------


@dataclass
class Trial:
    fault: str
    owner: str
    new_owner: str | None
    violations: list[str]
    recovery_ms: float
    notes: list[str]
    evidence: str = ""  # the watchers' timeline and the logs written during the trial, if it went wrong


def judge(
    st: Chaos, start: float, end: float, cleared: float, target_ms: float, dark_overlaps: list[float]
) -> tuple[list[str], float]:
    """Every invariant over [start, end]; and the longest client outage (ms). Address overlaps
    where only one node answered (the other fenced dark) go to `dark_overlaps` (ms)."""
    v: list[str] = []
    doubles = st.arp.doubles(start, end)
    both = overlaps(st.vips["n1"].intervals(end), st.vips["n2"].intervals(end))
    for s, e in both:
        if e >= start and s <= end:
            # Both nodes had the address: a violation when both answered for it; the kernel fence
            # keeps a node that may no longer serve dark (a killed agent's address lingers until
            # its kernel lifetime runs out, answering nothing): a figure, not a violation, then.
            answered = [t for t, _ in doubles if s - 0.05 <= t <= e + 0.05]
            if answered:
                v.append(f"both nodes held the VIP for {(e - s) * 1000:.1f} ms at {s:.3f}, both answering")
            else:
                dark_overlaps.append((e - s) * 1000)
    for t, macs in doubles:
        v.append(f"two MACs answered one ARP request at {t:.3f}: {sorted(macs)}")
    v += st.lease_watch.regressions(start, end)
    worst = 0.0
    for down, up in st.probe.outages(start, end):
        if up is None:
            v.append(f"the service did not answer again (down since {down:.3f})")
            worst = max(worst, (end - down) * 1000)
            continue
        worst = max(worst, (up - down) * 1000)
        if up > max(down, cleared) + target_ms / 1000:
            v.append(f"an outage ended {(up - max(down, cleared)) * 1000:.0f} ms after the fault cleared")
    return v, worst


def timeline(st: Chaos, start: float, end: float) -> str:
    """The watchers' evidence over [start, end] as runs: who answered the client's fetches, who held
    the Lease, when the VIP came and went on each node (wall clock, as the agents' logs)."""

    def at(t: float) -> str:
        return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"

    def runs(samples: list[tuple[float, object]]) -> list[str]:
        out: list[str] = []
        cur: tuple[float, float, object, int] | None = None
        for t, v in samples:
            if start <= t <= end:
                if cur is not None and cur[2] == v:
                    cur = (cur[0], t, v, cur[3] + 1)
                    continue
                if cur is not None:
                    out.append(f"  {at(cur[0])} to {at(cur[1])} {cur[2]} ({cur[3]})")
                cur = (t, t, v, 1)
        if cur is not None:
            out.append(f"  {at(cur[0])} to {at(cur[1])} {cur[2]} ({cur[3]})")
        return out

    lines = ["client fetches (answered by, count):"]
    lines += runs([(t, who or "-") for t, who in list(st.probe.samples)])
    lines.append("Lease (holder, transitions):")
    lines += runs([(t, f"{h or '-'} {e}") for t, h, e in list(st.lease_watch.samples)])
    for node, w in st.vips.items():
        lines.append(f"VIP on {node}: " + ", ".join(f"{at(t)} {'+' if up else '-'}" for t, up in sorted(w.events)
                                                   if start <= t <= end))  # fmt: skip
    return "\n".join(lines)


def run_trial(st: Chaos, fault: Fault, rng: random.Random, owner: str, target_ms: float) -> Trial:
    start = time.time()
    marks = st.log_marks()
    time.sleep(rng.uniform(0.0, 0.5))
    ctx = Ctx(st, owner, rng)
    violations: list[str] = []
    try:
        fault.run(ctx)
    except Exception as e:  # a fault that could not be carried out is reported, not hidden
        violations.append(f"fault failed: {type(e).__name__}: {e}")
        ctx.clear()
    new_owner: str | None = None
    try:
        new_owner = wait_until(st.settled, 45, interval=0.1, message="a settled pair")
    except TimeoutError:
        violations.append(f"did not settle within 45 s: {st.describe()}")
    end = time.time()
    time.sleep(0.3)  # the watchers' last lines
    dark: list[float] = []
    found, recovery = judge(st, start, end, ctx.cleared or end, target_ms, dark)
    notes = list(ctx.notes)
    if dark:
        notes.append(
            f"address on both nodes for {max(dark):.0f} ms, one fenced dark (no ARP request answered twice)"
        )
    moved = new_owner is not None and new_owner != owner
    if fault.expect == "move" and new_owner is not None and not moved:
        notes.append("expected a move, the owner stayed")
    if fault.expect == "stay" and moved:
        notes.append("the owner moved")
    if fault.quiet and recovery > 0:
        notes.append(f"unexpected outage of {recovery:.0f} ms (the owner was left alone)")
    violations += ctx.broken  # a rejected change that got through is a broken invariant, not a surprise
    evidence = ""
    if violations or found or any(w in n for n in notes for w in ("moved", "expected")):
        evidence = timeline(st, start, end) + "\n\n" + st.logs_since(marks)
    return Trial(fault.name, owner, new_owner, violations + found, recovery, notes, evidence)


def recover(st: Chaos) -> str | None:
    """After a trial that did not settle: restart whatever agent is down and wait; failing that,
    restart both agents (an operator's last resort). None: the pair cannot be brought back."""
    for node in NODES:
        st.restart_agent(node)
    with contextlib.suppress(TimeoutError):
        result: str = wait_until(st.settled, 60, interval=0.2, message="a settled pair after recovery")
        return result
    say(f"not settled after a restart of what was down ({st.describe()}): restarting both agents")
    for node in NODES:
        st.lab.kill_agent(node, signal.SIGTERM)
    for node in NODES:
        st.start_agent(node)
    with contextlib.suppress(TimeoutError):
        result = wait_until(
            st.settled, 60, interval=0.2, message="a settled pair after restarting both agents"
        )
        return result
    return None


def report(trials: list[Trial]) -> int:
    print(f"\n{'fault':<31} {'trials':>6} {'violations':>10} {'moved':>5} {'median_ms':>9} {'worst_ms':>8}")
    for fault in [*FAULTS, COMPOUND, CONTROL]:
        ts = [t for t in trials if t.fault == fault.name]
        if not ts:
            continue
        rec = [t.recovery_ms for t in ts]
        bad = sum(len(t.violations) for t in ts)
        moved = sum(1 for t in ts if t.new_owner is not None and t.new_owner != t.owner)
        print(
            f"{fault.name:<31} {len(ts):>6} {bad:>10} {moved:>5} {statistics.median(rec):>9.0f} {max(rec):>8.0f}"
        )
    violations = sum(len(t.violations) for t in trials)
    worst = max((t.recovery_ms for t in trials), default=0.0)
    for t in trials:
        for v in t.violations:
            print(f"VIOLATION {t.fault}: {v}")
    print(f"RESULT trials={len(trials)} violations={violations} worst_recovery_ms={worst:.0f}")
    return 1 if violations else 0


def campaign(a: argparse.Namespace) -> list[Trial]:
    known = [*FAULTS, COMPOUND, CONTROL]
    faults = FAULTS if not a.faults else [f for f in known if f.name in a.faults.split(",")]
    if not faults:
        raise SystemExit(f"no such fault in {a.faults!r}; known: {', '.join(f.name for f in known)}")
    rng = random.Random(a.seed)
    order = [faults[i % len(faults)] for i in range(a.trials)]
    rng.shuffle(order)
    if a.trials <= len(faults):
        order = faults[: a.trials]  # the short form: each fault once, in the table's order
    keepalive, deadtime = a.timing.split("/")
    warntime = f"{max(1, parse_duration_ms(deadtime) * 2 // 3)}ms"
    # A dead owner is replaced no sooner than deadtime + W after it died (its death clears the
    # fault): the target must leave that, as 3 s does at 100 ms / 300 ms but not at 500 ms / 3 s.
    target_ms = (
        a.target_ms if a.target_ms is not None else max(3000.0, parse_duration_ms(deadtime) + 200 + 1500)
    )
    say(f"recovery target: {target_ms:.0f} ms after a fault clears")
    lab = Lab(keepalive=keepalive, deadtime=deadtime, warntime=warntime, auto_failback="off")
    agent_args = ["--monitor-interval", "1", "--status-timeout", "2"]
    trials: list[Trial] = []
    token = register_cleanup(lab.close)
    try:
        with full_stack(
            find_or_build_apiserver(), lambda lab, cp: Chaos(lab, cp, agent_args), lab, echo_logs=a.verbose
        ) as st:
            st.create_cluster(cluster_body(keepalive, deadtime, warntime))
            st.mount_config()
            for node in NODES:
                st.start_agent(node)
            owner = wait_until(st.settled, 60, interval=0.2, message="the pair settled")
            st.watch()
            try:
                for i, fault in enumerate(order, 1):
                    trial = run_trial(st, fault, rng, owner, target_ms)
                    trials.append(trial)
                    if trial.evidence and a.log_dir:
                        dump = Path(a.log_dir) / f"trial-{i:03d}-{fault.name}.log"
                        dump.parent.mkdir(parents=True, exist_ok=True)
                        dump.write_text("\n".join(trial.violations + trial.notes) + "\n\n" + trial.evidence)
                    say(f"trial {i}/{len(order)} {fault.name}: {trial.owner} -> {trial.new_owner}, "
                        f"outage {trial.recovery_ms:.0f} ms, "
                        f"{len(trial.violations)} violation(s) {trial.violations} {trial.notes}")  # fmt: skip
                    recovered = trial.new_owner or recover(st)
                    if recovered is None:
                        trial.violations.append(
                            f"campaign stopped: the pair could not be brought back: {st.describe()}"
                        )
                        break
                    owner = recovered
            finally:
                st.unwatch()
                answered = sum(1 for _, macs in st.arp.rounds if macs)
                say(f"evidence: {len(st.arp.rounds)} ARP requests ({answered} answered), "
                    f"{len(st.probe.samples)} client fetches, {len(st.lease_watch.samples)} Lease reads, "
                    f"{sum(len(w.events) for w in st.vips.values())} VIP events")  # fmt: skip
                if a.verbose:
                    print(st.logs(20000), file=sys.stderr)
    finally:
        unregister_cleanup(token)
    return trials


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--trials", type=int, default=len(FAULTS), help="number of trials (default: one per fault)"
    )
    p.add_argument("--faults", help="comma-separated fault names (default: all; `compound`: the nemesis)")
    p.add_argument(
        "--timing", default="100ms/300ms", help="keepalive/deadtime of the pair, e.g. 500ms/3s or 1s/10s"
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (faults order, moments)")
    p.add_argument(
        "--target-ms",
        type=float,
        default=None,
        help="recovery target after a fault clears (default: 3000, or deadtime + W + 1500 if longer)",
    )
    p.add_argument("--verbose", action="store_true", help="print the operator's and agents' logs at the end")
    p.add_argument("--log-dir", help="write the logs around each trial with a violation or a surprise here")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if a.seed is None:
        a.seed = random.randrange(1 << 30)
    say(f"seed {a.seed}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        trials = campaign(a)
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    return report(trials)


if __name__ == "__main__":
    sys.exit(main())
