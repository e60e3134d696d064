"""kubectl ha: one view of an HACluster (cl_status + crm_mon), and planned moves the GitOps way.

    kubectl ha status [NAME] [-n NS | -A] [-o text|json]
    kubectl ha switchover NAME --to NODE [--dry-run]      # sets spec.failover.switchoverTo
    kubectl ha switchover NAME --clear                     # removes it (autoFailback applies again)
    kubectl ha standby NAME --node NODE                    # Heartbeat's hb_standby: move away from NODE
    kubectl ha takeover NAME --node NODE                   # Heartbeat's hb_takeover: move to NODE

Installed as the `kubectl-ha` console script (kubectl finds plugins on PATH), or run as
`python -m hacluster_operator.kubectl_ha`. Credentials: --kubeconfig, else $KUBECONFIG or
~/.kube/config (--context picks a context), else in-cluster. Planned moves patch the HACluster's
spec, never the Lease: the operator hands over through the agents, and a GitOps tool sees (and
should be given, in Git) the same field.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from hacluster_api.annotations import directives_of
from hacluster_api.models import GROUP, KIND, MAIN_GROUP, PLURAL, VERSION
from hacluster_api.names import ownership_lease_name, report_lease_name


class NotFound(Exception):
    pass


class Api(Protocol):
    """What the plugin needs from the API server (a fake in tests)."""

    def get(self, namespace: str, name: str) -> dict[str, Any]: ...

    def list(self, namespace: str | None) -> list[dict[str, Any]]: ...

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def patch(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...


# --------------------------------------------------------------------------------------------
# pure parts: the view and the patches


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def age(value: Any, now: datetime) -> str:
    """kubectl's age style: 45s, 3m12s, 2h5m, 4d3h; `-` when unknown."""
    t = _time(value)
    if t is None:
        return "-"
    s = max(0, int((now - t).total_seconds()))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def _stamp(value: Any) -> str:
    t = _time(value)
    return t.strftime("%Y-%m-%d %H:%M:%SZ") if t is not None else "?"


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _resource_words(spec: Mapping[str, Any]) -> list[str]:
    out = []
    for r in spec.get("resources") or []:
        if "ip" in r:
            ip = r["ip"]
            out.append(f"ip {ip.get('address')}" + (f" on {ip['interface']}" if ip.get("interface") else ""))
        elif "script" in r:
            s = r["script"]
            out.append("::".join([s.get("name", "?"), *s.get("args", [])]))
        elif "workload" in r:
            out.append(f"label {r['workload'].get('nodeLabel')}")
    return out


def render_status(
    obj: Mapping[str, Any],
    lease: Mapping[str, Any] | None,
    now: datetime | None = None,
    lease_error: str | None = None,
    renewed: Mapping[str, Any] | None = None,
) -> str:
    """One HACluster as its status and its ownership Lease show it (`lease_error`: why the Lease
    could not be read; the view then falls back on the status alone). `renewed`: each node's
    report Lease's renewTime, when it could be read: LAST SEEN to the second (the status's
    lastSeen is rewritten only every few minutes while nothing else changes)."""
    now = now or datetime.now(UTC)
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    failover = spec.get("failover") or {}
    nodes: list[str] = list(spec.get("nodes") or [])
    preferred = spec.get("preferredNode") or (nodes[0] if nodes else None)
    lspec = (lease or {}).get("spec") or {}
    annotations = ((lease or {}).get("metadata") or {}).get("annotations") or {}
    holder = lspec.get("holderIdentity") or None
    owner = holder if lease is not None else status.get("owner")
    epoch = lspec.get("leaseTransitions", 0) if lease is not None else status.get("epoch")

    state = status.get("state") or "Unknown"
    head = f"{KIND} {meta.get('namespace', '?')}/{meta.get('name', '?')}: {state}, "
    head += f"owner {owner}" if owner else "no owner"
    head += f", epoch {epoch}" if epoch is not None else ""
    lines = [head]
    gen, observed = meta.get("generation"), status.get("observedGeneration")
    if gen is not None and observed is not None and observed < gen:
        lines.append(f"  (status is behind the spec: generation {gen}, observed {observed})")

    if lease_error is not None:
        lines.append(f"  lease      cannot read it ({lease_error}): owner and epoch from the status")
    elif lease is None:
        lines.append("  lease      none yet (the operator creates it)")
    else:
        acquired = lspec.get("acquireTime")
        who = f"held by {holder}" if holder else "released (nobody holds it)"
        since = f" since {_stamp(acquired)} ({age(acquired, now)} ago)" if acquired and holder else ""
        lines.append(f"  lease      {who}, epoch {epoch}{since}")
        if status.get("owner") and holder and status.get("owner") != holder:
            lines.append(f"             status says {status['owner']}: the operator has not caught up yet")
        directives = directives_of(annotations, holder, epoch)
        if directives.handover_to:
            lines.append(f"             handover to {directives.handover_to} in progress")
        if directives.freeze:
            lines.append("             maintenance: automatic moves frozen")
        if directives.release:
            lines.append("             releasing: the HACluster is being deleted")

    policy = [
        f"preferred {preferred}",
        f"autoFailback {'on' if failover.get('autoFailback', True) else 'off'}",
    ]
    if failover.get("switchoverTo"):
        target = failover["switchoverTo"]
        policy.append(f"switchoverTo {target} ({'done' if owner == target else 'pending'})")
    if failover.get("maintenance"):
        policy.append("maintenance")
    if failover.get("whenArbiterUnavailable") == "TakeOver":
        policy.append("whenArbiterUnavailable TakeOver")
    lines.append("  policy     " + ", ".join(policy))
    groups = spec.get("groups") or []
    if groups:
        by_group = {g.get("name"): g for g in status.get("groups") or []}
        rows = [["GROUP", "OWNER", "EPOCH", "STATE", "PREFERRED", "FAILBACK", "SWITCHOVER", "RESOURCES"]]
        for g in groups:
            seen = by_group.get(g.get("name")) or {}
            back = g.get("autoFailback", failover.get("autoFailback", True))
            rows.append([
                str(g.get("name")), str(seen.get("owner") or "-"), str(seen.get("epoch", "-")),
                str(seen.get("state") or "Unknown"), str(g.get("preferredNode") or (nodes[0] if nodes else "-")),
                "on" if back else "off", str(g.get("switchoverTo") or "-"), " -> ".join(_resource_words(g)) or "none",
            ])  # fmt: skip
        lines += _table(rows)
    else:
        words = _resource_words(spec)
        lines.append("  resources  " + (" -> ".join(words) if words else "none"))

    by_name = {n.get("name"): n for n in status.get("nodes") or []}
    rows = [["NODE", "STATE", "ROLE", "LAST SEEN", "LINKS (as it hears its peer)"]]
    for n in nodes or list(by_name):
        st = by_name.get(n) or {}
        role = ["owner" if n == owner else "standby"]
        if n == preferred:
            role.append("preferred")
        media = st.get("media") or {}
        links = ", ".join(f"{m} {s}" for m, s in sorted(media.items())) or "-"
        seen = (renewed or {}).get(n) or st.get("lastSeen")
        rows.append(
            [n, st.get("state", "unknown"), ",".join(role), f"{age(seen, now)} ago" if seen else "-", links]
        )
    lines += _table(rows)

    t = status.get("lastTransition")
    if t:
        src, dst = t.get("from") or "nobody", t.get("to") or "nobody"
        gap = t.get("gapMs")
        text = f"  last move  {src} -> {dst} at {_stamp(t.get('time'))} ({age(t.get('time'), now)} ago)"
        if gap is not None:
            text += f", {gap}ms without an owner"
        if t.get("reason"):
            text += f": {t['reason']}"
        lines.append(text)
    else:
        lines.append("  last move  none recorded")

    conditions = status.get("conditions") or []
    if conditions:
        rows = [["CONDITION", "STATUS", "REASON", "AGE", "MESSAGE"]]
        for c in conditions:
            rows.append(
                [
                    str(c.get("type", "?")),
                    str(c.get("status", "?")),
                    str(c.get("reason", "")),
                    age(c.get("lastTransitionTime"), now),
                    str(c.get("message", "")),
                ]
            )
        lines += _table(rows)
    return "\n".join(lines)


def switchover_patch(
    to: str | None, obj: Mapping[str, Any] | None = None, group: str | None = None
) -> dict[str, Any]:
    """The merge-patch that declares (or, with None, withdraws) a switchover: of the HACluster, or
    of one of its `groups` (the whole list, as a merge-patch replaces lists, and the
    resourceVersion read, so a change made meanwhile is not lost: the patch fails instead)."""
    if group is None:
        return {"spec": {"failover": {"switchoverTo": to}}}
    assert obj is not None
    groups = [dict(g) for g in (obj.get("spec") or {}).get("groups") or []]
    names = [g.get("name") for g in groups]
    if group not in names:
        raise ValueError(f"no group {group!r} (groups: {', '.join(str(n) for n in names) or 'none'})")
    for g in groups:
        if g.get("name") == group:
            g.pop("switchoverTo", None)
            if to is not None:
                g["switchoverTo"] = to
    return {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "spec": {"groups": groups}}


def target_node(command: str, nodes: Sequence[str], node: str) -> str:
    """Where `switchover --to`, `standby --node` and `takeover --node` send the resources.

    standby X: X gives up the resources, so they go to the other node; takeover X: they go to X."""
    if node not in nodes:
        raise ValueError(f"{node!r} is not one of the nodes {', '.join(nodes)}")
    if command == "standby":
        others = [n for n in nodes if n != node]
        if len(others) != 1:
            raise ValueError(f"cannot tell the other node of {node!r} in {', '.join(nodes)}")
        return others[0]
    return node


# --------------------------------------------------------------------------------------------
# the API server


class KubeApi:
    """The kubernetes client, raw JSON in and out."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        from kubernetes import client

        from .kube import api_client_from_environment

        self.api = api_client_from_environment(kubeconfig, context)
        self.custom = client.CustomObjectsApi(self.api)
        self.coordination = client.CoordinationV1Api(self.api)

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            got = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                raise NotFound(f"{KIND} {name!r} not found in namespace {namespace!r}") from None
            raise
        return cast(dict[str, Any], got)

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            got = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            got = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return list(cast(dict[str, Any], got).get("items") or [])

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            resp: Any = self.coordination.read_namespaced_lease(name, namespace, _preload_content=False)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        out: dict[str, Any] = json.loads(resp.data)
        return out

    def patch(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        got = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, dict(body)
        )  # Content-Type: application/merge-patch+json
        return cast(dict[str, Any], got)


def default_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The current context's namespace, as kubectl picks it; `default` otherwise."""
    try:
        from kubernetes import config

        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
        ns = ((chosen or {}).get("context") or {}).get("namespace")
        return str(ns) if ns else "default"
    except Exception:
        path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
        if os.path.exists(path):
            with open(path) as f:
                return f.read().strip() or "default"
        return "default"


# --------------------------------------------------------------------------------------------
# the command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubectl ha", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    p.add_argument("--context", help="the kubeconfig context to use")
    p.add_argument("-n", "--namespace", help="default: the context's namespace")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status", help="owner, epoch, nodes and links, last move, conditions")
    s.add_argument("name", nargs="?", help="default: every HACluster in the namespace")
    s.add_argument("-A", "--all-namespaces", action="store_true")
    s.add_argument("-o", "--output", choices=("text", "json"), default="text")
    w = sub.add_parser("switchover", help="move the resources to a node (spec.failover.switchoverTo)")
    w.add_argument("name")
    to = w.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", help="the node that should own the resources")
    to.add_argument("--clear", action="store_true", help="withdraw switchoverTo (autoFailback applies again)")
    w.add_argument("--dry-run", action="store_true", help="print the patch, change nothing")
    w.add_argument("--group", help="which resource group (an HACluster with spec.groups)")
    for name, text in (
        ("standby", "Heartbeat's hb_standby: NODE gives its resources to the other node"),
        ("takeover", "Heartbeat's hb_takeover: NODE takes the resources"),
    ):
        h = sub.add_parser(name, help=text)
        h.add_argument("name")
        h.add_argument("--node", required=True)
        h.add_argument("--group", help="which resource group (an HACluster with spec.groups)")
        h.add_argument("--dry-run", action="store_true", help="print the patch, change nothing")
    for sp in sub.choices.values():  # kubectl's global flags after the subcommand too
        sp.add_argument("--kubeconfig", dest="kubeconfig_", help=argparse.SUPPRESS)
        sp.add_argument("--context", dest="context_", help=argparse.SUPPRESS)
        sp.add_argument("-n", "--namespace", dest="namespace_", help=argparse.SUPPRESS)
    return p


def _status(api: Api, a: argparse.Namespace, namespace: str) -> int:
    if a.name:
        objs = [api.get(namespace, a.name)]
    else:
        objs = sorted(
            api.list(None if a.all_namespaces else namespace),
            key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
        )
        if not objs:
            where = "any namespace" if a.all_namespaces else f"namespace {namespace!r}"
            print(f"No {KIND} found in {where}.", file=sys.stderr)
            return 0
    views: list[tuple[dict[str, Any], dict[str, Any] | None, str | None, dict[str, Any]]] = []
    for obj in objs:
        ns, name = obj["metadata"].get("namespace", namespace), obj["metadata"]["name"]
        first = ((obj.get("spec") or {}).get("groups") or [{}])[0].get("name") or MAIN_GROUP
        try:
            lease, error = api.lease(ns, ownership_lease_name(name, first)), None
        except Exception as e:  # e.g. no RBAC on Leases: the status alone still tells a lot
            lease, error = None, _brief(e)
        renewed: dict[str, Any] = {}
        for node in (obj.get("spec") or {}).get("nodes") or [] if error is None else []:
            with contextlib.suppress(Exception):  # the status's lastSeen stands in
                report = api.lease(ns, report_lease_name(name, node, first))
                renewed[node] = ((report or {}).get("spec") or {}).get("renewTime")
        views.append((obj, lease, error, renewed))
    if a.output == "json":
        print(
            json.dumps([{"hacluster": o, "lease": lease} for o, lease, _, _ in views], indent=2, default=str)
        )
    else:
        print("\n\n".join(render_status(o, lease, lease_error=err, renewed=r) for o, lease, err, r in views))
    return 0


def _move(api: Api, a: argparse.Namespace, namespace: str) -> int:
    obj = api.get(namespace, a.name)
    spec = obj.get("spec") or {}
    nodes = list(spec.get("nodes") or [])
    groups = {g.get("name"): g for g in spec.get("groups") or []}
    if groups and a.group is None:
        raise ValueError(
            f"{a.name} has several resource groups: say which with --group ({', '.join(map(str, groups))})"
        )
    if not groups and a.group is not None:
        raise ValueError(f"{a.name} has one resource group: drop --group")
    if a.cmd == "switchover" and a.clear:
        to = None
    else:
        to = target_node(a.cmd, nodes, a.to if a.cmd == "switchover" else a.node)
    body = switchover_patch(to, obj, a.group)
    current = (groups[a.group] if a.group else spec.get("failover") or {}).get("switchoverTo")
    ref = f"{PLURAL}.{GROUP}/{a.name}" + (f" group {a.group}" if a.group else "")
    if a.dry_run:
        print(json.dumps(body))
        print(f"# kubectl patch {ref} -n {namespace} --type merge -p '{json.dumps(body)}'", file=sys.stderr)
        return 0
    if current == to:
        print(f"{ref}: switchoverTo is already {to or 'unset'}; nothing to change")
        return 0
    api.patch(namespace, a.name, body)
    if to is None:
        print(f"{ref}: switchoverTo withdrawn (was {current}); autoFailback applies again")
    else:
        print(
            f"{ref}: switchoverTo {to} (was {current or 'unset'}): the operator hands over once {to} is ready"
        )
        print(f"  follow it with: kubectl ha status {a.name} -n {namespace}")
    print("  managed by GitOps? put the same change in Git, or it will be reverted", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None, api: Api | None = None) -> int:
    a = parser().parse_args(argv)
    kubeconfig = a.kubeconfig_ or a.kubeconfig
    context = a.context_ or a.context
    try:
        if api is None:
            api = KubeApi(kubeconfig, context)
        namespace = a.namespace_ or a.namespace or default_namespace(kubeconfig, context)
        if a.cmd == "status":
            return _status(api, a, namespace)
        return _move(api, a, namespace)
    except (NotFound, ValueError) as e:
        print(f"kubectl ha {a.cmd}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # the API server's and the kubeconfig's errors, told briefly
        print(f"kubectl ha {a.cmd}: {_brief(e)}", file=sys.stderr)
        return 1


def _brief(e: BaseException) -> str:
    status = getattr(e, "status", None)
    if status is not None:
        return f"HTTP {status} {getattr(e, 'reason', '')}".rstrip()
    return f"{type(e).__name__}: {e}"


if __name__ == "__main__":
    sys.exit(main())
