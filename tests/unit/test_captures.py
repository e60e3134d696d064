"""Packets captured from two real Heartbeat 3.0.6 daemons (tests/data/captures, made by
make_captures.py) decode, verify and re-encode byte for byte with our codec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hacluster_agent.engine.membership import Engine, EngineConfig
from hacluster_agent.wire.codec import Decoded, decode, encode_classic, encode_netstring
from hacluster_agent.wire.errors import Reject, Rejected
from hacluster_api.heartbeat.authkeys import AuthKeys, parse_authkeys

CAPTURES = Path(__file__).parent.parent / "data" / "captures"
SETS = sorted(p for p in CAPTURES.iterdir() if (p / "meta.json").exists())


def _keys(meta: dict[str, object]) -> AuthKeys:
    text = meta["authkeys"]
    if isinstance(text, dict):
        text = next(iter(text.values()))
    keys, f = parse_authkeys(str(text))
    assert keys is not None, f.items
    return keys


def _packets(d: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(d.glob("*.bin"))]


def test_capture_sets_present() -> None:
    names = {p.name for p in SETS}
    for medium in ("ucast", "bcast", "serial"):
        for auth in ("crc", "md5", "sha1"):
            assert f"{medium}-{auth}" in names


@pytest.mark.parametrize("d", SETS, ids=[p.name for p in SETS])
def test_real_packets_verify_and_reencode_byte_for_byte(d: Path) -> None:
    keys = _keys(json.loads((d / "meta.json").read_text()))
    packets = _packets(d)
    assert packets
    for data in packets:
        got = decode(data, keys)
        assert isinstance(got, Decoded), f"{d.name}: {got}"
        key = keys.keys[got.auth_index]
        if got.encoding == "netstring":
            again = encode_netstring(got.message, key, inner_auth="auth" in got.message)
        else:
            again = encode_classic(got.message, key)
        assert again == data, f"{d.name}: re-encoding differs for a {got.message.type} message"


@pytest.mark.parametrize("d", [p for p in SETS if "crc" not in p.name], ids=lambda p: p.name)
def test_real_packets_fail_with_a_wrong_key(d: Path) -> None:
    meta = json.loads((d / "meta.json").read_text())
    method = "md5" if "md5" in d.name else "sha1"
    wrong, _ = parse_authkeys(f"auth 1\n1 {method} not-the-key\n")
    assert wrong is not None
    for data in _packets(d):
        got = decode(data, wrong)
        assert isinstance(got, Rejected) and got.reason is Reject.BAD_AUTH
    assert meta


def test_engine_sees_a_real_peer_alive_from_its_status_messages() -> None:
    d = CAPTURES / "ucast-sha1"
    keys = _keys(json.loads((d / "meta.json").read_text()))
    e = Engine(
        EngineConfig(node="hb2", peer="hb1", keepalive=2, deadtime=10, warntime=5, initdead=20, generation=1)
    )
    e.start(0.0, 1e9)
    now = 0.0
    for data in _packets(d):
        got = decode(data, keys)
        assert isinstance(got, Decoded)
        if got.message.get("src") == "hb1":
            now += 0.01
            e.receive(got.message, "eth0", now)
    assert e.peer.alive is True
    assert e.counters.get("rejected_replay", 0) == 0
