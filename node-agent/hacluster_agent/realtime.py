"""Heartbeat's `realtime on` (its default): the agent runs at a real-time priority and locks its
memory, so a busy host (a rebuild, a backup, a noisy neighbour) cannot delay a heartbeat, a Lease
renewal or a kernel-fence refresh past the peer's patience. Without it, on a loaded 2-core host the
owner's agent was not scheduled for 160 ms: its own fence went dark and the client saw a 200 ms
outage while nothing was wrong with the pair (bench/chaos.py, sigkill-standby).

Scheduling policy is per thread in Linux. The agent's threads get SCHED_FIFO with
SCHED_RESET_ON_FORK: every process it starts (resource scripts, services, the fence guard) begins
at the normal policy, never at a real-time one; the fence guard raises itself (`--rtprio`). Threads
started later inherit the reset too, so the loop's default executor raises each of its threads as
it starts (`executor`).

Needs CAP_SYS_NICE (and CAP_IPC_LOCK for the memory lock beyond RLIMIT_MEMLOCK); without them
the agent says so once and runs at the normal priority, as Heartbeat does.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("hacluster.agent")

MCL_CURRENT = 1
EXECUTOR_THREADS = 8  # the Lease, the reporter, the directives watch, a serial open: few at once


def raise_thread(prio: int) -> None:
    """This thread to SCHED_FIFO at `prio`, its children back to normal (raises OSError)."""
    os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(prio))


def lock_memory() -> None:
    """Lock the pages mapped now (code, the modules loaded): none of them is paged out under
    memory pressure and then faulted back in the middle of a heartbeat (raises OSError)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mlockall(MCL_CURRENT) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def become_realtime(prio: int) -> bool:
    """The calling thread real-time and the memory locked; False (and one warning) if refused."""
    try:
        raise_thread(prio)
    except OSError as e:
        log.warning(
            "realtime: cannot run at SCHED_FIFO priority %d (%s; needs CAP_SYS_NICE): running at the "
            "normal priority, a loaded host may delay heartbeats and darken the VIP", prio, e.strerror,
        )  # fmt: skip
        return False
    try:
        lock_memory()
    except OSError as e:
        log.warning("realtime: cannot lock memory (%s; needs CAP_IPC_LOCK): it may be paged out", e.strerror)
    log.info("realtime: SCHED_FIFO priority %d, memory locked (ha.cf realtime/rtprio)", prio)
    return True


def executor(prio: int) -> ThreadPoolExecutor:
    """The loop's default executor, whose threads run at the agent's real-time priority too."""

    def init() -> None:
        with contextlib.suppress(OSError):  # the main thread already said why
            raise_thread(prio)

    return ThreadPoolExecutor(EXECUTOR_THREADS, thread_name_prefix="agent", initializer=init)
