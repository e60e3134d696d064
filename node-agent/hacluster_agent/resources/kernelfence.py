"""The kernel fence: nftables drops this node's VIP traffic once the engine's deadline passes.

Why: the fence guard removes the VIPs when the agent dies, but it dies with the agent when the
whole process tree goes (a container's PID 1 exits, an OOM kill of the cgroup), and then only the
address's kernel lifetime was left: whole seconds, up to 0.6 s of two owners at keepalive 100 ms /
deadtime 300 ms (sim seed 1018). This fence is a kernel timer with millisecond resolution that no
process has to be alive for: the agent keeps a set element alive with a timeout, and a rule drops
every packet to or from a VIP, and every ARP reply for one, once its element has expired. The
engine computes the deadline (`Engine.serve_until`: the peer cannot serve before it); this module
only writes it.

    table inet <name> {                       table arp <name> {
      set vips4/vips6 { the VIPs }              set vips4, live4
      set live4/live6 { flags timeout }         chain out { hook output: arp replies for
      chain pre/out { hook prerouting/output:               vips4 not in live4 dropped }
        vips not in live dropped }            }
    }

Installing creates the tables afresh and closed (a restarted agent answers for nothing until its
engine holds the Lease again); every write is one nftables transaction (`flush set` + `add
element … timeout`), so the set is never seen empty in between. A write that fails (the tables
were removed under us: `nft flush ruleset`) installs them again, closed.
Gratuitous ARP sent through a packet socket (arping) bypasses the arp hooks: the agent announces
only addresses it holds (docs/safety.md).

The library (libnftables, Debian package libnftables1, which `nft` uses too) is called through
ctypes: one netlink transaction per write, 0.1 ms on a small ruleset (up to 5 ms beside
thousands of sets, e.g. kube-proxy in nftables mode: then up to a fifth of a core at 40 writes a
second), at most one per sync.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address

from hacluster_agent.engine.fencewrite import (
    IDLE_WAKE,
    REFRESH_STEP,
    SYNC_EVERY,
    Write,
    next_write,
    sync_interval,
)
from hacluster_agent.engine.membership import FENCE_HORIZON

__all__ = [
    "IDLE_WAKE",
    "REFRESH_STEP",
    "SYNC_EVERY",
    "FenceError",
    "KernelFence",
    "Write",
    "next_write",
    "sync_interval",
    "table_name",
]

log = logging.getLogger("hacluster.kernelfence")

LATENCY_SLACK = 0.002
"""A write slower than the recent worst by this much (s) is written again at once, corrected."""
LATENCY_DECAY = 0.99
"""The recent worst write time decays by this factor per write (back to normal in a few seconds)."""
PRIORITY = -300
"""Before conntrack and anything a CNI or kube-proxy installs (raw priority)."""


class FenceError(RuntimeError):
    """nftables refused or is missing; the message says what to install or check."""


def table_name(namespace: str, cluster: str) -> str:
    """One table per HACluster on a node (host network: every pair on the node shares the
    namespace's nftables): the names, made nftables identifiers, and a hash of the exact pair, so
    `a-b/c` and `a/b-c` or two long names never share one."""
    ident = re.sub(r"[^A-Za-z0-9_]", "_", f"{namespace}_{cluster}")[:200]
    digest = hashlib.sha256(f"{namespace}/{cluster}".encode()).hexdigest()[:8]
    return f"hacluster_{ident}_{digest}"


class Nft:
    """libnftables through ctypes: run one command buffer as one transaction."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise FenceError(
                f"the kernel fence needs libnftables ({name}: {e}); install the Debian package "
                "libnftables1 (or nftables)"
            ) from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self.lib = lib
        self.ctx = lib.nft_ctx_new(0)
        if not self.ctx:
            raise FenceError("libnftables: nft_ctx_new failed")
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)

    def run(self, commands: str) -> None:
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, commands.encode())
        if rc != 0:
            err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode(errors="replace").strip()
            raise FenceError(f"nftables refused the kernel fence ({err or f'error {rc}'})")


class KernelFence:
    """This node's VIPs behind one nftables table per family (inet, arp), named after the cluster."""

    def __init__(
        self,
        name: str,
        addresses: Iterable[IPv4Address | IPv6Address],
        *,
        run: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.v4 = sorted({a for a in addresses if isinstance(a, IPv4Address)})
        self.v6 = sorted({a for a in addresses if isinstance(a, IPv6Address)})
        self._run = run if run is not None else Nft().run
        self.clock = clock
        self.installed: float | None = None  # the deadline last written (our clock); None: unknown
        self.writes = 0
        self.failures = 0
        self.writes_since_failure = 0
        self.lapses = 0  # the fence ran out before a write that opens it again (the writer was late)
        self.last_lapse = 0.0  # how long it was dark then (s)
        self.written_at = -math.inf  # when the deadline installed was written
        self.latency = 0.0  # the longest recent write (s), decaying: taken off every timeout

    # -- the table ---------------------------------------------------------------------------------
    def install(self) -> None:
        """Create the tables afresh, closed: whatever a predecessor left (another version's rules,
        its deadline) goes. A restarted agent holds nothing until its engine takes the Lease again,
        so its VIPs stay dark until then (with --no-release-on-exit as well)."""
        t = self.name
        v4 = ", ".join(map(str, self.v4))
        v6 = ", ".join(map(str, self.v6))
        cmds = [
            f"add table inet {t}",
            f"delete table inet {t}",
            f"add table arp {t}",
            f"delete table arp {t}",
            f"add table inet {t}",
            f"add set inet {t} vips4 {{ type ipv4_addr; }}",
            f"add set inet {t} vips6 {{ type ipv6_addr; }}",
            f"add set inet {t} live4 {{ type ipv4_addr; flags timeout; }}",
            f"add set inet {t} live6 {{ type ipv6_addr; flags timeout; }}",
            # prerouting, before conntrack and any DNAT: traffic to a VIP that a Service forwards to
            # pods never reaches the input hook
            f"add chain inet {t} pre {{ type filter hook prerouting priority {PRIORITY}; policy accept; }}",
            f"add chain inet {t} out {{ type filter hook output priority {PRIORITY}; policy accept; }}",
            f"add rule inet {t} pre ip daddr @vips4 ip daddr != @live4 counter drop",
            f"add rule inet {t} pre ip6 daddr @vips6 ip6 daddr != @live6 counter drop",
            f"add rule inet {t} out ip saddr @vips4 ip saddr != @live4 counter drop",
            f"add rule inet {t} out ip6 saddr @vips6 ip6 saddr != @live6 counter drop",
            f"add table arp {t}",
            f"add set arp {t} vips4 {{ type ipv4_addr; }}",
            f"add set arp {t} live4 {{ type ipv4_addr; flags timeout; }}",
            f"add chain arp {t} out {{ type filter hook output priority {PRIORITY}; policy accept; }}",
            f"add rule arp {t} out arp saddr ip @vips4 arp saddr ip != @live4 counter drop",
        ]
        if v4:
            cmds += [f"add element inet {t} vips4 {{ {v4} }}", f"add element arp {t} vips4 {{ {v4} }}"]
        if v6:
            cmds.append(f"add element inet {t} vips6 {{ {v6} }}")
        self._run("\n".join(cmds) + "\n")
        self.installed = -math.inf

    def remove(self) -> None:
        """Delete the tables (a clean exit that released everything)."""
        t = self.name  # add-then-delete: no error when it is not there (nft < 1.0.8 has no destroy)
        self._run(f"add table inet {t}\ndelete table inet {t}\nadd table arp {t}\ndelete table arp {t}\n")

    # -- the deadline ------------------------------------------------------------------------------
    def keep(self, until: float | None) -> None:
        """Make the kernel drop the VIPs' traffic from `until` on (our clock; -inf: now)."""
        now = self.clock()
        write = next_write(until, self.installed, now)
        if write is None:
            return
        installed = self.installed
        if (
            installed is not None
            and -math.inf < installed < now
            and until is not None
            and until > now
            and installed - self.written_at >= FENCE_HORIZON - self.latency - 0.002
        ):
            # It ran out at the horizon, not at a certificate's end: a refresh was due and came late.
            self.lapses += 1
            self.last_lapse = now - installed
        self._apply(-math.inf if write.timeout is None or until is None else until)

    def _apply(self, until: float) -> None:
        """One write. The kernel starts the timeout when it commits, after libnftables has read its
        cache (0.1 ms on a small ruleset, 5 ms with thousands of sets): the longest recent call is
        taken off the timeout, and a call slower than that is written again at once, corrected."""
        for _attempt in range(2):
            t0 = self.clock()
            ms = int((until - t0 - self.latency) * 1000) if until > -math.inf else 0
            written = until if ms > 0 else -math.inf
            try:
                self._run(self._commands(ms))
            except FenceError as e:
                self.failures += 1
                self.installed = None  # unknown: written again at the next keep
                self._reinstall(e)
                return
            took = self.clock() - t0
            self.writes += 1
            self.writes_since_failure += 1
            self.installed = written
            self.written_at = t0
            slow = took > self.latency + LATENCY_SLACK
            self.latency = max(took, self.latency * LATENCY_DECAY)
            if not slow or written == -math.inf:
                return
            # (the deadline it wrote may be later than `until` by up to `took`: write it again)

    def _commands(self, ms: int) -> str:
        t = self.name
        cmds = [f"flush set inet {t} live4", f"flush set inet {t} live6", f"flush set arp {t} live4"]
        if ms > 0 and self.v4:
            el = ", ".join(f"{a} timeout {ms}ms" for a in self.v4)
            cmds += [f"add element inet {t} live4 {{ {el} }}", f"add element arp {t} live4 {{ {el} }}"]
        if ms > 0 and self.v6:
            el6 = ", ".join(f"{a} timeout {ms}ms" for a in self.v6)
            cmds.append(f"add element inet {t} live6 {{ {el6} }}")
        return "\n".join(cmds) + "\n"

    def _reinstall(self, error: FenceError) -> None:
        """A write failed: the tables were most likely removed under us (`nft flush ruleset`, as
        Debian's nftables.service does on restart). Put them back, closed; the next keep opens
        them again. Logged once per failure streak, counted always (`failures`)."""
        if self.failures == 1 or self.writes_since_failure > 0:
            log.error("kernel fence: %s; installing its tables again", error)
        self.writes_since_failure = 0
        try:
            self.install()
        except FenceError as e:
            log.error("kernel fence: cannot install its tables again: %s", e)
