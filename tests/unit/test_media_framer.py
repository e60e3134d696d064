"""The classic-frame splitter for serial lines: pure, incremental, bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hacluster_agent.media.framer import ClassicFramer
from hacluster_agent.media.serial import lock_name
from hacluster_agent.wire.codec import MAX_PACKET

# what classic lines are made of (7-bit printable); markers excluded from the body lines
LINE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).filter(
    lambda s: s not in (">>>", "<<<")
)
# noise between frames: no '>' so it can never form a start line, always ends a line
NOISE = st.text(
    st.characters(min_codepoint=0x01, max_codepoint=0x7E, blacklist_characters=">\n\r"), max_size=30
)


def frame(*lines: str) -> bytes:
    return b">>>\n" + b"".join(line.encode() + b"\n" for line in lines) + b"<<<\n"


def feed_in_pieces(framer: ClassicFramer, data: bytes, cuts: list[int]) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    for cut in sorted(set(cuts)):
        out += framer.feed(data[pos:cut])
        pos = cut
    out += framer.feed(data[pos:])
    return out


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(st.lists(LINE, max_size=8), max_size=6),
    noise=st.lists(st.lists(NOISE, max_size=3), min_size=7, max_size=7),
    cr_every=st.integers(min_value=0, max_value=7),
    data=st.data(),
)
def test_frames_survive_any_chunking_noise_and_crs(
    frames: list[list[str]], noise: list[list[str]], cr_every: int, data: st.DataObject
) -> None:
    stream = b""
    for i, lines in enumerate(frames):
        stream += b"".join(n.encode() + b"\n" for n in noise[i]) + frame(*lines)
    stream += b"".join(n.encode() + b"\n" for n in noise[-1])
    if cr_every:  # carriage returns anywhere (a tty with IGNCR drops them; so does the framer)
        stream = b"".join(bytes([c]) + (b"\r" if i % cr_every == 0 else b"") for i, c in enumerate(stream))
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))
    framer = ClassicFramer()
    assert feed_in_pieces(framer, stream, cuts) == [frame(*lines) for lines in frames]
    assert framer.discarded == 0 and not framer.in_frame


def test_byte_at_a_time() -> None:
    framer = ClassicFramer()
    stream = b"junk\n" + frame("t=status", "src=hb1") + b"\n\n" + frame("a=1")
    got = [f for b in stream for f in framer.feed(bytes([b]))]
    assert got == [frame("t=status", "src=hb1"), frame("a=1")]
    assert framer.skipped_bytes == len(b"junk\n\n\n")


def test_start_marker_must_be_a_whole_line() -> None:
    framer = ClassicFramer()
    assert framer.feed(b"xx>>>\na=1\n<<<\n") == []  # Heartbeat too: '>>>' must be the whole line
    assert framer.feed(b">>> \na=1\n<<<\n") == []
    assert framer.feed(b"<<<\n>>>\n<<<\n") == [b">>>\n<<<\n"]  # empty frame is still a frame


def test_new_start_line_inside_a_frame_restarts_it() -> None:
    framer = ClassicFramer()
    got = framer.feed(b">>>\na=1\nb=tru>>>\nfoo\n>>>\nc=3\n<<<\n")
    assert got == [frame("c=3")]
    assert framer.discarded == 1


def test_crlf_and_lone_cr_dropped() -> None:
    framer = ClassicFramer()
    assert framer.feed(b">>>\r\na=\r1\r\n<<<\r\n") == [frame("a=1")]


def test_oversized_frame_is_discarded_and_the_next_one_kept() -> None:
    framer = ClassicFramer(max_frame=64)
    big = frame(*(["k=" + "v" * 20] * 5))
    assert len(big) > 64
    small = frame("a=1")
    stream = big + small + big[:30] + b"\n" + small  # an oversized one cut short by a new start
    got = feed_in_pieces(framer, stream, list(range(0, len(stream), 7)))
    assert got == [small, small]
    assert framer.discarded == 2


def test_frame_exactly_at_the_limit_is_kept() -> None:
    f = frame("k=" + "v" * 50)
    assert ClassicFramer(max_frame=len(f)).feed(f) == [f]
    assert ClassicFramer(max_frame=len(f) - 1).feed(f) == []


def test_memory_stays_bounded_on_endless_garbage() -> None:
    framer = ClassicFramer(max_frame=1024)
    for _ in range(100):
        framer.feed(b"A" * 10_000)  # no newline ever
    framer.feed(b">>>\n")
    for _ in range(100):
        framer.feed(b"B" * 10_000)  # a frame that never ends
    assert len(framer._line) <= 1024 and len(framer._frame) <= 1024
    assert framer.feed(b"\n<<<\n" + frame("ok=1")) == [frame("ok=1")]


def test_default_limit_is_heartbeats_maxmsg() -> None:
    assert ClassicFramer().max_frame == MAX_PACKET == 256 * 1024


def test_nul_from_a_break_abandons_the_frame_in_progress() -> None:
    framer = ClassicFramer()
    assert framer.feed(b">>>\na=1\n\0b=2\n<<<\n" + frame("c=3")) == [frame("c=3")]
    assert framer.discarded == 1
    assert framer.feed(b">>\0>\na=1\n<<<\n") == []  # a NUL splits what looked like a start line


def test_lock_file_names() -> None:
    assert lock_name("/dev/ttyS0") == "LCK..ttyS0"
    assert lock_name("/dev/pts/0") == "LCK..pts0"
    assert lock_name("/dev/ttyUSB-1.2") == "LCK..ttyUSB12"
