"""Heartbeat's two encodings: netstring (`###`…`%%%` + trailer digest, what UDP carries) and classic
(`>>>`…`<<<` with an inner `auth` field, what serial lines carry and UDP also accepts).

Decoding is total: any bytes give a Message or a Rejected, bounded by MAX_PACKET and MAX_FIELDS.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from hacluster_api.heartbeat.authkeys import AuthKey, AuthKeys

from .digest import auth_value, check_auth_value
from .errors import Reject, Rejected
from .message import Field, FieldType, Message

MAX_PACKET = 256 * 1024  # Heartbeat's MAXMSG
MAX_FIELDS = 1024
NETSTRING_START = b"###\n"
NETSTRING_END = b"%%%\n"
CLASSIC_START = b">>>\n"
CLASSIC_END = b"<<<\n"
AUTH = "auth"

Encoding = Literal["netstring", "classic"]


@dataclass(frozen=True, slots=True)
class Decoded:
    """A packet that parsed and whose digest verified."""

    message: Message
    encoding: Encoding
    auth_index: int


# -- classic ------------------------------------------------------------------------------------
def _classic_line(f: Field) -> bytes:
    if f.type is FieldType.STRING:
        return f.name.encode("latin-1") + b"=" + f.value + b"\n"
    return b"(%d)%s=%s\n" % (f.type, f.name.encode("latin-1"), base64.b64encode(f.value))


def classic_body(msg: Message) -> bytes:
    """The bytes the inner digest covers: every field but `auth`, rendered classic, no markers."""
    return b"".join(_classic_line(f) for f in msg.fields if f.name != AUTH)


def sign_inner(msg: Message, key: AuthKey) -> Message:
    """Replace any `auth` field with a fresh inner digest, as the last field."""
    bare = msg.without(AUTH)
    return bare.add(AUTH, auth_value(key, classic_body(bare)))


def encode_classic(msg: Message, key: AuthKey) -> bytes:
    signed = sign_inner(msg, key)
    return CLASSIC_START + b"".join(_classic_line(f) for f in signed.fields) + CLASSIC_END


def _parse_classic(data: bytes) -> Message | Rejected:
    if not data.endswith(CLASSIC_END):
        return Rejected(Reject.MALFORMED, "classic message without '<<<' end line")
    body = data[len(CLASSIC_START) : -len(CLASSIC_END)]
    fields: list[Field] = []
    # maxsplit: splitting 256 KiB of short lines first would allocate ~18x the packet
    lines = body.split(b"\n", MAX_FIELDS) if body else [b""]
    if b"\n" in lines[-1]:
        return Rejected(Reject.TOO_LARGE, f"more than {MAX_FIELDS} fields")
    for raw in lines[:-1]:
        if len(fields) >= MAX_FIELDS:
            return Rejected(Reject.TOO_LARGE, f"more than {MAX_FIELDS} fields")
        name, eq, value = raw.partition(b"=")
        if not eq or not name:
            return Rejected(Reject.MALFORMED, f"classic line without name=value: {raw[:40]!r}")
        ftype = FieldType.STRING
        if name.startswith(b"(") and b")" in name:
            tag, _, name = name[1:].partition(b")")
            if tag not in (b"0", b"1"):
                return Rejected(Reject.UNSUPPORTED, f"classic field type {tag[:8]!r}")
            ftype = FieldType(int(tag))
            if ftype is FieldType.BINARY:
                try:
                    value = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    return Rejected(Reject.MALFORMED, f"bad base64 in field {name[:40]!r}")
        if not name.isascii() or not name:
            return Rejected(Reject.MALFORMED, "field name is not ASCII")
        fields.append(Field(name.decode("ascii"), value, ftype))
    if body and not body.endswith(b"\n"):
        return Rejected(Reject.MALFORMED, "classic body does not end in a newline")
    return Message(fields)


# -- netstring ----------------------------------------------------------------------------------
def _ns(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def _netstring_field(f: Field) -> bytes:
    return _ns(b"(%d)%s=%s" % (f.type, f.name.encode("latin-1"), f.value))


def encode_netstring(msg: Message, key: AuthKey, *, inner_auth: bool = True) -> bytes:
    """UDP form. With `inner_auth` (Heartbeat's default msgfmt classic) the inner `auth` field is
    included too; the trailer digest covers everything from `###\\n` through `%%%\\n`."""
    signed = sign_inner(msg, key) if inner_auth else msg.without(AUTH)
    signed_part = NETSTRING_START + b"".join(_netstring_field(f) for f in signed.fields) + NETSTRING_END
    return signed_part + _ns(auth_value(key, signed_part).encode())


def _read_netstring(data: bytes, pos: int) -> tuple[bytes, int] | Rejected:
    colon = data.find(b":", pos, pos + 8)
    digits = data[pos:colon] if colon >= 0 else b""
    if colon < 0 or not digits.isdigit():
        return Rejected(Reject.MALFORMED, f"netstring length expected at byte {pos}")
    length = int(digits)
    end = colon + 1 + length
    if end >= len(data) or data[end : end + 1] != b",":
        return Rejected(Reject.MALFORMED, f"netstring at byte {pos} overruns the packet")
    return data[colon + 1 : end], end + 1


def _parse_netstring(data: bytes) -> tuple[Message, bytes, bytes] | Rejected:
    """Returns (message, signed part, trailer payload)."""
    pos = len(NETSTRING_START)
    fields: list[Field] = []
    while not data.startswith(NETSTRING_END, pos):
        if len(fields) >= MAX_FIELDS:
            return Rejected(Reject.TOO_LARGE, f"more than {MAX_FIELDS} fields")
        got = _read_netstring(data, pos)
        if isinstance(got, Rejected):
            return got
        payload, pos = got
        if not payload.startswith(b"(") or payload[2:3] != b")":
            return Rejected(Reject.MALFORMED, f"netstring field without (type): {payload[:40]!r}")
        tag = payload[1:2]
        if tag not in (b"0", b"1"):
            return Rejected(Reject.UNSUPPORTED, f"field type {tag!r} (nested or compressed)")
        name, eq, value = payload[3:].partition(b"=")
        if not eq or not name or not name.isascii():
            return Rejected(Reject.MALFORMED, f"netstring field without name=: {payload[:40]!r}")
        fields.append(Field(name.decode("ascii"), value, FieldType(int(tag))))
    end = pos + len(NETSTRING_END)
    trailer = _read_netstring(data, end)
    if isinstance(trailer, Rejected):
        return Rejected(Reject.NO_AUTH, "netstring message without trailer digest")
    payload, after = trailer
    if after != len(data):
        return Rejected(Reject.MALFORMED, f"{len(data) - after} bytes after the trailer")
    return Message(fields), data[:end], payload


# -- both ---------------------------------------------------------------------------------------
def decode(data: bytes, keys: AuthKeys) -> Decoded | Rejected:
    """Parse and authenticate one packet. Never raises; never reads beyond MAX_PACKET bytes."""
    try:
        return _decode(data, keys)
    except Exception as e:  # pragma: no cover - a bug guard: the decoder must stay total
        return Rejected(Reject.MALFORMED, f"decoder error {type(e).__name__}")


def _decode(data: bytes, keys: AuthKeys) -> Decoded | Rejected:
    if len(data) > MAX_PACKET:
        return Rejected(Reject.TOO_LARGE, f"{len(data)} bytes (limit {MAX_PACKET})")
    data = data.rstrip(b"\0")  # receivers append a NUL; tolerate one sent on the wire
    if data.startswith(NETSTRING_START):
        parsed = _parse_netstring(data)
        if isinstance(parsed, Rejected):
            return parsed
        msg, signed, trailer = parsed
        if not check_auth_value(trailer, keys.keys, signed):
            return Rejected(Reject.BAD_AUTH, "netstring trailer digest does not verify")
        return Decoded(msg, "netstring", _index(trailer))
    if data.startswith(CLASSIC_START):
        msg_or = _parse_classic(data)
        if isinstance(msg_or, Rejected):
            return msg_or
        inner = msg_or.get_bytes(AUTH)
        if inner is None:
            return Rejected(Reject.NO_AUTH, "classic message without auth field")
        if not check_auth_value(inner, keys.keys, classic_body(msg_or)):
            return Rejected(Reject.BAD_AUTH, "inner auth digest does not verify")
        return Decoded(msg_or, "classic", _index(inner))
    return Rejected(Reject.MALFORMED, f"unknown start marker {data[:4]!r}")


def _index(value: bytes) -> int:
    return int(value.partition(b" ")[0])


def encode(msg: Message, keys: AuthKeys, encoding: Encoding = "netstring") -> bytes:
    """Sign with the active (`auth N`) key and encode."""
    key = keys.signing_key
    return encode_netstring(msg, key) if encoding == "netstring" else encode_classic(msg, key)
