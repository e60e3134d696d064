"""ha.cf, haresources and authkeys: Heartbeat 3.0.6 semantics, clear errors, round trips."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hacluster_api.heartbeat.authkeys import parse_authkeys, render_authkeys
from hacluster_api.heartbeat.directory import load_directory
from hacluster_api.heartbeat.durations import format_duration_ms, parse_duration_ms
from hacluster_api.heartbeat.hacf import parse_hacf, render_hacf
from hacluster_api.heartbeat.haresources import parse_haresources, render_haresources
from hacluster_api.heartbeat.issues import ConfigError

ARTICLE = Path(__file__).parent.parent / "data" / "article"

GOOD = """\
logfile /var/log/ha-log
keepalive 100ms
deadtime 500ms
udpport 695
bcast eth0
mcast eth1 239.192.0.1 694 1 0
ucast eth1 192.0.2.2
baud 38400
serial /dev/ttyS0
node Alpha
node beta
auto_failback off
"""


def errors(text: str) -> list[str]:
    _, f = parse_hacf(text)
    return [str(e) for e in f.errors]


def test_article_directory_parses_with_documented_warnings(tmp_path: Path) -> None:
    d = tmp_path / "ha.d"
    shutil.copytree(ARTICLE, d)
    os.chmod(d / "authkeys", 0o600)
    cfg = load_directory(d)
    assert cfg.hacf.nodes == ["servidor1", "servidor2"]
    assert (cfg.hacf.keepalive_ms, cfg.hacf.deadtime_ms) == (2000, 20000)
    assert cfg.hacf.auto_failback == "off"  # nice_failback on
    assert cfg.hacf.warntime_ms == 10000 and cfg.hacf.initdead_ms == 20000  # deadtime > 10 s
    kinds = [m.kind for m in cfg.hacf.media]
    assert kinds == ["serial", "bcast"]
    assert cfg.haresources.groups[0].home == "servidor2"
    assert [r.name for r in cfg.haresources.groups[0].resources] == ["IPaddr::190.123.123.10", "httpd", "smb"]
    assert cfg.authkeys.signing_key.method == "sha1"
    text = "\n".join(str(w) for w in cfg.warnings)
    assert "ttySO" in text and "did you mean /dev/ttyS0" in text
    assert "'udp port N' is read as 'udpport N'" in text


def test_timing_values_and_defaults() -> None:
    m, f = parse_hacf(GOOD)
    assert not f.errors, f.items
    assert m is not None
    assert (m.keepalive_ms, m.deadtime_ms, m.warntime_ms, m.initdead_ms) == (100, 500, 250, 12000)
    assert m.nodes == ["alpha", "beta"]  # lower-cased like Heartbeat
    ports = [(x.kind, getattr(x, "port", None)) for x in m.media]
    assert ports == [("bcast", 695), ("mcast", 694), ("ucast", 695), ("serial", None)]
    assert m.media[-1].baud == 38400  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "keepalive 2\ndeadtime 4\nbcast eth0\nnode a\nnode b\n",
            "ha.cf:2: deadtime (4) must be more than twice keepalive (2)",
        ),
        (
            "deadtime 10\ninitdead 5\nbcast eth0\nnode a\n",
            "ha.cf:2: initdead (5) must be at least deadtime (10)",
        ),
        ("keepalive fast\nbcast eth0\nnode a\n", "ha.cf:1: keepalive: 'fast' is not a time value"),
        ("bcast eth0\nnode a\nfrobnicate yes\n", "ha.cf:3: unknown directive 'frobnicate'"),
        ("baud 1200\nserial /dev/ttyS0\nnode a\n", "ha.cf:1: baud: expected one of 9600"),
        ("udpport 70000\nbcast eth0\nnode a\n", "ha.cf:1: udpport: expected a port number"),
        ("mcast eth0 192.0.2.1 694 1 0\nnode a\n", "ha.cf:1: mcast: 192.0.2.1 is not a multicast group"),
        ("ucast eth0 nowhere\nnode a\n", "ha.cf:1: ucast: 'nowhere' is not an IPv4 address"),
        ("node a\n", "ha.cf: no heartbeat media"),
        ("bcast eth0\n", "ha.cf: no node lines"),
        ("bcast eth0\nnode a b c\n", "hacluster runs pairs: 3 nodes"),
        ("bcast eth0\nnode a\nkeepalive 1\nkeepalive 2\n", "ha.cf:4: keepalive is already set on line 3"),
        ("bcast eth0\nnode a\ncrm on\n", "ha.cf:3: crm on: Pacemaker mode is not supported"),
        (
            "bcast eth0\nnode a\nnice_failback on\nauto_failback on\n",
            "nice_failback contradicts auto_failback",
        ),
    ],
)
def test_bad_hacf_names_file_line_and_fault(text: str, expected: str) -> None:
    found = errors(text)
    assert any(e.startswith(expected) or expected in e for e in found), found


def test_valid_but_unused_directive_is_a_warning() -> None:
    m, f = parse_hacf("bcast eth0\nnode a\nnode b\nstonith_host * null\nauto_failback on\n")
    assert m is not None and not f.errors
    assert [str(w) for w in f.warnings] == [
        "ha.cf:4: warning: stonith_host: valid Heartbeat directive that hacluster does not act on"
    ]


def test_watchdog_is_acted_on_and_survives_a_round_trip() -> None:
    """Heartbeat's `watchdog <device>`: the agent feeds it (resources/watchdog.py), no warning."""
    m, f = parse_hacf("bcast eth0\nnode a\nnode b\nwatchdog /dev/watchdog\nauto_failback on\n")
    assert m is not None and not f.errors and not f.warnings
    assert m.watchdog == "/dev/watchdog"
    again, _ = parse_hacf(render_hacf(m))
    assert again == m
    _, f = parse_hacf("bcast eth0\nnode a\nnode b\nwatchdog watchdog\n")
    assert [str(e) for e in f.errors] == [
        "ha.cf:4: watchdog: expected a device path such as /dev/watchdog, got 'watchdog'"
    ]


def test_realtime_and_rtprio_as_heartbeat() -> None:
    """On by default at priority 50 (Heartbeat's midpoint), `realtime off` turns it off, rtprio is
    1-99; both survive a round trip."""
    base = "bcast eth0\nnode a\nnode b\nauto_failback on\n"
    m, f = parse_hacf(base)
    assert m is not None and m.realtime_prio == 50 and not f.warnings
    m, f = parse_hacf(base + "realtime on\nrtprio 70\n")
    assert m is not None and m.realtime_prio == 70 and not f.warnings
    assert parse_hacf(render_hacf(m))[0] == m
    m, _ = parse_hacf(base + "realtime off\n")
    assert m is not None and m.realtime_prio is None
    assert errors(base + "rtprio 0\n") == ["ha.cf:5: rtprio: expected a SCHED_FIFO priority 1-99, got '0'"]
    assert errors(base + "realtime maybe\n") == ["ha.cf:5: realtime: expected on or off, got 'maybe'"]


def test_udpport_after_media_applies_only_afterwards() -> None:
    m, f = parse_hacf("bcast eth0\nudpport 700\nbcast eth1\nnode a\n")
    assert m is not None
    assert [x.port for x in m.media] == [694, 700]  # type: ignore[union-attr]
    assert any("applies only to media declared after it" in str(w) for w in f.warnings)


def test_hacf_round_trip_keeps_meaning() -> None:
    m, _ = parse_hacf(GOOD)
    assert m is not None
    again, f = parse_hacf(render_hacf(m))
    assert again == m and not f.errors


@given(
    keep=st.integers(1, 5000),
    factor=st.integers(3, 10),
    unit=st.sampled_from(["ms", ""]),
)
def test_hacf_round_trip_property(keep: int, factor: int, unit: str) -> None:
    ka = keep if unit == "ms" else keep * 1000
    text = f"keepalive {keep}{unit}\ndeadtime {keep * factor}{unit}\ninitdead {keep * factor * 2}{unit}\nucast eth0 192.0.2.9\nnode a\nnode b\n"
    m, f = parse_hacf(text)
    assert m is not None, f.items
    assert m.keepalive_ms == ka
    assert parse_hacf(render_hacf(m))[0] == m


@pytest.mark.parametrize(
    ("text", "ms"), [("2", 2000), ("1.5", 1500), ("500ms", 500), ("2s", 2000), ("1500us", 2), (".5", 500)]
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms
    assert parse_duration_ms(format_duration_ms(ms)) == ms


def test_haresources_forms_and_order() -> None:
    text = (
        "# comment\nalpha 192.0.2.100 IPaddr::192.0.2.101/24/eth1/192.0.2.255 \\\n"
        "   IPaddr2::2001:db8::10/64/eth0 Filesystem::/dev/sda1::/data::ext3 httpd\n"
    )
    m, f = parse_haresources(text, nodes=["alpha", "beta"])
    assert m is not None, f.items
    g = m.groups[0]
    assert g.home == "alpha"
    assert [r.name for r in g.resources] == [
        "IPaddr::192.0.2.100",
        "IPaddr::192.0.2.101/24/eth1/192.0.2.255",
        "IPaddr2::2001:db8::10/64/eth0",
        "Filesystem::/dev/sda1::/data::ext3",
        "httpd",
    ]
    again, _ = parse_haresources(render_haresources(m), nodes=["alpha", "beta"])
    assert again is not None and again.model_dump() == m.model_dump()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gamma 192.0.2.1\n", "haresources:1: node 'gamma' is not a node of ha.cf"),
        (
            "alpha IPaddr::192.0.2.1/40\n",
            "haresources:1: resource 'IPaddr::192.0.2.1/40': prefix length '40' is not 1-32",
        ),
        ("alpha IPaddr::999.1.1.1\n", "is not an IP address"),
        ("alpha\n", "haresources:1: group of 'alpha' lists no resources"),
        ("alpha httpd\nbeta httpd\n", "haresources:2: resource httpd already appears on line 1"),
        ("alpha bad/name\n", "is not a valid script name"),
    ],
)
def test_bad_haresources(text: str, expected: str) -> None:
    _, f = parse_haresources(text, nodes=["alpha", "beta"])
    assert any(expected in str(e) for e in f.errors), [str(e) for e in f.errors]


def test_authkeys_rotation_and_secret_hiding() -> None:
    m, f = parse_authkeys("auth 2\n1 sha1 oldkey\n2 md5 newkey\n3 crc\n")
    assert m is not None
    assert m.signing_key.method == "md5" and set(m.keys) == {1, 2, 3}
    assert "newkey" not in repr(m) and "oldkey" not in str(m)
    assert any("crc" in str(w) and "authenticates nothing" in str(w) for w in f.warnings)
    assert parse_authkeys(render_authkeys(m))[0] == m


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 sha1 key\n", "authkeys: no 'auth N' line"),
        ("auth 2\n1 sha1 key\n", "authkeys:1: 'auth 2' names a key index that is not defined"),
        ("auth 1\n1 sha1\n", "authkeys:2: key 1: sha1 needs a key"),
        ("auth 1\n1 sha256 k\n", "authkeys:2: key 1: method must be crc, md5 or sha1, got 'sha256'"),
        ("auth 1\n1 md5 a\n1 md5 b\n", "authkeys:3: key index 1 is already defined on line 2"),
        ("auth 16\n", "authkeys:1: 'auth' takes one key index 0-15"),
    ],
)
def test_bad_authkeys(text: str, expected: str) -> None:
    _, f = parse_authkeys(text)
    assert any(str(e).startswith(expected) for e in f.errors), [str(e) for e in f.errors]


def test_group_readable_authkeys_is_refused(tmp_path: Path) -> None:
    shutil.copytree(ARTICLE, tmp_path / "d")
    os.chmod(tmp_path / "d" / "authkeys", 0o640)
    with pytest.raises(ConfigError) as e:
        load_directory(tmp_path / "d")
    assert "authkeys: mode 0640 lets group or others access the keys" in str(e.value)


def test_authkeys_errors_never_quote_what_may_be_a_key() -> None:
    """Error messages reach logs (start-up, reload, hactl check-config): a key written in the wrong
    place must not be quoted; a method typo still is."""
    _, f = parse_authkeys("auth 1\n1 sha1 good-key\nnew-secret-2\n2 textoparaelpass\n3 sha256 x\n")
    text = "\n".join(str(e) for e in f.errors)
    assert "new-secret-2" not in text and "textoparaelpass" not in text
    assert "it may be a key" in text and "'sha256'" in text
