"""Lay out the operator-rendered Secret (keys `<node>.ha.cf`, `<node>.resource.d.<x>`…) as the
/etc/ha.d tree the agent reads everywhere else, with the modes Heartbeat expects."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hacluster_api.agentconfig import AGENT_CONFIG_FILE
from hacluster_api.heartbeat.authkeys import write_secret_file

FILES = ("ha.cf", "haresources", "authkeys")


def materialize(source: Path, prefix: str, dest: Path) -> Path:
    """Copy `<prefix>ha.cf`, `<prefix>haresources`, `<prefix>authkeys` (0600), `<prefix>agent.json`
    and `<prefix>resource.d.<name>` (0700) from a mounted Secret into `dest`. Returns `dest`.

    A Secret volume cannot carry exec bits or directories, hence the copy; the files are replaced
    as a whole, so a reader never sees a mix of two versions.
    """
    tmp = dest.with_name(dest.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "resource.d").mkdir(parents=True, mode=0o700)
    for name in FILES:
        src = source / f"{prefix}{name}"
        if not src.exists():
            raise FileNotFoundError(f"{src}: missing in the config Secret (expected key {prefix}{name})")
        text = src.read_text()
        if name == "authkeys":
            write_secret_file(tmp / name, text)
        else:
            (tmp / name).write_text(text)
    agent = source / f"{prefix}{AGENT_CONFIG_FILE}"
    if agent.exists():  # (a Secret from an operator before agent.json has none)
        (tmp / AGENT_CONFIG_FILE).write_text(agent.read_text())
    marker = f"{prefix}resource.d."
    for src in source.iterdir():
        if src.name.startswith(marker):
            script = tmp / "resource.d" / src.name[len(marker) :]
            script.write_bytes(src.read_bytes())
            os.chmod(script, 0o700)
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest
