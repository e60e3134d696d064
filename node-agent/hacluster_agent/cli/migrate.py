"""`hactl import` and `hactl export`: the command line over hacluster_api.migrate's mapping."""

from __future__ import annotations

import sys
from typing import Any

from hacluster_api.heartbeat.authkeys import write_secret_file
from hacluster_api.heartbeat.issues import ConfigError
from hacluster_api.migrate import MigrateError, export_node, import_directory, parse_pairs

# --------------------------------------------------------------------------------------------
# hactl import / hactl export


def add_migrate_commands(sub: Any) -> None:
    """Add `import` and `export` to hactl's subcommands."""
    i = sub.add_parser(
        "import",
        help="print an HACluster manifest and its auth Secret from a Heartbeat config directory",
        description="Read ha.cf, haresources and authkeys; print YAML (the HACluster, then the Secret). "
        "What the HACluster cannot express is listed on stderr and in a leading YAML comment.",
    )
    i.add_argument("directory", help="the Heartbeat config directory (e.g. a copy of /etc/ha.d)")
    i.add_argument("--node-map", action="append", default=[], metavar="HB=NODE[,HB=NODE]",
                   help="Heartbeat node name = Kubernetes node name (unmapped names are kept)")  # fmt: skip
    i.add_argument("--name", default="hacluster", help="the HACluster's name (default: hacluster)")
    i.add_argument("--namespace", "-n", default="default")
    i.add_argument("--secret-name", help="the auth Secret's name (default: NAME-authkeys)")
    i.add_argument("--addresses", action="append", default=[], metavar="NODE=ADDR[,NODE=ADDR]",
                   help="each node's address on the ucast links (ha.cf does not say whose is whose)")  # fmt: skip
    i.add_argument("--vip-prefix", type=int, help="prefix length for VIPs written without one")
    i.add_argument("-o", "--output", help="write the YAML here instead of stdout")
    e = sub.add_parser(
        "export",
        help="write one node's ha.cf, haresources and authkeys from an HACluster manifest",
        description="Render one node's Heartbeat files for the standalone agent (authkeys mode 0600).",
    )
    e.add_argument("-f", "--filename", action="append", required=True, help="the HACluster manifest (YAML)")
    e.add_argument("--node", required=True, help="the node to write the files for")
    e.add_argument("--secret", action="append", default=[], help="the auth Secret (YAML), if not in -f")
    e.add_argument("--name", help="which HACluster, when the manifest holds several")
    e.add_argument("--node-map", action="append", default=[], metavar="NODE=HOST[,NODE=HOST]",
                   help="rename nodes first (Kubernetes node = Heartbeat host name, as uname -n)")  # fmt: skip
    e.add_argument("-o", "--output", required=True, help="the directory to write (e.g. /etc/ha.d)")


def _one_each(pairs: dict[str, list[str]], what: str) -> dict[str, str]:
    twice = [k for k, v in pairs.items() if len(v) > 1]
    if twice:
        raise MigrateError([f"{what}: {', '.join(twice)} given more than once"])
    return {k: v[0] for k, v in pairs.items()}


def run_migrate(a: Any) -> int:
    try:
        if a.cmd == "import":
            imported = import_directory(
                a.directory,
                node_map=_one_each(parse_pairs(",".join(a.node_map), "--node-map"), "--node-map"),
                name=a.name,
                namespace=a.namespace,
                secret_name=a.secret_name,
                addresses=parse_pairs(",".join(a.addresses), "--addresses"),
                vip_prefix=a.vip_prefix,
            )
            for line in imported.report():
                print(f"hactl import: {line}", file=sys.stderr)
            text = imported.to_yaml(a.directory)
            if a.output:
                write_secret_file(a.output, text)  # it holds the Secret: 0600 from the first byte
            else:
                sys.stdout.write(text)
            return 0
        exported = export_node(
            a.filename,
            a.node,
            a.output,
            secrets=a.secret,
            name=a.name,
            node_map=_one_each(parse_pairs(",".join(a.node_map), "--node-map"), "--node-map"),
        )
        for note in exported.notes:
            print(f"hactl export: not in the files: {note}", file=sys.stderr)
        for rel, path in exported.files.items():
            print(f"wrote {path}{' (mode 0600)' if rel == 'authkeys' else ''}")
        return 0
    except ConfigError as e:
        for f in e.findings:
            print(f, file=sys.stderr)
        return 1
    except MigrateError as e:
        for p in e.problems:
            print(f"hactl {a.cmd}: {p}", file=sys.stderr)
        return 1
