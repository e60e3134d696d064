"""Load a Heartbeat config directory (ha.cf, haresources, authkeys) and check the files agree."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .authkeys import AuthKeys, authkeys_mode_problem, parse_authkeys
from .hacf import parse_hacf
from .hacf_model import HaCf
from .haresources import parse_haresources
from .haresources_model import HaResources
from .issues import ConfigError, Finding, Findings, Severity

FILES = ("ha.cf", "haresources", "authkeys")


@dataclass(frozen=True)
class ClusterConfig:
    """Everything a node agent needs from /etc/ha.d, already validated."""

    directory: Path
    hacf: HaCf
    haresources: HaResources
    authkeys: AuthKeys
    warnings: list[Finding] = field(default_factory=list)

    def peer_of(self, node: str) -> str:
        others = [n for n in self.hacf.nodes if n != node]
        if node not in self.hacf.nodes or len(others) != 1:
            raise ValueError(f"{node!r} is not one of the pair {self.hacf.nodes}")
        return others[0]


def load_directory(directory: str | Path) -> ClusterConfig:
    """Parse the three files. Raises ConfigError with every finding (file:line: message)."""
    d = Path(directory)
    findings: list[Finding] = []
    texts: dict[str, str] = {}
    for name in FILES:
        path = d / name
        try:
            texts[name] = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            findings.append(Finding(str(path), None, f"cannot read: {e.strerror or e}"))
    if findings:
        raise ConfigError(findings)
    parsed = parse_texts(d, texts, {n: str(d / n) for n in FILES}, os.stat(d / "authkeys").st_mode)
    if not isinstance(parsed, ClusterConfig):
        raise ConfigError(parsed)
    return parsed


def parse_texts(
    directory: Path, texts: Mapping[str, str], paths: Mapping[str, str], authkeys_mode: int | None
) -> ClusterConfig | list[Finding]:
    """The three files' texts (by name in FILES) as a ClusterConfig, or every finding (errors and
    warnings) when they are not valid. `paths` name the files in findings; `authkeys_mode` (st_mode)
    None: Heartbeat's 0600 rule is not checked."""
    hacf, f1 = parse_hacf(texts["ha.cf"], paths["ha.cf"])
    res, f2 = parse_haresources(texts["haresources"], paths["haresources"], hacf.nodes if hacf else None)
    keys, f3 = parse_authkeys(texts["authkeys"], paths["authkeys"])
    mode = Findings(paths["authkeys"])
    problem = authkeys_mode_problem(authkeys_mode) if authkeys_mode is not None else None
    if problem is not None:
        mode.error(None, problem)
    findings = f1.items + f2.items + f3.items + mode.items
    if hacf is None or res is None or keys is None or mode.errors:
        return findings
    return ClusterConfig(directory, hacf, res, keys, [f for f in findings if f.severity is Severity.WARNING])
