"""The node fence's last resort: the kernel watchdog (`/dev/watchdog`: `softdog`, or a hardware timer).

Heartbeat's `watchdog` directive: the agent feeds the device while it runs; if the agent stalls, or
dies without saying goodbye (a crash, SIGKILL, its container's PID 1 gone), the kernel resets the
node once the timeout runs out. In Kubernetes mode the engine also stops the feeding on purpose
(`FenceNode`): a self-fencing stop that failed or overran its budget, so a service may still run
beside the new owner's copy. A clean exit disarms it (the magic close, `V`), unless the driver was
loaded with `nowayout`.

The Linux watchdog API (Documentation/watchdog/watchdog-api.rst): any write feeds it; the
ioctls below read and set the timeout in whole seconds.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct

log = logging.getLogger(__name__)

WDIOC_KEEPALIVE = 0x80045705  # _IOR('W', 5, int)
WDIOC_SETTIMEOUT = 0xC0045706  # _IOWR('W', 6, int)
WDIOC_GETTIMEOUT = 0x80045707  # _IOR('W', 7, int)


class WatchdogError(Exception):
    """The device cannot be opened or configured; says which device and why."""


class Watchdog:
    """One open watchdog device. Opened close-on-exec: a script the agent runs must not keep it open
    (the device admits one opener, and the agent restarted after a crash must open it again)."""

    def __init__(self, path: str, timeout: int | None = None) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise WatchdogError(
                f"watchdog {path}: cannot open it ({e.strerror}): is a watchdog driver loaded "
                "(modprobe softdog) and is the device given to the agent?"
            ) from e
        try:
            if timeout is not None:
                fcntl.ioctl(self.fd, WDIOC_SETTIMEOUT, struct.pack("i", timeout))
            self.timeout: int = struct.unpack(
                "i", fcntl.ioctl(self.fd, WDIOC_GETTIMEOUT, struct.pack("i", 0))
            )[0]
        except OSError as e:
            os.write(self.fd, b"V")  # we are not going to feed it: do not reset the node for that
            os.close(self.fd)
            raise WatchdogError(
                f"watchdog {path}: cannot set its timeout to {timeout}s ({e.strerror})"
            ) from e
        self.fenced = False
        self.closed = False

    def feed(self) -> None:
        """Restart the countdown, unless the node is being fenced."""
        if not self.fenced and not self.closed:
            os.write(self.fd, b"\0")

    def fence(self, why: str) -> None:
        """Never feed it again: the kernel resets this node within the timeout, and within about a
        second if the driver takes a timeout of 1 s.

        The countdown is cut to 1 s because the device cannot stay unfed once the agent exits: the
        kernel closes it, and a close without the magic character makes the watchdog core feed it one
        last time (`watchdog did not stop!`). A fenced agent that exits or is killed would otherwise
        give its node a whole timeout more, counted from its exit (measured in tests/vm/test_watchdog.py:
        reset 10 s after the exit, with a 10 s timeout, however long before it the fence was)."""
        if self.fenced:
            return
        self.fenced = True
        within = self.timeout
        if not self.closed:
            try:  # this sets the new countdown at once (the ioctl feeds it with the new timeout)
                within = struct.unpack("i", fcntl.ioctl(self.fd, WDIOC_SETTIMEOUT, struct.pack("i", 1)))[0]
            except OSError as e:
                log.warning("watchdog %s: cannot cut its timeout to 1s (%s)", self.path, e.strerror)
        log.critical("watchdog %s: no longer fed (%s): the node resets within %ss", self.path, why, within)

    def close(self) -> None:
        """A clean exit: disarm it (the magic close), unless the node is being fenced."""
        if self.closed:
            return
        self.closed = True
        if not self.fenced:
            os.write(self.fd, b"V")
        os.close(self.fd)
