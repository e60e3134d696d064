"""The wire codec: Heartbeat's encodings and digests, and a decoder that is total."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacluster_agent.wire.codec import MAX_PACKET, Decoded, classic_body, decode, encode
from hacluster_agent.wire.digest import heartbeat_crc
from hacluster_agent.wire.errors import Reject, Rejected
from hacluster_agent.wire.message import Field, FieldType, Message
from hacluster_api.heartbeat.authkeys import AuthKeys, parse_authkeys


def keys(text: str) -> AuthKeys:
    k, f = parse_authkeys(text)
    assert k is not None, f.items
    return k


SHA1 = keys("auth 1\n1 sha1 secret\n")
MD5 = keys("auth 2\n2 md5 secret\n")
CRC = keys("auth 3\n3 crc\n")
STATUS = Message.of(
    ("t", "status"), ("st", "active"), ("dt", "1388"), ("protocol", "1"), ("src", "hb1"),
    ("srcuuid", bytes(range(16))), ("seq", "6"), ("hg", "6b07fa08"), ("ts", "6b07fa08"), ("ttl", "3"),
)  # fmt: skip


def test_crc_is_msb_first_poly_04c11db7_init_0_final_not() -> None:
    # Same algorithm as POSIX cksum without the length: cksum('') = ~0; known value for '123456789'
    assert heartbeat_crc(b"") == 0xFFFFFFFF
    assert heartbeat_crc(b"123456789") == 0x765E7680  # the CRC-32/POSIX catalogue check value


@pytest.mark.parametrize("ak", [SHA1, MD5, CRC], ids=["sha1", "md5", "crc"])
@pytest.mark.parametrize("enc", ["netstring", "classic"])
def test_round_trip(ak: AuthKeys, enc: str) -> None:
    data = encode(STATUS, ak, enc)  # type: ignore[arg-type]
    got = decode(data, ak)
    assert isinstance(got, Decoded), got
    assert got.message.without("auth") == STATUS
    assert got.encoding == enc


def test_netstring_layout_matches_heartbeat() -> None:
    data = encode(STATUS, SHA1)
    assert data.startswith(b"###\n11:(0)t=status,12:(0)st=active,")
    assert b"27:(1)srcuuid=" + bytes(range(16)) + b"," in data
    head, _, trailer = data.partition(b"%%%\n")
    assert trailer.startswith(b"42:1 ") and trailer.endswith(b",")
    assert b"50:(0)auth=1 " in head  # the inner digest travels too with msgfmt classic


def test_classic_binary_fields_are_base64() -> None:
    data = encode(STATUS, SHA1, "classic")
    assert b"(1)srcuuid=AAECAwQFBgcICQoLDA0ODw==\n" in data
    assert data.startswith(b">>>\nt=status\n") and data.endswith(b"<<<\n")


@pytest.mark.parametrize("enc", ["netstring", "classic"])
def test_wrong_key_is_rejected_as_bad_auth(enc: str) -> None:
    data = encode(STATUS, keys("auth 1\n1 sha1 other\n"), enc)  # type: ignore[arg-type]
    got = decode(data, SHA1)
    assert isinstance(got, Rejected) and got.reason is Reject.BAD_AUTH


def test_unknown_key_index_and_missing_auth() -> None:
    assert isinstance(r := decode(encode(STATUS, MD5), SHA1), Rejected) and r.reason is Reject.BAD_AUTH
    bare = b">>>\n" + classic_body(STATUS) + b"<<<\n"
    assert isinstance(r := decode(bare, SHA1), Rejected) and r.reason is Reject.NO_AUTH


def test_tampered_field_fails_digest() -> None:
    data = encode(STATUS, SHA1).replace(b"st=active", b"st=dead\0\0")
    got = decode(data, SHA1)
    assert isinstance(got, Rejected)


def test_oversized_packet_rejected_without_parsing() -> None:
    got = decode(b"###\n" + b"x" * MAX_PACKET, SHA1)
    assert isinstance(got, Rejected) and got.reason is Reject.TOO_LARGE


def test_key_rotation_accepts_any_configured_key() -> None:
    receiver = keys("auth 1\n1 sha1 old\n2 sha1 new\n")
    sender = keys("auth 2\n2 sha1 new\n")
    got = decode(encode(STATUS, sender), receiver)
    assert isinstance(got, Decoded) and got.auth_index == 2


@settings(max_examples=400)
@given(st.binary(max_size=600))
def test_decoder_is_total_on_random_bytes(data: bytes) -> None:
    for prefix in (b"", b"###\n", b">>>\n"):
        assert isinstance(decode(prefix + data, SHA1), (Decoded, Rejected))


@settings(max_examples=300)
@given(st.integers(0, 400), st.binary(min_size=1, max_size=8))
def test_decoder_is_total_on_mutated_packets(pos: int, junk: bytes) -> None:
    for enc in ("netstring", "classic"):
        data = encode(STATUS, SHA1, enc)  # type: ignore[arg-type]
        p = pos % len(data)
        mutated = data[:p] + junk + data[p + len(junk) :]
        got = decode(mutated, SHA1)
        assert isinstance(got, (Decoded, Rejected))
        if isinstance(got, Decoded):  # only a no-op mutation may verify
            assert got.message.without("auth") == STATUS
        truncated = decode(data[:p], SHA1)
        assert isinstance(truncated, Rejected)


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda n: n != "auth"),
            st.one_of(
                st.binary(max_size=40).map(lambda b: (FieldType.BINARY, b)),
                st.from_regex(r"[ -~]{0,40}", fullmatch=True).map(lambda s: (FieldType.STRING, s.encode())),
            ),
        ),
        max_size=20,
    )
)
def test_round_trip_property(fields: list[tuple[str, tuple[FieldType, bytes]]]) -> None:
    msg = Message(Field(n, v, t) for n, (t, v) in fields)
    for enc in ("netstring", "classic"):
        got = decode(encode(msg, SHA1, enc), SHA1)  # type: ignore[arg-type]
        assert isinstance(got, Decoded), got
        assert got.message.without("auth") == msg
