"""End to end: heartbeat keys rotated under a running pair (Heartbeat's three steps, reloaded by
SIGHUP or found by the agents' poll of the files), and a rejected change, while a client probes
the VIP. Nothing may move: the probe only ever sees the owner, neither agent sees its peer change
state, and no packet is refused for bad auth until a sender still uses the dropped key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from hacluster_agent.metrics import samples
from hacluster_agent.wire.codec import encode
from hacluster_agent.wire.message import Message
from hacluster_api.heartbeat.authkeys import parse_authkeys, write_secret_file
from tests.support.lab import NODE_ADDR, Lab
from tests.support.netns import wait_until

pytestmark = pytest.mark.netns

PORT = 9100
SCRAPE = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
OLD_KEY = "hacluster-lab-key"  # the Lab's
NEW_KEY = "rotated-lab-key-2"
STEP1 = f"auth 1\n1 sha1 {OLD_KEY}\n2 sha1 {NEW_KEY}\n"
STEP2 = f"auth 2\n1 sha1 {OLD_KEY}\n2 sha1 {NEW_KEY}\n"
STEP3 = f"auth 2\n2 sha1 {NEW_KEY}\n"
NODES = ("n1", "n2")


def _start_pair(lab: Lab) -> None:
    for node in NODES:  # each exports metrics on its own namespace's address
        lab.agent_args = ["--metrics-port", str(PORT), "--metrics-address", NODE_ADDR[node]]
        lab.start_agent(node)
    lab.wait_for("n1", timeout=30)
    _wait(lambda: all(_status(lab, n)["peer"]["state"] not in ("unknown", "dead") for n in NODES), "pair up")


def _status(lab: Lab, node: str) -> dict[str, Any]:
    r = lab.hactl(node, "status", "--json")
    assert r.returncode == 0, r.stderr
    st: dict[str, Any] = json.loads(r.stdout)
    return st


def _reloads(lab: Lab, node: str) -> dict[str, float]:
    url = f"http://{NODE_ADDR[node]}:{PORT}/metrics"
    r = subprocess.run(
        ["ip", "netns", "exec", lab.ns("client"), sys.executable, "-c", SCRAPE, url],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return {
        labels["result"]: v
        for name, labels, v in samples(r.stdout)
        if name == "hacluster_config_reloads_total"
    }


def _wait(cond: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
    wait_until(cond, timeout, interval=0.1, message=what)


def _write(lab: Lab, node: str, name: str, text: str, mode: int = 0o600) -> None:
    path = lab.root / node / "ha.d" / name
    write_secret_file(path, text)  # replaced whole, never readable by others in between
    if mode != 0o600:
        os.chmod(path, mode)


def _auth(lab: Lab, node: str) -> tuple[int, list[int]]:
    c = _status(lab, node)["config"]
    return c["signing_key"], c["accepted_keys"]


def _wait_auth(lab: Lab, node: str, expected: tuple[int, list[int]], what: str) -> None:
    _wait(lambda: _auth(lab, node) == expected, what)


def _undisturbed(lab: Lab, since: float) -> None:
    """Same owner, nobody saw its peer change state since `since` (monotonic), no bad auth."""
    quiet = time.monotonic() - since
    owner, other = _status(lab, "n1"), _status(lab, "n2")
    assert owner["holds"] == "local" and owner["holds_for_s"] >= quiet
    assert other["holds"] == "none"
    for st in (owner, other):
        assert st["peer"]["state"] not in ("dead", "unknown"), st["peer"]
        assert st["peer"]["since_s"] >= quiet, f"{st['node']} saw its peer change state"
        assert "bad_auth" not in st["rejected"], st["rejected"]
    assert lab.holds_vip("n1") and not lab.holds_vip("n2")


def _stop_probe(probe: subprocess.Popen[str]) -> set[str]:
    if probe.poll() is None:
        os.killpg(probe.pid, signal.SIGTERM)
    out, _ = probe.communicate(timeout=10)
    seen = {line.split(" ", 1)[1] for line in out.splitlines() if " " in line}
    assert seen, "the probe reported nothing"
    return seen


def _send_signed_with(lab: Lab, key_text: str, count: int) -> None:
    """A third sender in the client's namespace: `count` status packets to n2, as if from n1."""
    keys, _ = parse_authkeys(key_text)
    assert keys is not None
    msg = Message.of(("t", "status"), ("st", "active"), ("src", "n1"), ("seq", "ffff"), ("hg", "ffffff"))
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        f"[s.sendto(bytes.fromhex(sys.argv[1]),('{NODE_ADDR['n2']}',694)) for _ in range({count})]\n"
    )
    packet = encode(msg, keys).hex()
    subprocess.run(["ip", "netns", "exec", lab.ns("client"), sys.executable, "-c", code, packet], check=True)


@pytest.mark.parametrize("trigger", ["sighup", "poll"])
def test_key_rotation_in_three_steps_moves_nothing(lab: Lab, trigger: str) -> None:
    _start_pair(lab)
    since = time.monotonic()
    probe = lab.probe(seconds=120, every=0.05)

    def step(node: str, text: str) -> None:
        _write(lab, node, "authkeys", text)
        if trigger == "sighup":
            lab.kill_agent(node, signal.SIGHUP)

    # 1: both keys on both nodes, still signing with the old one
    for node in NODES:
        step(node, STEP1)
    for node in NODES:
        _wait_auth(lab, node, (1, [1, 2]), f"{node} accepts keys 1, 2")
    time.sleep(0.5)
    _undisturbed(lab, since)

    # 2: sign with the new key, one node after the other (the peer accepts both meanwhile)
    for node in NODES:
        step(node, STEP2)
        _wait_auth(lab, node, (2, [1, 2]), f"{node} signs with key 2")
        time.sleep(0.5)
        _undisturbed(lab, since)

    # 3: drop the old key
    for node in NODES:
        step(node, STEP3)
    for node in NODES:
        _wait_auth(lab, node, (2, [2]), f"{node} accepts key 2 only")
    time.sleep(0.5)
    _undisturbed(lab, since)
    assert _stop_probe(probe) == {"n1"}, "the client saw something else than the owner"

    for node in NODES:
        assert _reloads(lab, node) == {"applied": 3, "rejected": 0, "restart_needed": 0, "unchanged": 0}
        log = lab.agent_log(node)
        assert "authkeys applied: signing with key 2 (sha1), accepting keys 2" in log
        assert OLD_KEY not in log and NEW_KEY not in log
        assert "is dead" not in log

    # a sender still signing with the dropped key is refused now
    _send_signed_with(lab, f"auth 1\n1 sha1 {OLD_KEY}\n", 3)
    _wait(lambda: _status(lab, "n2")["rejected"].get("bad_auth") == 3, "n2 refuses the old key")
    assert _status(lab, "n2")["holds"] == "none" and lab.fetch() == "n1"


def test_a_rejected_change_leaves_the_pair_undisturbed(lab: Lab) -> None:
    _start_pair(lab)
    since = time.monotonic()
    probe = lab.probe(seconds=120, every=0.05)
    authkeys = lab.root / "n1" / "ha.d" / "authkeys"

    # a syntax error on the owner, SIGHUP: rejected with file:line, the old key stays in force
    _write(lab, "n1", "authkeys", f"auth 2\n1 sha1 {OLD_KEY}\n2 sha1\n")
    lab.kill_agent("n1", signal.SIGHUP)
    _wait(lambda: _reloads(lab, "n1")["rejected"] == 1, "n1 rejects the reload")
    assert f"{authkeys}:3: key 2: sha1 needs a key" in lab.agent_log("n1")
    assert "rejected, the running config is kept" in lab.agent_log("n1")
    assert _auth(lab, "n1") == (1, [1])
    time.sleep(1.0)
    _undisturbed(lab, since)

    # the right keys but readable by others, found by the poll: rejected too
    _write(lab, "n1", "authkeys", f"auth 1\n1 sha1 {OLD_KEY}\n", mode=0o644)
    _wait(lambda: _reloads(lab, "n1")["rejected"] == 2, "n1 rejects authkeys mode 0644")
    assert f"{authkeys}: mode 0644 lets group or others access the keys" in lab.agent_log("n1")
    os.chmod(authkeys, 0o600)  # fixed: the files mean what runs
    _wait(lambda: _reloads(lab, "n1")["unchanged"] == 1, "n1 sees the fix")

    # ha.cf changed on the standby: a restart is needed, nothing else happens
    hacf = lab.root / "n2" / "ha.d" / "ha.cf"
    hacf.write_text(hacf.read_text().replace("deadtime 500ms", "deadtime 800ms"))
    lab.kill_agent("n2", signal.SIGHUP)
    _wait(lambda: _reloads(lab, "n2")["restart_needed"] == 1, "n2 says a restart is needed")
    assert f"{hacf} changed: a restart of the agent is needed" in lab.agent_log("n2")
    assert _status(lab, "n2")["config"]["restart_needed"] == [str(hacf)]
    assert _status(lab, "n1")["peer"]["deadtime_ms"] == 500  # n2 still announces its old deadtime

    time.sleep(1.0)
    _undisturbed(lab, since)
    assert _stop_probe(probe) == {"n1"}
    assert _reloads(lab, "n1") == {"applied": 0, "rejected": 2, "restart_needed": 0, "unchanged": 1}
    for node in NODES:
        assert OLD_KEY not in lab.agent_log(node)
        assert lab.procs[node].poll() is None
