"""Whether this run must run every test (CI) or may skip what this machine cannot run."""

from __future__ import annotations

import os

_FALSE = ("", "0", "false", "no")


def require_all() -> bool:
    """True in CI (``CI`` set and not false, as ``.ci/run`` runs) or with ``HACLUSTER_REQUIRE_ALL=1``:
    then a test that would skip for something missing fails instead (tests/conftest.py)."""
    return (
        os.environ.get("CI", "").strip().lower() not in _FALSE
        or os.environ.get("HACLUSTER_REQUIRE_ALL", "") == "1"
    )
