"""Move a Heartbeat pair into Kubernetes and back: `hactl import` and `hactl export`.

`import_directory` reads a real /etc/ha.d with the agent's own parsers and builds an `HACluster`
manifest (validated by the HACluster models) plus the Secret holding authkeys. Whatever the
HACluster cannot say (ping nodes, respawn clients, STONITH, logging, a second resource group...)
is listed with its file and line, never dropped silently; whatever is carried over on an
assumption (a VIP without a prefix length) is listed too.

`export_node` is the reverse for the standalone agent: one node's ha.cf, haresources and authkeys,
rendered by `render.render_node`, as the operator renders them, so both paths write the same files.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hacluster_api.heartbeat.authkeys import render_authkeys, write_secret_file
from hacluster_api.heartbeat.directory import ClusterConfig, load_directory
from hacluster_api.heartbeat.hacf_model import BcastMedium, McastMedium, SerialMedium, UcastMedium
from hacluster_api.heartbeat.haresources_model import IPResource, ResourceGroup, ScriptResource
from hacluster_api.heartbeat.issues import Finding
from hacluster_api.heartbeat.lines import logical_lines

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SECRET_KEY = "authkeys"

# ha.cf directives the HACluster carries (some only under conditions checked below).
_CARRIED = frozenset(
    {"keepalive", "deadtime", "warntime", "initdead", "udpport", "baud", "bcast", "udp", "ucast",
     "ucast6", "mcast", "mcast6", "serial", "node", "auto_failback", "nice_failback", "crm",
     "pacemaker", "watchdog"}
)  # fmt: skip
_LOGGING = "logging: the agents log to stdout (kubectl logs), not to files or syslog"
_WHY_DROPPED = {
    "ping": "ping nodes (ipfail): the HACluster has no network-reachability check",
    "ping_group": "ping groups (ipfail): the HACluster has no network-reachability check",
    "respawn": "respawn clients: run the program as its own workload (a Deployment or DaemonSet)",
    "stonith": "STONITH: the ownership Lease fences instead (docs/safety.md)",
    "stonith_host": "STONITH: the ownership Lease fences instead (docs/safety.md)",
    "logfile": _LOGGING,
    "debugfile": _LOGGING,
    "logfacility": _LOGGING,
    "use_logd": _LOGGING,
    "debug": _LOGGING,
    "msgfmt": "the agent picks the encoding per medium (netstring on UDP, classic on serial)",
}
_MEDIA_DIRECTIVES = ("bcast", "udp", "ucast", "ucast6", "mcast", "mcast6", "serial")


class MigrateError(Exception):
    """Bad input: every problem, each located (`file:line: message` where a line is known)."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Item:
    """One thing the migration could not carry over as is, located in its file."""

    file: str
    line: int | None
    text: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.text}" if self.line is not None else f"{self.file}: {self.text}"
        )


@dataclass
class Imported:
    """The result of `import_directory`."""

    hacluster: dict[str, Any]
    secret: dict[str, Any]
    dropped: list[Item] = field(default_factory=list)
    """Not carried over: the HACluster cannot express them."""
    assumed: list[Item] = field(default_factory=list)
    """Carried over on an assumption or with a change of form: check them."""
    warnings: list[Finding] = field(default_factory=list)
    """The parsers' other warnings (typos Heartbeat would trip on, weak auth...)."""

    def report(self) -> list[str]:
        """The lines `hactl import` prints on stderr (and as the YAML's leading comment)."""
        out: list[str] = []
        if self.dropped:
            out.append("not carried over (the HACluster cannot express them):")
            out += [f"  {i}" for i in sorted(self.dropped, key=_where)]
        if self.assumed:
            out.append("carried over on an assumption (check them):")
            out += [f"  {i}" for i in sorted(self.assumed, key=_where)]
        if self.warnings:
            out.append("warnings from the Heartbeat files:")
            out += [f"  {w}" for w in self.warnings]
        return out

    def to_yaml(self, source: str = "") -> str:
        spec = self.hacluster["spec"]
        head = [
            f"hactl import {source}".rstrip()
            + f": the Heartbeat pair as HACluster {self.hacluster['metadata']['name']}"
        ]
        head.append(f"nodes: {', '.join(spec['nodes'])}")
        lines = [f"# {line}" for line in head + self.report()]
        docs = [
            yaml.safe_dump(d, sort_keys=False, default_flow_style=False)
            for d in (self.hacluster, self.secret)
        ]
        return "\n".join(lines) + "\n" + "".join(f"---\n{d}" for d in docs)


def _where(item: Item) -> tuple[str, int]:
    return item.file, item.line or 0


# --------------------------------------------------------------------------------------------
# import


def parse_pairs(text: str | None, what: str) -> dict[str, list[str]]:
    """`a=b,c=d` (also repeated options joined by commas) into {a: [b], c: [d]}."""
    out: dict[str, list[str]] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise MigrateError([f"{what}: expected NAME=VALUE, got {part!r}"])
        out.setdefault(key.strip().lower(), []).append(value.strip())
    return out


def _duration(ms: int) -> str:
    """The HACluster's duration form: whole seconds as `Ns`, otherwise `Nms`."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _media_lines(text: str) -> list[tuple[int, str]]:
    """(line, directive) for each medium in the order the parser builds them (one per interface
    or device named on a line), so each parsed medium can be located."""
    out: list[tuple[int, str]] = []
    for line in logical_lines(text):
        name, args = line.words[0], line.words[1:]
        if name == "udp" and len(args) == 2 and args[0] == "port":
            continue  # 'udp port N' is udpport
        if name in ("bcast", "udp", "serial"):
            out += [(line.number, name)] * len(args)
        elif name in _MEDIA_DIRECTIVES:
            out.append((line.number, name))
    return out


class _Importer:
    def __init__(
        self,
        cfg: ClusterConfig,
        node_map: Mapping[str, str],
        addresses: Mapping[str, list[str]],
        vip_prefix: int | None,
    ) -> None:
        self.cfg = cfg
        self.hacf_file = str(cfg.directory / "ha.cf")
        self.res_file = str(cfg.directory / "haresources")
        self.text = (cfg.directory / "ha.cf").read_text(encoding="utf-8", errors="replace")
        self.node_map = node_map
        self.addresses = addresses
        self.vip_prefix = vip_prefix
        self.dropped: list[Item] = []
        self.assumed: list[Item] = []
        self.errors: list[str] = []

    def drop(self, file: str, line: int | None, text: str) -> None:
        self.dropped.append(Item(file, line, text))

    def assume(self, file: str, line: int | None, text: str) -> None:
        self.assumed.append(Item(file, line, text))

    def line_of(self, directive: str, word: str | None = None) -> int | None:
        for line in logical_lines(self.text):
            if line.words[0] == directive and (word is None or word in (w.lower() for w in line.words[1:])):
                return line.number
        return None

    # -- nodes --------------------------------------------------------------------------------
    def nodes(self) -> list[str]:
        hb_nodes = self.cfg.hacf.nodes
        unknown = sorted(set(self.node_map) - set(hb_nodes))
        for name in unknown:
            self.errors.append(
                f"--node-map: {name!r} is not a node of {self.hacf_file} ({', '.join(hb_nodes)})"
            )
        if len(hb_nodes) != 2:
            self.errors.append(f"{self.hacf_file}: an HACluster is a pair: {len(hb_nodes)} node(s) listed")
        out = []
        for n in hb_nodes:
            k8s = self.node_map.get(n, n)
            if not DNS1123.match(k8s) or len(k8s) > 253:
                where = f"{self.hacf_file}:{self.line_of('node', n)}"
                self.errors.append(
                    f"{where}: node {n!r} maps to {k8s!r}, not a Kubernetes node name (DNS-1123): "
                    f"map it with --node-map {n}=<node>"
                )
            out.append(k8s)
        if len(set(out)) != len(out):
            self.errors.append(f"--node-map: two nodes map to the same name ({', '.join(out)})")
        return out

    def k8s(self, node: str) -> str:
        return self.node_map.get(node, node)

    # -- ha.cf directives the HACluster cannot express -----------------------------------------
    def directives(self) -> None:
        h = self.cfg.hacf
        for line in logical_lines(self.text):
            name, args = line.words[0], line.words[1:]
            shown = " ".join(line.words)
            if name == "msgfmt" and args == ["classic"]:
                continue
            if name == "warntime" and h.warntime_ms >= h.deadtime_ms:
                self.drop(self.hacf_file, line.number, f"{shown}: not below deadtime (it never warns); "
                          "the HACluster requires warntime < deadtime: left to the default, half the deadtime")  # fmt: skip
            elif name not in _CARRIED:
                why = _WHY_DROPPED.get(name, "a Heartbeat setting the HACluster cannot express")
                self.drop(self.hacf_file, line.number, f"{shown}: {why}")
            elif name == "auto_failback" and args and args[0].lower() == "legacy":
                self.assume(
                    self.hacf_file,
                    line.number,
                    f"{shown}: legacy behaves as on in a pair: autoFailback: true",
                )
            elif name == "watchdog":
                self.assume(
                    self.hacf_file,
                    line.number,
                    f"{shown}: carried as failover.nodeFence (watchdogTimeout 5, stopBudget 10s: a failover "
                    "from a silent owner then starts the services 10 s + 10 s after the VIP; docs/safety.md)",
                )
            elif name == "nice_failback":
                value = str(h.auto_failback_effective).lower()
                self.assume(
                    self.hacf_file, line.number, f"{shown}: deprecated, carried as autoFailback: {value}"
                )
        if (
            h.auto_failback == "legacy"
            and self.line_of("auto_failback") is None
            and self.line_of("nice_failback") is None
        ):
            self.assume(
                self.hacf_file, None, "auto_failback not set (Heartbeat's default legacy): autoFailback: true"
            )

    # -- media --------------------------------------------------------------------------------
    def media(self) -> dict[str, Any]:
        located = _media_lines(self.text)
        media = self.cfg.hacf.media
        lines: list[int | None] = (
            [n for n, _ in located] if len(located) == len(media) else [None] * len(media)
        )
        udp: list[dict[str, Any]] = []
        serial: list[dict[str, Any]] = []
        unicast: dict[tuple[str, int], list[tuple[UcastMedium, int | None]]] = {}
        for m, n in zip(media, lines, strict=True):
            if isinstance(m, BcastMedium):
                udp.append(self._udp(m, "broadcast"))
            elif isinstance(m, McastMedium):
                item = self._udp(m, "multicast")
                item["group"] = str(m.group)
                if m.ttl != 1:
                    item["ttl"] = m.ttl
                udp.append(item)
                if m.loop:
                    self.drop(self.hacf_file, n, f"mcast {m.interface} {m.group}: loop 1 (the HACluster's "
                              "multicast never loops back: loop 0)")  # fmt: skip
            elif isinstance(m, UcastMedium):
                key = (m.interface, m.port)
                if key not in unicast:
                    unicast[key] = []
                    udp.append({"placeholder": key})
                unicast[key].append((m, n))
            else:
                assert isinstance(m, SerialMedium)
                line: dict[str, Any] = {"device": m.device}
                if m.baud != 19200:
                    line["baud"] = m.baud
                serial.append(line)
        used = {str(u.peer) for group in unicast.values() for u, _ in group}
        out_udp: list[dict[str, Any]] = []
        for item in udp:
            if "placeholder" not in item:
                out_udp.append(item)
                continue
            iface, port = item["placeholder"]
            group = unicast[(iface, port)]
            peers = self._unicast_peers(iface, {str(u.peer) for u, _ in group}, used)
            if isinstance(peers, str):
                for u, n in group:
                    self.drop(self.hacf_file, n, f"ucast {iface} {u.peer}: {peers}")
                continue
            uc: dict[str, Any] = {"interface": iface, "mode": "unicast", "peers": peers}
            if port != 694:
                uc["port"] = port
            out_udp.append(uc)
        out: dict[str, Any] = {}
        if out_udp:
            out["udp"] = out_udp
        if serial:
            out["serial"] = serial
        if not out:
            self.errors.append(
                f"{self.hacf_file}: no heartbeat medium could be carried over (see the list above)"
            )
        return out

    def _udp(self, m: BcastMedium | McastMedium, mode: str) -> dict[str, Any]:
        item: dict[str, Any] = {"interface": m.interface, "mode": mode}
        if m.port != 694:
            item["port"] = m.port
        return item

    def _unicast_peers(self, iface: str, seen: set[str], used: set[str]) -> dict[str, str] | str:
        """Each node's address on this link, from --addresses; a string says why not."""
        hint = ", ".join(f"{n}=<address on {iface}>" for n in self.cfg.hacf.nodes)
        if not self.addresses:
            return f"cannot tell which node has which address: pass --addresses {hint}"
        family = {ip_address(a).version for a in seen}
        peers: dict[str, str] = {}
        for node in self.cfg.hacf.nodes:
            mine = list(
                dict.fromkeys([*self.addresses.get(node, []), *self.addresses.get(self.k8s(node), [])])
            )
            listed = [a for a in mine if _norm(a) in seen]
            if not listed:  # a per-node ha.cf names only the peer: take this node's one other address
                listed = [a for a in mine if _norm(a) not in used and _version(a) in family]
            if len(listed) != 1:
                return f"--addresses gives {len(listed)} address(es) for {node} on {iface}: need one ({hint})"
            peers[self.k8s(node)] = _norm(listed[0])
        if len(set(peers.values())) != 2:
            return f"--addresses gives both nodes the same address on {iface}"
        return peers

    # -- resources ----------------------------------------------------------------------------
    def resources(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Per home node, in file order: its resources. Heartbeat moves all the groups of one home
        node together (they are all "local" to it), so each home's lines become one group: one
        home, the single-group form; two (active/active), spec.groups."""
        groups = self.cfg.haresources.groups
        homes: dict[str, list[ResourceGroup]] = {}
        for g in groups:
            homes.setdefault(g.home, []).append(g)
        out: list[tuple[str, list[dict[str, Any]]]] = []
        for home, mine in homes.items():
            if len(mine) > 1:
                self.assume(self.res_file, mine[1].line, f"the groups of {home} (lines "
                            f"{', '.join(str(g.line) for g in mine)}) are joined into one, in file order, "
                            "as Heartbeat moves them together")  # fmt: skip
            items = [item for g in mine for r in g.resources if (item := self._resource(g, r)) is not None]
            out.append((home, items))
        return out

    def _resource(self, g: ResourceGroup, r: IPResource | ScriptResource) -> dict[str, Any] | None:
        from hacluster_api.models import ResourceSpec

        if isinstance(r, IPResource):
            prefix = r.address.network.prefixlen
            if not r.prefix_given:
                prefix = self.vip_prefix or (24 if r.address.version == 4 else 64)
                source = "--vip-prefix" if self.vip_prefix else "a guess"
                self.assume(self.res_file, g.line, f"{r.name}: no prefix length (Heartbeat's IPaddr takes it "
                            f"from the interface at start): imported as /{prefix} ({source}; set --vip-prefix)")  # fmt: skip
            ip: dict[str, Any] = {"address": f"{r.address.ip}/{prefix}"}
            if r.interface:
                ip["interface"] = r.interface
            if r.broadcast is not None:
                self.drop(self.res_file, g.line, f"{r.name}: broadcast {r.broadcast} (the kernel derives it "
                          "from the prefix)")  # fmt: skip
            item: dict[str, Any] = {"ip": ip}
        else:
            script: dict[str, Any] = {"name": r.script}
            if r.args:
                script["args"] = list(r.args)
            item = {"script": script}
        try:
            ResourceSpec.model_validate(item)
        except ValidationError as e:
            self.drop(self.res_file, g.line, f"{r.name}: {_errors(e)}")
            return None
        return item


def group_name(home: str) -> str:
    """The imported group of a home node: `<node>-group`, made a DNS label (a group's name is part
    of its Leases' names; it may not be a node's name)."""
    label = re.sub(r"[^a-z0-9-]+", "-", home.lower()).strip("-")[:34].strip("-")
    return f"{label or 'node'}-group"


def _norm(address: str) -> str:
    try:
        return str(ip_address(address))
    except ValueError:
        return address


def _version(address: str) -> int | None:
    try:
        return ip_address(address).version
    except ValueError:
        return None


def _names(g: ResourceGroup) -> str:
    return " ".join(r.name for r in g.resources)


def _errors(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else str(err["msg"])
        for err in e.errors()
    )


def import_directory(
    directory: str | Path,
    *,
    node_map: Mapping[str, str] | None = None,
    name: str = "hacluster",
    namespace: str = "default",
    secret_name: str | None = None,
    addresses: Mapping[str, list[str]] | None = None,
    vip_prefix: int | None = None,
) -> Imported:
    """Read a Heartbeat config directory into an HACluster and its auth Secret.

    `node_map`: Heartbeat node name -> Kubernetes node name (unmapped names are kept).
    `addresses`: node -> its addresses, for ucast links (ha.cf does not say whose address is whose).
    Raises ConfigError (the files are invalid) or MigrateError (they cannot make an HACluster).
    """
    from hacluster_api.models import API_VERSION, KIND, HACluster
    from hacluster_api.render import RenderError, build_authkeys, render_all

    cfg = load_directory(directory)
    nmap = {k.lower(): v for k, v in (node_map or {}).items()}
    imp = _Importer(cfg, nmap, {k.lower(): v for k, v in (addresses or {}).items()}, vip_prefix)
    problems: list[str] = []
    if not DNS1123.match(name) or len(name) > 253:
        problems.append(f"--name: {name!r} is not a valid object name (DNS-1123)")
    if not DNS1123.match(namespace) or len(namespace) > 63:
        problems.append(f"--namespace: {namespace!r} is not a valid namespace name")
    secret = secret_name or f"{name}-authkeys"
    if not DNS1123.match(secret):
        problems.append(f"--secret-name: {secret!r} is not a valid object name (DNS-1123)")
    nodes = imp.nodes()
    imp.directives()
    media = imp.media()
    homes = imp.resources()
    problems += imp.errors
    if problems:
        raise MigrateError(problems + [f"not carried over: {i}" for i in imp.dropped])

    h = cfg.hacf
    heartbeat: dict[str, Any] = {"keepalive": _duration(h.keepalive_ms), "deadtime": _duration(h.deadtime_ms)}
    if h.warntime_ms_set is not None and h.warntime_ms_set < h.deadtime_ms:
        heartbeat["warntime"] = _duration(h.warntime_ms_set)
    if h.initdead_ms_set is not None:
        heartbeat["initdead"] = _duration(h.initdead_ms_set)
    heartbeat["media"] = media
    keys = cfg.authkeys
    spec: dict[str, Any] = {"nodes": nodes}
    if len(homes) == 1:
        spec["preferredNode"] = imp.k8s(homes[0][0])
    spec["heartbeat"] = heartbeat
    spec["auth"] = {"method": keys.signing_key.method, "secretRef": {"name": secret, "key": SECRET_KEY}}
    if len(homes) > 1:
        # Active/active: a group per home node, each with its own Lease (hacluster_api.names).
        spec["groups"] = [
            {"name": group_name(imp.k8s(home)), "preferredNode": imp.k8s(home), "resources": items}
            for home, items in homes
        ]
    else:
        spec["resources"] = homes[0][1] if homes else []
    spec["failover"] = {"autoFailback": h.auto_failback_effective}
    if h.watchdog is not None:
        spec["failover"]["nodeFence"] = {"watchdog": h.watchdog}
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    authkeys_text = render_authkeys(keys)
    try:
        model = HACluster.model_validate(manifest)
        build_authkeys(model.spec, authkeys_text)
        render_all(model.spec, authkeys_text, {})  # both nodes' files, checked by the agent's parsers
    except ValidationError as e:
        raise MigrateError([f"{cfg.directory}: the result is not a valid HACluster: {_errors(e)}"]) from None
    except RenderError as e:
        raise MigrateError([f"{cfg.directory}: the result would not render: {e}"]) from None
    secret_doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret, "namespace": namespace},
        "type": "Opaque",
        "data": {SECRET_KEY: base64.b64encode(authkeys_text.encode()).decode()},
    }
    dropped_lines = {(i.file, i.line) for i in imp.dropped}
    warnings = [w for w in cfg.warnings if (w.file, w.line) not in dropped_lines]
    return Imported(manifest, secret_doc, imp.dropped, imp.assumed, warnings)


# --------------------------------------------------------------------------------------------
# export


@dataclass
class Exported:
    node: str
    files: dict[str, Path]
    notes: list[str] = field(default_factory=list)
    """What the files cannot carry (Kubernetes-only settings, ARP tuning, workload resources)."""


def load_documents(paths: Iterable[str | Path]) -> list[tuple[str, dict[str, Any]]]:
    """Every YAML document of these files, with its file name. YAML errors become file:line."""
    out: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    for p in paths:
        try:
            text = Path(p).read_text(encoding="utf-8")
        except OSError as e:
            problems.append(f"{p}: cannot read: {e.strerror or e}")
            continue
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
            problems.append(f"{where}: invalid YAML: {e.problem or e.context}")
            continue
        except yaml.YAMLError as e:
            problems.append(f"{p}: invalid YAML: {e}")
            continue
        for d in docs:
            if d is None:
                continue
            if not isinstance(d, dict):
                problems.append(f"{p}: a document is not a mapping")
                continue
            out.append((str(p), d))
    if problems:
        raise MigrateError(problems)
    return out


def rename_nodes(spec: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """The spec with node names replaced (Kubernetes node -> Heartbeat host name, or back)."""
    if not mapping:
        return spec

    def m(n: Any) -> Any:
        return mapping.get(n, n) if isinstance(n, str) else n

    out = dict(spec)
    out["nodes"] = [m(n) for n in spec.get("nodes", [])]
    if "preferredNode" in spec:
        out["preferredNode"] = m(spec["preferredNode"])
    if isinstance(spec.get("groups"), list):
        out["groups"] = [
            {**g, **{k: m(g[k]) for k in ("preferredNode", "switchoverTo") if k in g}}
            if isinstance(g, dict)
            else g
            for g in spec["groups"]
        ]
    if isinstance(spec.get("failover"), dict) and "switchoverTo" in spec["failover"]:
        out["failover"] = {**spec["failover"], "switchoverTo": m(spec["failover"]["switchoverTo"])}
    hb = spec.get("heartbeat")
    if (
        isinstance(hb, dict)
        and isinstance(hb.get("media"), dict)
        and isinstance(hb["media"].get("udp"), list)
    ):
        udp = [
            {**u, "peers": {m(k): v for k, v in u["peers"].items()}}
            if isinstance(u, dict) and isinstance(u.get("peers"), dict)
            else u
            for u in hb["media"]["udp"]
        ]
        out["heartbeat"] = {**hb, "media": {**hb["media"], "udp": udp}}
    return out


def _secret_value(doc: dict[str, Any], key: str) -> str | None:
    string_data = doc.get("stringData") or {}
    if key in string_data:
        return str(string_data[key])
    data = doc.get("data") or {}
    if key in data:
        return base64.b64decode(str(data[key])).decode()
    return None


def export_node(
    manifests: Iterable[str | Path],
    node: str,
    out_dir: str | Path,
    *,
    secrets: Iterable[str | Path] = (),
    name: str | None = None,
    node_map: Mapping[str, str] | None = None,
) -> Exported:
    """Write `node`'s ha.cf, haresources, authkeys (0600) and resource.d scripts into `out_dir`.

    `manifests` hold the HACluster (and may hold its Secret and ConfigMaps); `secrets` more
    documents to look for them in. `node_map` renames nodes first (e.g. node-a=servidor1), so
    the files name the hosts as `uname -n` does. Raises MigrateError on bad input.
    """
    from hacluster_api.models import KIND, HAClusterSpec
    from hacluster_api.render import RenderError, render_node

    docs = load_documents([*manifests, *secrets])
    clusters = [(f, d) for f, d in docs if d.get("kind") == KIND]
    if name is not None:
        clusters = [(f, d) for f, d in clusters if (d.get("metadata") or {}).get("name") == name]
    if len(clusters) != 1:
        which = f" named {name!r}" if name else ""
        raise MigrateError(
            [f"{', '.join(str(m) for m in manifests)}: expected one {KIND}{which}, found {len(clusters)}"]
        )
    file, doc = clusters[0]
    raw = doc.get("spec")
    if not isinstance(raw, dict):
        raise MigrateError([f"{file}: the {KIND} has no spec"])
    try:
        spec = HAClusterSpec.model_validate(rename_nodes(raw, dict(node_map or {})))
    except ValidationError as e:
        raise MigrateError([f"{file}: spec.{_errors(e)}"]) from None
    if node not in spec.nodes:
        raise MigrateError([f"--node: {node!r} is not one of the nodes {list(spec.nodes)}"])
    ref = spec.auth.secret_ref
    secret_text = None
    for _f, d in docs:
        if d.get("kind") == "Secret" and (d.get("metadata") or {}).get("name") == ref.name:
            secret_text = _secret_value(d, ref.key)
            if secret_text is not None:
                break
    if secret_text is None:
        raise MigrateError(
            [f"no Secret {ref.name!r} with key {ref.key!r} in the files given (pass --secret)"]
        )
    bodies: dict[str, str] = {}
    for r in (r for g in spec.group_list() for r in g.resources):
        s = r.script
        if s is None or s.config_map_ref is None:
            continue
        key = s.config_map_ref.key or s.name
        for _f, d in docs:
            if (
                d.get("kind") == "ConfigMap"
                and (d.get("metadata") or {}).get("name") == s.config_map_ref.name
            ):
                body = (d.get("data") or {}).get(key)
                if body is not None:
                    bodies[s.name] = str(body)
    try:
        rendered = render_node(spec, node, secret_text, bodies)
    except RenderError as e:
        raise MigrateError([f"{file}: {e}"]) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rendered.agent.groups is not None:
        # Standalone, Heartbeat's rules: each node's groups move together (no Lease per group).
        rendered = dataclasses.replace(rendered, agent=rendered.agent.model_copy(update={"groups": None}))
    written: dict[str, Path] = {}
    for rel, text in rendered.files().items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel == "authkeys":
            write_secret_file(path, text)
        else:
            path.write_text(text)
            path.chmod(0o755 if rel.startswith("resource.d/") else 0o644)
        written[rel] = path
    return Exported(node, written, _export_notes(spec))


def _export_notes(spec: Any) -> list[str]:
    """What the standalone agent's files do not carry. (agent.json carries the watchdog's timeout
    and each VIP's ARP settings.)"""
    notes: list[str] = []
    f = spec.failover
    if f.switchover_to is not None:
        notes.append(
            f"failover.switchoverTo {f.switchover_to}: Kubernetes only (standalone: hactl standby/takeover)"
        )
    if f.maintenance:
        notes.append("failover.maintenance: Kubernetes only (the standalone agent has no freeze)")
    if f.node_fence is not None:
        notes.append(
            f"failover.nodeFence: carried as ha.cf's watchdog {f.node_fence.watchdog} and agent.json's "
            "watchdogTimeoutSeconds; its stopBudget is Kubernetes only (the standalone agent does not "
            "fence itself)"
        )
    if f.when_arbiter_unavailable != "StayPut":
        notes.append(
            f"failover.whenArbiterUnavailable {f.when_arbiter_unavailable}: Kubernetes only (no Lease here)"
        )
    for r in (r for g in spec.group_list() for r in g.resources):
        if r.workload is not None:
            notes.append(f"resource workload {r.workload.node_label}: a node label, Kubernetes only")
    if spec.multi_group:
        notes.append(
            "groups: one haresources line each; standalone, Heartbeat's rules apply: the groups of one "
            "home node move together, and each group's autoFailback and switchoverTo are Kubernetes only"
        )
    return notes
