"""Re-read the config while running, as Heartbeat 3.0.6 re-reads authkeys on SIGHUP (a "reload").

This is how keys are rotated without a restart, and so without a failover: authkeys is applied
live (the key the codec signs with and the keys it accepts). ha.cf and haresources cannot change
under a running pair: when they differ from what runs, one warning says a restart is needed and
the agent keeps running as it was. A reload whose files are invalid (a parse error, authkeys
readable by others, a missing file) is rejected as a whole and the running config stays.

The decision is pure: `plan(running config, Snapshot of the files)` → `Plan` (tested without
I/O). `ConfigSource` reads the files: a plain /etc/ha.d, or the operator's Secret volume with
`--config-prefix` (files swapped by the kubelet through the `..data` symlink). `Reloader` reloads
on SIGHUP at once, and by itself when the files' content changes (a poll every second, acting once
a change has held for one poll so a half-written file is not taken), and installs a Plan.

A key never reaches a log line: the authkeys parser never quotes a word that may be a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from hacluster_api.agentconfig import AGENT_CONFIG_FILE
from hacluster_api.heartbeat.authkeys import AuthKeys, write_secret_file
from hacluster_api.heartbeat.directory import FILES, ClusterConfig, parse_texts
from hacluster_api.heartbeat.issues import Finding, Severity

log = logging.getLogger("hacluster.reload")

POLL_INTERVAL = 1.0  # a change is acted on after it held for one poll: within ~2 s


class Result(StrEnum):
    APPLIED = "applied"  # authkeys changed and is in force
    REJECTED = "rejected"  # invalid files: nothing changed
    RESTART_NEEDED = "restart_needed"  # ha.cf/haresources (or scripts of a Secret) changed: not applied
    UNCHANGED = "unchanged"  # the files mean what runs


RESULTS = tuple(r.value for r in Result)


@dataclass(frozen=True)
class Snapshot:
    """The config files as read at one moment: what a reload decides from."""

    texts: Mapping[str, str | None] = field(repr=False)  # by file name; None: could not be read
    paths: Mapping[str, str]  # by file name: the path findings and log lines name
    unreadable: Mapping[str, str] = field(default_factory=dict)  # by file name: why
    authkeys_mode: int | None = None  # st_mode, when Heartbeat's 0600 rule applies to what was read
    extras: Mapping[str, str] = field(default_factory=dict)  # files read only at start: path -> digest

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name in FILES:
            text = self.texts.get(name)
            h.update(f"{name}\0{'-' if text is None else '+'}{len(text or '')}\0".encode())
            h.update((text or "").encode("utf-8", "surrogateescape"))
        h.update(f"\0mode {self.authkeys_mode}\0".encode())
        for path, digest in sorted(self.extras.items()):
            h.update(f"{path}\0{digest}\0".encode())
        return h.hexdigest()


@dataclass(frozen=True)
class Plan:
    """What one reload does. `authkeys` set: install those keys now (the rest stays)."""

    result: Result
    authkeys: AuthKeys | None = None
    authkeys_path: str = "authkeys"
    restart: tuple[str, ...] = ()  # changed files that only a restart applies (as named in `paths`)
    errors: tuple[Finding, ...] = ()
    warnings: tuple[Finding, ...] = ()

    def lines(self, trigger: str) -> list[tuple[int, str]]:
        """The log lines (level, text) for this reload. Never a key: indices and methods only."""
        head = f"config reload ({trigger})"
        if self.result is Result.REJECTED:
            found = "; ".join(str(f) for f in self.errors)
            return [(logging.ERROR, f"{head} rejected, the running config is kept: {found}")]
        out = [(logging.WARNING, f"{head}: {w}") for w in self.warnings]
        if self.authkeys is not None:
            k = self.authkeys
            accepted = ", ".join(str(i) for i in sorted(k.keys))
            out.append((logging.INFO, f"{head}: {self.authkeys_path} applied: signing with key {k.active} "
                                      f"({k.signing_key.method}), accepting keys {accepted}"))  # fmt: skip
        if self.restart:
            files = ", ".join(self.restart)
            out.append((logging.WARNING, f"{head}: {files} changed: a restart of the agent is needed to "
                                         "apply it; running unchanged with the config it started with"))  # fmt: skip
        if self.result is Result.UNCHANGED:
            out.append((logging.INFO, f"{head}: nothing to apply, the files mean what runs"))
        return out


# -- the pure part --------------------------------------------------------------------------------
def parse_snapshot(snap: Snapshot, directory: Path) -> ClusterConfig | list[Finding]:
    """The files as a ClusterConfig (as `load_directory` checks them), or every finding (errors
    and warnings) when they are not valid. Findings about authkeys never quote a word of it."""
    missing = [
        Finding(snap.paths[n], None, f"cannot read: {snap.unreadable.get(n, 'missing')}")
        for n in FILES
        if snap.texts.get(n) is None
    ]
    if missing:
        return missing
    texts = {n: snap.texts[n] or "" for n in FILES}
    return parse_texts(directory, texts, snap.paths, snap.authkeys_mode)


def plan(running: ClusterConfig, snap: Snapshot, started_extras: Mapping[str, str] | None = None) -> Plan:
    """Compare the running config with the files: apply authkeys, name what needs a restart, or
    reject the whole reload. `started_extras`: the digests of `snap.extras` when the agent started."""
    parsed = parse_snapshot(snap, running.directory)
    if not isinstance(parsed, ClusterConfig):
        errors = tuple(f for f in parsed if f.severity is Severity.ERROR)
        return Plan(Result.REJECTED, errors=errors)
    changed: list[str] = []
    if parsed.hacf != running.hacf:
        changed.append("ha.cf")
    if parsed.haresources != running.haresources:
        changed.append("haresources")
    keys = parsed.authkeys if parsed.authkeys != running.authkeys else None
    restart = [snap.paths[n] for n in changed]
    if started_extras is not None:
        restart += _changed_extras(started_extras, snap.extras)
    shown = {snap.paths[n] for n in changed + (["authkeys"] if keys is not None else [])}
    warnings = tuple(w for w in parsed.warnings if w.file in shown)
    if restart:
        result = Result.RESTART_NEEDED
    elif keys is not None:
        result = Result.APPLIED
    else:
        result = Result.UNCHANGED
    return Plan(result, keys, snap.paths["authkeys"], tuple(restart), warnings=warnings)


def _changed_extras(before: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    return sorted(p for p in set(before) | set(now) if before.get(p) != now.get(p))


# -- I/O ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConfigSource:
    """Where the agent's files come from: `directory/ha.cf`…, or with a prefix (the operator's
    Secret volume) `directory/<prefix>ha.cf`… and `<prefix>resource.d.<script>`, which the agent
    copied at start (so a change of a script needs a restart too)."""

    directory: Path
    prefix: str = ""

    def path(self, name: str) -> Path:
        return self.directory / f"{self.prefix}{name}"

    def read(self) -> Snapshot:
        texts: dict[str, str | None] = {}
        unreadable: dict[str, str] = {}
        for name in FILES:
            try:
                texts[name] = self.path(name).read_text(encoding="utf-8", errors="replace")
            except OSError as e:
                texts[name] = None
                unreadable[name] = e.strerror or type(e).__name__
        mode = None
        if not self.prefix and texts["authkeys"] is not None:
            # A Secret volume's modes are the kubelet's; the agent copies authkeys 0600 (materialize).
            try:
                mode = os.stat(self.path("authkeys")).st_mode
            except OSError as e:
                texts["authkeys"] = None
                unreadable["authkeys"] = e.strerror or type(e).__name__
        paths = {n: str(self.path(n)) for n in FILES}
        return Snapshot(texts, paths, unreadable, mode, self.read_extras())

    def read_extras(self) -> dict[str, str]:
        """Files read once at start: agent.json, and a Secret's scripts (copied by materialize)."""
        out: dict[str, str] = {}
        agent = self.path(AGENT_CONFIG_FILE)
        if agent.exists():
            try:
                out[str(agent)] = hashlib.sha256(agent.read_bytes()).hexdigest()
            except OSError as e:
                out[str(agent)] = f"unreadable: {e.strerror}"
        if not self.prefix:
            return out  # resource.d scripts are run from where they are: a change needs no restart
        marker = f"{self.prefix}resource.d."
        with contextlib.suppress(OSError):
            for p in sorted(self.directory.iterdir()):
                if p.name.startswith(marker):
                    try:
                        out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
                    except OSError as e:
                        out[str(p)] = f"unreadable: {e.strerror}"
        return out


class Source(Protocol):
    """What the Reloader reads (a ConfigSource; a fake in tests)."""

    @property
    def prefix(self) -> str: ...

    def read(self) -> Snapshot: ...

    def read_extras(self) -> dict[str, str]: ...


class HasConfig(Protocol):
    cfg: ClusterConfig


class ReloadMetrics(Protocol):
    def config_reload(self, result: str) -> None: ...

    def set_auth(self, keys: AuthKeys) -> None: ...


class Reloader:
    """Runs reloads for one agent: `reload()` (SIGHUP), `poll()` (file changes), `run()` both."""

    def __init__(
        self,
        source: Source,
        agent: HasConfig,
        metrics: ReloadMetrics | None = None,
        *,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self.source, self.agent, self.metrics, self.interval = source, agent, metrics, interval
        self.started_extras = source.read_extras()
        self.seen: str | None = None  # fingerprint last acted on (None: not yet compared)
        self.pending: str | None = None  # a new fingerprint seen once, acted on if it holds
        self.counts: dict[str, int] = dict.fromkeys(RESULTS, 0)
        self.restart_needed: tuple[str, ...] = ()
        self.last: dict[str, Any] | None = None
        self._hup = asyncio.Event()
        if metrics is not None:
            metrics.set_auth(agent.cfg.authkeys)

    def request(self) -> None:
        """SIGHUP: reload as soon as the loop runs."""
        self._hup.set()

    def reload(self, trigger: str = "SIGHUP") -> Plan:
        snap = self.source.read()
        self.seen, self.pending = snap.fingerprint(), None
        return self._apply(snap, trigger)

    def poll(self) -> Plan | None:
        """One look at the files: a Plan when they changed and held still since the last look."""
        snap = self.source.read()
        fp = snap.fingerprint()
        if fp == self.seen:
            self.pending = None
            return None
        if fp != self.pending:
            self.pending = fp
            return None
        first = self.seen is None
        self.seen, self.pending = fp, None
        return self._apply(snap, "files changed", quiet_if_unchanged=first)

    def _apply(self, snap: Snapshot, trigger: str, *, quiet_if_unchanged: bool = False) -> Plan:
        p = plan(self.agent.cfg, snap, self.started_extras)
        if p.authkeys is not None:
            self.agent.cfg = dataclasses.replace(self.agent.cfg, authkeys=p.authkeys)
            if self.metrics is not None:
                self.metrics.set_auth(p.authkeys)
            self._persist(snap)
        if p.result is not Result.REJECTED:
            self.restart_needed = p.restart
        if quiet_if_unchanged and p.result is Result.UNCHANGED:
            return p  # the first look after start: the files are what was loaded
        for level, text in p.lines(trigger):
            log.log(level, text)
        self.counts[p.result.value] += 1
        self.last = {"result": p.result.value, "trigger": trigger, "at": time.time()}
        if self.metrics is not None:
            self.metrics.config_reload(p.result.value)
        return p

    def _persist(self, snap: Snapshot) -> None:
        """With a prefix the agent runs from its own copy (kube/config.py): keep its authkeys
        what runs, for `hactl check-config` on it."""
        text = snap.texts.get("authkeys")
        if not self.source.prefix or text is None:
            return
        try:
            write_secret_file(self.agent.cfg.directory / "authkeys", text)
        except OSError as e:
            log.warning("cannot update %s: %s", self.agent.cfg.directory / "authkeys", e.strerror)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hup.wait(), self.interval)
            try:
                if self._hup.is_set():
                    self._hup.clear()
                    self.reload("SIGHUP")
                else:
                    self.poll()
            except Exception as e:  # a bug guard: the loop must survive; no message (it may quote)
                log.error("config reload failed: %s", type(e).__name__)
                self.counts[Result.REJECTED.value] += 1
                if self.metrics is not None:
                    self.metrics.config_reload(Result.REJECTED.value)

    def status(self) -> dict[str, Any]:
        """For `hactl status`: key indices (never keys), reload counts, what awaits a restart."""
        keys = self.agent.cfg.authkeys
        return {
            "signing_key": keys.active,
            "accepted_keys": sorted(keys.keys),
            "reloads": dict(self.counts),
            "last_reload": self.last,
            "restart_needed": list(self.restart_needed),
        }
