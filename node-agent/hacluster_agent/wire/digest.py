"""The three authkeys methods, computed exactly as Heartbeat 3.0.6 does (lower-case hex)."""

from __future__ import annotations

import hashlib
import hmac

from ..config.authkeys import AuthKey


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else (c << 1)
        table.append(c & 0xFFFFFFFF)
    return table


_TABLE = _crc_table()


def heartbeat_crc(data: bytes) -> int:
    """CRC-32, polynomial 0x04C11DB7, MSB-first, initial value 0, final NOT, no length appended."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[((crc >> 24) ^ b) & 0xFF]
    return ~crc & 0xFFFFFFFF


def compute_digest(key: AuthKey, data: bytes) -> str:
    """The hex digest of `data` under one authkeys entry (crc printed without leading zeros)."""
    if key.method == "crc":
        return f"{heartbeat_crc(data):x}"
    algo = hashlib.md5 if key.method == "md5" else hashlib.sha1
    return hmac.new(key.key_bytes, data, algo).hexdigest()


def auth_value(key: AuthKey, data: bytes) -> str:
    """The `<index> <hexdigest>` string Heartbeat puts in `auth` fields and netstring trailers."""
    return f"{key.index} {compute_digest(key, data)}"


def check_auth_value(value: bytes, keys: dict[int, AuthKey], data: bytes) -> bool:
    """Verify an `<index> <hex>` value against entry <index> of the receiver's keys, in constant time."""
    index_text, _, hexdigest = value.partition(b" ")
    if not index_text.isdigit() or len(index_text) > 2:
        return False
    key = keys.get(int(index_text))
    if key is None:
        return False
    expected = compute_digest(key, data).encode()
    return hmac.compare_digest(expected, hexdigest.strip())
