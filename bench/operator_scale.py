"""How the operator keeps up with many HAClusters, on a real kube-apiserver (issue 12).

    python bench/operator_scale.py --clusters N [--window 30] [--samples 20]

Starts a real kube-apiserver (tests/support/controlplane.py, on 127.0.0.1), installs the CRD and the
operator's RBAC as shipped, creates N HAClusters in one namespace (no agents: each node's report
Lease is written once by this script, fresh for an hour, as two healthy agents would keep it), runs
the operator as a process (`python -m hacluster_operator`, its production defaults, its
ServiceAccount), waits until every HACluster has a status, then measures:

- steady state over `--window` seconds: API requests per second the server served (its
  `apiserver_request_total`, resource requests only; this script sends none meanwhile), the
  operator's CPU (share of one core) and RSS;
- a declared switchover, `--samples` times on distinct HAClusters (the Lease held by the first
  node, both healthy): from the patch of `spec.failover.switchoverTo: <second>` to the
  `hacluster.dev/handover-to: <second>`
  annotation on its Lease, and to a status that has seen the new generation, p50/p99.

Ends with one line: RESULT clusters=N req_per_s=… operator_cpu_pct=… operator_rss_mb=…
decision_p50_ms=… decision_p99_ms=… status_p50_ms=… status_p99_ms=…

Figures, not pass/fail: the issue's targets at 1,000 HAClusters are a switchover decision p99 under
200 ms, under 1 request per second per 100 HAClusters, and under 10 % of a core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "api"), str(ROOT / "node-agent"), str(ROOT / "operator")]

import yaml  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from kubernetes import utils as k8s_utils  # noqa: E402
from kubernetes import watch as k8s_watch  # noqa: E402

from hacluster_api.annotations import HANDOVER_TO, REPORT  # noqa: E402
from hacluster_api.models import GROUP, PLURAL, VERSION  # noqa: E402
from tests.support.controlplane import ControlPlane, find_or_build_apiserver, free_port  # noqa: E402
from tests.support.eventually import crd_established, wait_until  # noqa: E402

NS, OPERATOR_NS = "scale", "hacluster-system"
OPERATOR_REQUESTS = re.compile(
    r"^hacluster_operator_(api_requests|renders|cache_behind)_total\{([^}]*)\} (\S+)$", re.M
)
REQUESTS = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$", re.M)


def nodes_of(name: str) -> tuple[str, str]:
    """Each HACluster on its own pair of nodes (two on the same nodes would need their own ports)."""
    return f"{name}-n1", f"{name}-n2"


def cluster(name: str) -> dict[str, Any]:
    a, b = nodes_of(name)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HACluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "nodes": [a, b],
            "preferredNode": a,
            "heartbeat": {"media": {"udp": [{"interface": "eth0", "mode": "broadcast"}]}},
            "auth": {"secretRef": {"name": "scale-auth"}},
            "resources": [{"ip": {"address": "192.0.2.100/24", "interface": "eth0"}}],
            "failover": {"autoFailback": False},
        },
    }


def report(node: str, peer: str, holds: str) -> str:
    return json.dumps(
        {
            "state": "active",
            "holds": holds,
            "epoch": 1,
            "peer": {"node": peer, "state": "active", "links": {"eth0": {"up": True}}},
        }
    )


def requests_served(cp: ControlPlane) -> float:
    """The server's count of resource requests so far (non-resource ones, such as this scrape, not)."""
    status, text = cp.get("/metrics", timeout=30.0)
    assert status == 200, status
    total = 0.0
    for labels, value in REQUESTS.findall(text):
        if re.search(r'resource="[^"]+"', labels):
            total += float(value)
    return total


QUIET_S = 30.0


def renders(port: int) -> float:
    """How many times the operator has rendered an HACluster's objects so far."""
    return sum(n for k, n in operator_requests(port).items() if k.startswith("(render"))


def operator_requests(port: int) -> dict[str, float]:
    """The operator's count of the requests it sent (hacluster_operator_api_requests_total), by
    client, verb and resource: where the server's figure comes from."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for metric, labels, value in OPERATOR_REQUESTS.findall(text):
        f = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = (
            f"{f['client']} {f['verb']} {f['resource']}" if metric == "api_requests"
            else f"(render: {f['reason']})" if metric == "renders"
            else f"(cache behind: {f['kind']})"
        )  # fmt: skip
        out[key] = out.get(key, 0.0) + float(value)
    return out


GC_LINE = re.compile(
    r"^hacluster_operator_gc_pause_seconds_(count|sum|bucket)\{([^}]*)\} ([0-9.e+-]+)$", re.M
)


def gc_pauses(port: int) -> dict[str, dict[str, float]]:
    """The operator's garbage-collection pauses so far, by generation: count, sum (s) and how
    many lasted over 50 ms (its hacluster_operator_gc_pause_seconds histogram)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, dict[str, float]] = {}
    for part, labels, value in GC_LINE.findall(text):
        f = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        g = out.setdefault(f["generation"], {"count": 0.0, "sum": 0.0, "le50ms": 0.0})
        if part != "bucket":
            g[part] = float(value)
        elif f.get("le") == "0.05":
            g["le50ms"] = float(value)
    for g in out.values():
        g["over50ms"] = g["count"] - g["le50ms"]
    return out


def gc_delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> str:
    """One line: per generation, collections, their total and the ones over 50 ms in a window."""
    parts = []
    for gen in sorted(after):
        a, b = after[gen], before.get(gen, {})
        n = a["count"] - b.get("count", 0.0)
        if n:
            parts.append(f"gen{gen} {n:.0f} ({1000 * (a['sum'] - b.get('sum', 0.0)):.0f} ms, "
                         f"{a['over50ms'] - b.get('over50ms', 0.0):.0f} over 50 ms)")  # fmt: skip
    return ", ".join(parts) or "none"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.5) -> float:
    """Seconds until `check` holds (the tests' one polling loop)."""
    start = time.monotonic()
    wait_until(check, timeout, interval=interval, message=what)
    return time.monotonic() - start


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class LeaseWatch:
    """When each Lease of the namespace first carried handover-to: <node> (a watch, not polling)."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.leases = k8s.CoordinationV1Api(api)
        self.seen: dict[tuple[str, str], float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            w = k8s_watch.Watch()
            try:
                for event in w.stream(self.leases.list_namespaced_lease, NS, timeout_seconds=30):
                    lease = event["object"]
                    want = (lease.metadata.annotations or {}).get(HANDOVER_TO)
                    if want:
                        self.seen.setdefault((lease.metadata.name, want), time.monotonic())
                    if self.stop.is_set():
                        break
            except Exception:  # the stream ends on a timeout: watch again
                time.sleep(0.1)


class Renewals:
    """The agents' renewals of their report Leases (each node's, every `every` seconds, as
    hacluster_agent/kube/reporter.py does), sent by a few threads: the watch events every
    operator replica receives in steady state. `sent` counts the ones the server accepted."""

    def __init__(self, api: k8s.ApiClient, names: list[str], every: float, threads: int = 8) -> None:
        self.leases = k8s.CoordinationV1Api(api)
        self.names, self.every = names, every
        self.sent = 0
        self.failed = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(names[i::threads],), daemon=True) for i in range(threads)
        ]
        for t in self.threads:
            t.start()

    def _run(self, names: list[str]) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            for name in names:
                if self.stop.is_set():
                    return
                now = dt.datetime.now(dt.UTC)
                try:
                    self.leases.patch_namespaced_lease(name, NS, {"spec": {"renewTime": now}})
                    with self.lock:
                        self.sent += 1
                except Exception:
                    with self.lock:
                        self.failed += 1
            self.stop.wait(max(0.0, self.every - (time.monotonic() - start)))

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clusters", type=int, required=True)
    p.add_argument("--window", type=float, default=30.0, help="seconds of steady state measured")
    p.add_argument("--samples", type=int, default=20, help="switchovers timed (distinct HAClusters)")
    p.add_argument("--settle", type=float, default=20.0, help="seconds after every status is written")
    p.add_argument(
        "--renew-every",
        type=float,
        default=0.0,
        help="renew every report Lease this often (seconds; the agents: 1), from the steady window on; "
        "0: the reports stay as written",
    )
    p.add_argument(
        "--tree",
        type=Path,
        default=ROOT,
        help="run the operator (its CRD and RBAC too) of this checkout: an earlier commit's worktree "
        "gives the 'before' figures",
    )
    a = p.parse_args(argv)
    binary = find_or_build_apiserver()
    work = Path(tempfile.mkdtemp(prefix="hacluster-scale-"))
    with ControlPlane(binary, log_path=work / "apiserver.log") as cp:
        api = cp.api_client()
        core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
        leases = k8s.CoordinationV1Api(api)
        tree = a.tree.resolve()
        crd = yaml.safe_load((tree / "crds" / "hacluster.dev_haclusters.yaml").read_text())
        k8s.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
        for ns in (NS, OPERATOR_NS):
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
        rbac = list(yaml.safe_load_all((tree / "operator" / "hacluster_operator" / "rbac.yaml").read_text()))
        k8s_utils.create_from_yaml(api, yaml_objects=[d for d in rbac if d])
        crd_established(api, f"{PLURAL}.{GROUP}")
        kubeconfig = cp.service_account_kubeconfig(OPERATOR_NS, "hacluster-operator", create=False)
        core.create_namespaced_secret(
            NS,
            k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="scale-auth"), string_data={"authkeys": "scale-key"}),
        )
        names = [f"c{i:04d}" for i in range(a.clusters)]
        t0 = time.monotonic()
        now = dt.datetime.now(dt.UTC)
        for name in names:
            custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, cluster(name))
            first, second = nodes_of(name)
            for node, peer, holds in ((first, second, "local"), (second, first, "none")):
                leases.create_namespaced_lease(
                    NS,
                    k8s.V1Lease(
                        metadata=k8s.V1ObjectMeta(
                            name=f"{name}-{node}", annotations={REPORT: report(node, peer, holds)}
                        ),
                        spec=k8s.V1LeaseSpec(
                            holder_identity=node, lease_duration_seconds=3600, renew_time=now
                        ),
                    ),
                )
        print(
            f"created {a.clusters} HAClusters and their nodes' reports in {time.monotonic() - t0:.1f}s",
            flush=True,
        )

        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "KUBECONFIG": str(kubeconfig),
            "HACLUSTER_AGENT_IMAGE": "registry.example/hacluster-agent:bench",
            "HACLUSTER_OPERATOR_NAMESPACE": OPERATOR_NS,
            "PYTHONPATH": os.pathsep.join(str(tree / d) for d in ("api", "node-agent", "operator")),
            "PYTHONUNBUFFERED": "1",
        }
        log = (work / "operator.log").open("ab")
        metrics_port = free_port("127.0.0.1")
        operator = subprocess.Popen(
            [sys.executable, "-m", "hacluster_operator", "--namespace", NS, "--identity", "op-1",
             "--metrics-port", str(metrics_port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work,
        )  # fmt: skip
        log.close()
        try:

            def all_have_status() -> bool:
                items = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"]
                return (
                    sum(1 for i in items if (i.get("status") or {}).get("observedGeneration")) == a.clusters
                )

            took = wait("every HACluster's status", all_have_status, timeout=60 + a.clusters * 2.0)
            print(f"every HACluster has a status {took:.1f}s after the operator started", flush=True)
            apps = k8s.AppsV1Api(api)

            def all_rolled_out() -> bool:  # the DaemonSet comes last (ensure_all)
                return len(apps.list_namespaced_daemon_set(NS).items) == a.clusters

            took += wait("every HACluster's DaemonSet", all_rolled_out, timeout=60 + a.clusters * 2.0)
            print(f"every HACluster's objects are made {took:.1f}s after the operator started", flush=True)
            # The operator has written them, but its watches may still be bringing the events of
            # the burst (at 1,000 HAClusters, a minute behind): a look at an HACluster whose
            # objects its cache does not show yet renders them again. Quiet: no render for 30 s.
            quiet_since, last, t_quiet = time.monotonic(), renders(metrics_port), time.monotonic()
            while time.monotonic() - quiet_since < QUIET_S:
                time.sleep(2.0)
                now_renders = renders(metrics_port)
                if now_renders != last:
                    quiet_since, last = time.monotonic(), now_renders
                if time.monotonic() - t_quiet > 60 + a.clusters * 1.0:
                    raise TimeoutError(f"the operator still renders after {time.monotonic() - t_quiet:.0f} s")
            took += time.monotonic() - t_quiet
            print(
                f"the operator quiet (no render for {QUIET_S:.0f}s) {took:.1f}s after it started", flush=True
            )

            # every sampled HACluster: its Lease held by n1 (epoch 1), as its agents would leave it
            sampled = names[: a.samples] if a.samples <= len(names) else names
            for name in sampled:
                lease = leases.read_namespaced_lease(name, NS)
                annotations = {
                    k: v for k, v in (lease.metadata.annotations or {}).items() if not k.startswith(GROUP)
                }
                lease.metadata.annotations = annotations
                lease.spec.holder_identity, lease.spec.lease_transitions = nodes_of(name)[0], 1
                lease.spec.acquire_time = lease.spec.renew_time = dt.datetime.now(dt.UTC)
                leases.replace_namespaced_lease(name, NS, lease)
            renewals = None
            if a.renew_every > 0:
                reports = [f"{n}-{node}" for n in names for node in nodes_of(n)]
                renewals = Renewals(api, reports, a.renew_every)
            time.sleep(a.settle)
            renewed0 = renewals.sent if renewals else 0

            sent0 = operator_requests(metrics_port)
            before, cpu0, w0 = requests_served(cp), cpu_seconds(operator.pid), time.monotonic()
            time.sleep(a.window)
            after, cpu1, w1 = requests_served(cp), cpu_seconds(operator.pid), time.monotonic()
            sent1 = operator_requests(metrics_port)
            if renewals is not None:
                rate = (renewals.sent - renewed0) / (w1 - w0)
                print(f"  report renewals in that window: {rate:.0f}/s ({renewals.failed} failed; the agents "
                      f"would send {len(reports) / a.renew_every:.0f}/s), in the requests/s below", flush=True)  # fmt: skip
            req_per_s = (after - before) / (w1 - w0)
            cpu_pct = 100 * (cpu1 - cpu0) / (w1 - w0)
            rss = rss_mb(operator.pid)
            print(f"steady state over {w1 - w0:.0f}s: {req_per_s:.1f} requests/s, operator {cpu_pct:.1f}% of a "
                  f"core, RSS {rss:.0f} MB", flush=True)  # fmt: skip
            by_kind = sorted(((sent1[k] - sent0.get(k, 0.0), k) for k in sent1), reverse=True)
            print("  the operator's own requests in that window (its metrics), by client, verb and resource: "
                  + (", ".join(f"{k} {n / (w1 - w0):.2f}/s" for n, k in by_kind if n) or "none"), flush=True)  # fmt: skip

            watcher = LeaseWatch(api)
            gc0 = gc_pauses(metrics_port)
            decisions: list[float] = []
            statuses: list[float] = []
            rounds = 0
            while len(decisions) < a.samples:
                for name in sampled:
                    if len(decisions) >= a.samples:
                        break
                    first, second = nodes_of(name)
                    target = second if rounds % 2 == 0 else first
                    holder = first if target == second else second
                    if rounds:
                        lease = leases.read_namespaced_lease(name, NS)
                        lease.spec.holder_identity = holder
                        leases.replace_namespaced_lease(name, NS, lease)
                        time.sleep(0.2)
                    patched = custom.patch_namespaced_custom_object(
                        GROUP, VERSION, NS, PLURAL, name, {"spec": {"failover": {"switchoverTo": target}}}
                    )
                    sent = time.monotonic()
                    generation = patched["metadata"]["generation"]
                    wait(
                        f"{name}: handover-to {target}",
                        lambda n=name, t=target: (n, t) in watcher.seen,
                        120,
                        interval=0.01,  # the status is timed from here on: poll finely (was 0.5 s)
                    )
                    decisions.append((watcher.seen[(name, target)] - sent) * 1000)

                    def status_seen(n: str = name, g: int = generation) -> bool:
                        got = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, n)
                        return int((got.get("status") or {}).get("observedGeneration") or 0) >= g

                    start = time.monotonic()
                    while not status_seen():
                        if time.monotonic() - start > 120:
                            raise TimeoutError(f"{name}: status of generation {generation}")
                        time.sleep(0.02)
                    statuses.append((time.monotonic() - sent) * 1000)
                    watcher.seen.pop((name, target), None)
                rounds += 1
            watcher.stop.set()
            if renewals is not None:
                renewals.close()
            print("  the samples (ms, in order): " + " ".join(f"{d:.0f}" for d in decisions))
            print(
                "  the operator's garbage collections while sampling: "
                + gc_delta(gc0, gc_pauses(metrics_port))
            )
            d50, d99 = percentile(decisions, 50), percentile(decisions, 99)
            s50, s99 = percentile(statuses, 50), percentile(statuses, 99)
            print(f"switchover to the Lease annotation, {len(decisions)} samples: p50 {d50:.0f} ms, p99 {d99:.0f} ms "
                  f"(mean {statistics.mean(decisions):.0f})")  # fmt: skip
            print(f"switchover to the status: p50 {s50:.0f} ms, p99 {s99:.0f} ms")
            alive = operator.poll() is None
            if not alive:
                print(
                    f"the operator exited ({operator.returncode}) during the run: see {work / 'operator.log'}"
                )
            print(
                f"RESULT clusters={a.clusters} req_per_s={req_per_s:.1f} operator_cpu_pct={cpu_pct:.1f} "
                f"operator_rss_mb={rss:.0f} decision_p50_ms={d50:.0f} decision_p99_ms={d99:.0f} "
                f"status_p50_ms={s50:.0f} status_p99_ms={s99:.0f}"
            )
            return 0 if alive else 1
        except BaseException:
            kept = Path(tempfile.mkdtemp(prefix="hacluster-scale-failed-")) / "operator.log"
            shutil.copy(work / "operator.log", kept)
            print(f"operator log (tail; whole: {kept}):\n{kept.read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            if operator.poll() is None:
                operator.terminate()
                try:
                    operator.wait(15)
                except subprocess.TimeoutExpired:
                    operator.kill()
                    operator.wait(5)
            api.close()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
