"""hactl import / export: a real Heartbeat directory into an HACluster and its Secret, and back."""

from __future__ import annotations

import base64
import os
import shutil
import stat
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import yaml

from hacluster_agent.cli.hactl import main as hactl
from hacluster_api.heartbeat.directory import ClusterConfig, load_directory
from hacluster_api.heartbeat.hacf_model import McastMedium, SerialMedium, UcastMedium
from hacluster_api.heartbeat.haresources_model import IPResource, ScriptResource
from hacluster_api.migrate import Imported, MigrateError, export_node, import_directory
from hacluster_api.models import HACluster
from hacluster_api.render import build_authkeys

ARTICLE = Path(__file__).resolve().parent.parent / "data" / "article"


@pytest.fixture
def article(tmp_path: Path) -> Path:
    """The article's /etc/ha.d as a user has it: git keeps no 0600, Heartbeat and we require it."""
    d = tmp_path / "article"
    shutil.copytree(ARTICLE, d)
    os.chmod(d / "authkeys", 0o600)
    return d


RICH_HACF = """\
# a pair with every kind of medium, and things an HACluster cannot say
logfile /var/log/ha-log
logfacility local0
keepalive 500ms
deadtime 5
warntime 2
initdead 30
udpport 694
bcast eth0
ucast eth1 10.0.0.1
ucast eth1 10.0.0.2
mcast eth2 239.0.0.1 694 1 1
baud 115200
serial /dev/ttyS1
node alpha
node beta
auto_failback off
ping 10.0.0.254
respawn hacluster /usr/lib/heartbeat/ipfail
stonith_host * null alpha beta
"""
RICH_HARESOURCES = """\
alpha IPaddr::192.0.2.10/24/eth0 Filesystem::/dev/sdb1::/srv::ext4 \\
      IPaddr2::192.0.2.11/24/eth0/192.0.2.255 apache::/etc/apache2/apache2.conf
beta IPaddr::192.0.2.20/24/eth0 mysql
"""
RICH_AUTHKEYS = "auth 2\n1 md5 the-old-key\n2 sha1 the-new-key\n"


def write_dir(d: Path, hacf: str, haresources: str, authkeys: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "ha.cf").write_text(hacf)
    (d / "haresources").write_text(haresources)
    fd = os.open(d / "authkeys", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, authkeys.encode())
    os.close(fd)
    return d


@pytest.fixture
def rich(tmp_path: Path) -> Path:
    return write_dir(tmp_path / "ha.d", RICH_HACF, RICH_HARESOURCES, RICH_AUTHKEYS)


def texts(items: list[Any]) -> str:
    return "\n".join(str(i) for i in items)


# -- the seed article ------------------------------------------------------------------------


def test_article_becomes_a_valid_hacluster_with_nodes_mapped_and_a_sha1_secret(article: Path) -> None:
    imp = import_directory(article, node_map={"servidor1": "node-a", "servidor2": "node-b"}, name="web")
    model = HACluster.model_validate(imp.hacluster)
    spec = model.spec
    assert spec.nodes == ["node-a", "node-b"]
    assert spec.preferred_node == "node-b"  # the article's haresources names servidor2
    assert (spec.heartbeat.keepalive, spec.heartbeat.deadtime) == ("2s", "20s")
    assert [(u.interface, u.mode, u.port) for u in spec.heartbeat.media.udp] == [("eth1", "broadcast", 694)]
    assert [(s.device, s.baud) for s in spec.heartbeat.media.serial] == [("/dev/ttySO", 19200)]
    assert spec.failover.auto_failback is False  # nice_failback on
    assert [r.ip.address if r.ip else r.script.name if r.script else None for r in spec.resources] == [
        "190.123.123.10/24",
        "httpd",
        "smb",
    ]
    assert spec.auth.method == "sha1"
    assert spec.auth.secret_ref.name == "web-authkeys"
    secret = imp.secret
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "web-authkeys"
    value = base64.b64decode(secret["data"]["authkeys"]).decode()
    keys = build_authkeys(spec, value)  # the format the operator's renderer accepts
    assert keys.signing_key.method == "sha1"
    assert keys.signing_key.key_bytes == b"textoparaelpass"
    # nothing vanishes silently: the guessed prefix, nice_failback and the typos are all listed
    report = "\n".join(imp.report())
    assert "haresources:2: IPaddr::190.123.123.10: no prefix length" in report
    assert "imported as /24" in report
    assert "ha.cf:11: nice_failback on: deprecated, carried as autoFailback: false" in report
    assert "/dev/ttySO' ends in the letter O" in report
    assert "'udp port N' is read as 'udpport N'" in report


def test_article_cli_prints_yaml_and_lists_on_stderr(
    article: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = hactl(
        ["import", str(article), "--node-map", "servidor1=node-a,servidor2=node-b", "--namespace", "ha"]
    )
    out = capsys.readouterr()
    assert rc == 0
    docs = list(yaml.safe_load_all(out.out))
    assert [d["kind"] for d in docs] == ["HACluster", "Secret"]
    assert docs[0]["metadata"] == {"name": "hacluster", "namespace": "ha"}
    assert docs[1]["metadata"] == {"name": "hacluster-authkeys", "namespace": "ha"}
    assert out.out.startswith("# hactl import")
    assert "#   " + str(article / "haresources") + ":2: IPaddr::190.123.123.10" in out.out  # also a comment
    assert "hactl import:   " + str(article / "haresources") + ":2:" in out.err


# -- a richer pair -------------------------------------------------------------------------


def test_rich_sample_media_resources_auth_and_what_is_dropped(rich: Path) -> None:
    imp = import_directory(
        rich,
        node_map={"alpha": "node-a", "beta": "node-b"},
        addresses={"alpha": ["10.0.0.1"], "beta": ["10.0.0.2"]},
        name="db",
        namespace="prod",
        secret_name="db-keys",
    )
    spec = HACluster.model_validate(imp.hacluster).spec
    hb = spec.heartbeat
    assert (hb.keepalive, hb.deadtime, hb.warntime, hb.initdead) == ("500ms", "5s", "2s", "30s")
    assert [u.to_k8s() for u in hb.media.udp] == [
        {"interface": "eth0", "mode": "broadcast", "port": 694, "ttl": 1},
        {
            "interface": "eth1",
            "mode": "unicast",
            "peers": {"node-a": "10.0.0.1", "node-b": "10.0.0.2"},
            "port": 694,
            "ttl": 1,
        },
        {"interface": "eth2", "mode": "multicast", "group": "239.0.0.1", "port": 694, "ttl": 1},
    ]
    assert [(s.device, s.baud) for s in hb.media.serial] == [("/dev/ttyS1", 115200)]
    # Active/active (a group homed on each node): one group per home node, each its own Lease.
    assert spec.preferred_node is None and spec.resources == []
    assert [(g.name, g.preferred_node) for g in spec.groups] == [
        ("node-a-group", "node-a"),
        ("node-b-group", "node-b"),
    ]
    assert spec.failover.auto_failback is False
    assert [r.to_k8s() for r in spec.groups[1].resources] == [
        {"ip": {"address": "192.0.2.20/24", "interface": "eth0",
                "arp": {"count": 5, "intervalMs": 200, "refreshSeconds": 10}}},
        {"script": {"name": "mysql", "args": []}},
    ]  # fmt: skip
    items = [r.to_k8s() for r in spec.groups[0].resources]
    assert items == [
        {
            "ip": {
                "address": "192.0.2.10/24",
                "interface": "eth0",
                "arp": {"count": 5, "intervalMs": 200, "refreshSeconds": 10},
            }
        },
        {"script": {"name": "Filesystem", "args": ["/dev/sdb1", "/srv", "ext4"]}},
        {
            "ip": {
                "address": "192.0.2.11/24",
                "interface": "eth0",
                "arp": {"count": 5, "intervalMs": 200, "refreshSeconds": 10},
            }
        },
        {"script": {"name": "apache", "args": ["/etc/apache2/apache2.conf"]}},
    ]
    assert spec.auth.method == "sha1" and spec.auth.secret_ref.name == "db-keys"
    keys = build_authkeys(spec, base64.b64decode(imp.secret["data"]["authkeys"]).decode())
    assert keys.active == 2 and sorted(keys.keys) == [1, 2]  # the rotation in progress survives
    dropped = texts(imp.dropped)
    for line, what in [
        (2, "logfile /var/log/ha-log: logging"),
        (3, "logfacility local0: logging"),
        (12, "mcast eth2 239.0.0.1: loop 1"),
        (18, "ping 10.0.0.254: ping nodes"),
        (19, "respawn hacluster /usr/lib/heartbeat/ipfail: respawn clients"),
        (20, "stonith_host * null alpha beta: STONITH"),
    ]:
        assert f"ha.cf:{line}: {what}" in dropped
    assert "haresources:1: IPaddr2::192.0.2.11/24/eth0/192.0.2.255: broadcast 192.0.2.255" in dropped
    assert len(imp.dropped) == 7
    # the parser's own warnings for lines already listed are not repeated
    assert not any(w.line in (2, 3, 18, 19, 20) for w in imp.warnings)


def test_ucast_without_addresses_is_listed_with_the_option_to_fix_it(rich: Path) -> None:
    imp = import_directory(rich, node_map={"alpha": "node-a", "beta": "node-b"})
    spec = HACluster.model_validate(imp.hacluster).spec
    assert [u.mode for u in spec.heartbeat.media.udp] == ["broadcast", "multicast"]
    dropped = texts(imp.dropped)
    assert (
        "ha.cf:10: ucast eth1 10.0.0.1: cannot tell which node has which address: pass --addresses" in dropped
    )
    assert "ha.cf:11: ucast eth1 10.0.0.2:" in dropped


def test_per_node_ucast_file_takes_the_nodes_other_address(tmp_path: Path) -> None:
    hacf = "keepalive 1\ndeadtime 10\nucast eth1 10.0.0.2\nnode alpha beta\nauto_failback on\n"
    d = write_dir(tmp_path / "d", hacf, "alpha 192.0.2.10/24/eth0\n", "auth 1\n1 sha1 k\n")
    imp = import_directory(d, addresses={"alpha": ["10.0.0.1"], "beta": ["10.0.0.2"]})
    spec = HACluster.model_validate(imp.hacluster).spec
    assert spec.heartbeat.media.udp[0].peers == {"alpha": "10.0.0.1", "beta": "10.0.0.2"}
    assert spec.nodes == ["alpha", "beta"]  # valid Kubernetes names: kept without a map
    assert not imp.dropped


def test_settings_the_model_refuses_are_listed_and_defaults_spelled_out(tmp_path: Path) -> None:
    hacf = (
        "keepalive 1\ndeadtime 10\nwarntime 10\nmsgfmt netstring\nmcast6 eth1 ff02::694 694 1 0\nnode a b\n"
    )
    d = write_dir(tmp_path / "d", hacf, "a IPv6addr::2001:db8::10 IPaddr::192.0.2.10\n", "auth 1\n1 crc\n")
    imp = import_directory(d, vip_prefix=26)
    spec = HACluster.model_validate(imp.hacluster).spec
    assert spec.heartbeat.warntime is None  # not below deadtime: dropped, default half the deadtime
    assert spec.heartbeat.media.udp[0].group == "ff02::694"
    assert [r.ip.address for r in spec.resources if r.ip] == ["2001:db8::10/26", "192.0.2.10/26"]
    assert spec.auth.method == "crc" and spec.failover.auto_failback is True
    dropped, assumed = texts(imp.dropped), texts(imp.assumed)
    assert "ha.cf:3: warntime 10: not below deadtime" in dropped
    assert "ha.cf:4: msgfmt netstring: the agent picks the encoding per medium" in dropped
    assert "auto_failback not set (Heartbeat's default legacy): autoFailback: true" in assumed
    assert "imported as /26 (--vip-prefix" in assumed
    assert "crc" in texts(imp.warnings)  # the parser's warning that crc authenticates nothing


# -- bad input: exit 1, file:line ----------------------------------------------------------


def test_bad_files_exit_1_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_dir(
        tmp_path / "d",
        "keepalive 2\ndeadtime 3\nbcast eth0\nnode a b\n",
        "a 192.0.2.1\n",
        "auth 1\n1 sha1 k\n",
    )
    assert hactl(["import", str(d)]) == 1
    assert f"{d / 'ha.cf'}:2: deadtime (3) must be more than twice keepalive (2)" in capsys.readouterr().err
    e = write_dir(
        tmp_path / "e", "bcast eth0\nnode a b\n", "a 192.0.2.1\nc httpd\n", "auth 1\n1 sha1 k\n2 rot13 x\n"
    )
    assert hactl(["import", str(e)]) == 1
    err = capsys.readouterr().err
    assert f"{e / 'haresources'}:2: node 'c' is not a node of ha.cf" in err
    assert f"{e / 'authkeys'}:3: key 2: method must be crc, md5 or sha1" in err


def test_node_names_kubernetes_cannot_take_need_a_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = write_dir(
        tmp_path / "d",
        "bcast eth0\nnode web_1\nnode web_2\nauto_failback on\n",
        "web_1 httpd\n",
        "auth 1\n1 sha1 k\n",
    )
    assert hactl(["import", str(d), "--node-map", "web_1=node-a"]) == 1
    err = capsys.readouterr().err
    assert f"{d / 'ha.cf'}:3: node 'web_2' maps to 'web_2', not a Kubernetes node name" in err
    assert "--node-map web_2=<node>" in err
    with pytest.raises(MigrateError, match="'nobody' is not a node"):
        import_directory(d, node_map={"nobody": "node-a", "web_1": "a", "web_2": "b"})


# -- export, and the round trip ------------------------------------------------------------


def meaning(cfg: ClusterConfig, node: str, names: dict[str, str]) -> dict[str, Any]:
    """What a pair's files mean to `node`'s agent, with node names translated by `names`."""
    h = cfg.hacf
    own = {ip_address(a) for a in _own_addresses(cfg, node)}
    media = []
    for m in h.media:
        if isinstance(m, UcastMedium):
            if m.peer not in own:
                media.append(("ucast", m.interface, m.port, str(m.peer)))
        elif isinstance(m, McastMedium):
            media.append(("mcast", m.interface, m.port, str(m.group), m.ttl))  # loop: listed, dropped
        elif isinstance(m, SerialMedium):
            media.append(("serial", m.device, m.baud))
        else:
            media.append(("bcast", m.interface, m.port))
    groups = cfg.haresources.groups
    home = groups[0].home if groups else None
    resources = []
    for g in groups:
        if g.home != home:
            continue  # listed as not carried over
        for r in g.resources:
            if isinstance(r, IPResource):
                resources.append(("ip", str(r.address.ip), r.interface))
            else:
                assert isinstance(r, ScriptResource)
                resources.append(("script", r.script, tuple(r.args)))
    keys = cfg.authkeys
    return {
        "timing": (h.keepalive_ms, h.deadtime_ms, h.warntime_ms, h.initdead_ms),
        "media": sorted(media, key=str),  # the HACluster lists udp and serial apart; order is no meaning
        "nodes": [names.get(n, n) for n in h.nodes],
        "auto_failback": h.auto_failback_effective,
        "home": names.get(home, home) if home else None,
        "resources": resources,
        "auth": (keys.active, {i: (k.method, k.key_bytes) for i, k in keys.keys.items()}),
    }


ADDRESSES = {"alpha": ["10.0.0.1"], "beta": ["10.0.0.2"]}


def _own_addresses(cfg: ClusterConfig, node: str) -> list[str]:
    return ADDRESSES.get(node, [])


def _export(imp: Imported, tmp_path: Path, node: str, **kw: Any) -> ClusterConfig:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(imp.to_yaml())
    out = tmp_path / f"out-{node}"
    export_node([manifest], node, out, **kw)
    return load_directory(out)


def test_rich_round_trip_keeps_the_meaning(rich: Path, tmp_path: Path) -> None:
    names = {"alpha": "node-a", "beta": "node-b"}
    imp = import_directory(rich, node_map=names, addresses=ADDRESSES)
    original = load_directory(rich)
    for hb_node, k8s_node in names.items():
        back = _export(imp, tmp_path, k8s_node)
        # the files name the Kubernetes nodes; as host names they mean the same pair
        assert meaning(back, k8s_node, {}) == meaning(original, hb_node, names)
        assert stat.S_IMODE((tmp_path / f"out-{k8s_node}" / "authkeys").stat().st_mode) == 0o600


def test_export_renames_nodes_back_to_host_names(rich: Path, tmp_path: Path) -> None:
    names = {"alpha": "node-a", "beta": "node-b"}
    imp = import_directory(rich, node_map=names, addresses=ADDRESSES)
    back = _export(imp, tmp_path, "alpha", node_map={"node-a": "alpha", "node-b": "beta"})
    assert meaning(back, "alpha", {}) == meaning(load_directory(rich), "alpha", {})


def test_article_round_trip_through_the_cli(
    article: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, secret = tmp_path / "hacluster.yaml", tmp_path / "secret.yaml"
    names = "servidor1=node-a,servidor2=node-b"
    assert hactl(["import", str(article), "--node-map", names, "-o", str(tmp_path / "all.yaml")]) == 0
    docs = list(yaml.safe_load_all((tmp_path / "all.yaml").read_text()))
    manifest.write_text(yaml.safe_dump(docs[0]))
    secret.write_text(
        yaml.safe_dump(
            {**docs[1], "data": None, "stringData": {"authkeys": "auth 1\n1 sha1 textoparaelpass\n"}}
        )
    )
    out = tmp_path / "etc-ha.d"
    rc = hactl(["export", "-f", str(manifest), "--secret", str(secret), "--node", "servidor2", "-o", str(out),
                "--node-map", "node-a=servidor1,node-b=servidor2"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert "(mode 0600)" in capsys.readouterr().out
    assert stat.S_IMODE((out / "authkeys").stat().st_mode) == 0o600
    back, original = load_directory(out), load_directory(article)
    want, got = meaning(original, "servidor2", {}), meaning(back, "servidor2", {})
    assert got == want  # the VIP's guessed /24 is listed at import; its address and the rest agree
    assert back.haresources.groups[0].resources[0].address.network.prefixlen == 24  # type: ignore[union-attr]


def test_export_errors(article: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    imp = import_directory(article, node_map={"servidor1": "node-a", "servidor2": "node-b"})
    only = tmp_path / "only.yaml"
    only.write_text(yaml.safe_dump(imp.hacluster))
    assert hactl(["export", "-f", str(only), "--node", "node-a", "-o", str(tmp_path / "x")]) == 1
    assert "no Secret 'hacluster-authkeys' with key 'authkeys'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: HACluster\nspec: [\n")
    assert hactl(["export", "-f", str(bad), "--node", "node-a", "-o", str(tmp_path / "x")]) == 1
    assert f"{bad}:3: invalid YAML" in capsys.readouterr().err
    both = tmp_path / "both.yaml"
    both.write_text(imp.to_yaml())
    assert hactl(["export", "-f", str(both), "--node", "node-z", "-o", str(tmp_path / "x")]) == 1
    assert "'node-z' is not one of the nodes" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_watchdog_becomes_the_node_fence_and_comes_back(tmp_path: Path) -> None:
    """Heartbeat's `watchdog` is acted on: carried as failover.nodeFence (with its defaults, listed
    to check), and exported back as ha.cf's watchdog (the stop budget noted as Kubernetes only)."""
    hacf = "keepalive 1\ndeadtime 10\nbcast eth0\nnode alpha\nnode beta\nwatchdog /dev/watchdog\n"
    d = write_dir(tmp_path / "ha.d", hacf, "alpha 192.0.2.10\n", "auth 1\n1 sha1 k\n")
    imp = import_directory(d, name="web")
    model = HACluster.model_validate(imp.hacluster)
    fence = model.spec.failover.node_fence
    assert fence is not None and fence.watchdog == "/dev/watchdog" and fence.stop_budget == "10s"
    assert "watchdog /dev/watchdog: carried as failover.nodeFence" in texts(imp.assumed)
    assert "watchdog" not in texts(imp.dropped)
    back = _export(imp, tmp_path, "alpha")
    assert back.hacf.watchdog == "/dev/watchdog"
