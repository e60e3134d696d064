"""Serial medium over two ptys joined like a null-modem cable by an in-test relay (no root needed).

The adapters open stable symlinks (tmp/ttyA, tmp/ttyB) that point at the current pty slaves, so
"unplugging" (closing the relay and its ptys) and "plugging back" (new ptys, same names) look to
the adapters like a device that vanishes and comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from hacluster_agent.media.base import MediumFailure, MediumStats
from hacluster_agent.media.serial import (
    CHUNK,
    PacedWriter,
    SerialLine,
    acquire_tty_lock,
    chunk_interval,
    lock_name,
    release_tty_lock,
)
from tests.support.eventually import async_wait_until

BAUD = 19200
RETRY = 0.05
TIMEOUT = 10.0


class Recorder:
    """MediumEvents that keeps everything, for polling assertions."""

    def __init__(self) -> None:
        self.packets: list[tuple[str, bytes]] = []
        self.states: list[tuple[str, bool, str]] = []

    def packet_received(self, medium: str, data: bytes) -> None:
        self.packets.append((medium, data))

    def medium_state(self, medium: str, up: bool, reason: str) -> None:
        self.states.append((medium, up, reason))

    @property
    def up(self) -> bool | None:
        return self.states[-1][1] if self.states else None


async def eventually(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """Poll (the event loop keeps running) until predicate() is truthy."""
    await async_wait_until(predicate, what, timeout)


def frame(*lines: str) -> bytes:
    return b">>>\n" + b"".join(line.encode() + b"\n" for line in lines) + b"<<<\n"


class NullModem:
    """Two pty pairs; an asyncio relay copies master A <-> master B; symlinks name the slaves."""

    def __init__(self, directory: Path) -> None:
        self.links = (directory / "ttyA", directory / "ttyB")
        self._masters: list[int] = []
        self._slaves: list[int] = []
        self.plugged = False

    def plug(self) -> None:
        loop = asyncio.get_running_loop()
        for link in self.links:
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo before the adapter sets the line up itself
            os.set_blocking(master, False)
            self._masters.append(master)
            self._slaves.append(slave)  # held open so the master never sees EIO between opens
            tmp = link.with_suffix(".new")
            tmp.symlink_to(os.ttyname(slave))
            tmp.replace(link)
        for i, master in enumerate(self._masters):
            loop.add_reader(master, self._relay, master, self._masters[1 - i])
        self.plugged = True

    def _relay(self, src: int, dst: int) -> None:
        try:
            data = os.read(src, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: no slave open right now
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(dst, view) :]
            except BlockingIOError:
                continue  # the far pty's buffer is full; frames here are small

    def unplug(self) -> None:
        loop = asyncio.get_running_loop()
        for master in self._masters:
            loop.remove_reader(master)
        for fd in (*self._masters, *self._slaves):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._masters.clear()
        self._slaves.clear()
        for link in self.links:
            link.unlink(missing_ok=True)
        self.plugged = False


@pytest_asyncio.fixture
async def cable(tmp_path: Path) -> AsyncIterator[NullModem]:
    modem = NullModem(tmp_path)
    modem.plug()
    try:
        yield modem
    finally:
        modem.unplug()


def make_line(path: Path, lock_dir: Path, **kw: object) -> SerialLine:
    lock_dir.mkdir(exist_ok=True)
    return SerialLine(str(path), BAUD, lock_dir=str(lock_dir), retry_interval=RETRY, **kw)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_frames_cross_both_ways_and_locks_are_held(cable: NullModem, tmp_path: Path) -> None:
    lock_dir = tmp_path / "lock"
    a, b = make_line(cable.links[0], lock_dir), make_line(cable.links[1], lock_dir)
    ev_a, ev_b = Recorder(), Recorder()
    await a.start(ev_a)
    await b.start(ev_b)
    try:
        await eventually(lambda: ev_a.up and ev_b.up, "both lines up")
        assert a.kind == "serial" and a.encoding == "classic" and a.name == str(cable.links[0])
        for line in (a, b):
            lock = lock_dir / lock_name(line.device)
            assert lock.read_bytes() == b"%10d\n" % os.getpid()

        hello = frame("t=status", "src=hb1", "seq=1", "auth=1 00")
        a.send(hello)
        await eventually(lambda: ev_b.packets, "frame at b")
        assert ev_b.packets == [(b.name, hello)]

        # bigger than one 512-byte chunk: written in three paced chunks, arrives whole
        big = frame(*(f"f{i:03d}=" + "x" * 60 for i in range(20)))
        assert 2 * CHUNK < len(big) < 3 * CHUNK
        reply = frame("t=status", "src=hb2", "seq=7")
        b.send(big)
        b.send(reply)
        await eventually(lambda: len(ev_a.packets) == 2, "two frames at a")
        assert [p for _, p in ev_a.packets] == [big, reply]
        assert b.stats.sent == 2 and a.stats.received == 2
        assert ev_a.states == [(a.name, True, "opened")]
    finally:
        await a.close()
        await b.close()
    assert not list(lock_dir.iterdir()), "locks released on close"


@pytest.mark.asyncio
async def test_carriage_returns_and_noise_are_dropped(cable: NullModem, tmp_path: Path) -> None:
    lock_dir = tmp_path / "lock"
    a, b = make_line(cable.links[0], lock_dir), make_line(cable.links[1], lock_dir)
    ev_a, ev_b = Recorder(), Recorder()
    await a.start(ev_a)
    await b.start(ev_b)
    try:
        await eventually(lambda: ev_a.up and ev_b.up, "both lines up")
        a.send(b"line noise\r\n>>>\r\nt=status\r\nsrc=hb1\r\n<<<\r\n")
        await eventually(lambda: ev_b.packets, "frame at b")
        assert ev_b.packets[0][1] == frame("t=status", "src=hb1")
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_unplug_reports_down_and_replug_reports_up(cable: NullModem, tmp_path: Path) -> None:
    lock_dir = tmp_path / "lock"
    a, b = make_line(cable.links[0], lock_dir), make_line(cable.links[1], lock_dir)
    ev_a, ev_b = Recorder(), Recorder()
    await a.start(ev_a)
    await b.start(ev_b)
    try:
        await eventually(lambda: ev_a.up and ev_b.up, "both lines up")

        cable.unplug()
        await eventually(lambda: ev_a.up is False and ev_b.up is False, "both lines down")
        assert [s[1] for s in ev_a.states] == [True, False]
        reason = ev_a.states[-1][2]
        assert "hung up" in reason or "errno" in reason, reason
        assert not list(lock_dir.iterdir()), "a line that is down holds no lock"
        a.send(frame("t=status"))  # dropped, counted, no exception
        assert a.stats.dropped_down == 1
        await asyncio.sleep(5 * RETRY)  # several failed reopen attempts: still reported once
        assert [s[1] for s in ev_a.states] == [True, False]

        cable.plug()
        await eventually(lambda: ev_a.up and ev_b.up, "both lines up again")
        assert [s[1] for s in ev_b.states] == [True, False, True]
        msg = frame("t=status", "src=hb1", "seq=2")
        a.send(msg)
        await eventually(lambda: ev_b.packets, "frame after replug")
        assert ev_b.packets == [(b.name, msg)]
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_missing_device_is_down_until_it_appears(tmp_path: Path) -> None:
    modem = NullModem(tmp_path)
    line = make_line(modem.links[0], tmp_path / "lock")
    events = Recorder()
    await line.start(events)
    try:
        await eventually(lambda: events.states, "first state")
        assert events.states[0][1] is False
        assert "No such file" in events.states[0][2]
        modem.plug()
        await eventually(lambda: events.up, "line up once the device exists")
    finally:
        await line.close()
        modem.unplug()


@pytest.mark.asyncio
async def test_live_lock_keeps_line_down_stale_lock_is_taken_over(cable: NullModem, tmp_path: Path) -> None:
    lock_dir = tmp_path / "lock"
    lock_dir.mkdir()
    lock = lock_dir / lock_name(str(cable.links[0]))
    # a live process of ours holds the lock until its stdin closes
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    lock.write_bytes(b"%10d\n" % holder.pid)
    line = make_line(cable.links[0], lock_dir)
    events = Recorder()
    try:
        await line.start(events)
        await eventually(lambda: events.states, "first state")
        _, up, reason = events.states[0]
        assert not up and f"locked by running process {holder.pid}" in reason and str(lock) in reason

        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)  # the holder is gone: its lock is now stale
        await eventually(lambda: events.up, "line up after the stale lock is taken over")
        assert lock.read_bytes() == b"%10d\n" % os.getpid()
        assert [s[1] for s in events.states] == [False, True]
    finally:
        await line.close()
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert not lock.exists()


def test_lock_names_follow_heartbeat() -> None:
    assert lock_name("/dev/ttyS0") == "LCK..ttyS0"
    assert lock_name("/dev/pts/0") == "LCK..pts0"
    assert lock_name("/dev/serial/by-id/usb-FTDI_FT232R-if00") == "LCK..serialbyidusbFTDIFT232Rif00"
    assert lock_name("/tmp/ttyA") == "LCK..ttyA"  # like Heartbeat: the first five characters go
    assert len(lock_name("/dev/" + "a" * 100)) == len("LCK..") + 63


def test_lock_file_format_garbage_and_double_take(tmp_path: Path) -> None:
    lock = tmp_path / "LCK..ttyS9"
    lock.write_bytes(b"garbage\n")  # unreadable PID: stale, taken over
    path = acquire_tty_lock("/dev/ttyS9", str(tmp_path))
    assert path == lock and lock.read_bytes() == b"%10d\n" % os.getpid() and len(lock.read_bytes()) == 11
    with pytest.raises(MediumFailure, match="already in use by this agent"):
        acquire_tty_lock("/dev/ttyS9", str(tmp_path))
    release_tty_lock(path)
    assert not lock.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp")]


# -- the paced writer, on a pipe with a fake clock -------------------------------------------------------
class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)


def read_available(fd: int) -> bytes:
    out = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            out += chunk
    return out


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    yield r, w
    os.close(r)
    os.close(w)


@pytest.mark.asyncio
async def test_writer_chunks_of_512_paced_like_heartbeat(pipe: tuple[int, int]) -> None:
    r, w = pipe
    sleep = FakeSleep()
    errors: list[str] = []
    writer = PacedWriter(w, BAUD, on_error=errors.append, sleep=sleep)
    writer.start()
    try:
        msg = bytes(range(256)) * 5  # 1280 bytes: 512 + 512 + 256
        writer.put(msg)
        writer.put(b"short")
        await eventually(lambda: writer.stats.sent == 2, "both written")
        assert read_available(r) == msg + b"short"
        assert sleep.calls == [chunk_interval(BAUD)] * 2
        assert chunk_interval(19200) == pytest.approx(0.21333, abs=1e-4)
        assert errors == []
    finally:
        await writer.stop()


@pytest.mark.asyncio
async def test_writer_queue_drops_oldest_on_overflow(pipe: tuple[int, int]) -> None:
    r, w = pipe
    sleep = FakeSleep()
    sleep.gate = asyncio.Event()  # hold the writer in its first inter-chunk pause
    stats = MediumStats()
    writer = PacedWriter(w, BAUD, on_error=lambda _: None, sleep=sleep, queue_limit=3, stats=stats)
    writer.start()
    try:
        writer.put(b"A" * (CHUNK + 1))
        await eventually(lambda: sleep.calls, "writer paused mid-message")
        for i in range(6):
            writer.put(b"m%d;" % i)
        assert stats.dropped_overflow == 3 and writer.pending == 3
        sleep.gate.set()
        await eventually(lambda: stats.sent == 4, "the rest written")
        assert read_available(r) == b"A" * (CHUNK + 1) + b"m3;m4;m5;"
    finally:
        await writer.stop()


@pytest.mark.asyncio
async def test_writer_timeout_drops_message_and_resyncs(pipe: tuple[int, int]) -> None:
    r, w = pipe
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(w, b"\0" * 65536)  # the pipe is full: like a line held by flow control
    stats = MediumStats()
    writer = PacedWriter(w, BAUD, on_error=lambda _: None, stats=stats, write_timeout=0.05, sleep=FakeSleep())
    writer.start()
    try:
        writer.put(b">>>\nlost\n<<<\n")
        await eventually(lambda: stats.write_timeouts == 1, "write timeout")
        read_available(r)  # drain
        writer.put(b">>>\nnext\n<<<\n")
        await eventually(lambda: stats.sent == 1, "next message written")
        assert read_available(r) == b"\n>>>\nnext\n<<<\n"  # starts on a fresh line
    finally:
        await writer.stop()


@pytest.mark.asyncio
async def test_send_never_raises_when_closed_or_oversized(tmp_path: Path) -> None:
    line = make_line(tmp_path / "ttyNone", tmp_path / "lock")
    line.send(b"x")
    assert line.stats.dropped_down == 1
    await line.close()
