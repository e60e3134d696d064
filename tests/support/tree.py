"""The source tree the tests come from, for the programs they start (the operator, the agents).

A test or campaign run from a git worktree must run that worktree's code: without this, a child
started with its own environment imports whatever the venv's editable install points at (the
main checkout, perhaps mid-edit)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pythonpath() -> str:
    return os.pathsep.join(str(REPO / d) for d in ("api", "node-agent", "operator"))


def environ() -> dict[str, str]:
    """This process's environment, its PYTHONPATH replaced by the tree's packages."""
    return {**os.environ, "PYTHONPATH": pythonpath()}
