"""One regression test per defect the fuzzers found (issue 7, "hostile and broken input").
Each docstring: the input, the symptom before the fix, the fix."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacluster_agent.engine.actions import Acquire, Release, Send
from hacluster_agent.engine.membership import Engine
from hacluster_agent.engine.ordering import MAX_MISSING, Ordering
from hacluster_agent.wire.codec import MAX_FIELDS, MAX_PACKET, Decoded, classic_body, decode
from hacluster_agent.wire.digest import auth_value, heartbeat_crc
from hacluster_agent.wire.errors import Reject, Rejected
from hacluster_agent.wire.message import Message
from hacluster_api.heartbeat.authkeys import parse_authkeys
from hacluster_api.heartbeat.durations import MAX_MS, parse_duration_ms
from hacluster_api.heartbeat.hacf import parse_hacf
from hacluster_api.heartbeat.haresources import parse_haresources, render_haresources
from tests.fuzz.support import KEYSETS, budget
from tests.unit.test_engine import cfg

SHA1 = KEYSETS["sha1"]


def status(seq: int, gen: int = 5, src: str = "a") -> Message:
    return Message.of(("t", "status"), ("st", "active"), ("dt", "1f4"), ("protocol", "1"), ("src", src),
                      ("seq", f"{seq:x}"), ("hg", f"{gen:x}"), ("ts", "6b07fa08"))  # fmt: skip


def standby_engine() -> Engine:
    """b (no home groups, a holds its own) after hearing a alive."""
    e = Engine(cfg("b", "a"))
    e.start(0.0, 1e9)
    e.receive(status(1), "eth0", 0.01)
    e.receive(Message.of(("t", "resource"), ("rsc_hold", "local"), ("rtype", "full"), ("isstable", "1"),
                         ("src", "a"), ("seq", "2"), ("hg", "5"), ("ts", "1")), "eth0", 0.02)  # fmt: skip
    return e


# -- wire -------------------------------------------------------------------------------------------
def test_f1_classic_packet_of_short_lines_is_refused_without_splitting_it_all() -> None:
    """Input: a 256 KiB classic frame of 87,000 short lines. Symptom: body.split() made every line a
    bytes object before the MAX_FIELDS check: peak memory 18x the packet. Fix: split at most
    MAX_FIELDS times."""
    data = b">>>\n" + b"ab\n" * ((MAX_PACKET - 8) // 3) + b"<<<\n"
    tracemalloc.start()
    try:
        got = decode(data, SHA1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(got, Rejected) and got.reason is Reject.TOO_LARGE
    assert peak < 4 * len(data)


@pytest.mark.parametrize("n", [MAX_FIELDS - 1, MAX_FIELDS, MAX_FIELDS + 1])
def test_f1_classic_field_limit_boundary(n: int) -> None:
    msg = Message.of(*[("f", "x")] * (n - 1))
    body = classic_body(msg)
    body += b"auth=" + auth_value(SHA1.signing_key, body).encode() + b"\n"
    got = decode(b">>>\n" + body + b"<<<\n", SHA1)
    if n <= MAX_FIELDS:
        assert isinstance(got, Decoded) and len(got.message) == n
    else:
        assert isinstance(got, Rejected) and got.reason is Reject.TOO_LARGE


def _reference_crc(data: bytes) -> int:
    """The former pure-Python table implementation (the protocol notes' definition)."""
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else (c << 1)
        table.append(c & 0xFFFFFFFF)
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) ^ b) & 0xFF]
    return ~crc & 0xFFFFFFFF


@settings(max_examples=budget(200), deadline=None)
@given(st.binary(max_size=300))
def test_f2_fast_crc_equals_the_reference(data: bytes) -> None:
    assert heartbeat_crc(data) == _reference_crc(data)


def test_f2_crc_of_a_maximum_packet_is_cheap() -> None:
    """Input: 256 KiB packets to a receiver with crc keys. Symptom: the pure-Python CRC took ~45 ms
    per packet before it could reject it (~20 packets/s kept a core busy). Fix: zlib.crc32 on the
    bit-reflected bytes, reflected back (~0.4 ms)."""
    data = bytes(range(256)) * (MAX_PACKET // 256)
    heartbeat_crc(data)
    t = time.perf_counter()
    heartbeat_crc(data)
    assert time.perf_counter() - t < 0.02


# -- engine -----------------------------------------------------------------------------------------
def test_f3_flood_of_gapped_seqs_keeps_rexmit_bookkeeping_bounded_and_fast() -> None:
    """Input: 3000 authentic messages, each 1-250 seqs after the previous. Symptom: the rexmit dict
    kept every seq the ordering had already given up on: 264,000 entries, 2 million NS_rexmit
    requests and 146 s of CPU; Ordering trimmed its missing set with one min() per seq. Fix: rexmit
    is pruned to the ordering's missing set; the trim is one sort."""
    e = standby_engine()
    seq, now, asked = 2, 0.02, 0
    t = time.perf_counter()
    for i in range(3000):
        seq += 1 + (i * 7919) % 250
        now += 0.001
        e.receive(status(seq), "eth0", now)
        if i % 50 == 0:
            asked += sum(isinstance(a, Send) and a.message.type == "NS_rexmit" for a in e.tick(now))
        assert len(e.rexmit) <= MAX_MISSING
    assert time.perf_counter() - t < 5.0
    assert asked <= 60 * MAX_MISSING


def test_f3_ordering_trim_is_not_quadratic() -> None:
    o = Ordering()
    o.check(1, 1)
    seq = 1
    t = time.perf_counter()
    for _ in range(3000):
        seq += 250
        o.check(1, seq)
        assert len(o.missing) <= MAX_MISSING
    assert time.perf_counter() - t < 2.0
    assert min(o.missing) > seq - 2 * MAX_MISSING  # it forgets the oldest


def test_f4_replayed_ns_rexmit_is_answered_once_per_resend_interval() -> None:
    """Input: one real NS_rexmit (no seq, so never a duplicate) replayed 1000 times. Symptom: 1000
    x up to 50 resent messages or NAKs: an amplifier for anyone who recorded a packet. Fix: a seq
    is resent (or NAKed) at most once per RESEND_EVERY (0.24 s, as Heartbeat)."""
    e = standby_engine()
    for _ in range(5):
        e._send(0.1, Message.of(("t", "resource"), ("rsc_hold", "none")))
    req = Message.of(("t", "NS_rexmit"), ("dest", "b"), ("firstseq", "1"), ("lastseq", "60"),
                     ("src", "a"), ("hg", "5"), ("ts", "1"))  # fmt: skip
    sends = [sum(isinstance(a, Send) for a in e.receive(req, "eth0", 1.0)) for _ in range(1000)]
    assert sends[0] == 50 and sum(sends) == 50
    assert sum(isinstance(a, Send) for a in e.receive(req, "eth0", 1.25)) == 50


def test_f5_replayed_shutdone_of_an_earlier_generation_before_first_contact() -> None:
    """Input: b (re)starts; before a's next status arrives, a replay of a's shutdone from an earlier
    generation. Symptom: with no generation known yet it was accepted: peer dead, b acquired a's
    group while a still held it (two owners). Fix: before the peer's first status, only status and
    NS_ messages are acted on (counted as rejected: peer_not_up)."""
    e = Engine(cfg("b", "a"))
    e.start(0.0, 1e9)
    old = Message.of(("t", "shutdone"), ("st", "dead"), ("src", "a"), ("seq", "b"), ("hg", "4"), ("ts", "1"))
    out = e.receive(old, "eth0", 0.05)
    assert not [a for a in out if isinstance(a, (Acquire, Release))]
    assert e.peer.alive is None and e.counters["rejected_peer_not_up"] == 1
    e.receive(status(1), "eth0", 0.1)  # the live owner, generation 5
    assert e.peer.alive is True
    assert not [a for a in e.receive(old, "eth0", 0.2) if isinstance(a, (Acquire, Release))]
    assert e.counters["rejected_replay"] == 1


def test_f6_ask_resources_with_a_bad_rsc_hold_is_refused() -> None:
    """Input: ask_resources info=me rsc_hold=bogus. Symptom: accepted: the peer was marked standby
    and giving up 'bogus', and our answer echoed rsc_hold=bogus. Fix: BAD_FIELDS, like resource."""
    e = standby_engine()
    ask = Message.of(("t", "ask_resources"), ("rsc_hold", "bogus"), ("info", "me"), ("src", "a"),
                     ("seq", "3"), ("hg", "5"), ("ts", "1"))  # fmt: skip
    out = e.receive(ask, "eth0", 0.1)
    assert not [a for a in out if isinstance(a, Send)]
    assert e.peer.standby is False and e.peer.giving_up is None
    assert e.counters["rejected_bad_fields"] == 1


@pytest.mark.parametrize("value", ["\xb2", "1\xb3", "\xb9" * 3])
def test_f7_unicode_digit_in_rexmit_range_is_bad_fields_not_an_exception(value: str) -> None:
    """Input: NS_rexmit firstseq=<byte 0xB2> ('²' in latin-1). Symptom: '²'.isdigit() is True but
    int('²') raises: ValueError out of Engine.receive (the media layer logged a traceback per packet).
    Fix: ASCII digits only."""
    e = standby_engine()
    req = Message.of(("t", "NS_rexmit"), ("dest", "b"), ("firstseq", value), ("lastseq", "3"),
                     ("src", "a"), ("hg", "5"), ("ts", "1"))  # fmt: skip
    e.receive(req, "eth0", 0.1)
    assert e.counters["rejected_bad_fields"] == 1


@pytest.mark.parametrize("seq", ["-1f", "+5", " 5", "0x5", "1_f", "5 "])
def test_f8_only_plain_hex_is_a_seq(seq: str) -> None:
    """Input: seq=-1f (or +5, 0x5, 1_f, spaces). Symptom: int(x, 16) accepted them; a negative seq
    put negative numbers in the missing set and NS_rexmit firstseq=-30 went out. Fix: [0-9a-fA-F]+."""
    e = Engine(cfg("b", "a"))
    e.start(0.0, 1e9)
    e.receive(status(1, gen=5).without("seq").add("seq", seq), "eth0", 0.01)
    assert e.counters["rejected_bad_fields"] == 1 and e.peer.alive is None
    e.receive(status(1, gen=5).without("ts").add("ts", seq), "eth0", 0.02)
    assert e.counters["rejected_bad_fields"] == 2


def test_f9_counters_do_not_grow_with_message_types() -> None:
    """Input: authentic messages with 5000 different `t` values. Symptom: one rx_<t> counter each:
    unbounded memory and an ever larger status snapshot. Fix: unknown types count as rx_unknown."""
    e = standby_engine()
    for i in range(5000):
        e.receive(Message.of(("t", f"x{i}"), ("src", "a"), ("seq", f"{i + 3:x}"), ("hg", "5"), ("ts", "1")),
                  "eth0", 0.1)  # fmt: skip
    assert e.counters["rx_unknown"] == 5000
    assert len(e.counters) < 20


# -- config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_authkeys, "auth \xb2\n1 sha1 k\n"),
        (parse_authkeys, "auth 1\n\xb2 sha1 k\n"),
        (parse_authkeys, "auth 1\n1 sha1 k\n" + "9" * 5000 + " md5 k\n"),
        (parse_hacf, "udpport \xb2\nbcast eth0\nnode a\n"),
        (parse_hacf, "baud \xb2\nserial /dev/ttyS0\nnode a\n"),
        (parse_hacf, "debug \xb9\nbcast eth0\nnode a\n"),
        (parse_hacf, "mcast eth0 239.1.1.1 694 \xb2 0\nnode a\n"),
        (parse_hacf, "udpport " + "9" * 5000 + "\nbcast eth0\nnode a\n"),
        (parse_hacf, "udpport \u0661\u0662\nbcast eth0\nnode a\n"),  # Arabic-Indic 12: int() reads it
        (parse_haresources, "a IPaddr::192.0.2.1/\xb2\n"),
    ],
)
def test_f10_non_ascii_digits_are_findings_not_tracebacks(parse: object, text: str) -> None:
    """Input: '²' (or '١٢', or 5000 digits) where a number goes. Symptom: str.isdigit() accepted it,
    then int() raised ValueError out of the parser (or read '١٢' as 12, or haresources said
    "invalid literal for int()"). Fix: lines.is_number(): ASCII digits, at most 9."""
    _, found = parse(text, "f")  # type: ignore[operator]
    assert found.errors
    assert all(1 <= f.line <= text.count("\n") for f in found.errors if f.line is not None)
    assert not any("invalid literal" in f.message for f in found.errors)


@pytest.mark.parametrize("word", ["9" * 400, "9" * 309 + "ms", "1" + "0" * 30, str(MAX_MS + 1) + "ms"])
def test_f11_enormous_time_values_are_findings(word: str) -> None:
    """Input: keepalive 999…9 (400 digits). Symptom: float() gave inf, int(inf) raised OverflowError
    out of parse_hacf; 300 digits were accepted as a keepalive of 1e297 s. Fix: at most 2^31-1 ms."""
    _, found = parse_hacf(f"keepalive {word}\nbcast eth0\nnode a\n")
    assert [f.line for f in found.errors] == [1] and "too long" in found.errors[0].message
    with pytest.raises(ValueError):
        parse_duration_ms(word)
    assert parse_duration_ms(f"{MAX_MS}ms") == MAX_MS


@pytest.mark.parametrize("sep", ["\x0c", "\x0b", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_f12_line_numbers_count_only_real_line_breaks(sep: str) -> None:
    """Input: ha.cf with a form feed (or \\v, \\x1c-\\x1e, U+0085, U+2028/9) inside a line. Symptom:
    str.splitlines() counted it as a line break: 'ha.cf:4' in a two-line file. Fix: split at \\n,
    \\r\\n and \\r only (as editors and Python's universal newlines)."""
    _, found = parse_hacf(f"bcast eth0\nnode a b # x{sep}y\nfrobnicate yes\n")
    assert [(f.line, f.message) for f in found.errors] == [(3, "unknown directive 'frobnicate'")]
    _, found = parse_haresources(f"a 192.0.2.1{sep}\nb{sep}\n", nodes=["a", "b"])
    assert [f.line for f in found.errors] == [2]
    _, found = parse_authkeys(f"auth 1{sep}\n1 sha1 k\n2 md5\n")
    assert [f.line for f in found.errors] == [3]


@pytest.mark.parametrize(
    "spec",
    [
        "192.0.2.1//eth1",
        "IPaddr2::192.0.2.1//eth1/192.0.2.255",
        "IPaddr::192.0.2.1//192.0.2.255",
        "IPv6addr::2001:db8::5//eth0",
    ],
)
def test_f13_interface_without_prefix_survives_a_render(spec: str) -> None:
    """Input (atheris_config): haresources `hb2 IPv6addr::2001:db8::5//4 smb`, i.e. an interface
    (or broadcast) with the prefix left empty, as Heartbeat's IPaddr allows. Symptom: the model kept
    the interface (the agent used it) but IPResource.spec, hence its name and render_haresources,
    dropped it: a rendered file put the VIP on an auto-detected interface. Fix: `ip//iface[/bcast]`."""
    m, f = parse_haresources(f"a {spec}\n")
    assert m is not None, f.items
    res = m.groups[0].resources[0]
    again, _ = parse_haresources(render_haresources(m))
    assert again is not None and again.model_dump() == m.model_dump()
    assert res.name.endswith(spec.split("::")[-1])


def test_f14_a_last_argument_ending_in_a_backslash_survives_a_render() -> None:
    """Input (test_fuzz_config): haresources `a 192.0.2.7 Filesystem::/dev/sdb1\\ \\`: the last
    backslash continues the line, so the argument is `/dev/sdb1\\`. Symptom: the rendered line ended
    in that backslash, which read back as a continuation: the argument lost it (and a next group's
    line would have been joined to this one). Fix: such a line continues onto an empty line."""
    m, f = parse_haresources("a 192.0.2.7 Filesystem::/dev/sdb1\\ \\\nb 192.0.2.8\n")
    assert m is not None, f.items
    assert m.groups[0].resources[1].model_dump()["args"] == ["/dev/sdb1\\"]
    assert len(m.groups) == 1  # `b 192.0.2.8` was joined: two more resources of group a
    m, f = parse_haresources("a Filesystem::/dev/sdb1\\ \\\n\nb 192.0.2.8\n")
    assert m is not None and [g.home for g in m.groups] == ["a", "b"], f.items
    again, _ = parse_haresources(render_haresources(m))
    assert again is not None and again.model_dump() == m.model_dump()
