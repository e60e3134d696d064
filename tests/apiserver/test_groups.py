"""Two resource groups in one HACluster (spec.groups, Heartbeat's active/active haresources): one
home on each node, one agent per node running both, each group with its own Lease. Each group
fails over, switches over and fails back on its own: a move of one never touches the other's VIP
nor its Lease."""

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
from tests.support.fullstack import NAME, NODES, NS, FullStack, cluster_body, full_stack
from tests.support.lab import VIP

pytestmark = [pytest.mark.apiserver, pytest.mark.netns]

WEB_VIP = "192.0.2.101"
VIPS = {"db": VIP, "web": WEB_VIP}
HOMES = {"db": "n1", "web": "n2"}


def groups_body(web_failback: bool = True) -> dict[str, Any]:
    """The lab's HACluster as two groups: db (the VIP and demo-web, home n1, no failback) and web
    (a second VIP, home n2, failing back)."""
    body = copy.deepcopy(cluster_body())
    spec = body["spec"]
    resources = spec.pop("resources")
    spec.pop("preferredNode")
    spec["groups"] = [
        {"name": "db", "preferredNode": "n1", "resources": resources, "autoFailback": False},
        {
            "name": "web",
            "preferredNode": "n2",
            "resources": [{"ip": {"address": f"{WEB_VIP}/24", "interface": "eth0"}}],
            "autoFailback": web_failback,
        },
    ]
    return body


@pytest.fixture
def st(apiserver_binary: ApiServerBinaries) -> Iterator[FullStack]:
    if reason := hosttools.lab_unavailable():
        pytest.skip(reason)
    with full_stack(apiserver_binary.apiserver, FullStack) as st:
        yield st


def lease_of(st: FullStack, group: str) -> tuple[str, int]:
    spec = st.leases.read_namespaced_lease(f"{NAME}-{group}", NS).spec
    assert spec is not None
    return spec.holder_identity or "", spec.lease_transitions or 0


def held(st: FullStack, group: str, node: str) -> tuple[str, int]:
    """The group held by `node`: its Lease, its VIP there only, the status saying so."""
    holder, epoch = lease_of(st, group)
    owners = [n for n in NODES if st.lab.holds_vip(n, VIPS[group])]
    assert (holder, owners) == (node, [node]), (group, holder, owners)
    status = st.hac().get("status") or {}
    mine = {g["name"]: g for g in status.get("groups", [])}.get(group) or {}
    assert mine.get("owner") == node and mine.get("epoch") == epoch, status
    return holder, epoch


def both_home(st: FullStack) -> dict[str, int]:
    epochs = {g: held(st, g, HOMES[g])[1] for g in VIPS}
    status = st.hac()["status"]
    assert status["state"] == "Ready" and {g["state"] for g in status["groups"]} == {"Ready"}, status
    return epochs


def patch_group(st: FullStack, name: str, **fields: Any) -> None:
    """Change one group's fields (a merge-patch replaces the whole list: send it whole)."""
    groups = copy.deepcopy(st.hac()["spec"]["groups"])
    for g in groups:
        if g["name"] == name:
            g.update(fields)
            for k in [k for k, v in fields.items() if v is None]:
                del g[k]
    st.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME, {"spec": {"groups": groups}})


def test_two_groups_one_home_on_each_node_move_on_their_own(st: FullStack) -> None:
    st.create_cluster(groups_body())
    st.mount_config()
    for node in NODES:
        st.start_agent(node)
    epochs = eventually(lambda: both_home(st), timeout=40, what="db on n1 and web on n2, Ready")

    # A declared switchover of web to n1: web moves, db stays as it was.
    patch_group(st, "web", switchoverTo="n1")
    moved = eventually(lambda: held(st, "web", "n1"), timeout=30, what="web switched over to n1")
    assert moved[1] > epochs["web"]
    assert held(st, "db", "n1")[1] == epochs["db"], "db moved with web"

    # The switchover withdrawn: web fails back home (its autoFailback), db untouched.
    patch_group(st, "web", switchoverTo=None)
    back = eventually(lambda: held(st, "web", "n2"), timeout=30, what="web failed back to n2")
    assert back[1] > moved[1]
    assert held(st, "db", "n1")[1] == epochs["db"], "db moved with web"

    # n1's agent dies: db fails over to n2; web, already there, keeps its Lease and VIP.
    killed = st.lab.procs["n1"]
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(10)
    over = eventually(lambda: held(st, "db", "n2"), timeout=30, what="db failed over to n2")
    assert over[1] > epochs["db"]
    assert held(st, "web", "n2") == back, "web moved when n1 died"

    # n1 back: db stays on n2 (no failback for db), and both groups run side by side again.
    st.start_agent("n1")

    def rejoined() -> None:
        nodes = {n["name"]: n["state"] for n in st.hac()["status"]["nodes"]}
        assert nodes == {"n1": "active", "n2": "active"}, nodes

    eventually(rejoined, timeout=30, what="n1 rejoined")
    assert held(st, "db", "n2") == over and held(st, "web", "n2") == back
    assert eventually(lambda: st.hac()["status"]["state"] == "Ready" or {}["x"], what="Ready again")
    failed = [m for m in st.events("FailedOver") if m.startswith("group db: ")]
    assert failed, st.events("FailedOver")
