"""Typed model of ha.cf: the timing, media, nodes and failover policy of a Heartbeat pair."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_UDPPORT = 694
DEFAULT_BAUD = 19200
DEFAULT_KEEPALIVE_MS = 1000
DEFAULT_DEADTIME_MS = 30000
DEFAULT_RTPRIO = 50  # Heartbeat: the middle of SCHED_FIFO's range (1-99)
SERIAL_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800)

AutoFailback = Literal["on", "off", "legacy"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BcastMedium(_Frozen):
    """UDP broadcast on one interface (`bcast eth1`, or its alias `udp eth1`)."""

    kind: Literal["bcast"] = "bcast"
    interface: str
    port: int = DEFAULT_UDPPORT


class UcastMedium(_Frozen):
    """UDP unicast to one peer address (`ucast eth1 192.0.2.2`); a self address is skipped at run time."""

    kind: Literal["ucast"] = "ucast"
    interface: str
    peer: IPv4Address | IPv6Address
    port: int = DEFAULT_UDPPORT


class McastMedium(_Frozen):
    """UDP multicast (`mcast eth1 239.192.0.1 694 1 0`); its port is its own, not udpport."""

    kind: Literal["mcast"] = "mcast"
    interface: str
    group: IPv4Address | IPv6Address
    port: int = DEFAULT_UDPPORT
    ttl: int = 1
    loop: int = 0


class SerialMedium(_Frozen):
    """A null-modem serial line (`serial /dev/ttyS0`) at the baud in force when it was declared."""

    kind: Literal["serial"] = "serial"
    device: str
    baud: int = DEFAULT_BAUD


Medium = Annotated[BcastMedium | UcastMedium | McastMedium | SerialMedium, Field(discriminator="kind")]


class Respawn(_Frozen):
    """`respawn uid /path args`: a helper process Heartbeat keeps alive (parsed, not run)."""

    user: str
    command: list[str]


class OtherDirective(_Frozen):
    """A valid Heartbeat directive hacluster keeps for the round trip but does not act on."""

    name: str
    value: str


class HaCf(_Frozen):
    """ha.cf as parsed. Optional timings stay None when not written, so a round trip keeps meaning."""

    keepalive_ms: int = DEFAULT_KEEPALIVE_MS
    deadtime_ms: int = DEFAULT_DEADTIME_MS
    warntime_ms_set: int | None = None
    initdead_ms_set: int | None = None
    udpport: int = DEFAULT_UDPPORT
    baud: int = DEFAULT_BAUD
    media: list[Medium] = Field(default_factory=list)
    nodes: list[str] = Field(default_factory=list)
    auto_failback: AutoFailback = "legacy"
    ping: list[str] = Field(default_factory=list)
    respawn: list[Respawn] = Field(default_factory=list)
    crm: str = "off"
    msgfmt: Literal["classic", "netstring"] = "classic"
    realtime: bool | None = None  # None: not written (Heartbeat's default: on)
    rtprio: int | None = None  # None: not written (Heartbeat's default: the middle of 1-99)
    watchdog: str | None = None  # the watchdog device the agent feeds (resources/watchdog.py)
    logfile: str | None = None
    debugfile: str | None = None
    logfacility: str | None = None
    use_logd: bool | None = None
    debug: int = 0
    other: list[OtherDirective] = Field(default_factory=list)

    @property
    def warntime_ms(self) -> int:
        """Heartbeat's default: half the deadtime."""
        return self.warntime_ms_set if self.warntime_ms_set is not None else self.deadtime_ms // 2

    @property
    def initdead_ms(self) -> int:
        """Heartbeat 3.0.6's default rule for initdead when ha.cf does not set it."""
        if self.initdead_ms_set is not None:
            return self.initdead_ms_set
        if self.deadtime_ms > 10_000:
            return self.deadtime_ms
        if self.deadtime_ms < 6_000:
            return 12_000
        return 2 * self.deadtime_ms

    @property
    def realtime_prio(self) -> int | None:
        """The SCHED_FIFO priority the agent runs at (realtime.py), None with `realtime off`."""
        if self.realtime is False:
            return None
        return self.rtprio if self.rtprio is not None else DEFAULT_RTPRIO

    @property
    def auto_failback_effective(self) -> bool:
        """Whether groups go home when their home node returns ('legacy' behaves as 'on' in a pair)."""
        return self.auto_failback != "off"
