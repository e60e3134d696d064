"""Our encoder against the real Heartbeat 3.0.6: the real daemon accepts what our agent sends.

Our agent (hacluster_agent.daemon) runs as node n1 and the real daemon as n2, in the Lab's
namespaces, from the very same ha.cf, authkeys and haresources. For every auth method (crc, md5,
sha1) over ucast and bcast, and over a serial null-modem (classic text form), the real daemon
must log ``Link n1:<medium> up`` and report n1 active, and our agent must see n2 alive. With a
wrong key, the real daemon logs authentication failures and never sees n1, and our agent counts
``bad_auth``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.lab import Lab
from tests.support.realheartbeat import RealHeartbeat

pytestmark = [pytest.mark.netns, pytest.mark.interop]

OURS, THEIRS = "n1", "n2"

# Lines the real daemon writes when it drops or distrusts something a peer sent.
COMPLAINTS = (
    "authentication failed",
    "flow control disabled",
    "replay",
    "bad resource type",
    "Ignored standby message",
    "message without",
    "NS_nak_rexmit",
)


class Pair:
    """Our agent on n1, the real daemon on n2, same configuration files."""

    def __init__(self, lab: Lab, authkeys: str | None = None) -> None:
        self.lab = lab
        ha_cf, keys, haresources, scripts = lab.config_texts(THEIRS)
        self.hb = RealHeartbeat(lab.ns(THEIRS), THEIRS, ha_cf, authkeys or keys, haresources, scripts)

    def start(self) -> None:
        self.lab.start_agent(OURS)
        self.hb.start()

    def status(self) -> dict[str, Any]:
        out = self.lab.hactl(OURS, "status", "--json").stdout
        try:
            st: dict[str, Any] = json.loads(out)
        except ValueError:
            return {}
        return st

    def wait(self, what: str, predicate: Any, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.diagnostics()}")
            time.sleep(0.1)

    def assert_no_complaints(self) -> str:
        """Nothing we sent was dropped or distrusted by the real daemon; its log."""
        log = self.hb.log()
        for complaint in COMPLAINTS:
            assert complaint not in log, f"the real daemon complained: {complaint!r}\n{self.diagnostics()}"
        return log

    def diagnostics(self) -> str:
        return (
            f"--- real {THEIRS} log ---\n{self.hb.log()[-4000:]}\n"
            f"--- our {OURS} log ---\n{self.lab.agent_log(OURS)[-3000:]}"
        )


@pytest.fixture
def make_pair(heartbeat_ok: None) -> Iterator[Any]:
    made: list[tuple[Lab, Pair | None]] = []

    def make(authkeys: str | None = None, **lab_kw: Any) -> Pair:
        lab = Lab(**lab_kw)
        lab.build()
        made.append((lab, None))
        pair = Pair(lab, authkeys)
        made[-1] = (lab, pair)
        return pair

    yield make
    for lab, pair in reversed(made):
        try:
            if pair is not None:
                pair.hb.close()
        finally:
            lab.close()


def _peer_state(pair: Pair) -> str | None:
    return pair.status().get("peer", {}).get("state")


@pytest.mark.parametrize("media", ["ucast", "bcast"])
@pytest.mark.parametrize("auth", ["crc", "md5", "sha1"])
def test_real_daemon_accepts_our_udp_packets(make_pair: Any, auth: str, media: str) -> None:
    pair = make_pair(auth=auth, media=media)
    pair.start()
    pair.wait("the real daemon to see n1 active", lambda: pair.hb.node_status(OURS) == "active")
    pair.hb.wait_for_log(rf"Link {OURS}:eth0 up", 5)
    pair.hb.wait_for_log(rf"Status update for node {OURS}: status active", 5)
    pair.wait("our agent to see n2 alive", lambda: _peer_state(pair) in ("up", "active"))
    # a few more keepalives, then nothing we sent may have been dropped or complained about
    time.sleep(1.0)
    assert pair.hb.node_status(OURS) == "active"
    log = pair.assert_no_complaints()
    st = pair.status()
    assert st["peer"]["links"]["eth0"]["up"] is True
    assert not st["rejected"], f"we dropped some of the real daemon's packets: {st['rejected']}"
    counters = st["counters"]
    # the v1 exchange the real daemon starts with: reqnodes answered, starting/resource both ways
    assert counters.get("rx_reqnodes", 0) >= 1 and counters.get("tx_repnodes", 0) >= 1
    assert counters.get("rx_starting", 0) >= 1 and counters.get("rx_resource", 0) >= 1
    assert counters.get("rx_NS_ackmsg", 0) >= 1, "flow control: the real daemon acks our seqs"
    # the real daemon took our resource report (isstable=1) as the end of our transition
    assert "remote resource transition completed" in log


@pytest.mark.parametrize("auth", ["crc", "md5", "sha1"])
def test_real_daemon_accepts_our_serial_frames(make_pair: Any, auth: str) -> None:
    pair = make_pair(auth=auth, media="serial")
    pair.start()
    pair.wait("the real daemon to see n1 active", lambda: pair.hb.node_status(OURS) == "active")
    tty = str(pair.lab.root / f"tty-{THEIRS}")
    pair.hb.wait_for_log(rf"Link {OURS}:{re.escape(tty)} up", 5)
    pair.wait("our agent to see n2 alive", lambda: _peer_state(pair) in ("up", "active"))
    time.sleep(1.0)
    assert pair.hb.node_status(OURS) == "active"
    pair.assert_no_complaints()
    st = pair.status()
    assert st["peer"]["links"][str(pair.lab.root / f"tty-{OURS}")]["up"] is True
    assert not st["rejected"], st["rejected"]


@pytest.mark.parametrize("media", ["ucast", "serial"])
def test_wrong_key_real_daemon_rejects_us_and_we_reject_it(make_pair: Any, media: str) -> None:
    pair = make_pair(authkeys="auth 1\n1 sha1 not-the-lab-key\n", auth="sha1", media=media)
    pair.start()
    # UDP carries netstrings (the trailer digest); serial the classic form (the inner auth field)
    rx = r"netstring authentication failed" if media == "ucast" else rf"node \[{OURS}\] failed authentication"
    pair.hb.wait_for_log(rx, 10)
    pair.wait(
        "our agent to count bad_auth", lambda: pair.status().get("rejected", {}).get("bad_auth", 0) >= 3
    )
    time.sleep(2.5)  # past initdead (2 s): each side declares the other dead, never alive
    assert pair.hb.node_status(OURS) in ("dead", ""), pair.diagnostics()
    assert f"Link {OURS}:" not in pair.hb.log().replace(f"Link {OURS}:eth0 dead", "")
    assert _peer_state(pair) in ("dead", "unknown")
    assert os.path.exists(pair.lab.socket(OURS))
