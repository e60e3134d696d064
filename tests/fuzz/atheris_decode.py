#!/usr/bin/env python3
"""Coverage-guided fuzzing of the wire decoder (and, behind it, the engine) with atheris/libFuzzer.

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/atheris_decode.py -atheris_runs=200000
    .venv/bin/python tests/fuzz/atheris_decode.py -max_total_time=300 -timeout=2 -rss_limit_mb=1024
    .venv/bin/python tests/fuzz/atheris_decode.py crash-<sha1>          # replay one input

At start the seed corpus tests/fuzz/corpus/decode-seed/ is (re)written from the real captures in
tests/data/captures (one packet per set and message type); libFuzzer keeps what it finds in
tests/fuzz/corpus/decode/. Neither is committed (tests/fuzz/.gitignore).

An input is one selector byte, then the rest:
  0/1/2  a packet received with the sha1/md5/crc keys of the captures: decode() must be total,
         never hit its bug guard, and what decodes must survive an encode/decode round trip;
  3      the signed part of a netstring packet from a KEY HOLDER: the harness appends a valid sha1
         trailer, and a decoded message goes to an Engine that has heard the peer (no exception,
         bounded bookkeeping).
A violated property raises, which libFuzzer reports as a crash and saves the input.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "api"), str(ROOT / "node-agent")]

import pydantic  # noqa: E402,F401  (imported before instrumentation: only our code is instrumented)

with atheris.instrument_imports(include=["hacluster_agent"]):
    from hacluster_agent.engine.membership import HISTORY, Engine, EngineConfig
    from hacluster_agent.engine.ordering import MAX_MISSING
    from hacluster_agent.wire.codec import MAX_FIELDS, Decoded, _decode, decode, encode_netstring
    from hacluster_agent.wire.digest import auth_value
    from hacluster_agent.wire.errors import Rejected
    from hacluster_agent.wire.message import FieldType, Message

from tests.fuzz.support import CORPUS, KEYSETS, captures  # noqa: E402

KEYS = [KEYSETS["sha1"], KEYSETS["md5"], KEYSETS["crc"]]
SHA1 = KEYSETS["sha1"].signing_key
PEER_STATUS = Message.of(("t", "status"), ("st", "active"), ("dt", "2710"), ("protocol", "1"),
                         ("src", "hb1"), ("seq", "5"), ("hg", "6b08125b"), ("ts", "6b08125a"))  # fmt: skip


def write_seeds(seed_dir: Path) -> int:
    """One input per (capture set, message type), plus key-holder inputs from the same packets."""
    seed_dir.mkdir(parents=True, exist_ok=True)
    seen: set[tuple[str, str | None]] = set()
    n = 0
    for cap in captures():
        key = (cap.name.split("/")[0], cap.decoded.message.type)
        if key in seen:
            continue
        seen.add(key)
        selector = {"sha1": 0, "md5": 1, "crc": 2}[cap.method]
        (seed_dir / f"{n:03d}").write_bytes(bytes([selector]) + cap.data)
        n += 1
        if cap.data.startswith(b"###\n"):
            signed = cap.data[: cap.data.index(b"%%%\n") + 4]
            (seed_dir / f"{n:03d}").write_bytes(b"\x03" + signed)
            n += 1
    return n


def _engine() -> Engine:
    e = Engine(EngineConfig(node="hb2", peer="hb1", keepalive=2, deadtime=10, warntime=5, initdead=20,
                            generation=1))  # fmt: skip
    e.start(0.0, 1e9)
    e.receive(PEER_STATUS, "eth0", 0.01)
    return e


def check_decoded(got: Decoded, keys_index: int) -> None:
    msg = got.message
    assert len(msg) <= MAX_FIELDS
    for f in msg:
        assert f.type in (FieldType.STRING, FieldType.BINARY) and f.name and f.name.isascii(), f
    if got.encoding == "netstring":  # what decoded re-encodes and decodes to the same fields
        key = KEYS[keys_index].keys[got.auth_index]
        again = decode(encode_netstring(msg, key, inner_auth=False), KEYS[keys_index])
        assert isinstance(again, Decoded) and again.message == msg.without("auth"), (msg, again)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    selector, packet = data[0] % 4, data[1:]
    if selector == 3:
        end = packet.find(b"%%%\n")
        signed = packet[: end + 4] if end >= 0 else packet
        trailer = auth_value(SHA1, signed).encode()
        packet = signed + b"%d:%s," % (len(trailer), trailer)
        keys_index = 0
    else:
        keys_index = selector
    got = _decode(packet, KEYS[keys_index])  # unguarded: an exception here is a crash
    assert isinstance(got, (Decoded, Rejected)), got
    guarded = decode(packet, KEYS[keys_index])
    assert type(guarded) is type(got)
    if isinstance(got, Rejected):
        assert got.detail, got
        return
    check_decoded(got, keys_index)
    if selector == 3:
        e = _engine()
        e.receive(got.message, "eth0", 0.02)
        e.tick(0.5)
        e.receive(got.message, "eth1", 0.6)  # the same message on a second medium: a duplicate
        assert len(e.history) <= HISTORY and len(e.rexmit) <= MAX_MISSING
        assert len(e.peer.ordering.missing) <= MAX_MISSING and len(e.counters) <= 64


def main() -> None:
    seed_dir = CORPUS / "decode-seed"
    out_dir = CORPUS / "decode"
    out_dir.mkdir(parents=True, exist_ok=True)
    n = write_seeds(seed_dir)
    args = list(sys.argv)
    if not any(a.startswith("-artifact_prefix=") for a in args):  # crash-* files next to this file
        args.insert(1, f"-artifact_prefix={Path(__file__).parent}/")
    if not any(not a.startswith("-") for a in args[1:]):  # no corpus dir or input file given
        args += [str(out_dir), str(seed_dir)]
    if os.environ.get("ATHERIS_QUIET") is None:
        print(f"atheris_decode: {n} seeds in {seed_dir}", file=sys.stderr)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
