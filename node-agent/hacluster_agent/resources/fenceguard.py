"""The fence guard: a tiny watchdog process that removes this node's VIPs when the agent stops.

A killed (SIGKILL, crash) or frozen (SIGSTOP, a stalled event loop) agent cannot remove its own
address, and the kernel lifetime (`ipaddr.py`) only drops it seconds later, long after the peer
took over. The agent therefore starts this guard as a child process (same network namespace, same
process group: killing the group kills both, a signal to the agent's PID alone does not touch it)
and writes one byte into a pipe every beat from its asyncio loop. The guard:

* on EOF of the pipe (the agent is gone) removes every listed address that is present, logs one
  line and exits 0 (quietly, when nothing was present: the normal end after a clean release);
* when no beat came for G ms (the agent or its loop is frozen) removes them the same way, logs
  `fenced: no beat for N ms` and keeps watching; it fences again only after beats resumed and
  stopped again. It never adds anything back: the resumed agent finds the address gone;
* on the byte `q` exits without touching anything (the agent keeps its resources on exit).

Why G = deadtime/2 by default: Heartbeat requires deadtime > 2 x keepalive. After a freeze at
time f, the last beat was at or before f, so the guard removes the VIP by f + G (plus its own
wake-up latency, a few ms; "G + one beat" is a safe over-estimate). The peer cannot declare this
node dead before f - keepalive + deadtime (the last heartbeat left at most keepalive before the
freeze, if it arrived), and deadtime - keepalive > deadtime/2 = G. In Kubernetes mode the peer
must also wait the arbitration window W before it takes the Lease: more margin.

The agent runs this file by path (`python -P …/fenceguard.py`, see `guard_command`) rather than
with `-m`, so that the guard does not import the `resources` package (pydantic models, the
drivers): it stays at the standard library, pyroute2 and `..logs`. `python -m
hacluster_agent.resources.fenceguard` works as well. Only absolute imports, for that reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import errno
import logging
import math
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address, ip_interface
from typing import TYPE_CHECKING, Any

from hacluster_agent.logs import JsonFormatter, setup

if TYPE_CHECKING:
    from hacluster_api.heartbeat.haresources_model import ResourceGroup

log = logging.getLogger("hacluster.fenceguard")

BEAT = b"."
TIGHT = b"!"
"""A beat that also tightens G to the tight timeout (--tight-after-ms) until the next plain beat:
sent while the agent holds the groups and proves itself in the Lease to a peer that may be
taking over. Then the peer takes the Lease W after the owner's last renewal, so a stalled owner
must lose its VIP within W of that renewal, not within deadtime/2 (sim: a stall during a cut
overlapped 723 ms)."""
QUIT = b"q"
"""Exit without removing anything (the agent keeps its resources on exit: --no-release-on-exit)."""
MAX_BEAT_INTERVAL = 0.05
RESTART_BACKOFF = 1.0
"""The agent restarts a dead guard at most this often (seconds)."""
_GONE = (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT, errno.ESRCH)


# --------------------------------------------------------------------------------------------
# the decision (pure)


class Verdict(enum.Enum):
    WAIT = "wait"
    FENCE = "fence"
    """Remove what is present and keep watching."""
    EXIT = "exit"
    """The agent is gone: remove what is present and exit."""


def decide(last_beat: float | None, fenced: bool, now: float, eof: bool, after: float) -> Verdict:
    """Fence or not. `last_beat` None: no beat yet (the guard arms itself on the first beat);
    `fenced`: already fenced for this silence (fence again only after a new beat)."""
    if eof:
        return Verdict.EXIT
    if last_beat is None or fenced:
        return Verdict.WAIT
    return Verdict.FENCE if now - last_beat >= after else Verdict.WAIT


@dataclass
class Watchdog:
    """The guard's state around `decide`; every method takes the time, so tests use a fake clock."""

    after: float
    """G, in seconds."""
    tight_after: float | None = None
    """G while the agent proves itself in the Lease (its last beat was TIGHT)."""
    last_beat: float | None = None
    fenced: bool = False
    tight: bool = False

    @property
    def current(self) -> float:
        return self.tight_after if self.tight and self.tight_after is not None else self.after

    def beat(self, now: float, tight: bool = False) -> None:
        self.last_beat = now
        self.fenced = False
        self.tight = tight

    def decide(self, now: float, eof: bool = False) -> Verdict:
        verdict = decide(self.last_beat, self.fenced, now, eof, self.current)
        if verdict is Verdict.FENCE:
            self.fenced = True
        return verdict

    def silence(self, now: float) -> float:
        """Seconds since the last beat (0 before the first)."""
        return 0.0 if self.last_beat is None else now - self.last_beat

    def timeout(self, now: float) -> float | None:
        """How long to wait for a beat before deciding again; None: until something is read."""
        if self.last_beat is None or self.fenced:
            return None
        return max(0.0, self.last_beat + self.current - now)

    def retry(self, now: float) -> None:
        """The removal failed: try again G from now, unless a beat comes first."""
        self.last_beat, self.fenced = now, False


# --------------------------------------------------------------------------------------------
# the guard process

Address = IPv4Interface | IPv6Interface


class Remover:
    """Removes the listed addresses wherever they are in this namespace, over netlink; nothing else."""

    def __init__(self, addresses: Iterable[Address]) -> None:
        self.targets: set[IPv4Address | IPv6Address] = {a.ip for a in addresses}
        self._ipr: Any = None

    def open(self) -> None:
        """Open the netlink socket ahead of need (a failure is logged; remove() retries)."""
        try:
            self._socket()
        except Exception as e:
            log.error("netlink: cannot open a socket yet: %s", e)

    def _socket(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        ipr, self._ipr = self._ipr, None
        if ipr is not None:
            with contextlib.suppress(Exception):
                ipr.close()

    def remove(self) -> list[str] | None:
        """Remove every present copy; the copies removed (`ip/prefix on ifname`), None on failure
        (logged; tried twice, on a fresh socket the second time)."""
        for attempt in (1, 2):
            try:
                return self._remove_once(self._socket())
            except Exception as e:
                log.error("netlink: %s%s", e, ", retrying" if attempt == 1 else ", giving up")
                self.close()
        return None

    def _remove_once(self, ipr: Any) -> list[str]:
        from pyroute2.netlink.exceptions import NetlinkError

        removed: list[str] = []
        for a in list(ipr.addr("dump")):
            raw = a.get("local") or a.get("address")
            if raw is None or ip_address(raw) not in self.targets:
                continue
            index, prefixlen = a["index"], a["prefixlen"]
            try:
                ipr.addr("del", index=index, address=raw, prefixlen=prefixlen)
            except NetlinkError as e:
                if e.code in _GONE:
                    continue
                raise
            try:
                ifname = socket.if_indextoname(index)
            except OSError:
                ifname = f"ifindex {index}"
            removed.append(f"{raw}/{prefixlen} on {ifname}")
        return removed


def watch(
    fd: int,
    dog: Watchdog,
    remove: Callable[[], list[str] | None],
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """The guard's loop: blocking poll() on the pipe, with the watchdog's timeout. Returns the exit code."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        timeout = dog.timeout(clock())
        events = poller.poll(None if timeout is None else math.ceil(timeout * 1000))
        now = clock()
        eof = False
        if events:
            data = os.read(fd, 4096)
            if not data:
                eof = True
            elif QUIT in data:
                return 0
            else:
                dog.beat(now, tight=data.endswith(TIGHT))
        silence_ms = dog.silence(now) * 1000
        verdict = dog.decide(now, eof)
        if verdict is Verdict.WAIT:
            continue
        removed = remove()
        if verdict is Verdict.EXIT:
            if removed is None:
                log.error("the agent is gone but its addresses could not be removed")
                return 1
            if removed:
                log.warning("the agent is gone (pipe closed): removed %s", ", ".join(removed))
            return 0
        if removed is None:
            log.error(
                "fence failed: no beat for %.0f ms; retrying in %.0f ms", silence_ms, dog.current * 1000
            )
            dog.retry(now)
        elif removed:
            log.warning("fenced: no beat for %.0f ms: removed %s", silence_ms, ", ".join(removed))
        else:
            log.info("no beat for %.0f ms: nothing to remove", silence_ms)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="hacluster-fenceguard", description="Remove the VIPs when the agent dies or stops beating."
    )
    p.add_argument("--fd", type=int, required=True, help="the read end of the agent's beat pipe")
    p.add_argument("--after-ms", type=int, required=True, help="fence after this long without a beat (G)")
    p.add_argument(
        "--tight-after-ms", type=int, default=None, help="G after a tight beat (the agent is proving itself)"
    )
    p.add_argument("--log-format", choices=("json", "text"), default="json")
    p.add_argument("--rtprio", type=int, default=None, help="run at this SCHED_FIFO priority (the agent's)")
    p.add_argument("addresses", nargs="+", type=ip_interface, help="ADDRESS/PREFIX of each VIP")
    a = p.parse_args(argv)
    setup(a.log_format)
    if a.rtprio:
        # The agent's processes start at the normal policy (SCHED_RESET_ON_FORK): the guard, whose
        # whole job is to be on time, raises itself (realtime.py). A refusal the agent reported.
        from hacluster_agent.realtime import raise_thread

        with contextlib.suppress(OSError):
            raise_thread(a.rtprio)
    # A signal to the whole process group (Ctrl-C, a hang-up) is the agent's to handle: it releases
    # and closes the pipe, or dies and the pipe closes. We leave only on EOF (or `q`).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    remover = Remover(a.addresses)
    remover.open()
    try:
        tight = a.tight_after_ms / 1000 if a.tight_after_ms else None
        return watch(a.fd, Watchdog(a.after_ms / 1000, tight), remover.remove)
    finally:
        remover.close()


# --------------------------------------------------------------------------------------------
# the agent's end


def guarded_addresses(groups: Iterable[ResourceGroup]) -> list[Address]:
    """The VIPs of these groups (give both sides': the node may hold the peer's groups)."""
    from hacluster_api.heartbeat.haresources_model import IPResource

    out: list[Address] = []
    for g in groups:
        for r in g.resources:
            if isinstance(r, IPResource) and r.address not in out:
                out.append(r.address)
    return out


def default_fence_after(deadtime_ms: int) -> int:
    """G = deadtime/2 (see the module's docstring)."""
    return max(1, deadtime_ms // 2)


def guard_command(
    fd: int,
    addresses: Sequence[Address],
    after_ms: int,
    log_format: str,
    tight_after_ms: int | None = None,
    rtprio: int | None = None,
) -> list[str]:
    tight = ["--tight-after-ms", str(tight_after_ms)] if tight_after_ms else []
    rt = ["--rtprio", str(rtprio)] if rtprio else []
    return [
        sys.executable, "-P", os.path.abspath(__file__), "--fd", str(fd), "--after-ms", str(after_ms),
        *tight, *rt, "--log-format", log_format, *(str(a) for a in addresses),
    ]  # fmt: skip


def current_log_format() -> str:
    """The agent's log format, read off its root handler (see logs.setup)."""
    handlers = logging.getLogger().handlers
    return "json" if handlers and isinstance(handlers[0].formatter, JsonFormatter) else "text"


class FenceGuard:
    """Starts the guard, beats every min(G/4, 50 ms) from the event loop, restarts a dead guard."""

    def __init__(
        self,
        addresses: Sequence[Address],
        after_ms: int,
        *,
        log_format: str = "json",
        on_up: Callable[[bool], None] | None = None,
        on_restart: Callable[[], None] | None = None,
        tight_after_ms: int | None = None,
        tight: Callable[[], bool] | None = None,
        rtprio: int | None = None,
    ) -> None:
        if after_ms <= 0:
            raise ValueError("the guard needs G > 0 ms")
        self.addresses = list(addresses)
        self.after_ms = after_ms
        self.interval = min(after_ms / 4000, MAX_BEAT_INTERVAL)
        # While `tight()` (the agent proves itself in the Lease): G = tight_after_ms, beats 4x as often.
        self.tight_after_ms = tight_after_ms if tight_after_ms and tight_after_ms < after_ms else None
        self.tight_interval = (
            min(self.tight_after_ms / 4000, self.interval) if self.tight_after_ms else self.interval
        )
        self._tight = tight or (lambda: False)
        self.log_format = log_format
        self.rtprio = rtprio
        self._on_up = on_up or (lambda up: None)
        self._on_restart = on_restart or (lambda: None)
        self.proc: subprocess.Popen[bytes] | None = None
        self._w: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_spawn = 0.0
        self.restarts = 0

    @classmethod
    def for_agent(
        cls,
        groups: Iterable[ResourceGroup],
        fence_after_ms: int | None,
        deadtime_ms: int,
        keepalive_ms: int,
        **kw: Any,
    ) -> FenceGuard | None:
        """The guard for these groups, or None (no VIP, or --fence-after 0)."""
        addresses = guarded_addresses(groups)
        after = default_fence_after(deadtime_ms) if fence_after_ms is None else fence_after_ms
        if not addresses or after <= 0:
            return None
        if after >= deadtime_ms - keepalive_ms:
            log.warning(
                "--fence-after %d ms is not below deadtime - keepalive (%d ms): a frozen owner may "
                "still hold the VIP when the peer takes it over",
                after,
                deadtime_ms - keepalive_ms,
            )
        return cls(addresses, after, **kw)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Spawn the guard and start beating (needs the running loop)."""
        self._spawn()
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="fence guard beat")

    def _spawn(self) -> None:
        self._next_spawn = time.monotonic() + RESTART_BACKOFF
        self._close_pipe()
        r, w = os.pipe()  # both non-inheritable: resource scripts never get the write end
        try:
            self.proc = subprocess.Popen(
                guard_command(
                    r, self.addresses, self.after_ms, self.log_format, self.tight_after_ms, self.rtprio
                ),
                pass_fds=(r,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as e:
            os.close(w)
            self.proc = None
            log.error("fence guard: cannot start: %s", e)
            return
        finally:
            os.close(r)
        os.set_blocking(w, False)
        self._w = w
        self._on_up(True)
        log.info(
            "fence guard: pid %d, removes %s after %d ms without a beat (beat every %.0f ms)",
            self.proc.pid,
            ", ".join(str(a) for a in self.addresses),
            self.after_ms,
            self.interval * 1000,
        )

    async def _beat(self) -> None:
        while True:
            tight = self.tight_after_ms is not None and self._tight()
            self.beat(tight)
            await asyncio.sleep(self.tight_interval if tight else self.interval)

    def beat(self, tight: bool = False) -> None:
        """One beat (TIGHT: G is the tight timeout until the next plain one); restarts the guard
        first if it died."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            if proc is not None and self._w is not None:
                log.error("fence guard: died (exit status %s), restarting it", proc.returncode)
                self._close_pipe()
                self._on_up(False)
            if time.monotonic() < self._next_spawn:
                return
            if proc is not None:
                self.restarts += 1
                self._on_restart()
            self._spawn()
        if self._w is not None:
            # BlockingIOError: a full pipe, the guard is not reading (stopped too); nothing to add.
            # BrokenPipeError: it just died; the next beat restarts it.
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(self._w, TIGHT if tight else BEAT)

    def _close_pipe(self) -> None:
        w, self._w = self._w, None
        if w is not None:
            os.close(w)

    async def close(self, *, keep: bool = False, wait: float = 2.0) -> None:
        """Stop beating and close the pipe: the guard removes whatever is still present (nothing
        after a clean release) and exits. `keep`: tell it to exit without removing anything."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if keep and self._w is not None:
            with contextlib.suppress(OSError):
                os.write(self._w, QUIT)
        self._close_pipe()
        proc = self.proc
        deadline = time.monotonic() + wait
        while proc is not None and proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if proc is not None and proc.returncode not in (None, 0):
            log.error("fence guard: exited with status %s", proc.returncode)
        self._on_up(False)


if __name__ == "__main__":
    sys.exit(main())
