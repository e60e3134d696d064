"""The agent's kernel-watchdog node fence, for real: a QEMU guest whose kernel resets itself.

One node of a pair (``alpha``; ``beta`` stays absent) runs the agent in a Debian guest with ha.cf's
``watchdog /dev/watchdog`` on Linux's ``softdog`` and ``--watchdog-timeout 10``; after initdead it
holds the VIP 192.0.2.100 on a dummy interface (documentation range, inside the guest only; the
guest has no network device at all). The agent and its Python are the host's own, shared
read-only over 9p. What a user sees:

* an agent that stalls (SIGSTOP) stops feeding the watchdog: the guest resets within the timeout
  (QEMU runs with ``-no-reboot``, so the reset ends QEMU), its console shows the softdog's
  ``softdog: Initiating system reboot`` and QEMU reports a ``guest-reset``;
* an agent stopped cleanly (SIGTERM) releases the VIP and disarms the watchdog (the magic close):
  the guest still answers well after the timeout;
* an agent killed outright (SIGKILL: no magic close) leaves it armed: the kernel says
  ``watchdog did not stop!`` and the guest resets within the timeout (Heartbeat/SBD semantics);
* a fenced watchdog (the engine's FenceNode) resets the node within about a second, even when the
  agent exits right after the fence: the kernel's last feed on close must not buy it a timeout more.

Timings under software emulation (2 host cores): a guest is ready ~27 s after QEMU starts, the
agent needs ~15 s to import and start, and a guest is reused by the next test unless it reset.
"""

from __future__ import annotations

import compileall
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import vmlab

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]  # the first test may build the image

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"

WD_TIMEOUT = 10
"""s: the agent's --watchdog-timeout (set on the device with WDIOC_SETTIMEOUT)."""
FEED_EVERY = 1.0
"""s: how often the agent feeds it: min(timeout/4, 1 s) (daemon.py `_feed_every`)."""
RESET_MARGIN = 3.0
"""s the reset may come after the timeout, measured from the host's signal command to QEMU's exit:
the guest agent's round trip (0.2-0.6 s), the softdog's timer under emulation and QEMU's exit.
Measured at most 0.2 s past the timeout on this kind of machine (2 cores, TCG; SIGSTOP 9.6-9.8 s,
SIGKILL 10.1-10.2 s with a 10 s timeout); the rest is headroom for a busy host."""
SOFTDOG_RESET = "softdog: Initiating system reboot"
"""What Linux 6.1's softdog prints (KERN_CRIT, so the console shows it) right before it resets."""
NOT_STOPPED = "watchdog did not stop!"
"""What the watchdog core prints when the device is closed without the magic character."""

NODE, PEER = "alpha", "beta"
VIP = "192.0.2.100"
HA = "/run/ha"
HA_CF = f"""\
keepalive 1
deadtime 5
initdead 10
udpport 694
ucast hb0 192.0.2.12
auto_failback on
node {NODE}
node {PEER}
watchdog /dev/watchdog
"""
HARESOURCES = f"{NODE} IPaddr::{VIP}/24/hb0\n"
AUTHKEYS = "auth 1\n1 sha1 vmlab-watchdog-key\n"
AGENT = (
    f"PYTHONDONTWRITEBYTECODE=1 {PYTHON} -m hacluster_agent.daemon --config-dir {HA}/ha.d --node {NODE} "
    f"--state-dir {HA}/state --control-socket {HA}/agent.sock --lock-dir {HA}/state "
    f"--init-dir {HA}/init.d --log-format text --watchdog-timeout {WD_TIMEOUT}"
)
WATCHDOG_SYSFS = "/sys/class/watchdog/watchdog0"


@pytest.fixture(scope="module")
def pool() -> Iterator[vmlab.Pool]:
    if reason := vmlab.unavailable():
        pytest.skip(reason)
    img = vmlab.ensure_image()
    # The share is read-only: compile the agent here, or every guest compiles it again (slowly).
    for package_dir in ("api", "node-agent"):
        compileall.compile_dir(REPO / package_dir, quiet=1)
    pool = vmlab.Pool(img, [vmlab.Share(REPO, str(REPO), "repo"), vmlab.interpreter_share(PYTHON)])
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def guest(pool: vmlab.Pool) -> Iterator[vmlab.VM]:
    """A running guest with no agent in it; reused by the next test if the test left none running."""
    vm = pool.get()
    try:
        yield vm
    finally:
        print(vm.evidence())
        keep = False
        if vm.running():
            try:
                print(f"agent log:\n{vm.shell(f'cat {HA}/agent.log').out}")
                # reusable: no agent left, the watchdog disarmed (or never loaded), the lab removed
                busy = vm.shell(
                    f"test -s {HA}/agent.pid && kill -0 $(cat {HA}/agent.pid) || "
                    f'test "$(cat {WATCHDOG_SYSFS}/state 2>/dev/null)" = active'
                )
                keep = busy.rc != 0 and vm.shell(f"rm -rf {HA}; ip link del hb0 2>/dev/null; true").rc == 0
            except (vmlab.VMError, TimeoutError):
                keep = False
        if not keep:
            pool.discard()


def _until(check: Callable[[], str | None], timeout: float, what: str, context: Callable[[], str]) -> float:
    """Poll `check` (None when satisfied, else what it saw) until it holds; the host time it did."""
    deadline = time.monotonic() + timeout
    while True:
        seen = check()
        if seen is None:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what} (last seen: {seen}){context()}")
        time.sleep(0.5)


@dataclass
class Agent:
    vm: vmlab.VM
    pid: int
    armed_at: float  # host time.monotonic() when its watchdog was seen armed

    def log(self) -> str:
        return self.vm.shell(f"cat {HA}/agent.log").out

    def context(self) -> str:
        try:
            log = self.log()[-3000:]
        except (vmlab.VMError, TimeoutError) as e:
            log = f"(cannot read it: {e})"
        return f"\nagent log:\n{log}" + self.vm.evidence(20)

    def signal(self, sig: str) -> tuple[float, float]:
        """Send it `sig` from inside the guest; host times just before and after the command."""
        before = time.monotonic()
        self.vm.check(f"kill -{sig} {self.pid}")
        return before, time.monotonic()

    def exit_code(self) -> int | None:
        r = self.vm.shell(f"cat {HA}/agent.rc")
        return int(r.out) if r.rc == 0 and r.out.strip() else None

    def watchdog_state(self) -> str | None:
        """None if the device is armed with the agent's timeout, else what sysfs says."""
        r = self.vm.shell(f"echo $(cat {WATCHDOG_SYSFS}/state {WATCHDOG_SYSFS}/timeout)")
        return None if r.out.split() == ["active", str(WD_TIMEOUT)] else r.out.strip()

    def holds_vip(self) -> bool:
        return f" {VIP}/24 " in self.vm.check("ip -4 -o addr show dev hb0")

    def wait_holding(self) -> None:
        _until(
            lambda: None if self.holds_vip() else self.vm.check("ip -4 -o addr show dev hb0").strip(),
            60,
            f"the agent holds {VIP} (initdead 10 s)",
            self.context,
        )

    def kept_up_past_the_timeout(self) -> None:
        """A running agent keeps the guest up longer than the timeout: it really feeds it."""
        time.sleep(max(0.0, self.armed_at + WD_TIMEOUT + 2 - time.monotonic()))
        assert self.vm.running(), "the guest reset although the agent was running" + self.context()
        assert self.watchdog_state() is None, self.context()


def start_agent(vm: vmlab.VM) -> Agent:
    """The agent as `alpha`, in the background of the guest (its own session); returns once its
    watchdog is armed."""
    vm.check(
        "modprobe softdog && ip link add hb0 type dummy && ip addr add 192.0.2.11/24 dev hb0 && "
        f"ip link set hb0 up && mkdir -p {HA}/ha.d {HA}/state {HA}/init.d"
    )
    # softdog without nowayout (Debian's default): a clean close can disarm it
    assert vm.check(f"cat {WATCHDOG_SYSFS}/nowayout").strip() == "0"
    vm.write_file(f"{HA}/ha.d/ha.cf", HA_CF)
    vm.write_file(f"{HA}/ha.d/haresources", HARESOURCES)
    vm.write_file(f"{HA}/ha.d/authkeys", AUTHKEYS, mode=0o600)
    # The wrapper shell waits for the agent and keeps its exit code; signals go to the agent's PID.
    vm.check(
        f"cd {HA} && setsid sh -c '{AGENT} & echo $! > {HA}/agent.pid; wait $!; echo $? > {HA}/agent.rc' "
        f"> {HA}/agent.log 2>&1 < /dev/null &"
    )
    wait_pid = f"for i in $(seq 100); do test -s {HA}/agent.pid && break; sleep 0.1; done"
    pid = int(vm.check(f"{wait_pid}; cat {HA}/agent.pid"))
    agent = Agent(vm, pid, 0.0)
    armed = "watchdog /dev/watchdog: fed every"

    def is_armed() -> str | None:
        if agent.exit_code() is not None:
            raise AssertionError(f"the agent exited {agent.exit_code()}" + agent.context())
        log = agent.log()
        return agent.watchdog_state() if armed in log else (log.strip().splitlines() or ["(no log)"])[-1]

    agent.armed_at = _until(is_armed, 120, "the agent arms the watchdog", agent.context)
    assert agent.vm.check(f"cat /proc/{pid}/comm").strip().startswith("python"), agent.context()
    return agent


def _reset(vm: vmlab.VM, before: float, after: float, what: str) -> tuple[float, float]:
    """Wait for the reset after a signal sent between `before` and `after`; assert it came within the
    timeout; the latency from the signal command to QEMU's exit and to QEMU's SHUTDOWN event."""
    exited = vm.wait_exit(WD_TIMEOUT + RESET_MARGIN + 60)  # longer than allowed: to say how late
    assert exited is not None, f"the guest did not reset within {WD_TIMEOUT + RESET_MARGIN + 60:g}s" + (
        vm.evidence()
    )
    console = vm.console_text()
    events = [e.at for e in vm.qmp.events if e.name == "SHUTDOWN"]
    latency = exited - before
    event_latency = (events[0] - before) if events else float("nan")
    print(
        f"{what}: QEMU exited {latency:.2f}s after the signal command ({exited - after:.2f}s after it "
        f"returned; SHUTDOWN event after {event_latency:.2f}s), watchdog timeout {WD_TIMEOUT}s"
    )
    assert SOFTDOG_RESET in console, f"the console does not show {SOFTDOG_RESET!r}" + vm.evidence()
    assert vm.shutdown_reasons() == ["guest-reset"], vm.evidence()
    # Not earlier than the timeout allows (the last feed was at most FEED_EVERY before the signal) ...
    assert exited - after >= WD_TIMEOUT - FEED_EVERY - 0.5, f"reset too early: {exited - after:.2f}s"
    # ... and not later than the timeout plus the measured margin.
    assert latency <= WD_TIMEOUT + RESET_MARGIN, f"reset {latency:.2f}s after the signal" + vm.evidence()
    return latency, event_latency


def test_a_clean_stop_disarms_the_watchdog(guest: vmlab.VM) -> None:
    agent = start_agent(guest)
    agent.wait_holding()
    agent.kept_up_past_the_timeout()
    agent.signal("TERM")
    stopped = _until(
        lambda: None if agent.exit_code() is not None else "running",
        60,
        "the agent exits after SIGTERM",
        agent.context,
    )
    assert agent.exit_code() == 0, agent.context()
    assert not agent.holds_vip(), "the agent did not release the VIP" + agent.context()
    state = guest.check(f"cat {WATCHDOG_SYSFS}/state").strip()
    assert state == "inactive", f"watchdog still {state} after a clean stop" + agent.context()
    # Well after the timeout: the guest still answers, it never reset.
    while time.monotonic() < stopped + 2 * WD_TIMEOUT + RESET_MARGIN:
        assert guest.running(), "the guest reset after a clean stop" + agent.context()
        time.sleep(1)
    uptime = float(guest.check("cat /proc/uptime").split()[0])
    assert guest.running()
    assert uptime > 2 * WD_TIMEOUT, uptime
    console = guest.console_text()
    assert SOFTDOG_RESET not in console and NOT_STOPPED not in console, guest.evidence()
    print(f"clean stop: the guest answered {time.monotonic() - stopped:.1f}s after the agent exited")


def test_a_stalled_agent_gets_the_node_reset(guest: vmlab.VM) -> None:
    agent = start_agent(guest)
    agent.wait_holding()  # the node that stalls is the one holding the service
    agent.kept_up_past_the_timeout()
    before, after = agent.signal("STOP")
    _reset(guest, before, after, "SIGSTOP")
    assert NOT_STOPPED not in guest.console_text(), "the device was closed: the agent did not stall"


def test_a_killed_agent_gets_the_node_reset(guest: vmlab.VM) -> None:
    agent = start_agent(guest)
    agent.kept_up_past_the_timeout()
    before, after = agent.signal("KILL")
    _reset(guest, before, after, "SIGKILL")
    # the kernel saw the device closed without the magic character, and kept it armed
    assert NOT_STOPPED in guest.console_text(), guest.evidence()


# resources/watchdog.py's Watchdog alone (no agent): what daemon.py does on FenceNode and then on exit
FENCE_THEN_EXIT = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("wd", "{REPO}/node-agent/hacluster_agent/resources/watchdog.py")
wd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wd)
w = wd.Watchdog("/dev/watchdog", {WD_TIMEOUT})
w.feed()
w.fence("a self-fencing stop overran its budget")
w.close()
"""


def test_a_fenced_node_resets_even_if_its_agent_exits(guest: vmlab.VM) -> None:
    """FenceNode, then the agent exits (SIGTERM, a crash): closing the device without the magic
    character makes the kernel feed it once more (`watchdog did not stop!`), which must not give
    the fenced node another whole timeout (it did: reset 10.0 s after the exit before
    Watchdog.fence cut the countdown to 1 s)."""
    guest.check("modprobe softdog")
    guest.write_file("/run/fence.py", FENCE_THEN_EXIT)
    before = time.monotonic()
    out = guest.shell(f"PYTHONDONTWRITEBYTECODE=1 {PYTHON} /run/fence.py 2>&1")
    after = time.monotonic()
    assert out.rc == 0, out
    exited = guest.wait_exit(WD_TIMEOUT + RESET_MARGIN + 30)
    assert exited is not None, "the guest did not reset" + guest.evidence()
    print(
        f"fence then exit: QEMU exited {exited - after:.2f}s after the fenced agent exited "
        f"({exited - before:.2f}s after the command started)"
    )
    assert SOFTDOG_RESET in guest.console_text(), guest.evidence()
    assert NOT_STOPPED in guest.console_text(), guest.evidence()
    assert exited - after <= 1 + RESET_MARGIN, (
        f"reset {exited - after:.2f}s after the exit" + guest.evidence()
    )
