"""What the fuzzers share: the real captured packets with their keys, the structure-aware packet
mutations, and the seed config texts. No test functions here (pytest collects nothing)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hacluster_agent.wire.codec import Decoded, decode
from hacluster_api.heartbeat.authkeys import AuthKeys, parse_authkeys
from hacluster_api.heartbeat.hacf import parse_hacf
from hacluster_api.heartbeat.haresources import parse_haresources
from hacluster_api.heartbeat.issues import Findings

# HACLUSTER_FUZZ_SCALE=50 multiplies every property's example budget for a long run (default 1:
# the normal suite stays at a few seconds per property).
SCALE = max(1, int(os.environ.get("HACLUSTER_FUZZ_SCALE", "1")))


def budget(examples: int) -> int:
    return examples * SCALE


DATA = Path(__file__).parent.parent / "data"
CAPTURES = DATA / "captures"
ARTICLE = DATA / "article"
CORPUS = Path(__file__).parent / "corpus"


def keys_of(text: str) -> AuthKeys:
    k, f = parse_authkeys(text)
    assert k is not None, f.items
    return k


# One key set per method, as in the captures (index 1 everywhere).
KEYSETS: dict[str, AuthKeys] = {
    "sha1": keys_of("auth 1\n1 sha1 hacluster-sha1-key\n"),
    "md5": keys_of("auth 1\n1 md5 hacluster-md5-key\n"),
    "crc": keys_of("auth 1\n1 crc\n"),
}
METHODS = tuple(KEYSETS)


@dataclass(frozen=True)
class Capture:
    """One real packet of the real daemon, with the keys that verify it and what it decodes to."""

    name: str  # set/NNN.bin
    method: str  # sha1 | md5 | crc
    data: bytes
    decoded: Decoded

    @property
    def keys(self) -> AuthKeys:
        return KEYSETS[self.method]


@cache
def captures() -> tuple[Capture, ...]:
    out = []
    for d in sorted(p for p in CAPTURES.iterdir() if (p / "meta.json").exists()):
        method = json.loads((d / "meta.json").read_text())["auth"]
        for f in sorted(d.glob("*.bin")):
            data = f.read_bytes()
            got = decode(data, KEYSETS[method])
            assert isinstance(got, Decoded), (f, got)
            out.append(Capture(f"{d.name}/{f.name}", method, data, got))
    return tuple(out)


# -- structure of a packet: where its fields are ----------------------------------------------------
_NS_FIELD = re.compile(rb"(\d{1,7}):")


def netstring_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every netstring in a `###` packet, fields then trailer (markers excluded)."""
    spans, pos = [], 4
    while pos < len(data):
        if data.startswith(b"%%%\n", pos):
            pos += 4
            continue
        m = _NS_FIELD.match(data, pos)
        if not m:
            break
        end = m.end() + int(m.group(1)) + 1
        spans.append((pos, end))
        pos = end
    return spans


def classic_lines(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every field line of a `>>>` frame, newline included."""
    spans: list[tuple[int, int]] = []
    pos = 4
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0 or data.startswith(b"<<<\n", pos):
            return spans
        spans.append((pos, nl + 1))
        pos = nl + 1


def field_spans(data: bytes) -> list[tuple[int, int]]:
    return netstring_spans(data) if data.startswith(b"###\n") else classic_lines(data)


# -- mutations: (kind, a, b, blob) applied to a real packet ----------------------------------------
MUTATIONS = (
    "bitflip",
    "truncate",
    "insert",
    "delete",
    "overwrite",
    "dup_field",
    "drop_field",
    "swap_fields",
    "length",
    "huge_length",
    "type_tag",
    "non_ascii_name",
    "drop_start",
    "drop_end",
    "swap_markers",
    "nul_tail",
    "splice",
    "bad_base64",
)


def mutate(data: bytes, kind: str, a: int, b: int, blob: bytes, other: bytes = b"") -> bytes:
    """One deterministic mutation of a packet; a and b are any non-negative ints (taken modulo)."""
    n = max(len(data), 1)
    spans = field_spans(data)
    if kind == "bitflip":
        p = a % n
        return data[:p] + bytes([data[p] ^ (1 << (b % 8))]) + data[p + 1 :] if data else data
    if kind == "truncate":
        return data[: a % n]
    if kind == "insert":
        p = a % (n + 1)
        return data[:p] + blob + data[p:]
    if kind == "delete":
        p = a % n
        return data[:p] + data[p + 1 + b % 16 :]
    if kind == "overwrite":
        p = a % n
        return data[:p] + blob + data[p + len(blob) :]
    if kind == "splice":
        return data[: a % n] + other[b % max(len(other), 1) :]
    if kind == "nul_tail":
        return data + b"\0" * (1 + b % 4)
    if kind == "drop_start":
        return data[4:]
    if kind == "drop_end":
        marker = b"%%%\n" if data.startswith(b"###\n") else b"<<<\n"
        return data.replace(marker, b"", 1)
    if kind == "swap_markers":
        table = {b"###\n": b">>>\n", b">>>\n": b"###\n"}
        return table.get(data[:4], b"###\n") + data[4:]
    if not spans:
        return data + blob
    s, e = spans[a % len(spans)]
    if kind == "dup_field":
        return data[:e] + data[s:e] + data[e:]
    if kind == "drop_field":
        return data[:s] + data[e:]
    if kind == "swap_fields":
        s2, e2 = spans[b % len(spans)]
        if s2 < s:
            s, e, s2, e2 = s2, e2, s, e
        if s2 < e:
            return data
        return data[:s] + data[s2:e2] + data[e:s2] + data[s:e] + data[e2:]
    if data.startswith(b"###\n"):
        colon = data.index(b":", s)
        length = int(data[s:colon])
        if kind == "length":
            delta = (b % 33) - 16 or 1
            return data[:s] + str(max(length + delta, 0)).encode() + data[colon:]
        if kind == "huge_length":
            huge = (b"9999999", b"262144", b"4294967296", b"-1", b"0x10", b"1e3", b"")[b % 7]
            return data[:s] + huge + data[colon:]
        if kind == "type_tag":  # (0) → nested, list, compressed, uncompressed, junk
            p = colon + 2
            tag = b"2345x(9 "[b % 8 : b % 8 + 1]
            return data[:p] + tag + data[p + 1 :]
        if kind == "non_ascii_name":
            p = colon + 4
            return data[:p] + bytes([0x80 + b % 128]) + data[p + 1 :]
        return data
    # classic frames
    if kind in ("length", "huge_length"):
        return data[:s] + b"(1)" + data[s:]  # a string value read as base64
    if kind == "type_tag":
        tag = (b"(2)", b"(3)", b"(4)", b"(5)", b"(x)", b"(", b"()")[b % 7]
        return data[:s] + tag + data[s:]
    if kind == "non_ascii_name":
        return data[:s] + bytes([0x80 + b % 128]) + data[s + 1 :]
    if kind == "bad_base64":
        line = data[s:e]
        if line.startswith(b"(1)"):
            eq = line.index(b"=") + 1
            junk = (b"!", b"=", b"A", b"====", b" ", b"\xff", b"-_")[b % 7]
            q = eq + a % max(len(line) - eq, 1)
            return data[: s + q] + junk + data[s + q :]
        return data[:s] + b"(1)srcuuid=" + blob + b"\n" + data[s:]
    return data


# -- config seeds -----------------------------------------------------------------------------------
HACF_SEEDS = (
    (ARTICLE / "ha.cf").read_text(),
    "logfile /var/log/ha-log\nkeepalive 100ms\ndeadtime 500ms\nudpport 695\nbcast eth0\n"
    "mcast eth1 239.192.0.1 694 1 0\nucast eth1 192.0.2.2\nbaud 38400\nserial /dev/ttyS0\n"
    "node Alpha\nnode beta\nauto_failback off\n",
    "logfile /var/log/ha-log\nlogfacility none\nuse_logd no\nkeepalive 2\ndeadtime 10\ninitdead 20\n"
    "ucast eth0 192.0.2.12\nauto_failback on\nnode hb1 hb2\n",
    "keepalive 2\nwarntime 5\ndeadtime 10\nmcast6 eth0 ff02::1:2 694 1 0\nucast6 eth0 2001:db8::2\n"
    "node a\nnode b\nnice_failback on\ncrm off\nmsgfmt netstring\ndebug 1\nping 192.0.2.1\n"
    "respawn hacluster /usr/lib/heartbeat/ipfail\nwatchdog /dev/watchdog\nudp port 694\n",
)
HARESOURCES_SEEDS = (
    (ARTICLE / "haresources").read_text(),
    "# comment\nalpha 192.0.2.100 IPaddr::192.0.2.101/24/eth1/192.0.2.255 \\\n"
    "   IPaddr2::2001:db8::10/64/eth0 Filesystem::/dev/sda1::/data::ext3 httpd\n",
    "hb1 IPaddr2::192.0.2.100/24/eth0\nhb2 IPv6addr::2001:db8::5/64 smb\n",
    "a 192.0.2.7//eth1 IPaddr::192.0.2.8//192.0.2.255 IPv6addr::2001:db8::9//eth0 Filesystem::/dev/sdb1\n",
)
AUTHKEYS_SEEDS = (
    (ARTICLE / "authkeys").read_text(),
    "auth 2\n1 sha1 oldkey\n2 md5 newkey\n3 crc\n",
    "auth 1\n1 crc\n",
)
# Words that have broken parsers before or are likely to: unicode digits (isdigit() but not int()),
# overflowing numbers, line breaks str.splitlines() knows and editors do not, continuations.
TRICKY_WORDS = (
    "²", "١٢", "9" * 400, "9" * 5000, "1" + "0" * 30, "-1", "0", "00", "0x10", "1e3", "1.5", ".5", "ms", "2ms",
    "500us", "nan", "inf", "\x00", "\x0c", "\x0b", "\x1c", "\x85", "\u2028", "\\", "#", "::", "/",
    "/dev/ttyS0", "eth0", "192.0.2.1", "239.1.1.1", "ff02::1", "fe80::1%eth0", "1.2.3.4/²",
    "IPaddr::1.2.3.4/24/eth0/1.2.3.255", "IPaddr::1.2.3.4//eth1", "1.2.3.4//eth1/1.2.3.255", "IPaddr::", "IPv6addr::1.2.3.4", "a" * 300, "é",
    "auth", "sha1", "md5", "crc", "on", "off", "legacy", "node", "hb1", "\t", "\r",
)  # fmt: skip
DIRECTIVES = (
    "keepalive", "deadtime", "warntime", "initdead", "udpport", "baud", "bcast", "udp", "ucast",
    "ucast6", "mcast", "mcast6", "serial", "node", "auto_failback", "nice_failback", "ping",
    "respawn", "crm", "pacemaker", "msgfmt", "logfile", "debugfile", "logfacility", "use_logd",
    "debug", "watchdog", "auth", "_port", "d_node", "finish",
)  # fmt: skip


def editor_lines(text: str) -> int:
    """How many lines an editor (and Python's universal newlines) shows for this text."""
    return len(re.split(r"\r\n|\r|\n", text))


# -- the config parsers' contract ----------------------------------------------------------------
NODES = ["alpha", "beta", "servidor1", "servidor2", "hb1", "hb2", "a", "b"]


def _hares(text: str, filename: str) -> tuple[Any, Findings]:
    return parse_haresources(text, filename, nodes=NODES)


PARSERS: dict[str, Callable[[str, str], tuple[Any, Findings]]] = {
    "ha.cf": parse_hacf,
    "haresources": _hares,
    "haresources (no ha.cf)": parse_haresources,
    "authkeys": parse_authkeys,
}
SEEDS = {
    "ha.cf": HACF_SEEDS,
    "haresources": HARESOURCES_SEEDS,
    "haresources (no ha.cf)": HARESOURCES_SEEDS,
    "authkeys": AUTHKEYS_SEEDS,
}


def check_config(kind: str, text: str) -> Any:
    """Parse; never a traceback; every finding names the file and a line that exists (or None)."""
    filename = f"/etc/ha.d/{kind.split()[0]}"
    model, found = PARSERS[kind](text, filename)
    lines = editor_lines(text)
    for f in found.items:
        assert f.file == filename
        assert f.line is None or 1 <= f.line <= lines, f"{f} but the file has {lines} lines: {text!r}"
        assert f.message.strip(), f
        assert str(f).startswith(filename + (f":{f.line}: " if f.line is not None else ": "))
    assert (model is None) == bool(found.errors), found.items
    return model
