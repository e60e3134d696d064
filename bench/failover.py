#!/usr/bin/env python3
"""Client-observed failover: hacluster's agent next to the real Heartbeat 3.0.6, same namespaces.

A benchmark, not a test: it prints figures and never passes or fails on time.

For each implementation (our agent on both nodes, then the real daemon on both nodes) on the same
lab (namespaces sw/n1/n2/client from tests.support.lab: ucast on eth0, sha1, the same ha.cf,
authkeys and haresources ``n1 IPaddr2::192.0.2.100/24/eth0 demo-web``, auto_failback off):

* failover: a client probes the VIP every 10 ms; the owner is hit by a fault, and we time from
  the fault to the first answer from the other node. Faults: ``kill`` (SIGKILL of the owner's
  agent / every heartbeat process of the owner) and ``cut`` (the owner's cable pulled, Lab.cut).
  After each run the victim is reset (its daemon killed, its leftover VIP and service removed,
  its cable restored, its daemon restarted) and the survivor stays the owner, so the victim
  alternates; every run starts from a settled pair whose owner answers the VIP.
* resources: CPU (user+sys, from /proc/<pid>/stat) and memory of each node's daemon processes over
  ``--cpu-seconds`` with the pair idle.
* partition heal (standalone): both nodes deafened (heartbeats dropped both ways), both take the
  VIP; then healed: time from the heal to a single owner (stable for 5 s), and the longest time
  the client got no answer after the heal.

Usage (root, Debian's ``heartbeat`` package installed)::

    python bench/failover.py                       # 10 runs per fault, 60 s of CPU sampling
    python bench/failover.py --runs 2 --cpu-seconds 5   # a quick check, a few minutes
    python bench/failover.py --vm --runs 3              # whole machines (bench/vmfailover.py)

Everything it creates (namespaces, daemons, services, temp dirs) is removed on exit, on error, on
Ctrl-C and on SIGTERM/SIGHUP. Progress goes to stderr; the tables and the final RESULT line (always
the last line) go to stdout. See bench/README.md for the method and the last results.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "api"), str(ROOT / "node-agent")]

from hacluster_api.heartbeat.durations import parse_duration_ms  # noqa: E402
from tests.support.controlplane import ControlPlane, find_or_build_apiserver  # noqa: E402
from tests.support.kubeagents import agent_rbac  # noqa: E402
from tests.support.lab import NODE_ADDR, VIP, Lab  # noqa: E402
from tests.support.netns import register_cleanup, unregister_cleanup, wait_until  # noqa: E402
from tests.support.realheartbeat import RealHeartbeat, heartbeat_available  # noqa: E402

NODES = ("n1", "n2")
HOME = "n1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def other(node: str) -> str:
    return "n2" if node == "n1" else "n1"


def say(*args: object) -> None:
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def settle(impl: Impl, lab: Lab, owner: str, timeout: float) -> None:
    """Wait until `owner` alone holds and serves the VIP and both daemons agree; say why not."""
    try:
        wait_until(
            lambda: impl.settled(owner),
            timeout,
            interval=0.1,
            message=f"{impl.name}: {owner} to own the VIP, pair settled",
        )
    except TimeoutError as e:
        holders = [n for n in NODES if lab.holds_vip(n)]
        raise TimeoutError(
            f"{e}: VIP on {holders}, client reaches {lab.fetch(0.5)}; {impl.describe()}"
        ) from None


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def restore(lab: Lab, node: str) -> None:
    """Plug the cable back in, once the node's daemon is gone. Its kernel still queues the
    datagrams the dead daemon sent while the cable was out (waiting for ARP): flush them first, or
    they reach the peer after the restart and look like the old daemon returning after a
    partition (the real daemon then restarts itself)."""
    sh("ip", "-n", lab.ns(node), "neigh", "flush", "all")
    lab.restore(node)


# -- the two implementations ---------------------------------------------------------------------


UPTIME_BEFORE_FAULT = 6.0
"""A node is faulted only once it has run this long: Heartbeat advertises deadtime + 2 s (dt) for
5 s after it starts, and its peer honours that, so a fresh victim would take 2 s longer to be
declared dead. Applied to both implementations alike."""


class Impl(Protocol):
    name: str
    started: dict[str, float]

    def start(self) -> None: ...
    def settled(self, owner: str) -> bool: ...
    def describe(self) -> str: ...
    def fault(self, kind: str, victim: str) -> None: ...
    def reset(self, kind: str, victim: str) -> None: ...
    def pids(self, node: str) -> list[int]: ...
    def stop(self) -> None: ...


class Ours:
    """Our agent on both nodes (hacluster_agent.daemon through Lab.start_agent)."""

    name = "hacluster"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.started: dict[str, float] = {}

    def start(self) -> None:
        for node in NODES:
            self.lab.start_agent(node)
            self.started[node] = time.monotonic()

    def settled(self, owner: str) -> bool:
        if not self.lab.holds_vip(owner) or self.lab.holds_vip(other(owner)):
            return False
        return self.lab.agents_agree(owner) and self.lab.fetch(0.5) == owner

    def describe(self) -> str:
        views = []
        for node in NODES:
            st = self.lab.agent_status(node)
            peer = st.get("peer")
            state = peer.get("state") if isinstance(peer, dict) else None
            views.append(f"{node}: holds {st.get('holds')}, in_flux {st.get('in_flux')}, sees peer {state}")
        return "; ".join(views)

    def fault(self, kind: str, victim: str) -> None:
        if kind == "kill":
            self.lab.kill_agent(victim)
        else:
            self.lab.cut(victim)

    def reset(self, kind: str, victim: str) -> None:
        self.lab.kill_agent(victim)
        script = self.lab.root / victim / "ha.d" / "resource.d" / "demo-web"
        sh("ip", "netns", "exec", self.lab.ns(victim), str(script), "stop")
        sh("ip", "-n", self.lab.ns(victim), "addr", "del", f"{VIP}/24", "dev", "eth0")
        if kind == "cut":
            restore(self.lab, victim)
        self.lab.start_agent(victim)
        self.started[victim] = time.monotonic()

    def pids(self, node: str) -> list[int]:
        proc = self.lab.procs.get(node)
        return [proc.pid] if proc is not None and proc.poll() is None else []

    def stop(self) -> None:
        for node in NODES:
            self.lab.kill_agent(node, signal.SIGTERM)
            script = self.lab.root / node / "ha.d" / "resource.d" / "demo-web"
            sh("ip", "netns", "exec", self.lab.ns(node), str(script), "stop")
            sh("ip", "-n", self.lab.ns(node), "addr", "del", f"{VIP}/24", "dev", "eth0")


class OursKube(Ours):
    """Our agents in Kubernetes mode: the ownership Lease of a real kube-apiserver (served to
    the lab on its host link) arbitrates every takeover (docs/safety.md)."""

    name = "hacluster-kubernetes"

    def __init__(self, lab: Lab) -> None:
        super().__init__(lab)
        self.cp: ControlPlane | None = None

    def start(self) -> None:
        if not self.lab.host_links:  # (the second Kubernetes pair of a run reuses it)
            self.lab.attach_host()
        self.cp = ControlPlane(find_or_build_apiserver(), bind_address=self.lab.api_addr)
        self.cp.start()
        kc = agent_rbac(self.cp, self.lab.root, "ha", "bench")
        self.lab.agent_args = [
            "--kube", "--kubeconfig", str(kc), "--namespace", "ha", "--cluster", "bench", *self._agent_extra()
        ]  # fmt: skip
        super().start()

    def _agent_extra(self) -> list[str]:
        return []

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.cp is not None:
                self.cp.stop()


class OursKubeBefore(OursKube):
    """The same, with the rule before issue 11's last change: W = 200 ms, counted from when the
    standby declares the owner dead (the agents' hidden --no-early-window), so the two figures come
    from one run on one machine."""

    name = "k8s-W200-before"

    def _agent_extra(self) -> list[str]:
        return ["--arbitration-window", "0.2", "--no-early-window"]


class Theirs:
    """The real Heartbeat 3.0.6 on both nodes (tests.support.realheartbeat), the Lab's files."""

    name = "heartbeat-3.0.6"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        # The web script's pid file (state/web.pid) would hold PIDs of the daemon's private PID
        # namespace: never act on it from outside, and drop it whenever that namespace is gone.
        for node in NODES:
            (lab.root / node / "state" / "web.pid").unlink(missing_ok=True)
        self.hb = {node: RealHeartbeat(lab.ns(node), node, *lab.config_texts(node)) for node in NODES}
        self.started: dict[str, float] = {}

    def start(self) -> None:
        for hb in self.hb.values():
            hb.start(wait_ready=False)
        for node, hb in self.hb.items():
            hb.wait_for_log(r"Local status now set to: 'up'", 20, since=hb.start_offset, check_alive=True)
            self.started[node] = time.monotonic()

    def settled(self, owner: str) -> bool:
        if not self.lab.holds_vip(owner) or self.lab.holds_vip(other(owner)):
            return False
        for node in NODES:
            if self.hb[node].node_status(other(node)) != "active":
                return False
            if self.hb[node].rsc_status() in ("transition", ""):
                return False
        return self.lab.fetch(0.5) == owner

    def describe(self) -> str:
        return "; ".join(
            f"{n}: rscstatus {self.hb[n].rsc_status()!r}, sees {other(n)} {self.hb[n].node_status(other(n))!r}"
            for n in NODES
        )

    def fault(self, kind: str, victim: str) -> None:
        if kind == "kill":
            self.hb[victim].kill()
        else:
            self.lab.cut(victim)

    def reset(self, kind: str, victim: str) -> None:
        # a crashed daemon leaves its VIP, its service and send_arp behind (documented): end the
        # whole instance, remove the address, then start it again with the same state
        self.hb[victim].kill(everything=True)
        (self.lab.root / victim / "state" / "web.pid").unlink(missing_ok=True)
        sh("ip", "-n", self.lab.ns(victim), "addr", "del", f"{VIP}/24", "dev", "eth0")
        if kind == "cut":
            restore(self.lab, victim)
        self.hb[victim].start()
        self.started[victim] = time.monotonic()

    def pids(self, node: str) -> list[int]:
        return self.hb[node].heartbeat_pids()

    def stop(self) -> None:
        for hb in self.hb.values():
            hb.close()
        for node in NODES:
            (self.lab.root / node / "state" / "web.pid").unlink(missing_ok=True)
            sh("ip", "-n", self.lab.ns(node), "addr", "del", f"{VIP}/24", "dev", "eth0")


# -- measurements --------------------------------------------------------------------------------


def stop_probe(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def probe_lines(
    proc: subprocess.Popen[str], until: Callable[[float, str], bool], timeout: float
) -> Iterator[str]:
    """Lines `<time> <node or ->` from a Lab.probe until `until(t, who)` or the timeout."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    for line in proc.stdout:  # one line per 10 ms; ends when the probe's own duration is over
        yield line
        t, who = line.split(" ", 1)
        if until(float(t), who.strip()) or time.monotonic() > deadline:
            return


def answer_from(node: str | None, since: float) -> Callable[[float, str], bool]:
    """A probe-line predicate: at or after `since`, answered by `node` (None: any line)."""
    return lambda t, who: t >= since and (node is None or who == node)


class VipWatch:
    """When the VIP appears on `node`: `ip monitor address` in its namespace (event-driven, cheap)."""

    def __init__(self, lab: Lab, node: str) -> None:
        self.at: float | None = None
        self.proc = subprocess.Popen(
            ["ip", "-n", lab.ns(node), "monitor", "address"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        )  # fmt: skip
        lab.procs[f"vipwatch-{self.proc.pid}"] = self.proc  # type: ignore[assignment]  # killed by close()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.at is None and f"inet {VIP}/" in line and not line.startswith("Deleted"):
                self.at = time.time()

    def close(self) -> None:
        stop_probe(self.proc)
        self.thread.join(5)


def failover_runs(
    impl: Impl, lab: Lab, kind: str, runs: int, owner: str, budget: float
) -> tuple[list[float], list[float], str]:
    gaps: list[float] = []
    vips: list[float] = []
    for i in range(runs):
        victim, survivor = owner, other(owner)
        time.sleep(max(0.0, impl.started[victim] + UPTIME_BEFORE_FAULT - time.monotonic()))
        settle(impl, lab, victim, 90)
        probe = lab.probe(seconds=budget + 1)
        watch = VipWatch(lab, survivor)
        try:
            time.sleep(0.3)
            t0 = time.time()
            impl.fault(kind, victim)
            gap: float | None = None
            for line in probe_lines(probe, answer_from(survivor, t0), budget):
                t, who = line.split(" ", 1)
                if float(t) >= t0 and who.strip() == survivor:
                    gap = (float(t) - t0) * 1000
        finally:
            stop_probe(probe)
            watch.close()
        vip = (watch.at - t0) * 1000 if watch.at is not None else None
        say(f"{impl.name} {kind} run {i + 1}/{runs}: {victim} -> {survivor}: "
            + (f"{gap:.0f} ms" if gap is not None else "no answer")
            + (f" (VIP up on {survivor} after {vip:.0f} ms)" if vip is not None else ""))  # fmt: skip
        if gap is not None:
            gaps.append(gap)
        if vip is not None:
            vips.append(vip)
        impl.reset(kind, victim)
        owner = survivor
    return gaps, vips, owner


@dataclass
class Usage:
    node: str
    cpu_s: float
    seconds: float
    rss_mib: float
    pss_mib: float
    procs: int


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # after the comm: state is fields[0]; utime, stime, cutime, cstime are stat fields 14-17
    return sum(int(x) for x in fields[11:15])


def _mem_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def usage(impl: Impl, seconds: float) -> list[Usage]:
    before = {node: {pid: _ticks(pid) for pid in impl.pids(node)} for node in NODES}
    t0 = time.monotonic()
    time.sleep(seconds)
    took = time.monotonic() - t0
    out = []
    for node in NODES:
        pids = impl.pids(node)
        ticks = sum(_ticks(pid) - before[node].get(pid, 0) for pid in pids)
        mem = [_mem_kib(pid) for pid in pids]
        out.append(
            Usage(
                node,
                ticks / CLK_TCK,
                took,
                sum(m[0] for m in mem) / 1024,
                sum(m[1] for m in mem) / 1024,
                len(pids),
            )
        )
    return out


@dataclass
class Heal:
    to_single_ms: float | None
    gap_ms: float | None
    owner: str | None
    arp_owners: int


def heal_runs(impl: Impl, lab: Lab, runs: int, owner: str) -> tuple[list[Heal], str]:
    results: list[Heal] = []
    for i in range(runs):
        settle(impl, lab, owner, 120)
        for node in NODES:
            lab.deafen(node)
        wait_until(
            lambda: all(lab.holds_vip(n) for n in NODES),
            30,
            message="both nodes to hold the VIP (split brain)",
        )
        time.sleep(0.5)
        probe = lab.probe(seconds=120)
        samples: list[tuple[float, frozenset[str]]] = []
        try:
            time.sleep(0.3)
            t0 = time.time()
            for node in NODES:
                lab.deafen(node, on=False)
            # owners until one node alone has held the VIP for 5 s (at most 90 s)
            settled_at: float | None = None
            while time.time() - t0 < 90:
                now = time.time()
                owners = frozenset(n for n in NODES if lab.holds_vip(n))
                samples.append((now, owners))
                if len(owners) != 1:
                    settled_at = None
                elif settled_at is None or samples[-2][1] != owners:
                    settled_at = now
                if settled_at is not None and now - settled_at >= 5.0:
                    break
                time.sleep(0.02)
            stop_after = time.time()
            lines = list(probe_lines(probe, answer_from(None, stop_after), 5))
        finally:
            stop_probe(probe)
        final = samples[-1][1] if samples else frozenset()
        single = (settled_at - t0) * 1000 if settled_at is not None else None
        answered = [
            float(t) for t, who in (ln.split(" ", 1) for ln in lines) if who.strip() != "-" and float(t) >= t0
        ]
        edges = [t0, *answered]
        gap = max((b - a) * 1000 for a, b in itertools.pairwise(edges)) if answered else None
        owner_now = next(iter(final)) if len(final) == 1 else None
        arp = len(lab.arp_owners())
        results.append(Heal(single, gap, owner_now, arp))
        say(f"{impl.name} heal run {i + 1}/{runs}: single owner {owner_now} after "
            + (f"{single:.0f} ms" if single is not None else "never")
            + (f", longest client gap {gap:.0f} ms" if gap is not None else ", no answer at all")
            + f", {arp} MAC(s) answer ARP")  # fmt: skip
        owner = owner_now or HOME
    return results, owner


# -- report --------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(p * len(s)) - 1)]


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"


@dataclass
class Report:
    failover: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    vip_up: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    attempted: dict[tuple[str, str], int] = field(default_factory=dict)
    usage: dict[str, list[Usage]] = field(default_factory=dict)
    heal: dict[str, list[Heal]] = field(default_factory=dict)


def print_report(r: Report, a: argparse.Namespace, warntime: str) -> None:
    print(
        f"\nClient-observed failover, ms from the fault to the first answer from the other node "
        f"(probe every 10 ms)\nkeepalive {a.keepalive}, deadtime {a.deadtime}, warntime {warntime}, "
        f"initdead {a.initdead}; ucast eth0, sha1; IPaddr2 + demo-web; auto_failback off.\n"
        f"RESULT medians: both faults pooled.\n"
    )
    print(
        f"{'implementation':<16} {'fault':<5} {'runs':>4} {'min':>6} {'median':>7} {'p90':>6} {'max':>6}"
        f"   {'VIP up on the survivor, median (min-max)':>40}"
    )
    for (impl, kind), gaps in r.failover.items():
        n = r.attempted[(impl, kind)]
        runs = f"{len(gaps)}" if len(gaps) == n else f"{len(gaps)}/{n}"
        vips = r.vip_up.get((impl, kind), [])
        vip = f"{statistics.median(vips):.0f} ({min(vips):.0f}-{max(vips):.0f})" if vips else "n/a"
        if gaps:
            row = [min(gaps), statistics.median(gaps), pct(gaps, 0.9), max(gaps)]
            cells = " ".join(f"{v:>{w}.0f}" for v, w in zip(row, (6, 7, 6, 6), strict=True))
        else:
            cells = f"{'n/a':>6} {'n/a':>7} {'n/a':>6} {'n/a':>6}"
        print(f"{impl:<16} {kind:<5} {runs:>4} {cells}   {vip:>40}")
    if r.usage:
        secs = next(iter(r.usage.values()))[0].seconds
        print(
            f"\nIdle pair, keepalive {a.keepalive}: CPU (user+sys, incl. reaped children) over {secs:.0f} s and memory, per node"
        )
        print(
            f"{'implementation':<16} {'node':<4} {'procs':>5} {'cpu_s':>7} {'cpu_%':>6} {'rss_MiB':>8} {'pss_MiB':>8}"
        )
        for impl, usages in r.usage.items():
            for u in usages:
                print(
                    f"{impl:<16} {u.node:<4} {u.procs:>5} {u.cpu_s:>7.2f} {100 * u.cpu_s / u.seconds:>6.2f} {u.rss_mib:>8.1f} {u.pss_mib:>8.1f}"
                )
        print(
            "(rss_MiB sums each process's RSS, so pages shared by heartbeat's forked processes count several times; pss_MiB shares them out)"
        )
    if r.heal:
        print(
            "\nPartition heal, standalone: both nodes deafened (UDP 694 dropped), both take the VIP, then healed at t=0"
        )
        print(
            f"{'implementation':<16} {'runs':>4} {'to single owner ms (min/med/max)':>33} {'longest client gap ms (min/med/max)':>36}  final owner, ARP MACs"
        )
        for impl, heals in r.heal.items():
            singles = [h.to_single_ms for h in heals if h.to_single_ms is not None]
            gaps = [h.gap_ms for h in heals if h.gap_ms is not None]

            def mmm(v: list[float]) -> str:
                return "/".join(fmt(x) for x in (min(v), statistics.median(v), max(v))) if v else "n/a"

            finals = ", ".join(f"{h.owner or '-'}:{h.arp_owners}" for h in heals)
            print(f"{impl:<16} {len(heals):>4} {mmm(singles):>33} {mmm(gaps):>36}  {finals}")


def result_line(r: Report, a: argparse.Namespace) -> str:
    def pooled(impl: str) -> float | None:
        gaps = [g for (i, _), v in r.failover.items() if i == impl for g in v]
        return statistics.median(gaps) if gaps else None

    if a.kubernetes:
        kube, before = pooled(OursKube.name), pooled(OursKubeBefore.name)
        return (f"RESULT mode=kubernetes keepalive={a.keepalive} deadtime={a.deadtime} "
                f"hacluster_median_ms={fmt(kube)} before_w200_median_ms={fmt(before)}")  # fmt: skip
    ours, theirs = pooled(Ours.name), pooled(Theirs.name)
    ratio = f"{ours / theirs:.2f}" if ours is not None and theirs else "n/a"
    return (f"RESULT keepalive={a.keepalive} deadtime={a.deadtime} hacluster_median_ms={fmt(ours)} "
            f"heartbeat_median_ms={fmt(theirs)} ratio={ratio}")  # fmt: skip


# -- main ----------------------------------------------------------------------------------------


def measure(impl: Impl, lab: Lab, a: argparse.Namespace, report: Report) -> None:
    say(f"{impl.name}: starting the pair")
    impl.start()
    settle(impl, lab, HOME, 90)
    owner = HOME
    budget = parse_duration_ms(a.deadtime) / 1000 + 10
    for kind in ("kill", "cut"):
        gaps, vips, owner = failover_runs(impl, lab, kind, a.runs, owner, budget)
        report.failover[(impl.name, kind)] = gaps
        report.vip_up[(impl.name, kind)] = vips
        report.attempted[(impl.name, kind)] = a.runs
    if a.cpu_seconds > 0:
        settle(impl, lab, owner, 90)
        say(f"{impl.name}: sampling CPU and memory of the idle pair for {a.cpu_seconds:g} s")
        report.usage[impl.name] = usage(impl, a.cpu_seconds)
    heal = a.heal_runs if a.heal_runs is not None else (0 if a.kubernetes else min(3, a.runs))
    if heal > 0:
        report.heal[impl.name], owner = heal_runs(impl, lab, heal, owner)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="runs per fault and implementation (default 10)")
    p.add_argument("--keepalive", default="100ms")
    p.add_argument("--deadtime", default="300ms")
    p.add_argument("--warntime", default=None, help="default: halfway between keepalive and deadtime")
    p.add_argument("--initdead", default="2")
    p.add_argument("--cpu-seconds", type=float, default=60.0, help="idle CPU/memory sampling (0: skip)")
    p.add_argument(
        "--heal-runs", type=int, default=None, help="partition-heal runs (default min(3, runs); 0: skip)"
    )
    p.add_argument("--only", choices=("hacluster", "heartbeat"), help="measure one implementation only")
    p.add_argument(
        "--kubernetes", action="store_true", help="our agents with Lease arbitration on a real kube-apiserver"
    )
    p.add_argument(
        "--vm",
        action="store_true",
        help="whole machines: the VM cluster of tests/support/vmcluster.py (bench/vmfailover.py)",
    )
    p.add_argument("--faults", default=None, help="with --vm: a comma-separated subset of the faults")
    a = p.parse_args(argv)
    if a.vm:
        sys.path.insert(0, str(ROOT / "bench"))
        import vmfailover

        faults = tuple(a.faults.split(",")) if a.faults else vmfailover.FAULTS
        unknown = set(faults) - set(vmfailover.FAULTS)
        if unknown:
            p.error(f"unknown --faults {sorted(unknown)}; choose from {', '.join(vmfailover.FAULTS)}")
        # SIGTERM/SIGHUP/Ctrl-C: unwind through the cluster's with blocks (guests, control plane)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return vmfailover.main(a.runs, faults, say)
    if a.kubernetes:
        a.only = "hacluster"
    keep, dead = parse_duration_ms(a.keepalive), parse_duration_ms(a.deadtime)
    warntime = a.warntime or f"{(keep + dead) // 2}ms"
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if a.only != "hacluster" and (why := heartbeat_available()):
        print(f"cannot run the real Heartbeat: {why}", file=sys.stderr)
        return 2
    # SIGTERM/SIGHUP: unwind through the finally blocks below (and the harness's own cleanups)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if started with it ignored
    lab = Lab(keepalive=a.keepalive, deadtime=a.deadtime, warntime=warntime, initdead=a.initdead,
              auto_failback="off", vip_agent="IPaddr2", media="ucast")  # fmt: skip
    token = register_cleanup(lab.close)
    report = Report()
    try:
        lab.build()
        say(f"lab {lab.prefix}: n1 {NODE_ADDR['n1']}, n2 {NODE_ADDR['n2']}, VIP {VIP}")
        impls: list[Callable[[Lab], Impl]] = []
        if a.kubernetes:
            impls += [OursKube, OursKubeBefore]
        elif a.only != "heartbeat":
            impls.append(Ours)
        if a.only != "hacluster":
            impls.append(Theirs)
        for make in impls:
            impl = make(lab)
            try:
                measure(impl, lab, a, report)
            finally:
                impl.stop()
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        lab.close()
        unregister_cleanup(token)
    print_report(report, a, warntime)
    print(result_line(report, a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
