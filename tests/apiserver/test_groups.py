"""Heartbeat's active/active pair (haresources with one group homed on each node) through
`hactl import` into one HACluster (spec.groups): one agent per node runs both groups, each group
with its own Lease. Each group fails over, switches over and fails back on its own: a move of one
never touches the other's VIP nor its Lease."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from hacluster_api.models import GROUP, MAIN_GROUP, PLURAL, VERSION
from tests.apiserver.conftest import ApiServerBinaries
from tests.support import hosttools, tree
from tests.support.eventually import eventually
from tests.support.fullstack import KEY, NAME, NODES, NS, FullStack, cluster_body, full_stack
from tests.support.lab import VIP

pytestmark = [pytest.mark.apiserver, pytest.mark.netns]

WEB_VIP = "192.0.2.101"
DB, WEB = "n1-group", "n2-group"  # `hactl import` names a group after its home node
VIPS = {DB: VIP, WEB: WEB_VIP}
HOMES = {DB: "n1", WEB: "n2"}

HA_CF = """\
keepalive 100ms
deadtime 300ms
warntime 200ms
initdead 2
udpport 694
ucast eth0 192.0.2.11
ucast eth0 192.0.2.12
auto_failback off
node n1
node n2
"""
HARESOURCES = f"""\
n1 IPaddr2::{VIP}/24/eth0 demo-web
n2 IPaddr2::{WEB_VIP}/24/eth0
"""


def imported(tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Heartbeat pair running one group on each node (active/active), as `hactl import` makes it
    an HACluster and its auth Secret (the documents it prints, as `kubectl apply` would read them)."""
    d = tmp / "ha.d"
    d.mkdir()
    (d / "ha.cf").write_text(HA_CF)
    (d / "haresources").write_text(HARESOURCES)
    fd = os.open(d / "authkeys", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, f"auth 1\n1 sha1 {KEY}\n".encode())
    os.close(fd)
    out = subprocess.run(
        [sys.executable, "-m", "hacluster_agent.cli.hactl", "import", str(d), "--name", NAME, "--namespace", NS,
         "--secret-name", "demo-auth", "--addresses", "n1=192.0.2.11,n2=192.0.2.12"],
        capture_output=True, text=True, env=tree.environ(), check=True,
    )  # fmt: skip
    docs = {d["kind"]: d for d in yaml.safe_load_all(out.stdout) if d}
    return docs["HACluster"], docs["Secret"]


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


def test_active_active_haresources_imports_and_each_group_moves_on_its_own(
    st: FullStack, tmp_path: Path
) -> None:
    hacluster, secret = imported(tmp_path)
    assert [(g["name"], g["preferredNode"]) for g in hacluster["spec"]["groups"]] == [(DB, "n1"), (WEB, "n2")]
    hacluster["spec"]["groups"][1]["autoFailback"] = True  # the web group fails back, db does not
    st.core.create_namespaced_secret(NS, secret)
    st.custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, hacluster)
    st.mount_config()
    for node in NODES:
        st.start_agent(node)
    epochs = eventually(lambda: both_home(st), timeout=40, what="db on n1 and web on n2, Ready")

    # A declared switchover of web to n1: web moves, db stays as it was.
    patch_group(st, WEB, switchoverTo="n1")
    moved = eventually(lambda: held(st, WEB, "n1"), timeout=30, what="web switched over to n1")
    assert moved[1] > epochs[WEB]
    assert held(st, DB, "n1")[1] == epochs[DB], "db moved with web"

    # The switchover withdrawn: web fails back home (its autoFailback), db untouched.
    patch_group(st, WEB, switchoverTo=None)
    back = eventually(lambda: held(st, WEB, "n2"), timeout=30, what="web failed back to n2")
    assert back[1] > moved[1]
    assert held(st, DB, "n1")[1] == epochs[DB], "db moved with web"

    # n1's agent dies: db fails over to n2; web, already there, keeps its Lease and VIP.
    killed = st.lab.procs["n1"]
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(10)
    over = eventually(lambda: held(st, DB, "n2"), timeout=30, what="db failed over to n2")
    assert over[1] > epochs[DB]
    assert held(st, WEB, "n2") == back, "web moved when n1 died"

    # n1 back: db stays on n2 (no failback for db), and both groups run side by side again.
    st.start_agent("n1")

    def rejoined() -> None:
        nodes = {n["name"]: n["state"] for n in st.hac()["status"]["nodes"]}
        assert nodes == {"n1": "active", "n2": "active"}, nodes

    eventually(rejoined, timeout=30, what="n1 rejoined")
    assert held(st, DB, "n2") == over and held(st, WEB, "n2") == back
    assert eventually(lambda: st.hac()["status"]["state"] == "Ready" or {}["x"], what="Ready again")
    failed = [m for m in st.events("FailedOver") if m.startswith(f"group {DB}: ")]
    assert failed, st.events("FailedOver")


def test_a_single_group_hacluster_rewritten_as_groups_moves_nothing(st: FullStack) -> None:
    """The upgrade of an existing HACluster: its resources become `groups: [{name: main, ...}]`.
    The group named main keeps the HACluster's Lease, the agents' files do not change (no restart,
    no rollout), and the VIP stays where it is the whole time."""
    st.create_cluster(cluster_body())
    st.mount_config()
    for node in NODES:
        st.start_agent(node)

    def ready() -> tuple[str, int]:
        holder, epoch = st.lease()
        assert holder == "n1" and [n for n in NODES if st.lab.holds_vip(n)] == ["n1"], holder
        assert st.hac()["status"]["state"] == "Ready"
        return holder, epoch

    before = eventually(ready, timeout=40, what="Ready on n1")
    versions = {
        "config Secret": st.core.read_namespaced_secret(f"{NAME}-config", NS).metadata.resource_version,
        "DaemonSet": k8s.AppsV1Api(st.api)
        .read_namespaced_daemon_set(f"{NAME}-agent", NS)
        .metadata.resource_version,
    }
    spec = st.hac()["spec"]
    group = {"name": MAIN_GROUP, "preferredNode": spec["preferredNode"], "resources": spec["resources"]}
    patched = st.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        PLURAL,
        NAME,
        {"spec": {"resources": None, "preferredNode": None, "groups": [group]}},
    )
    generation = patched["metadata"]["generation"]
    probe = st.lab.probe(6.0)  # client requests to the VIP every 10 ms meanwhile
    eventually(
        lambda: st.hac()["status"]["observedGeneration"] == generation or {}["x"], what="the new spec seen"
    )
    lines = probe.communicate(timeout=30)[0].splitlines()
    answered = {line.split()[1] for line in lines if len(line.split()) == 2}
    assert ready() == before, "the Lease moved"
    assert len(lines) > 100 and answered == {"n1"}, (
        f"the VIP not served by n1 alone throughout: {sorted(answered)}"
    )
    after = {
        "config Secret": st.core.read_namespaced_secret(f"{NAME}-config", NS).metadata.resource_version,
        "DaemonSet": k8s.AppsV1Api(st.api)
        .read_namespaced_daemon_set(f"{NAME}-agent", NS)
        .metadata.resource_version,
    }
    assert after == versions, "the agents' objects were rewritten"
    assert "groups" not in st.hac()["status"] or len(st.hac()["status"]["groups"]) <= 1
