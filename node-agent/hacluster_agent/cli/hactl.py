"""hactl: check a Heartbeat config directory, talk to a running agent (status, standby, takeover),
and move a pair's config into Kubernetes and back (import, export)."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

from hacluster_api.heartbeat.directory import load_directory
from hacluster_api.heartbeat.durations import format_duration_ms
from hacluster_api.heartbeat.hacf_model import BcastMedium, McastMedium, SerialMedium, UcastMedium
from hacluster_api.heartbeat.issues import ConfigError

from .migrate import add_migrate_commands, run_migrate

DEFAULT_SOCKET = "/run/hacluster/agent.sock"


def check_config(directory: str) -> int:
    """Exit 0 with a one-screen summary, or 1 with `file:line: message` lines."""
    try:
        cfg = load_directory(directory)
    except ConfigError as e:
        for f in e.findings:
            print(f, file=sys.stderr)
        return 1
    h = cfg.hacf
    print(f"{cfg.directory}: valid Heartbeat configuration for the pair {' + '.join(h.nodes)}")
    print(
        f"  timing     keepalive {format_duration_ms(h.keepalive_ms)}, warntime "
        f"{format_duration_ms(h.warntime_ms)}, deadtime {format_duration_ms(h.deadtime_ms)}, "
        f"initdead {format_duration_ms(h.initdead_ms)}"
    )
    for m in h.media:
        if isinstance(m, BcastMedium):
            desc = f"udp broadcast on {m.interface}, port {m.port}"
        elif isinstance(m, UcastMedium):
            desc = f"udp unicast on {m.interface} to {m.peer}, port {m.port}"
        elif isinstance(m, McastMedium):
            desc = f"udp multicast on {m.interface}, group {m.group}:{m.port}, ttl {m.ttl}"
        else:
            assert isinstance(m, SerialMedium)
            desc = f"serial {m.device} at {m.baud} baud"
        print(f"  medium     {desc}")
    print(f"  failback   auto_failback {h.auto_failback}")
    for g in cfg.haresources.groups:
        print(f"  group      home {g.home}: " + " -> ".join(r.name for r in g.resources))
    key = cfg.authkeys.signing_key
    print(f"  auth       signs with key {key.index} ({key.method}); accepts {sorted(cfg.authkeys.keys)}")
    for w in cfg.warnings:
        print(f"  {w}")
    return 0


def call(sock_path: str, cmd: str) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock_path)
        s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def render_status(st: dict[str, Any]) -> str:
    """A cl_status-like view: nodes, their state per medium, who holds what, since when."""
    p = st["peer"]
    lines = [
        f"node {st['node']}: {st['state']} (generation {st['generation']}), holds {st['holds']} "
        f"for {st['holds_for_s']:.1f}s{' [standby]' if st.get('standby') else ''}",
        f"node {p['node']}: {p['state']} for {p['since_s']:.1f}s, holds {p['holds']}",
    ]
    for name, link in p["links"].items():
        state = "up" if link["up"] else "dead"
        lines.append(f"  link {p['node']}:{name} {state} (last heard {link['last_heard_ms_ago']} ms ago)")
    for name, m in sorted(st.get("media", {}).items()):
        if not m["up"]:
            lines.append(f"  medium {name} DOWN: {m['reason']}")
    for side, groups in st.get("groups", {}).items():
        lines.append(f"  {side} groups: {', '.join(groups)}")
    t = st.get("last_transition")
    if t:
        lines.append(f"  last transition: {t['from']} -> {t['to']} ({t['reason']})")
    if st.get("rejected"):
        lines.append("  rejected packets: " + ", ".join(f"{k}={v}" for k, v in st["rejected"].items()))
    c = st.get("config")
    if c:
        lines.append(f"  auth: signs with key {c['signing_key']}, accepts keys {c['accepted_keys']}")
        if c.get("restart_needed"):
            lines.append(f"  config changed, restart needed: {', '.join(c['restart_needed'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hactl", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check-config", help="validate ha.cf, haresources and authkeys")
    c.add_argument("directory", nargs="?", default="/etc/ha.d")
    for name, text in (
        ("status", "show the pair like cl_status"),
        ("standby", "hand our resources to the peer (hb_standby)"),
        ("takeover", "take the peer's resources (hb_takeover)"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("--socket", default=DEFAULT_SOCKET)
        s.add_argument("--json", action="store_true", help="print the raw JSON")
    add_migrate_commands(sub)
    a = p.parse_args(argv)
    if a.cmd == "check-config":
        return check_config(a.directory)
    if a.cmd in ("import", "export"):
        return run_migrate(a)
    if not Path(a.socket).exists():
        print(f"hactl: no agent control socket at {a.socket} (is hacluster-agent running?)", file=sys.stderr)
        return 2
    try:
        reply = call(a.socket, a.cmd)
    except OSError as e:
        print(f"hactl: cannot reach the agent at {a.socket}: {e}", file=sys.stderr)
        return 2
    if not reply.get("ok"):
        print(f"hactl: {reply.get('error')}", file=sys.stderr)
        return 1
    if a.cmd == "status":
        print(json.dumps(reply["status"], indent=2) if a.json else render_status(reply["status"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
