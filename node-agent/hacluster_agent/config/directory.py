"""Load a Heartbeat config directory (ha.cf, haresources, authkeys) and check the files agree."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .authkeys import AuthKeys, check_authkeys_mode, parse_authkeys
from .hacf import parse_hacf
from .hacf_model import HaCf
from .haresources import parse_haresources
from .haresources_model import HaResources
from .issues import ConfigError, Finding, Findings


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
    for name in ("ha.cf", "haresources", "authkeys"):
        path = d / name
        try:
            texts[name] = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            findings.append(Finding(str(path), None, f"cannot read: {e.strerror or e}"))
    if findings:
        raise ConfigError(findings)
    hacf, f1 = parse_hacf(texts["ha.cf"], str(d / "ha.cf"))
    res, f2 = parse_haresources(texts["haresources"], str(d / "haresources"), hacf.nodes if hacf else None)
    keys, f3 = parse_authkeys(texts["authkeys"], str(d / "authkeys"))
    mode = Findings(str(d / "authkeys"))
    check_authkeys_mode(d / "authkeys", mode)
    findings = f1.items + f2.items + f3.items + mode.items
    if hacf is None or res is None or keys is None or mode.errors:
        raise ConfigError(findings)
    return ClusterConfig(d, hacf, res, keys, [f for f in findings if f.severity.value == "warning"])
