"""Config reload (SIGHUP, file changes): the pure decision, the Reloader on a fake source, and the
files as the agent reads them (plain directory, the operator's Secret volume)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from hacluster_agent.metrics import AgentMetrics, samples
from hacluster_agent.reload import ConfigSource, Reloader, Result, Snapshot, parse_snapshot, plan
from hacluster_agent.wire.codec import Decoded, decode, encode
from hacluster_agent.wire.errors import Reject, Rejected
from hacluster_agent.wire.message import Message
from hacluster_api.heartbeat.authkeys import parse_authkeys
from hacluster_api.heartbeat.directory import ClusterConfig

D = Path("/etc/ha.d")
HACF = "keepalive 100ms\ndeadtime 500ms\nucast eth0 192.0.2.12\nnode n1\nnode n2\nauto_failback on\n"
HARES = "n1 IPaddr::192.0.2.100/24/eth0 demo-web\n"
OLD = "auth 1\n1 sha1 old-secret-1\n"
BOTH = "auth 1\n1 sha1 old-secret-1\n2 sha1 new-secret-2\n"
BOTH_SIGN_NEW = "auth 2\n1 sha1 old-secret-1\n2 sha1 new-secret-2\n"
NEW = "auth 2\n2 sha1 new-secret-2\n"
SECRETS = ("old-secret-1", "new-secret-2")


def snap(
    hacf: str | None = HACF,
    hares: str | None = HARES,
    authkeys: str | None = OLD,
    mode: int | None = 0o100600,
    extras: Mapping[str, str] | None = None,
) -> Snapshot:
    texts = {"ha.cf": hacf, "haresources": hares, "authkeys": authkeys}
    unreadable = {n: "No such file or directory" for n, t in texts.items() if t is None}
    paths = {n: f"{D}/{n}" for n in texts}
    return Snapshot(texts, paths, unreadable, mode, dict(extras or {}))


def running(authkeys: str = OLD) -> ClusterConfig:
    cfg = parse_snapshot(snap(authkeys=authkeys), D)
    assert isinstance(cfg, ClusterConfig), cfg
    return cfg


def all_text(p: object) -> str:
    assert hasattr(p, "lines")
    return "\n".join(t for _, t in p.lines("SIGHUP"))


def assert_no_key(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# -- the pure decision -------------------------------------------------------------------------
def test_authkeys_only_change_is_applied() -> None:
    p = plan(running(OLD), snap(authkeys=BOTH))
    assert p.result is Result.APPLIED
    assert p.authkeys is not None
    assert (p.authkeys.active, sorted(p.authkeys.keys)) == (1, [1, 2])
    assert p.restart == () and p.errors == ()
    text = all_text(p)
    assert "/etc/ha.d/authkeys applied: signing with key 1 (sha1), accepting keys 1, 2" in text
    assert_no_key(text)


def test_the_three_rotation_steps_each_apply() -> None:
    cfg = running(OLD)
    for text, active, accepted in ((BOTH, 1, [1, 2]), (BOTH_SIGN_NEW, 2, [1, 2]), (NEW, 2, [2])):
        p = plan(cfg, snap(authkeys=text))
        assert p.result is Result.APPLIED and p.authkeys is not None
        assert (p.authkeys.active, sorted(p.authkeys.keys)) == (active, accepted)
        cfg = ClusterConfig(cfg.directory, cfg.hacf, cfg.haresources, p.authkeys)


def test_hacf_change_needs_a_restart_and_applies_nothing() -> None:
    p = plan(running(), snap(hacf=HACF.replace("deadtime 500ms", "deadtime 800ms")))
    assert p.result is Result.RESTART_NEEDED
    assert p.authkeys is None
    assert p.restart == ("/etc/ha.d/ha.cf",)
    (level, line), *_ = [(lv, t) for lv, t in p.lines("SIGHUP") if "restart" in t]
    assert level == logging.WARNING
    assert "/etc/ha.d/ha.cf changed: a restart of the agent is needed" in line


def test_haresources_change_needs_a_restart() -> None:
    p = plan(running(), snap(hares="n2 IPaddr::192.0.2.100/24/eth0 demo-web\n"))
    assert p.result is Result.RESTART_NEEDED
    assert p.restart == ("/etc/ha.d/haresources",) and p.authkeys is None


def test_comment_only_change_is_unchanged() -> None:
    p = plan(running(), snap(hacf="# tuned\n" + HACF, authkeys="# keys\n" + OLD))
    assert p.result is Result.UNCHANGED
    assert p.authkeys is None and p.restart == ()


def test_keys_still_apply_beside_a_change_awaiting_restart() -> None:
    """Rotation must not stall because ha.cf was edited too: the peer may already sign with the
    new key, and refusing it would look like a dead peer."""
    p = plan(running(), snap(hacf=HACF.replace("500ms", "800ms"), authkeys=BOTH))
    assert p.result is Result.RESTART_NEEDED
    assert p.authkeys is not None and sorted(p.authkeys.keys) == [1, 2]
    assert p.restart == ("/etc/ha.d/ha.cf",)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"authkeys": "auth 2\n1 sha1 old-secret-1\n2 sha1\n"},
            "/etc/ha.d/authkeys:3: key 2: sha1 needs a key",
        ),
        ({"authkeys": "auth 3\n1 sha1 old-secret-1\n"}, "/etc/ha.d/authkeys:1: 'auth 3' names a key index"),
        ({"authkeys": BOTH, "mode": 0o100644}, "/etc/ha.d/authkeys: mode 0644 lets group or others"),
        ({"authkeys": None}, "/etc/ha.d/authkeys: cannot read: No such file or directory"),
        ({"hacf": HACF + "deadtime x\n"}, "/etc/ha.d/ha.cf:7:"),
        ({"hares": "n3 192.0.2.100\n", "authkeys": BOTH}, "/etc/ha.d/haresources:1:"),
    ],
    ids=["syntax", "auth-index", "mode", "missing", "hacf", "haresources"],
)
def test_invalid_files_reject_the_whole_reload(kwargs: dict[str, object], expected: str) -> None:
    p = plan(running(), snap(**kwargs))  # type: ignore[arg-type]
    assert p.result is Result.REJECTED
    assert p.authkeys is None and p.restart == ()
    assert any(str(f).startswith(expected) for f in p.errors), [str(f) for f in p.errors]
    ((level, line),) = p.lines("SIGHUP")
    assert level == logging.ERROR
    assert "rejected, the running config is kept" in line and expected in line
    assert_no_key(line)


@pytest.mark.parametrize(
    "text",
    ["auth 1\n1 sha1 old-secret-1\nnew-secret-2\n", "auth 1\n1 sha1 old-secret-1\n2 new-secret-2\n"],
    ids=["key-alone", "method-forgotten"],
)
def test_a_key_in_a_wrong_place_is_not_quoted(text: str) -> None:
    p = plan(running(), snap(authkeys=text))
    assert p.result is Result.REJECTED
    line = all_text(p)
    assert "/etc/ha.d/authkeys:3:" in line and "not shown here (it may be a key)" in line
    assert_no_key(line)


def test_a_changed_script_of_the_secret_needs_a_restart() -> None:
    before = {"/cfg/n1.resource.d.web": "aa"}
    p = plan(running(), snap(extras={"/cfg/n1.resource.d.web": "bb"}), before)
    assert p.result is Result.RESTART_NEEDED and p.restart == ("/cfg/n1.resource.d.web",)
    assert plan(running(), snap(extras=before), before).result is Result.UNCHANGED


def test_old_key_is_refused_after_step_three() -> None:
    old, new = running(OLD).authkeys, running(NEW).authkeys
    both = running(BOTH).authkeys
    msg = Message.of(("t", "status"), ("st", "active"), ("src", "n1"), ("seq", "1"))
    assert isinstance(decode(encode(msg, old), both), Decoded)  # step 1: both accepted
    assert isinstance(decode(encode(msg, new), both), Decoded)
    got = decode(encode(msg, old), new)  # step 3: key 1 dropped
    assert isinstance(got, Rejected) and got.reason is Reject.BAD_AUTH
    assert isinstance(decode(encode(msg, new), new), Decoded)


# -- the Reloader on a fake source ----------------------------------------------------------------
@dataclass
class FakeAgent:
    cfg: ClusterConfig


@dataclass
class FakeSource:
    current: Snapshot
    prefix: str = ""

    def read(self) -> Snapshot:
        return self.current

    def read_extras(self) -> dict[str, str]:
        return dict(self.current.extras)

    def set(self, s: Snapshot) -> None:
        self.current = s


def reloads(m: AgentMetrics) -> dict[str, float]:
    return {
        labels["result"]: v
        for name, labels, v in samples(m.text())
        if name == "hacluster_config_reloads_total"
    }


def auth_metrics(m: AgentMetrics) -> tuple[float, list[str]]:
    text = list(samples(m.text()))
    signing = next(v for n, _, v in text if n == "hacluster_auth_signing_key")
    accepted = sorted(lab["index"] for n, lab, v in text if n == "hacluster_auth_key_accepted" and v == 1)
    return signing, accepted


def test_reloader_sighup_applies_and_rejects_keeping_old_keys(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "hacluster.reload")
    agent, metrics = FakeAgent(running(OLD)), AgentMetrics("n1", "n2")
    src = FakeSource(snap(authkeys=BOTH))
    r = Reloader(src, agent, metrics)
    assert auth_metrics(metrics) == (1, ["1"])

    assert r.reload().result is Result.APPLIED
    assert sorted(agent.cfg.authkeys.keys) == [1, 2]
    assert auth_metrics(metrics) == (1, ["1", "2"])

    src.set(snap(authkeys="auth 2\n1 sha1 old-secret-1\n2 sha1\n"))
    before = agent.cfg
    assert r.reload().result is Result.REJECTED
    assert agent.cfg is before  # the old keys stay in force

    src.set(snap(hacf=HACF.replace("500ms", "800ms"), authkeys=BOTH))
    assert r.reload().result is Result.RESTART_NEEDED
    assert agent.cfg is before and agent.cfg.hacf.deadtime_ms == 500
    assert r.status()["restart_needed"] == ["/etc/ha.d/ha.cf"]

    assert reloads(metrics) == {"applied": 1, "rejected": 1, "restart_needed": 1, "unchanged": 0}
    assert r.status()["reloads"] == {"applied": 1, "rejected": 1, "restart_needed": 1, "unchanged": 0}
    assert (r.status()["signing_key"], r.status()["accepted_keys"]) == (1, [1, 2])
    assert "/etc/ha.d/authkeys:3: key 2: sha1 needs a key" in caplog.text
    assert_no_key(caplog.text)


def test_reloader_poll_acts_once_a_change_holds() -> None:
    agent, metrics = FakeAgent(running(OLD)), AgentMetrics("n1", "n2")
    src = FakeSource(snap(authkeys=OLD))
    r = Reloader(src, agent, metrics)
    assert r.poll() is None  # the first look...
    p = r.poll()  # ...and the second: the files are what runs, said quietly
    assert p is not None and p.result is Result.UNCHANGED
    assert reloads(metrics)["unchanged"] == 0
    assert r.poll() is None

    src.set(snap(authkeys="auth 1\n1 sha1 old-sec"))  # caught half-written
    assert r.poll() is None
    src.set(snap(authkeys=BOTH))  # complete now, but not yet seen twice
    assert r.poll() is None
    assert sorted(agent.cfg.authkeys.keys) == [1]
    p = r.poll()
    assert p is not None and p.result is Result.APPLIED
    assert sorted(agent.cfg.authkeys.keys) == [1, 2]
    assert r.poll() is None and r.poll() is None  # acted once per change
    assert reloads(metrics) == {"applied": 1, "rejected": 0, "restart_needed": 0, "unchanged": 0}

    src.set(snap(authkeys=BOTH, mode=0o100644))  # a chmod alone is a change
    assert r.poll() is None
    p = r.poll()
    assert p is not None and p.result is Result.REJECTED
    assert r.poll() is None  # logged and counted once, not at every poll
    assert reloads(metrics)["rejected"] == 1


def test_a_sighup_after_a_polled_change_finds_nothing_new() -> None:
    agent = FakeAgent(running(OLD))
    src = FakeSource(snap(authkeys=BOTH))
    r = Reloader(src, agent)
    assert r.reload().result is Result.APPLIED
    assert r.poll() is None and r.poll() is None
    assert r.reload().result is Result.UNCHANGED


# -- the files as the agent reads them --------------------------------------------------------------
def _write(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text)
    os.chmod(path, mode)


def test_source_reads_a_plain_directory(tmp_path: Path) -> None:
    _write(tmp_path / "ha.cf", HACF, 0o644)
    _write(tmp_path / "haresources", HARES, 0o644)
    _write(tmp_path / "authkeys", BOTH, 0o640)
    s = ConfigSource(tmp_path).read()
    assert s.texts["authkeys"] == BOTH and s.paths["authkeys"] == str(tmp_path / "authkeys")
    assert s.authkeys_mode is not None and s.authkeys_mode & 0o777 == 0o640
    assert s.extras == {}
    (tmp_path / "haresources").unlink()
    gone = ConfigSource(tmp_path).read()
    assert gone.texts["haresources"] is None and gone.fingerprint() != s.fingerprint()


def test_source_follows_the_kubelet_symlink_swap(tmp_path: Path) -> None:
    """A Secret volume: `<key> -> ..data/<key>`, `..data -> ..<timestamp>`, swapped by rename."""
    keys = ("n1.ha.cf", "n1.haresources", "n1.authkeys", "n1.resource.d.web")

    def version(name: str, authkeys: str, script: str) -> None:
        d = tmp_path / name
        d.mkdir()
        for k, t in zip(keys, (HACF, HARES, authkeys, script), strict=True):
            _write(d / k, t, 0o400)
        (tmp_path / "..data_tmp").symlink_to(name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

    version("..v1", OLD, "#!/bin/sh\n")
    for k in keys:
        (tmp_path / k).symlink_to(f"..data/{k}")
    src = ConfigSource(tmp_path, "n1.")
    first = src.read()
    assert first.texts["authkeys"] == OLD and first.authkeys_mode is None  # the copy is made 0600
    assert list(first.extras) == [str(tmp_path / "n1.resource.d.web")]
    version("..v2", BOTH, "#!/bin/sh\n")
    second = src.read()
    assert second.texts["authkeys"] == BOTH and second.extras == first.extras
    version("..v3", BOTH, "#!/bin/sh\nexit 0\n")
    assert src.read().extras != first.extras


def test_reloader_keeps_the_materialized_copy_in_step(tmp_path: Path) -> None:
    secret, copy = tmp_path / "secret", tmp_path / "ha.d"
    secret.mkdir()
    copy.mkdir()
    for name, text in (("ha.cf", HACF), ("haresources", HARES), ("authkeys", OLD)):
        _write(secret / f"n1.{name}", text, 0o400)
        _write(copy / name, text)
    cfg = parse_snapshot(ConfigSource(copy).read(), copy)
    assert isinstance(cfg, ClusterConfig)
    agent = FakeAgent(cfg)
    r = Reloader(ConfigSource(secret, "n1."), agent)
    _write(secret / "n1.authkeys", BOTH, 0o400)
    assert r.reload().result is Result.APPLIED
    assert (copy / "authkeys").read_text() == BOTH
    assert os.stat(copy / "authkeys").st_mode & 0o777 == 0o600
    assert agent.cfg.directory == copy
    keys, _ = parse_authkeys(BOTH)
    assert agent.cfg.authkeys == keys
