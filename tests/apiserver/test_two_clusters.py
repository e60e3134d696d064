"""Two HAClusters on the same two nodes, served by one operator: each with its own heartbeat port,
agents' metrics port and VIP, four agents (two per node). Each pair fails over and switches over
on its own: what happens to one never moves the other's VIP nor changes its Lease."""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from hacluster_api.models import GROUP, PLURAL, VERSION
from tests.apiserver.conftest import ApiServerBinaries
from tests.support import hosttools
from tests.support.eventually import eventually
from tests.support.fullstack import NODES, NS, FullStack, cluster_body, full_stack
from tests.support.lab import VIP

pytestmark = [pytest.mark.apiserver, pytest.mark.netns]

SECOND, SECOND_VIP = "second", "192.0.2.101"


def second_body() -> dict[str, Any]:
    """The lab's HACluster again, on other ports, with its own VIP and n2 preferred."""
    body = copy.deepcopy(cluster_body())
    body["metadata"]["name"] = SECOND
    spec = body["spec"]
    spec["preferredNode"] = "n2"
    spec["heartbeat"]["media"]["udp"][0]["port"] = 695
    spec["agentMetricsPort"] = 9695
    spec["resources"] = [{"ip": {"address": f"{SECOND_VIP}/24", "interface": "eth0"}}]
    return body


@pytest.fixture
def pair(apiserver_binary: ApiServerBinaries) -> Iterator[tuple[FullStack, FullStack]]:
    if reason := hosttools.lab_unavailable():
        pytest.skip(reason)
    with full_stack(apiserver_binary.apiserver, FullStack) as first:
        second = first.sibling(SECOND)
        try:
            yield first, second
        finally:
            for node in NODES:
                print(f"---- {SECOND} agent on {node} ----\n" + first.lab.agent_log(node, SECOND)[-3000:])
            second.close()


def vip_owners(st: FullStack, vip: str) -> list[str]:
    return [n for n in NODES if st.lab.holds_vip(n, vip)]


def ready(st: FullStack) -> tuple[str, int]:
    """The pair settled: one holder of the Lease, its VIP on that node only, status Ready."""
    holder, epoch = st.lease()
    vip = VIP if st.instance == "" else SECOND_VIP
    assert holder in NODES and vip_owners(st, vip) == [holder], (holder, vip_owners(st, vip))
    status = st.hac().get("status") or {}
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}
    assert status.get("owner") == holder and conditions.get("Ready", ("",))[0] == "True", status
    assert "PortConflict" not in str(conditions), conditions
    return holder, epoch


def held_by(st: FullStack, node: str) -> tuple[str, int]:
    got = ready(st)
    assert got[0] == node, f"held by {got[0]}, not {node}"
    return got


def other(node: str) -> str:
    return "n2" if node == "n1" else "n1"


def test_two_haclusters_on_the_same_nodes_fail_over_independently(pair: tuple[FullStack, FullStack]) -> None:
    first, second = pair
    first.create_cluster()  # its auth Secret too: the second uses the same one
    first.custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, second_body())
    for st in (first, second):
        st.mount_config()
    for node in NODES:
        first.start_agent(node)
        second.start_agent(node)

    a_holder, a_epoch = eventually(lambda: ready(first), timeout=40, what="the first pair Ready")
    b_holder, b_epoch = eventually(lambda: ready(second), timeout=40, what="the second pair Ready")

    # The first pair's owner agent dies (SIGKILL, that agent only): its VIP moves to the other
    # node; the second pair, whose agents on that node still run, does not notice.
    lab = first.lab
    killed = lab.procs[a_holder]
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(10)
    moved = eventually(
        lambda: held_by(first, other(a_holder)),
        timeout=30,
        what="the first pair failed over",
    )
    assert moved[1] > a_epoch
    assert ready(second) == (b_holder, b_epoch), "the second pair moved with the first"
    first.start_agent(a_holder)
    eventually(
        lambda: lab.agents_agree(other(a_holder)) or {}["x"], timeout=30, what="the first pair whole again"
    )

    # A declared switchover of the second pair moves only the second pair.
    first_now = ready(first)
    second.patch_failover(switchoverTo=other(b_holder))
    switched = eventually(
        lambda: held_by(second, other(b_holder)),
        timeout=30,
        what="the second pair switched over",
    )
    assert switched[1] > b_epoch
    assert ready(first) == first_now, "the first pair moved with the second"
