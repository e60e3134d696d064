"""The fault campaign's short form (bench/chaos.py): every fault once on the whole product, the
invariants checked continuously; and a control run proving that the checks do catch two owners."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.apiserver.conftest import ApiServerBinaries
from tests.support import hosttools

pytestmark = [pytest.mark.apiserver, pytest.mark.netns]

REPO = Path(__file__).resolve().parents[2]


def chaos(*args: str) -> subprocess.CompletedProcess[str]:
    if reason := hosttools.lab_unavailable():
        pytest.skip(reason)
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "chaos.py"), *args],
        capture_output=True, text=True, timeout=1200, cwd=REPO,
    )  # fmt: skip


def test_every_fault_once_never_two_owners_and_service_back(
    apiserver_binary: ApiServerBinaries, tmp_path: Path
) -> None:
    r = chaos("--seed", "7", "--log-dir", str(tmp_path))
    print(r.stdout)  # the fault table, in the CI log
    # each trial that went wrong: the watchers' timeline and every log written during that trial
    logs = "".join(f"\n==== {p.name}\n" + p.read_text()[:60000] for p in sorted(tmp_path.glob("trial-*.log")))
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert last.startswith("RESULT ") and " violations=0 " in last, r.stdout + r.stderr[-4000:] + logs
    assert r.returncode == 0


def test_the_campaign_catches_two_owners(apiserver_binary: ApiServerBinaries) -> None:
    """Control: the VIP put on the standby by hand must show up as violations of both checks."""
    r = chaos("--faults", "control-split-brain", "--trials", "1", "--seed", "1")
    assert r.returncode == 1, r.stdout + r.stderr[-4000:]
    assert "both nodes held the VIP" in r.stdout, r.stdout
    assert "two MACs answered one ARP request" in r.stdout, r.stdout
