"""Incremental splitter for Heartbeat's classic frames on a byte stream (serial lines).

Heartbeat's reader skips everything up to a line equal to `>>>`, collects lines up to `<<<`,
and its tty drops carriage returns (IGNCR). This does the same on arbitrary chunks, with memory
bounded by the frame limit, so a noisy or hostile line can neither grow it nor wedge it.
"""

from __future__ import annotations

from ..wire.codec import CLASSIC_END, CLASSIC_START, MAX_PACKET

__all__ = ["ClassicFramer"]

_START = CLASSIC_START.rstrip(b"\n")
_END = CLASSIC_END.rstrip(b"\n")
_MARKER_LEN = len(_START)


class ClassicFramer:
    """feed(bytes) -> complete frames, each `>>>\\n…<<<\\n` with its markers and without CRs.

    Resynchronisation rules: a `>>>` line inside a frame starts the frame afresh (the sender
    was cut off mid-frame); a frame growing past `max_frame` bytes is discarded up to its
    `<<<`; a NUL byte (what a BREAK reads as) abandons the frame in progress, as Heartbeat
    flushes its input on a BREAK.
    """

    def __init__(self, max_frame: int = MAX_PACKET) -> None:
        if max_frame < len(CLASSIC_START) + len(CLASSIC_END):
            raise ValueError("max_frame too small for even an empty frame")
        self.max_frame = max_frame
        self.discarded = 0
        """Frames abandoned: oversized, cut off by a new `>>>`, or interrupted by a BREAK."""
        self.skipped_bytes = 0
        """Bytes outside any frame (noise, line garbage), not counting CRs."""
        self._line = bytearray()
        self._long_line = False  # current line already known not to be a marker; content dropped
        self._frame = bytearray()
        self._in_frame = False
        self._discarding = False  # inside an oversized frame: skip to its end marker

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    def reset(self) -> None:
        """Forget any partial line or frame (the line was reopened)."""
        if self._in_frame and not self._discarding:
            self.discarded += 1
        self._line.clear()
        self._long_line = False
        self._frame.clear()
        self._in_frame = self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        data = data.replace(b"\r", b"")
        pieces = data.split(b"\0")
        for i, piece in enumerate(pieces):
            if i:
                self.reset()
            self._feed(piece, out)
        return out

    # -- internals -------------------------------------------------------------------------------------
    def _feed(self, data: bytes, out: list[bytes]) -> None:
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._partial(data[start:])
                return
            self._partial(data[start:nl])
            self._end_line(out)
            start = nl + 1

    def _collecting(self) -> bool:
        return self._in_frame and not self._discarding

    def _partial(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._long_line:
            self._skip(len(chunk))
            return
        if self._collecting():
            if len(self._frame) + len(self._line) + len(chunk) + 1 > self.max_frame:
                self._oversized()
            else:
                self._line += chunk
                return
        # outside a frame (or discarding one) only a marker line matters: keep at most its length
        if len(self._line) + len(chunk) > _MARKER_LEN:
            self._skip(len(self._line) + len(chunk))
            self._line.clear()
            self._long_line = True
        else:
            self._line += chunk

    def _end_line(self, out: list[bytes]) -> None:
        line = bytes(self._line)
        marker = not self._long_line
        self._line.clear()
        self._long_line = False
        if marker and line == _START:
            if self._collecting():
                self.discarded += 1  # sender restarted mid-frame
            self._frame[:] = CLASSIC_START
            self._in_frame, self._discarding = True, False
            return
        if not self._in_frame:
            self._skip(len(line) + 1)
            return
        if self._discarding:
            if marker and line == _END:
                self._in_frame = self._discarding = False
            return
        self._frame += line
        self._frame += b"\n"
        if len(self._frame) > self.max_frame:
            self._oversized()
            if line == _END:
                self._in_frame = self._discarding = False
            return
        if line == _END:
            out.append(bytes(self._frame))
            self._frame.clear()
            self._in_frame = False

    def _oversized(self) -> None:
        self.discarded += 1
        self._frame.clear()
        self._discarding = True

    def _skip(self, n: int) -> None:
        if not self._in_frame:
            self.skipped_bytes += n
