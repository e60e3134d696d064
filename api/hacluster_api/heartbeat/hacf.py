"""Parse and render ha.cf with Heartbeat 3.0.6's semantics (order rules, defaults, consistency)."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from .durations import format_duration_ms, parse_duration_ms
from .hacf_model import (
    DEFAULT_BAUD,
    DEFAULT_UDPPORT,
    SERIAL_BAUDS,
    BcastMedium,
    HaCf,
    McastMedium,
    Medium,
    OtherDirective,
    Respawn,
    SerialMedium,
    UcastMedium,
)
from .issues import Findings
from .lines import Line, is_number, logical_lines

# Valid Heartbeat 3.0.6 directives that hacluster accepts, keeps, and does not act on.
NOT_ACTED_ON = frozenset(
    {
        "hopfudge", "autojoin", "ping_group", "deadping", "hbaping", "apiauth", "conn_logd_time", "compression", "compression_threshold",
        "traditional_compression", "hbgenmethod", "uuidfrom", "coredumps", "coreroot",
        "stonith", "stonith_host", "crm_daemon_dir", "crmd_spawns_pengine",
        "cluster", "normalpoll", "log_badpack", "syslogmsgfmt", "use_apphbd", "env",
        "memreserve", "max_rexmit_delay", "quorum_server", "failfast",
        "record_config_changes", "record_pengine_inputs", "enable_config_writes",
    }
)  # fmt: skip

_SINGLE = ("keepalive", "deadtime", "warntime", "initdead", "auto_failback", "nice_failback",
           "watchdog", "crm", "msgfmt", "realtime", "rtprio", "logfile", "debugfile", "logfacility", "use_logd", "debug")  # fmt: skip
_BOOL_WORDS = {"on": True, "yes": True, "true": True, "1": True,
               "off": False, "no": False, "false": False, "0": False}  # fmt: skip


class _Parser:
    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.f = Findings(filename)
        self.values: dict[str, Any] = {}
        self.seen: dict[str, int] = {}
        self.media: list[Medium] = []
        self.nodes: list[str] = []
        self.first_media_line: int | None = None
        self.udpport = DEFAULT_UDPPORT
        self.baud = DEFAULT_BAUD

    def run(self) -> tuple[HaCf | None, Findings]:
        for line in logical_lines(self.text):
            self.directive(line)
        model = self.finish()
        return model, self.f

    # -- one line ---------------------------------------------------------------------------
    def directive(self, line: Line) -> None:
        name, args = line.words[0], line.words[1:]
        n = line.number
        if name in _SINGLE:
            if name in self.seen:
                self.f.error(n, f"{name} is already set on line {self.seen[name]}")
                return
            self.seen[name] = n
        handler = getattr(self, f"d_{name}", None)
        if handler is not None:
            handler(n, args)
        elif name in NOT_ACTED_ON:
            self.f.warn(n, f"{name}: valid Heartbeat directive that hacluster does not act on")
            self.values.setdefault("other", []).append(OtherDirective(name=name, value=" ".join(args)))
        else:
            self.f.error(n, f"unknown directive {name!r}")

    def _time(self, n: int, name: str, args: list[str]) -> int | None:
        if len(args) != 1:
            self.f.error(n, f"{name} takes one time value, got {len(args)} words")
            return None
        try:
            ms = parse_duration_ms(args[0])
        except ValueError as e:
            self.f.error(n, f"{name}: {e}")
            return None
        if ms <= 0:
            self.f.error(n, f"{name} must be greater than zero")
            return None
        return ms

    def d_keepalive(self, n: int, args: list[str]) -> None:
        if (ms := self._time(n, "keepalive", args)) is not None:
            self.values["keepalive_ms"] = ms

    def d_deadtime(self, n: int, args: list[str]) -> None:
        if (ms := self._time(n, "deadtime", args)) is not None:
            self.values["deadtime_ms"] = ms

    def d_warntime(self, n: int, args: list[str]) -> None:
        if (ms := self._time(n, "warntime", args)) is not None:
            self.values["warntime_ms_set"] = ms

    def d_initdead(self, n: int, args: list[str]) -> None:
        if (ms := self._time(n, "initdead", args)) is not None:
            self.values["initdead_ms_set"] = ms

    def _after_media(self, n: int, name: str) -> None:
        if self.first_media_line is not None:
            self.f.warn(
                n,
                f"{name} comes after the media line on line {self.first_media_line}: as in "
                f"Heartbeat it applies only to media declared after it",
            )

    def d_udpport(self, n: int, args: list[str]) -> None:
        port = self._port(n, "udpport", args[0] if len(args) == 1 else None)
        if port is not None:
            self._after_media(n, "udpport")
            self.udpport = port
            self.values["udpport"] = port

    def _port(self, n: int, name: str, word: str | None) -> int | None:
        if word is None or not is_number(word) or not 0 < int(word) < 65536:
            self.f.error(n, f"{name}: expected a port number 1-65535, got {word!r}")
            return None
        return int(word)

    def d_baud(self, n: int, args: list[str]) -> None:
        if len(args) != 1 or not is_number(args[0]) or int(args[0]) not in SERIAL_BAUDS:
            allowed = ", ".join(str(b) for b in SERIAL_BAUDS)
            self.f.error(n, f"baud: expected one of {allowed}, got {' '.join(args)!r}")
            return
        self._after_media(n, "baud")
        self.baud = int(args[0])
        self.values["baud"] = self.baud

    def _media_line(self, n: int) -> None:
        if self.first_media_line is None:
            self.first_media_line = n

    def d_bcast(self, n: int, args: list[str]) -> None:
        if not args:
            self.f.error(n, "bcast: expected one or more interface names")
            return
        self._media_line(n)
        for dev in args:
            self.media.append(BcastMedium(interface=dev, port=self.udpport))

    def d_udp(self, n: int, args: list[str]) -> None:
        # `udp port 694` (the seed article's typo) means `udpport 694`; Heartbeat itself
        # would take 'port' as an interface name and fail at start-up.
        if len(args) == 2 and args[0] == "port":
            self.f.warn(n, "'udp port N' is read as 'udpport N' (Heartbeat would fail on it)")
            self.d_udpport(n, args[1:])
            return
        self.d_bcast(n, args)

    def d_ucast(self, n: int, args: list[str]) -> None:
        self._unicast(n, "ucast", args, 4)

    def d_ucast6(self, n: int, args: list[str]) -> None:
        self._unicast(n, "ucast6", args, 6)

    def _unicast(self, n: int, name: str, args: list[str], version: int) -> None:
        if len(args) != 2:
            self.f.error(n, f"{name}: expected '{name} <interface> <peer-address>'")
            return
        peer = self._address(n, name, args[1], version)
        if peer is not None:
            self._media_line(n)
            self.media.append(UcastMedium(interface=args[0], peer=peer, port=self.udpport))

    def _address(self, n: int, name: str, word: str, version: int) -> IPv4Address | IPv6Address | None:
        try:
            addr = ip_address(word)
        except ValueError:
            self.f.error(n, f"{name}: {word!r} is not an IPv{version} address")
            return None
        if addr.version != version:
            self.f.error(n, f"{name}: {word!r} is not an IPv{version} address")
            return None
        return addr

    def d_mcast(self, n: int, args: list[str]) -> None:
        self._multicast(n, "mcast", args, 4)

    def d_mcast6(self, n: int, args: list[str]) -> None:
        self._multicast(n, "mcast6", args, 6)

    def _multicast(self, n: int, name: str, args: list[str], version: int) -> None:
        if len(args) != 5:
            self.f.error(n, f"{name}: expected '{name} <interface> <group> <port> <ttl> <loop>'")
            return
        group = self._address(n, name, args[1], version)
        if group is not None and not group.is_multicast:
            self.f.error(n, f"{name}: {args[1]} is not a multicast group")
            group = None
        port = self._port(n, name, args[2])
        ttl_ok = is_number(args[3]) and 0 <= int(args[3]) <= 255
        if not ttl_ok:
            self.f.error(n, f"{name}: ttl/hops must be 0-255, got {args[3]!r}")
        if args[4] not in ("0", "1"):
            self.f.error(n, f"{name}: loop must be 0 or 1, got {args[4]!r}")
        if group is None or port is None or not ttl_ok or args[4] not in ("0", "1"):
            return
        self._media_line(n)
        self.media.append(
            McastMedium(interface=args[0], group=group, port=port, ttl=int(args[3]),
                        loop=int(args[4]))
        )  # fmt: skip

    def d_serial(self, n: int, args: list[str]) -> None:
        if not args:
            self.f.error(n, "serial: expected one or more device paths")
            return
        self._media_line(n)
        for dev in args:
            if not dev.startswith("/dev/"):
                self.f.warn(n, f"serial device {dev!r} is not under /dev")
            elif re.fullmatch(r"/dev/ttyS[Oo]", dev):
                self.f.warn(n, f"serial device {dev!r} ends in the letter O: did you mean /dev/ttyS0?")
            self.media.append(SerialMedium(device=dev, baud=self.baud))

    def d_node(self, n: int, args: list[str]) -> None:
        if not args:
            self.f.error(n, "node: expected one or more node names")
            return
        for raw in args:
            name = raw.lower()  # Heartbeat compares node names case-insensitively
            if name in self.nodes:
                self.f.error(n, f"node {name!r} is listed twice")
            else:
                self.nodes.append(name)

    def _onoff(self, n: int, name: str, args: list[str]) -> bool | None:
        word = args[0].lower() if len(args) == 1 else ""
        if word not in _BOOL_WORDS:
            self.f.error(n, f"{name}: expected on or off, got {' '.join(args)!r}")
            return None
        return _BOOL_WORDS[word]

    def d_auto_failback(self, n: int, args: list[str]) -> None:
        word = args[0].lower() if len(args) == 1 else ""
        if word == "legacy":
            self.values["auto_failback"] = "legacy"
        elif (on := self._onoff(n, "auto_failback", args)) is not None:
            self.values["auto_failback"] = "on" if on else "off"

    def d_nice_failback(self, n: int, args: list[str]) -> None:
        on = self._onoff(n, "nice_failback", args)
        if on is None:
            return
        self.f.warn(n, f"nice_failback is deprecated: read as auto_failback {'off' if on else 'on'}")
        self.values["nice_failback"] = on

    def d_ping(self, n: int, args: list[str]) -> None:
        if not args:
            self.f.error(n, "ping: expected one or more addresses")
            return
        self.f.warn(n, "ping nodes are parsed but hacluster does not act on them (no ipfail)")
        self.values.setdefault("ping", []).extend(args)

    def d_respawn(self, n: int, args: list[str]) -> None:
        if len(args) < 2:
            self.f.error(n, "respawn: expected 'respawn <user> <path> [args]'")
            return
        self.f.warn(n, f"respawn {args[1]}: hacluster does not run respawn clients")
        self.values.setdefault("respawn", []).append(Respawn(user=args[0], command=args[1:]))

    def d_crm(self, n: int, args: list[str]) -> None:
        word = args[0].lower() if len(args) == 1 else ""
        if word in ("off", "no", "false"):
            self.values["crm"] = "off"
        elif word in ("on", "yes", "true", "respawn"):
            self.f.error(
                n, f"crm {word}: Pacemaker mode is not supported; hacluster runs Heartbeat v1 "
                "resource management from haresources (use 'crm off')",
            )  # fmt: skip
        else:
            self.f.error(n, f"crm: expected on, off or respawn, got {' '.join(args)!r}")

    d_pacemaker = d_crm

    def d_msgfmt(self, n: int, args: list[str]) -> None:
        if len(args) != 1 or args[0] not in ("classic", "netstring"):
            self.f.error(n, f"msgfmt: expected classic or netstring, got {' '.join(args)!r}")
            return
        self.values["msgfmt"] = args[0]

    def d_realtime(self, n: int, args: list[str]) -> None:
        self.values["realtime"] = self._onoff(n, "realtime", args)

    def d_rtprio(self, n: int, args: list[str]) -> None:
        word = self._one_word(n, "rtprio", args)
        if word is None:
            return
        if not (is_number(word) and 1 <= int(word) <= 99):
            self.f.error(n, f"rtprio: expected a SCHED_FIFO priority 1-99, got {word!r}")
            return
        self.values["rtprio"] = int(word)

    def _one_word(self, n: int, name: str, args: list[str]) -> str | None:
        if len(args) != 1:
            self.f.error(n, f"{name}: expected one value")
            return None
        return args[0]

    def d_watchdog(self, n: int, args: list[str]) -> None:
        """Heartbeat's `watchdog <device>`: the agent feeds it, and the kernel resets the node when
        the agent stalls or dies, or (Kubernetes mode) when a self-fencing stop overruns its budget."""
        path = self._one_word(n, "watchdog", args)
        if path is None:
            return
        if not path.startswith("/"):
            self.f.error(n, f"watchdog: expected a device path such as /dev/watchdog, got {path!r}")
            return
        self.values["watchdog"] = path

    def d_logfile(self, n: int, args: list[str]) -> None:
        self.values["logfile"] = self._one_word(n, "logfile", args)

    def d_debugfile(self, n: int, args: list[str]) -> None:
        self.values["debugfile"] = self._one_word(n, "debugfile", args)

    def d_logfacility(self, n: int, args: list[str]) -> None:
        self.values["logfacility"] = self._one_word(n, "logfacility", args)

    def d_use_logd(self, n: int, args: list[str]) -> None:
        self.values["use_logd"] = self._onoff(n, "use_logd", args)

    def d_debug(self, n: int, args: list[str]) -> None:
        word = self._one_word(n, "debug", args)
        if word is not None and not (is_number(word) and int(word) <= 255):
            self.f.error(n, f"debug: expected a level 0-255, got {word!r}")
            return
        self.values["debug"] = int(word) if word is not None else 0

    # -- whole file -------------------------------------------------------------------------
    def finish(self) -> HaCf | None:
        v = self.values
        if "nice_failback" in v:
            nice = v.pop("nice_failback")
            implied = "off" if nice else "on"
            if "auto_failback" in v and v["auto_failback"] != implied:
                self.f.error(
                    self.seen["nice_failback"],
                    f"nice_failback contradicts auto_failback on line {self.seen['auto_failback']}",
                )
            v.setdefault("auto_failback", implied)
        if "auto_failback" not in v:
            self.f.warn(None, "auto_failback is not set: Heartbeat's default 'legacy' is used")
        if not self.media:
            self.f.error(None, "no heartbeat media: add a bcast, mcast, ucast or serial line")
        if not self.nodes:
            self.f.error(None, "no node lines: list the pair with 'node <name>'")
        elif len(self.nodes) > 2:
            self.f.error(self.seen.get("node"), f"hacluster runs pairs: {len(self.nodes)} nodes")
        model = HaCf(media=self.media, nodes=self.nodes, **{k: x for k, x in v.items() if x is not None})
        self._consistency(model)
        return None if self.f.errors else model

    def _consistency(self, m: HaCf) -> None:
        line = self.seen.get("deadtime") or self.seen.get("keepalive")
        if m.deadtime_ms <= 2 * m.keepalive_ms:
            self.f.error(
                line,
                f"deadtime ({format_duration_ms(m.deadtime_ms)}) must be more than twice "
                f"keepalive ({format_duration_ms(m.keepalive_ms)})",
            )
        if m.initdead_ms < m.deadtime_ms:
            self.f.error(
                self.seen.get("initdead"),
                f"initdead ({format_duration_ms(m.initdead_ms)}) must be at least deadtime "
                f"({format_duration_ms(m.deadtime_ms)})",
            )
        if m.warntime_ms >= m.deadtime_ms:
            self.f.warn(self.seen.get("warntime"), "warntime is not below deadtime: it never warns")
        if m.warntime_ms_set is not None and m.warntime_ms <= m.keepalive_ms:
            self.f.warn(self.seen.get("warntime"), "warntime is not above keepalive: every beat warns")


def parse_hacf(text: str, filename: str = "ha.cf") -> tuple[HaCf | None, Findings]:
    """Parse ha.cf text. Returns the model (None when there are errors) and every finding."""
    return _Parser(text, filename).run()


def render_hacf(cfg: HaCf) -> str:
    """Write ha.cf back. Globals first (so udpport/baud precede media), then media, nodes, policy."""
    out: list[str] = ["# ha.cf written by hacluster"]
    for name, value in (("logfile", cfg.logfile), ("debugfile", cfg.debugfile),
                        ("logfacility", cfg.logfacility)):  # fmt: skip
        if value is not None:
            out.append(f"{name} {value}")
    if cfg.use_logd is not None:
        out.append(f"use_logd {'yes' if cfg.use_logd else 'no'}")
    if cfg.debug:
        out.append(f"debug {cfg.debug}")
    out.append(f"keepalive {format_duration_ms(cfg.keepalive_ms)}")
    out.append(f"deadtime {format_duration_ms(cfg.deadtime_ms)}")
    if cfg.warntime_ms_set is not None:
        out.append(f"warntime {format_duration_ms(cfg.warntime_ms_set)}")
    if cfg.initdead_ms_set is not None:
        out.append(f"initdead {format_duration_ms(cfg.initdead_ms_set)}")
    if cfg.msgfmt != "classic":
        out.append(f"msgfmt {cfg.msgfmt}")
    if cfg.realtime is not None:
        out.append(f"realtime {'on' if cfg.realtime else 'off'}")
    if cfg.rtprio is not None:
        out.append(f"rtprio {cfg.rtprio}")
    if cfg.watchdog is not None:
        out.append(f"watchdog {cfg.watchdog}")
    port, baud = DEFAULT_UDPPORT, DEFAULT_BAUD
    for m in cfg.media:
        if isinstance(m, (BcastMedium, UcastMedium)) and m.port != port:
            out.append(f"udpport {m.port}")
            port = m.port
        if isinstance(m, SerialMedium) and m.baud != baud:
            out.append(f"baud {m.baud}")
            baud = m.baud
        out.append(_render_medium(m))
    for node in cfg.nodes:
        out.append(f"node {node}")
    if cfg.auto_failback != "legacy":
        out.append(f"auto_failback {cfg.auto_failback}")
    if cfg.ping:
        out.append("ping " + " ".join(cfg.ping))
    for r in cfg.respawn:
        out.append(f"respawn {r.user} " + " ".join(r.command))
    out.extend(f"{o.name} {o.value}".rstrip() for o in cfg.other)
    return "\n".join(out) + "\n"


def _render_medium(m: Medium) -> str:
    if isinstance(m, BcastMedium):
        return f"bcast {m.interface}"
    if isinstance(m, UcastMedium):
        return f"{'ucast' if m.peer.version == 4 else 'ucast6'} {m.interface} {m.peer}"
    if isinstance(m, McastMedium):
        kw = "mcast" if m.group.version == 4 else "mcast6"
        return f"{kw} {m.interface} {m.group} {m.port} {m.ttl} {m.loop}"
    return f"serial {m.device}"
