"""Parse and render haresources: `node res1 res2 …`, backslash continuation, `Script::arg::arg`."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, ip_address, ip_interface

from .haresources_model import IP_AGENTS, HaResources, IPResource, Resource, ResourceGroup, ScriptResource
from .issues import Findings
from .lines import is_number, logical_lines

_SCRIPT_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_IFACE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def _looks_like_address(word: str) -> bool:
    head = word.split("/", 1)[0]
    try:
        ip_address(head)
    except ValueError:
        return False
    return True


def parse_ip_spec(agent: str, spec: str) -> IPResource:
    """Parse an IPaddr argument `ip[/bits[/iface[/broadcast]]]` (IPv6: `ip/bits[/iface]`).

    Raises ValueError naming what is wrong.
    """
    parts = spec.split("/")
    try:
        ip = ip_address(parts[0])
    except ValueError:
        raise ValueError(f"{parts[0]!r} is not an IP address") from None
    if agent == "IPv6addr" and ip.version != 6:
        raise ValueError(f"IPv6addr needs an IPv6 address, got {ip}")
    prefix_given = len(parts) > 1 and parts[1] != ""
    if prefix_given:
        bits = parts[1]
        limit = 32 if ip.version == 4 else 128
        if not is_number(bits) or not 0 < int(bits) <= limit:
            raise ValueError(f"prefix length {bits!r} is not 1-{limit}")
        iface_addr = ip_interface(f"{ip}/{bits}")
    else:
        iface_addr = ip_interface(f"{ip}/{32 if ip.version == 4 else 128}")
    interface = None
    broadcast: IPv4Address | None = None
    rest = parts[2:]
    if rest and not _looks_like_address(rest[0]):
        interface = rest.pop(0)
        if not _IFACE.match(interface):
            raise ValueError(f"{interface!r} is not an interface name")
    if rest:
        if ip.version != 4:
            raise ValueError("a broadcast address only applies to IPv4")
        try:
            broadcast = IPv4Address(rest.pop(0))
        except ValueError:
            raise ValueError("broadcast must be an IPv4 address") from None
    if rest:
        raise ValueError(f"unexpected trailing part {'/'.join(rest)!r}")
    return IPResource(
        agent=agent,
        address=iface_addr,
        prefix_given=prefix_given,
        interface=interface,
        broadcast=broadcast,
    )


def parse_resource(word: str) -> Resource:
    """Parse one haresources word. An address spec (v4, or v6 whose colons would clash with `::`)
    is tried first; otherwise `Script::arg1::arg2` or a bare service name."""
    if _looks_like_address(word):
        res = parse_ip_spec("IPv6addr" if ":" in word.split("/")[0] else "IPaddr", word)
        return res.model_copy(update={"bare": True})
    script, sep, rest = word.partition("::")
    if sep and script in IP_AGENTS:
        # The whole remainder is one address spec, so IPv6 addresses with '::' survive.
        return parse_ip_spec(script, rest)
    if not _SCRIPT_NAME.match(script):
        raise ValueError(f"{script!r} is not a valid script name")
    args = rest.split("::") if sep else []
    return ScriptResource(script=script, args=args)


def parse_haresources(
    text: str, filename: str = "haresources", nodes: list[str] | None = None
) -> tuple[HaResources | None, Findings]:
    """Parse haresources text; `nodes` (from ha.cf) lets each group's home node be checked."""
    f = Findings(filename)
    groups: list[ResourceGroup] = []
    seen_resources: dict[str, int] = {}
    for line in logical_lines(text, continuation=True):
        home = line.words[0].lower()
        if nodes is not None and home not in nodes:
            f.error(line.number, f"node {home!r} is not a node of ha.cf ({', '.join(nodes)})")
        resources: list[Resource] = []
        for word in line.words[1:]:
            try:
                res = parse_resource(word)
            except ValueError as e:
                f.error(line.number, f"resource {word!r}: {e}")
                continue
            if res.name in seen_resources:
                f.error(line.number, f"resource {res.name} already appears on line "
                        f"{seen_resources[res.name]}")  # fmt: skip
                continue
            seen_resources[res.name] = line.number
            resources.append(res)
        if len(line.words) == 1:
            f.error(line.number, f"group of {home!r} lists no resources")
        groups.append(ResourceGroup(home=home, resources=resources, line=line.number))
    if f.errors:
        return None, f
    return HaResources(groups=groups), f


def render_haresources(cfg: HaResources) -> str:
    out = ["# haresources written by hacluster"]
    for g in cfg.groups:
        words = [g.home]
        for r in g.resources:
            if isinstance(r, IPResource) and r.bare:
                words.append(r.spec)
            else:
                words.append(r.name)
        line = " ".join(words)
        if line.endswith("\\"):
            # A last word ending in a backslash would read as a continuation of the next group's
            # line: continue onto an empty line instead, which ends it (found by the fuzzer).
            out += [line + " \\", ""]
        else:
            out.append(line)
    return "\n".join(out) + "\n"
