"""The operator and the agent share one API package and nothing else: each, imported whole in a fresh
interpreter, loads hacluster_api but never the other (CloudNativePG's `api/v1` is the model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"hacluster_api": "api", "hacluster_agent": "node-agent", "hacluster_operator": "operator"}

LOADED = """
import importlib, json, pkgutil, sys
top = importlib.import_module(sys.argv[1])
for m in pkgutil.walk_packages(top.__path__, sys.argv[1] + "."):
    importlib.import_module(m.name)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules if name.startswith("hacluster_")})))
"""


def _loaded_by(package: str) -> set[str]:
    """The hacluster_* packages in sys.modules after importing every module of `package`."""
    path = os.pathsep.join(str(REPO / d) for d in PACKAGES.values())
    out = subprocess.run(
        [sys.executable, "-c", LOADED, package],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": path},
        cwd=REPO,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("package", "other"),
    [("hacluster_agent", "hacluster_operator"), ("hacluster_operator", "hacluster_agent")],
)
def test_each_side_loads_the_api_but_never_the_other(package: str, other: str) -> None:
    loaded = _loaded_by(package)
    assert "hacluster_api" in loaded, loaded
    assert other not in loaded, f"importing {package} loaded {other}"


def test_the_api_loads_neither_side() -> None:
    assert _loaded_by("hacluster_api") == {"hacluster_api"}
