"""The whole product against a real kube-apiserver: the operator (as a process, with the RBAC it
ships) renders the node configs from an HACluster; two real agents in network namespaces read
them (as the DaemonSet's pods would), arbitrate through the ownership Lease, and carry out a
declared switchover and a failover; status and Events tell the story. No kubelet is needed: the
test starts what the DaemonSet would run, with the ServiceAccount token the agents' RBAC grants."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver.conftest import ApiServerBinaries
from tests.support import hosttools
from tests.support.eventually import eventually
from tests.support.fullstack import KEY, NAME, NODES, NS, FullStack, full_stack

pytestmark = [pytest.mark.apiserver, pytest.mark.netns]


class Stack(FullStack):
    """The full stack plus the user's tools: kubectl and our `kubectl ha` plugin."""

    kubectl: Path

    def sh(self, *args: str) -> str:
        return subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.cp.kubeconfig), *args],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    def plugin(self, *args: str) -> str:
        """`kubectl ha …` (our plugin) as a user runs it, with the admin kubeconfig."""
        return subprocess.run(
            [sys.executable, "-m", "hacluster_operator.kubectl_ha", "--kubeconfig", str(self.cp.kubeconfig),
             "-n", NS, *args],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip


@pytest.fixture
def stack(apiserver_binary: ApiServerBinaries) -> Iterator[Stack]:
    if reason := hosttools.lab_unavailable():
        pytest.skip(reason)
    with full_stack(apiserver_binary.apiserver, Stack) as st:
        st.kubectl = apiserver_binary.tools.kubectl
        yield st


def start_agents(st: Stack) -> None:
    st.create_cluster()
    st.mount_config()
    for node in NODES:
        st.start_agent(node)


def test_operator_and_agents_switchover_then_failover(stack: Stack) -> None:
    st = stack
    start_agents(st)
    st.lab.wait_for("n1", timeout=30)
    assert st.lease() == ("n1", 1)

    def ready() -> dict[str, Any]:
        status = st.hac()["status"]
        assert status["owner"] == "n1" and status["epoch"] == 1
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True", status
        return status

    eventually(ready, what="status Ready with owner n1")

    def printed() -> None:
        table = st.sh("get", "hac", "-n", NS)
        assert "n1" in table and "Ready" in table, (table, st.hac()["status"])

    eventually(printed, what="kubectl get hac shows owner and state")
    assert not st.events("FailedOver"), "a first acquisition is not a failover"

    # Only the heartbeat link is cut: the Lease proves the owner alive, nothing moves.
    st.lab.deafen("n1")
    st.lab.deafen("n2")

    def link_down() -> None:
        status = st.hac()["status"]
        conds = {c["type"]: c for c in status["conditions"]}
        assert conds["HeartbeatLinkDown"]["status"] == "True", conds
        assert status["owner"] == "n1" and status["epoch"] == 1

    eventually(link_down, what="HeartbeatLinkDown with the owner unchanged")
    assert st.lab.holds_vip("n1") and not st.lab.holds_vip("n2") and st.lease() == ("n1", 1)
    st.lab.deafen("n1", on=False)
    st.lab.deafen("n2", on=False)
    eventually(ready, what="Ready again once the link heals")

    # A declared switchover: one field in the spec, carried out gracefully through the Lease.
    st.plugin("switchover", NAME, "--to", "n2")  # kubectl ha: patches the spec, the GitOps way
    st.lab.wait_for("n2", timeout=20)
    eventually(lambda: assert_eq(st.lease(), ("n2", 2)), what="Lease moved to n2")
    eventually(lambda: assert_true(st.events("SwitchoverDone")), what="SwitchoverDone event")
    assert not st.lab.holds_vip("n1")

    # The owner dies: the agents fail over by themselves; the operator reports it.
    st.plugin("switchover", NAME, "--clear")
    st.lab.kill_agent("n2", signal.SIGKILL)
    st.lab.cut("n2")
    st.lab.wait_for("n1", timeout=15)
    eventually(lambda: assert_eq(st.lease(), ("n1", 3)), what="Lease back on n1")

    def failed_over() -> str:
        msgs = st.events("FailedOver")
        assert msgs
        return msgs[0]

    msg = eventually(failed_over, what="FailedOver event")
    assert "n2" in msg and "n1" in msg and "epoch 3" in msg
    status = eventually(lambda: owner_is(st, "n1", 3), what="status owner n1 epoch 3")
    view = st.plugin("status", NAME)
    assert "n1" in view and "3" in view and "n2" in view, view
    assert KEY not in json.dumps(status)
    assert KEY not in (st.lab.root / "operator.log").read_text(errors="replace")


def owner_is(st: Stack, node: str, epoch: int) -> dict[str, Any]:
    status = st.hac()["status"]
    assert status["owner"] == node and status["epoch"] == epoch, status
    return dict(status)


def assert_eq(a: object, b: object) -> None:
    assert a == b, (a, b)


def assert_true(a: object) -> None:
    assert a


def test_owner_container_pid1_killed_goes_dark_before_the_peer_answers(stack: Stack) -> None:
    """Issue 11's fourth row: the owner's agent runs as PID 1 of its own PID namespace, as in a
    container, and is SIGKILLed: the kernel kills every process of the namespace with it, its fence
    guard and its service included (2.2 s of two owners in the full stack before). Nothing is left
    to remove the VIP, whose kernel lifetime is a whole second; the kernel fence drops its traffic
    at the engine's deadline, before the peer can take the Lease: no ARP request is answered twice."""
    st = stack
    st.lab.agent_wrapper = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]
    start_agents(st)
    st.lab.wait_for("n1", timeout=30)
    eventually(lambda: assert_eq(st.lease(), ("n1", 1)), what="Lease on n1")
    wrapper = st.lab.procs["n1"]
    pid1 = int(Path(f"/proc/{wrapper.pid}/task/{wrapper.pid}/children").read_text().split()[0])
    in_ns = set(st.lab.netns_pids("n1"))
    assert pid1 in in_ns and len(in_ns) >= 3, "the agent, its fence guard and the service run in n1"
    probe = st.lab.arp_probe(count=200, interval=0.01)  # ~2 s of ARP requests from the client
    time.sleep(0.3)
    os.kill(pid1, signal.SIGKILL)  # PID 1 of the namespace: the kernel kills all of it
    t_kill = time.time()
    wrapper.wait(10)
    left = set(st.lab.netns_pids("n1")) & in_ns
    assert not left, f"processes of the killed PID namespace survived: {left}"
    t_n2 = st.lab.wait_for("n2", timeout=15)
    out, _ = probe.communicate(timeout=30)
    summary = out.splitlines()[-2] if len(out.splitlines()) >= 2 else out
    print(f"\nPID 1 killed: n2 answered {(t_n2 - t_kill) * 1000:.0f} ms later; arping: {summary}")
    assert st.lab.extra_arp_answers(out) == 0, f"two MACs answered one ARP request:\n{out}"
    eventually(lambda: assert_eq(st.lease(), ("n2", 2)), what="Lease on n2")
