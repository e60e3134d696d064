"""Heartbeat-style (resource.d) and LSB (init.d) scripts as resources, run like Heartbeat's ResourceManager.

Lookup: `<config_dir>/resource.d/<name>` first, then `<init_dir>/<name>`; the file must be an
executable regular file. The `::` arguments come before the action (`Filesystem /dev/sda1 /data
start`); an LSB script has none, so it just gets `start|stop|status`.

Every run has a timeout. The script runs in its own session, so on timeout (or if the caller is
cancelled) the whole process group is killed: a hung `stop` cannot leave helpers behind. When the
script exits normally its process group is left alone, because that is where a service started
with `daemon &` lives. Output is kept (bounded) for error messages only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .base import ResourceError, ResourceState

DEFAULT_INIT_DIR = Path("/etc/init.d")

_NOT_RUNNING = re.compile(rb"not\s*running|stopped", re.IGNORECASE)
"""Heartbeat's we_own_resource treats `*[Nn][Oo][Tt] *[Rr]unning*` as "not ours"; LSB
scripts commonly say "is stopped"."""

LSB_STATUS_STOPPED = 3


@dataclass(frozen=True)
class ScriptOptions:
    """How scripts are found and how long each action may take (seconds)."""

    init_dir: Path = DEFAULT_INIT_DIR
    start_timeout: float = 60.0
    stop_timeout: float = 60.0
    status_timeout: float = 20.0
    output_limit: int = 16 * 1024
    """Bytes of stdout and of stderr kept (the last ones) for error messages."""
    drain_timeout: float = 0.1
    """After the script exits, how long to wait for output from children still holding its pipes
    (a daemon started with `&` and no redirection); every start of such a script pays it."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment on top of the agent's own."""


@dataclass(frozen=True)
class ScriptResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    def tail(self, lines: int = 5) -> str:
        """The last lines of stderr (or of stdout if stderr is empty), for an error message."""
        return _tail(self.stderr or self.stdout, lines)


def _tail(data: bytes, lines: int = 5) -> str:
    text = data.decode("utf-8", "replace").strip()
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


class _Capture(asyncio.SubprocessProtocol):
    """Keeps the last `limit` bytes of each stream and tells when the process and its pipes end."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self.limit = limit
        self.streams = {1: bytearray(), 2: bytearray()}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buf = self.streams.setdefault(fd, bytearray())
        buf += data
        if len(buf) > self.limit:
            del buf[: len(buf) - self.limit]

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


class ScriptTimeout(TimeoutError):
    """The script overran its timeout; its process group was killed. `partial` holds its output."""

    def __init__(self, timeout: float, partial: ScriptResult) -> None:
        super().__init__(f"timed out after {timeout:g} s")
        self.timeout = timeout
        self.partial = partial


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def run_script(
    argv: Sequence[str],
    *,
    timeout: float,
    output_limit: int = 16 * 1024,
    drain_timeout: float = 0.1,
    env: Mapping[str, str] | None = None,
) -> ScriptResult:
    """Run argv in a new session; on timeout or cancellation SIGKILL its whole process group.

    Raises ScriptTimeout (after the kill) and OSError if the program cannot be executed.
    """
    loop = asyncio.get_running_loop()
    full_env = {**os.environ, **(env or {})}
    spawn = asyncio.ensure_future(
        loop.subprocess_exec(
            lambda: _Capture(output_limit, loop),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            cwd="/",
            env=full_env,
        )
    )
    try:
        # Shielded: cancelled inside subprocess_exec, asyncio waits for the child to exit, which
        # a script that waits on its own children never does (a hang for as long as they run;
        # tests/unit/test_resources_script.py's cancellation test, on a loaded machine).
        transport, proto = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        with contextlib.suppress(OSError):
            transport, proto = await spawn  # spawned all the same: kill it below, then re-raise
            _killpg(transport.get_pid())
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(proto.exited), 5.0)
            transport.close()
        raise
    pgid = transport.get_pid()
    try:
        try:
            await asyncio.wait_for(asyncio.shield(proto.exited), timeout)
        except TimeoutError:
            _killpg(pgid)
            await proto.exited
            partial = ScriptResult(-signal.SIGKILL, bytes(proto.streams[1]), bytes(proto.streams[2]))
            raise ScriptTimeout(timeout, partial) from None
        # Children (a daemon started with `&`) may keep the pipes open: read what is there, then close.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proto.finished), drain_timeout)
        rc = transport.get_returncode()
        assert rc is not None
        return ScriptResult(rc, bytes(proto.streams[1]), bytes(proto.streams[2]))
    finally:
        if not proto.exited.done():  # cancelled while running: leave nothing behind
            _killpg(pgid)
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(proto.exited), 5.0)  # bounded: never hang here
        transport.close()


def describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def lsb_state(rc: int, stdout: bytes) -> ResourceState:
    """Interpret a `status` run: LSB exit codes (0 running, 3 stopped, others failed), and on exit 0
    Heartbeat's output check, since heartbeat-style scripts print running/stopped and exit 0 either way."""
    if rc == 0:
        return ResourceState.STOPPED if _NOT_RUNNING.search(stdout) else ResourceState.RUNNING
    if rc == LSB_STATUS_STOPPED:
        return ResourceState.STOPPED
    return ResourceState.FAILED


class ScriptDriver:
    """A resource.d or init.d script, called `<script> <args...> start|stop|status`."""

    def __init__(
        self,
        script: str,
        args: Sequence[str] = (),
        *,
        config_dir: Path | str = Path("/etc/ha.d"),
        options: ScriptOptions | None = None,
    ) -> None:
        if not script or "/" in script or script in (".", ".."):
            raise ValueError(f"{script!r} is not a script name")
        self.script = script
        self.args = list(args)
        self.config_dir = Path(config_dir)
        self.options = options or ScriptOptions()

    @property
    def name(self) -> str:
        return "::".join([self.script, *self.args])

    def __repr__(self) -> str:
        return f"ScriptDriver({self.name!r})"

    @property
    def search_path(self) -> tuple[Path, Path]:
        return (self.config_dir / "resource.d", self.options.init_dir)

    def locate(self) -> Path | None:
        """The script to run: resource.d before init.d, as ResourceManager's scriptpath()."""
        for d in self.search_path:
            p = d / self.script
            if p.is_file() and os.access(p, os.X_OK):
                return p
        return None

    async def _run(self, action: str, timeout: float) -> ScriptResult:
        path = self.locate()
        if path is None:
            where = " or ".join(str(d) for d in self.search_path)
            raise ResourceError(self.name, action, f"no executable script {self.script!r} in {where}")
        try:
            return await run_script(
                [str(path), *self.args, action],
                timeout=timeout,
                output_limit=self.options.output_limit,
                drain_timeout=self.options.drain_timeout,
                env=self.options.env,
            )
        except ScriptTimeout as e:
            tail = e.partial.tail()
            raise ResourceError(
                self.name,
                action,
                f"{path} timed out after {timeout:g} s, its process group was killed"
                + (f"; last output: {tail}" if tail else ""),
            ) from None
        except OSError as e:
            raise ResourceError(self.name, action, f"cannot run {path}: {e.strerror or e}") from e

    async def _act(self, action: str, timeout: float) -> None:
        result = await self._run(action, timeout)
        if result.returncode != 0:
            tail = result.tail()
            raise ResourceError(
                self.name, action, describe_exit(result.returncode) + (f": {tail}" if tail else "")
            )

    async def start(self) -> None:
        await self._act("start", self.options.start_timeout)

    async def stop(self) -> None:
        await self._act("stop", self.options.stop_timeout)

    async def status(self) -> ResourceState:
        result = await self._run("status", self.options.status_timeout)
        return lsb_state(result.returncode, result.stdout)
