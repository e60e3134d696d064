"""Serial heartbeat medium (`serial /dev/ttyS0`, `baud N`), set up and paced like Heartbeat 3.0.6.

The tty is raw 8N1 with CLOCAL/CREAD, hardware flow control (configurable: ptys ignore it),
INPCK|ISTRIP|IGNCR, VMIN=1/VTIME=1, a BREAK when opened, and a UUCP lock file `LCK..<name>`.
Output goes in 512-byte chunks with a 512/(baud/8) s pause between chunks, written by a task
fed by a bounded queue so send() never blocks; input is read through the event loop and split
into `>>>`…`<<<` frames by :class:`ClassicFramer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import serial

from .base import (
    DEFAULT_LOCK_DIR,
    DEFAULT_RETRY_INTERVAL,
    Encoding,
    MediumFailure,
    MediumKind,
    MediumStats,
    SupervisedMedium,
)
from .framer import ClassicFramer

__all__ = [
    "CHUNK",
    "WRITE_TIMEOUT",
    "ClassicFramer",
    "PacedWriter",
    "SerialLine",
    "acquire_tty_lock",
    "chunk_interval",
    "lock_name",
    "release_tty_lock",
]

CHUNK = 512
WRITE_TIMEOUT = 0.5
"""Heartbeat arms a 500 ms alarm around each tty write."""
QUEUE_LIMIT = 64
"""Messages waiting for the line (about 7 s of line time at 19200 baud with 250-byte frames)."""
READ_SIZE = 4096

Sleep = Callable[[float], Awaitable[None]]


def chunk_interval(baud: int) -> float:
    """Heartbeat's pause between 512-byte chunks: the time the chunk takes on the line."""
    return CHUNK / (baud / 8)


# -- UUCP locking -------------------------------------------------------------------------------------
_LOCK_NAME_MAX = 63  # Heartbeat builds the name in a char[64]
_held_locks: set[str] = set()


def lock_name(device: str) -> str:
    """`LCK..` + the device path after `/dev/` with non-alphanumerics removed (`/dev/pts/0` → LCK..pts0).

    Like Heartbeat, the first five characters are dropped whatever they are, so a real daemon and
    this agent compute the same name for the same path.
    """
    raw = "".join(c for c in device[5:] if c.isascii() and c.isalnum())[:_LOCK_NAME_MAX]
    if not raw:
        raw = "".join(c for c in device if c.isascii() and c.isalnum())[:_LOCK_NAME_MAX]
    return "LCK.." + raw


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_tty_lock(device: str, lock_dir: str = DEFAULT_LOCK_DIR) -> Path:
    """Take the UUCP lock for `device`, taking over a stale one (dead PID, garbage, or ours).

    Written as Heartbeat does: PID as "%10d\\n" into a temp file, then link()ed into place so
    that two contenders cannot both win. Raises MediumFailure if a live process holds it.
    """
    path = Path(lock_dir) / lock_name(device)
    key = str(path)
    if key in _held_locks:
        raise MediumFailure(f"{device} is already in use by this agent (lock {path})")
    mypid = os.getpid()
    try:
        content = path.read_bytes()[:64]
    except FileNotFoundError:
        content = None
    except OSError as exc:
        raise MediumFailure(f"cannot read lock file {path}: {exc.strerror}") from exc
    if content is not None:
        try:
            pid = int(content.split()[0]) if content.split() else 0
        except ValueError:
            pid = 0
        if pid > 1 and pid != mypid and _pid_alive(pid):
            raise MediumFailure(f"{device} is locked by running process {pid} (lock file {path})")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    tmp = path.with_name(f"tmp{mypid}-{path.name[5:]}")
    try:
        tmp.write_bytes(b"%10d\n" % mypid)
        os.link(tmp, path)
    except FileExistsError:
        raise MediumFailure(f"{device} was locked by another process just now (lock file {path})") from None
    except OSError as exc:
        raise MediumFailure(f"cannot create lock file {path}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _held_locks.add(key)
    return path


def release_tty_lock(path: Path) -> None:
    """Remove our lock file (only if it still names us)."""
    _held_locks.discard(str(path))
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_bytes().split()[0]) == os.getpid():
            path.unlink()


# -- tty setup ------------------------------------------------------------------------------------------
def _open_tty(device: str, baud: int, rtscts: bool) -> serial.Serial:
    """Blocking part of opening (run in a thread): open, Heartbeat's termios, BREAK."""
    port = serial.Serial(
        port=device,
        baudrate=baud,
        bytesize=serial.EIGHTBITS,
        parity=serial.PARITY_NONE,
        stopbits=serial.STOPBITS_ONE,
        rtscts=rtscts,
        timeout=0,
        write_timeout=0,
    )
    try:
        fd = port.fileno()
        attrs = termios.tcgetattr(fd)
        attrs[0] |= termios.INPCK | termios.ISTRIP | termios.IGNCR
        attrs[0] &= ~(termios.ICRNL | termios.INLCR | termios.IXON | termios.IXOFF)
        attrs[2] |= termios.CLOCAL | termios.CREAD
        attrs[3] &= ~(termios.ICANON | termios.ECHO | termios.ECHOE | termios.ISIG | termios.IEXTEN)
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 1
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        with contextlib.suppress(termios.error, OSError):
            termios.tcsendbreak(fd, 0)  # makes the peer flush stale input; a pty has no BREAK
        os.set_blocking(fd, False)
    except BaseException:
        port.close()
        raise
    return port


# -- writer -----------------------------------------------------------------------------------------------
class PacedWriter:
    """Writes queued messages to a non-blocking fd in 512-byte chunks, pausing between chunks.

    The queue is bounded; on overflow the oldest message is dropped (a fresh heartbeat is worth
    more than a stale one). A write that cannot progress within `write_timeout` (flow control
    held, no cable) drops the rest of that message, flushes the tty's output like Heartbeat, and
    starts the next message on a fresh line so the peer can resynchronise. Other write errors go
    to `on_error`.
    """

    def __init__(
        self,
        fd: int,
        baud: int,
        *,
        on_error: Callable[[str], None],
        stats: MediumStats | None = None,
        queue_limit: int = QUEUE_LIMIT,
        write_timeout: float = WRITE_TIMEOUT,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        self.fd = fd
        self.interval = chunk_interval(baud)
        self.on_error = on_error
        self.stats = stats if stats is not None else MediumStats()
        self.write_timeout = write_timeout
        self._sleep = sleep
        self._queue: deque[bytes] = deque()
        self._limit = queue_limit
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resync = False

    @property
    def pending(self) -> int:
        return len(self._queue)

    def put(self, data: bytes) -> None:
        if len(self._queue) >= self._limit:
            self._queue.popleft()
            self.stats.dropped_overflow += 1
        self._queue.append(data)
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"serial writer fd {self.fd}")

    async def stop(self) -> None:
        self._queue.clear()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def cancel(self) -> None:
        """Synchronous stop for error paths (the task may be the caller)."""
        self._queue.clear()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            data = self._queue.popleft()
            if self._resync:
                data = b"\n" + data
                self._resync = False
            try:
                complete = await self._write_message(data)
            except OSError as exc:
                self.on_error(f"write failed: {exc.strerror or exc} [errno {exc.errno}]")
                return
            if complete:
                self.stats.sent += 1
            else:
                self.stats.write_timeouts += 1
                self._resync = True
                with contextlib.suppress(termios.error, OSError):
                    termios.tcflush(self.fd, termios.TCOFLUSH)

    async def _write_message(self, data: bytes) -> bool:
        for offset in range(0, len(data), CHUNK):
            if offset:
                await self._sleep(self.interval)
            if not await self._write_all(memoryview(data)[offset : offset + CHUNK]):
                return False
        return True

    async def _write_all(self, chunk: memoryview) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.write_timeout
        while chunk:
            try:
                n = os.write(self.fd, chunk)
            except BlockingIOError:
                n = 0
            except InterruptedError:
                continue
            chunk = chunk[n:]
            if chunk and not await self._writable(deadline - loop.time()):
                return False
        return True

    async def _writable(self, timeout: float) -> bool:
        if timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(self.fd, wake)
        try:
            await asyncio.wait_for(ready, timeout)
        except TimeoutError:
            return False
        finally:
            loop.remove_writer(self.fd)
        return True


# -- the medium ---------------------------------------------------------------------------------------------
class SerialLine(SupervisedMedium):
    """`serial DEVICE` at `baud`: classic frames over a null-modem cable (or a pty)."""

    kind: MediumKind = "serial"
    encoding: Encoding = "classic"

    def __init__(
        self,
        device: str,
        baud: int = 19200,
        *,
        rtscts: bool = True,
        lock_dir: str = DEFAULT_LOCK_DIR,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        queue_limit: int = QUEUE_LIMIT,
        write_timeout: float = WRITE_TIMEOUT,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(retry_interval=retry_interval)
        if baud <= 0:
            raise ValueError(f"bad baud rate {baud}")
        self.name = device
        self.device = device
        self.baud = baud
        self.rtscts = rtscts
        self.lock_dir = lock_dir
        self.queue_limit = queue_limit
        self.write_timeout = write_timeout
        self._sleep = sleep
        self.framer = ClassicFramer()
        self._port: serial.Serial | None = None
        self._lock: Path | None = None
        self._fd = -1
        self._writer: PacedWriter | None = None

    async def _open(self) -> None:
        if not os.path.exists(self.device):  # don't churn lock files while the device is absent
            raise MediumFailure(f"cannot open {self.device}: No such file or directory")
        lock = acquire_tty_lock(self.device, self.lock_dir)
        self._lock = lock  # _close_io releases it if anything below fails
        opening = asyncio.ensure_future(asyncio.to_thread(_open_tty, self.device, self.baud, self.rtscts))
        try:
            port = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)  # closed while the thread was opening
            raise
        except (serial.SerialException, OSError, termios.error) as exc:
            raise MediumFailure(f"cannot open {self.device}: {_strerror(exc)}") from exc
        self._port = port
        self._fd = port.fileno()
        self.framer.reset()
        loop = asyncio.get_running_loop()
        loop.add_reader(self._fd, self._readable)
        self._writer = PacedWriter(
            self._fd,
            self.baud,
            on_error=self._fail,
            stats=self.stats,
            queue_limit=self.queue_limit,
            write_timeout=self.write_timeout,
            sleep=self._sleep,
        )
        self._writer.start()

    def _close_io(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        if self._fd >= 0:
            with contextlib.suppress(Exception):
                loop = asyncio.get_running_loop()
                loop.remove_reader(self._fd)
                loop.remove_writer(self._fd)  # before close: the number may be reused at once
            self._fd = -1
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
            self._port = None
        if self._lock is not None:
            release_tty_lock(self._lock)
            self._lock = None

    def send(self, data: bytes) -> None:
        writer = self._writer
        if not self._up or writer is None:
            self.stats.dropped_down += 1
            return
        if len(data) > self.framer.max_frame:
            self.stats.dropped_oversize += 1
            return
        writer.put(data)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(f"read failed: {exc.strerror} [errno {exc.errno}]")
            return
        if not data:
            self._fail("line hung up (EOF: device gone or far end closed)")
            return
        before = self.framer.discarded
        frames = self.framer.feed(data)
        self.stats.frames_discarded += self.framer.discarded - before
        for frame in frames:
            self._deliver(frame)


def _strerror(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return f"{os.strerror(code)} [errno {code}]"
    return str(exc)


def _close_opened(fut: asyncio.Future[serial.Serial]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()
