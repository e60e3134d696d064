"""The decoder under hostile input: random bytes, mutated real packets, oversized and pathological
packets, bad base64. decode() must be total (Decoded or Rejected, never an exception, never the
bug guard's "decoder error"), only a packet whose digest verifies decodes, and time and memory
stay bounded by the packet's size."""

from __future__ import annotations

import base64
import time
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hacluster_agent.wire.codec import (
    MAX_FIELDS,
    MAX_PACKET,
    Decoded,
    classic_body,
    decode,
)
from hacluster_agent.wire.digest import auth_value
from hacluster_agent.wire.errors import Reject, Rejected
from hacluster_agent.wire.message import Field, FieldType, Message
from hacluster_api.heartbeat.authkeys import AuthKeys
from tests.fuzz.support import KEYSETS, METHODS, MUTATIONS, Capture, budget, captures, mutate

FAST = settings(max_examples=budget(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
PREFIXES = (b"", b"###\n", b">>>\n", b"%%%\n", b"<<<\n")


def total(data: bytes, keys: AuthKeys) -> Decoded | Rejected:
    """decode(), asserting the totality contract and that no exception hid behind the bug guard."""
    got = decode(data, keys)
    assert isinstance(got, (Decoded, Rejected)), got
    if isinstance(got, Rejected):
        assert isinstance(got.reason, Reject) and got.detail, got
        assert not got.detail.startswith("decoder error"), f"an exception escaped the parser: {got}"
    return got


def same_message(got: Decoded, cap: Capture) -> bool:
    return got.message.without("auth") == cap.decoded.message.without("auth")


@FAST
@given(st.sampled_from(PREFIXES), st.binary(max_size=2000), st.sampled_from(METHODS))
def test_random_bytes(prefix: bytes, data: bytes, method: str) -> None:
    got = total(prefix + data, KEYSETS[method])
    assert isinstance(got, Rejected)  # a random packet never carries a verifying digest


capture_st = st.sampled_from(captures())
mutation_st = st.tuples(
    st.sampled_from(MUTATIONS),
    st.integers(0, 1 << 20),
    st.integers(0, 1 << 20),
    st.binary(min_size=1, max_size=12),
)


@settings(max_examples=budget(600), deadline=None)
@given(capture_st, st.lists(mutation_st, min_size=1, max_size=3), capture_st)
def test_mutated_real_packets(cap: Capture, muts: list[tuple[str, int, int, bytes]], other: Capture) -> None:
    data = cap.data
    for kind, a, b, blob in muts:
        data = mutate(data, kind, a, b, blob, other.data)
    got = total(data, cap.keys)
    if isinstance(got, Decoded):
        # only a mutation that changes nothing the digest covers may decode: the same message
        assert same_message(got, cap), (muts, got.message)
        assert got.encoding == cap.decoded.encoding


@pytest.mark.parametrize("kind", MUTATIONS)
def test_every_mutation_kind_on_every_capture_set(kind: str) -> None:
    """Deterministic sweep: each mutation at a few positions of one packet of every set."""
    seen: set[str] = set()
    for cap in captures():
        sett = cap.name.split("/")[0]
        if sett in seen:
            continue
        seen.add(sett)
        for a in range(0, 4000, 97):
            got = total(mutate(cap.data, kind, a, a // 7, b"\xff=:,\n", cap.data), cap.keys)
            if isinstance(got, Decoded):
                assert same_message(got, cap)


@pytest.mark.parametrize("size", [MAX_PACKET + 1, 4 * MAX_PACKET, 16 << 20])
def test_oversized_packets_are_refused_before_parsing(size: int) -> None:
    for prefix in (b"###\n", b">>>\n", b""):
        data = prefix + b"9" * (size - len(prefix))
        t = time.perf_counter()
        got = total(data, KEYSETS["crc"])
        assert time.perf_counter() - t < 0.05
        assert isinstance(got, Rejected) and got.reason is Reject.TOO_LARGE


def _fill(unit: bytes, head: bytes = b"", tail: bytes = b"") -> bytes:
    room = MAX_PACKET - len(head) - len(tail)
    return head + unit * (room // len(unit)) + tail


def _ns_huge_field(tail: bytes, trailer: bytes = b"3:1 0,") -> bytes:
    """One netstring field that fills the packet, then `tail` (e.g. the end marker and a trailer)."""
    room = MAX_PACKET - 4 - 8 - len(b"(0)a=") - 1 - len(tail) - len(trailer)
    payload = b"(0)a=" + b"x" * room
    return b"###\n" + b"%d:" % len(payload) + payload + b"," + tail + trailer


def _ns_huge_trailer() -> bytes:
    head = b"###\n" + b"5:(0)a=," * (MAX_FIELDS - 1) + b"%%%\n"
    room = MAX_PACKET - len(head) - 8 - 1
    payload = b"1 " + b"f" * (room - 2)
    return head + b"%d:" % len(payload) + payload + b","


def _classic_huge_b64() -> bytes:
    room = (MAX_PACKET - 40) // 4 * 4
    return b">>>\n(1)a=" + b"AAAA" * (room // 4) + b"\nauth=1 0\n<<<\n"


# Packets of at most MAX_PACKET bytes built to be as expensive as possible to parse or to verify.
PATHOLOGICAL: dict[str, Callable[[], bytes]] = {
    "netstring many tiny fields": lambda: _fill(b"5:(0)a=,", b"###\n"),
    "netstring many tiny fields then end": lambda: _fill(b"5:(0)a=,", b"###\n", b"%%%\n3:1 0,"),
    "netstring one huge field, bad digest": lambda: _ns_huge_field(b"%%%\n"),
    "netstring one huge field, no end": lambda: _ns_huge_field(b""),
    "netstring huge trailer": _ns_huge_trailer,
    "netstring huge declared lengths": lambda: _fill(b"9999999:", b"###\n"),
    "netstring colons only": lambda: _fill(b":", b"###\n"),
    "netstring digits only": lambda: _fill(b"1234567", b"###\n"),
    "classic empty lines": lambda: _fill(b"\n", b">>>\n", b"<<<\n"),
    "classic short lines": lambda: _fill(b"ab\n", b">>>\n", b"<<<\n"),
    "classic tiny fields": lambda: _fill(b"a=\n", b">>>\n", b"<<<\n"),
    "classic 1023 fields, one huge": lambda: _fill(
        b"x", b">>>\n" + b"a=\n" * 1021 + b"b=", b"\nauth=1 0\n<<<\n"
    ),
    "classic one huge base64 field": _classic_huge_b64,
    "classic many base64 fields": lambda: _fill(b"(1)a=AAAA\n", b">>>\n", b"auth=1 0\n<<<\n"),
    "classic no newline": lambda: _fill(b"x", b">>>\n", b"<<<\n"),
    "classic parentheses": lambda: _fill(b"(", b">>>\n", b"=\n<<<\n"),
    "nul padding": lambda: _fill(b"\0", b"###\n"),
}


@pytest.mark.parametrize("name", PATHOLOGICAL)
@pytest.mark.parametrize("method", METHODS)
def test_pathological_packets_bounded_time_and_memory(name: str, method: str) -> None:
    data = PATHOLOGICAL[name]()
    assert len(data) <= MAX_PACKET
    keys = KEYSETS[method]
    total(data, keys)  # warm up (imports, caches)
    t = time.perf_counter()
    got = total(data, keys)
    elapsed = time.perf_counter() - t
    assert isinstance(got, Rejected)
    assert elapsed < 0.5, f"{name}: {elapsed:.3f}s"
    tracemalloc.start()
    try:
        total(data, keys)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * len(data) + (64 << 10), f"{name}: peak {peak / len(data):.1f}x the packet"


@FAST
@given(st.binary(max_size=60), st.sampled_from(METHODS))
def test_classic_binary_field_with_any_base64_text(raw: bytes, method: str) -> None:
    """A signed classic frame whose (1) field holds arbitrary text: valid base64 decodes to what the
    text says, anything else is MALFORMED (never an exception, never a silent garbage value)."""
    keys = KEYSETS[method]
    key = keys.signing_key
    text = raw.replace(b"\n", b"")
    msg = Message([Field("t", b"status"), Field("src", b"hb1")])
    body = classic_body(msg) + b"(1)srcuuid=" + text + b"\n"
    signed = body + b"auth=" + auth_value(key, body).encode() + b"\n"
    got = total(b">>>\n" + signed + b"<<<\n", keys)
    try:
        value = base64.b64decode(text, validate=True)
    except ValueError:
        assert isinstance(got, Rejected) and got.reason is Reject.MALFORMED
        return
    if base64.b64encode(value) == text:
        assert isinstance(got, Decoded), got
        assert got.message.get_bytes("srcuuid") == value
    else:  # non-canonical padding bits: the receiver's digest covers the canonical form
        assert isinstance(got, (Decoded, Rejected))


name_st = st.one_of(
    st.from_regex(rb"[a-z]{1,8}", fullmatch=True),
    st.binary(max_size=10),
)
field_st = st.tuples(st.sampled_from(b"0123456789x"), name_st, st.binary(max_size=30))


@FAST
@given(st.lists(field_st, max_size=12), st.sampled_from(METHODS))
def test_signed_netstring_with_arbitrary_fields(fields: list[tuple[int, bytes, bytes]], method: str) -> None:
    """What a key holder may send: any field list under a valid trailer. Either a typed rejection,
    or a message of string/binary fields with ASCII names that re-renders to the same bytes."""
    key = KEYSETS[method].signing_key
    parts = [b"(%c)%s=%s" % (tag, name, value) for tag, name, value in fields]
    signed = b"###\n" + b"".join(b"%d:%s," % (len(p), p) for p in parts) + b"%%%\n"
    trailer = auth_value(key, signed).encode()
    data = signed + b"%d:%s," % (len(trailer), trailer)
    got = total(data, KEYSETS[method])
    if isinstance(got, Rejected):
        return
    assert len(got.message) == len(fields) <= MAX_FIELDS
    for f in got.message:
        assert f.type in (FieldType.STRING, FieldType.BINARY)
        assert f.name and f.name.isascii()
    again = b"".join(
        b"%d:(%d)%s=%s," % (len(f.name) + len(f.value) + 4, f.type, f.name.encode(), f.value)
        for f in got.message
    )
    assert b"###\n" + again + b"%%%\n" == signed
