"""The API server can listen on a bridge address in 192.0.2.0/24, as the tests
that put agents in network namespaces need.

The control plane runs in a private network namespace with a bridge holding
192.0.2.1/24 (root only), so the host's network is not touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.apiserver.conftest import ApiServerBinaries
from tests.support import hosttools
from tests.support.controlplane import REPO_ROOT

pytestmark = [pytest.mark.apiserver, pytest.mark.netns]

BRIDGE_ADDRESS = "192.0.2.1"

# Runs inside the namespace: start a ControlPlane on the bridge address, then
# act as a ServiceAccount through kubectl with the kubeconfig it wrote.
SCRIPT = """
import json, subprocess, sys
from pathlib import Path
from tests.support.controlplane import ControlPlane

binary, kubectl, address = sys.argv[1:4]
with ControlPlane(Path(binary), bind_address=address) as cp:
    sa = cp.service_account_kubeconfig("netns-test", "agent")
    out = subprocess.run(
        [kubectl, "--kubeconfig", str(sa), "auth", "whoami", "-o", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
    print(json.dumps({
        "url": cp.url,
        "startup": cp.startup_seconds,
        "user": json.loads(out)["status"]["userInfo"]["username"],
        "listening": sorted(line.split()[3] for line in listening.splitlines()),
    }))
"""

NETNS_SETUP = (
    "set -e; ip link set lo up; ip link add hac-br0 type bridge; "
    f"ip addr add {BRIDGE_ADDRESS}/24 dev hac-br0; ip link set hac-br0 up; "
    'exec "$0" "$@"'
)


def test_serves_on_bridge_address_in_netns(apiserver_binary: ApiServerBinaries) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a network namespace")
    if reason := hosttools.unavailable("unshare", "ip", "ss"):
        pytest.skip(reason)
    unshare = shutil.which("unshare") or "unshare"

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [
            unshare,
            "--net",
            "--",
            "sh",
            "-c",
            NETNS_SETUP,
            sys.executable,
            "-c",
            SCRIPT,
            str(apiserver_binary.apiserver),
            str(apiserver_binary.tools.kubectl),
            BRIDGE_ADDRESS,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["url"].startswith(f"https://{BRIDGE_ADDRESS}:")
    assert result["user"] == "system:serviceaccount:netns-test:agent"
    port = result["url"].rsplit(":", 1)[1]
    assert f"{BRIDGE_ADDRESS}:{port}" in result["listening"]
    # etcd (client and peer) stays on loopback; nothing else listens on the bridge.
    others = [a for a in result["listening"] if a != f"{BRIDGE_ADDRESS}:{port}"]
    assert others and all(a.startswith("127.0.0.1:") for a in others), result["listening"]
