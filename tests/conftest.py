"""Suite-wide rule: in CI a test that cannot run fails; it never skips quietly.

A skip for a missing tool, privilege, the real Heartbeat or the API server proves nothing, and
a green run that skipped its interop tests tells nobody. With ``CI`` set (as ``.ci/run`` runs)
or ``HACLUSTER_REQUIRE_ALL=1``, every skip becomes a failure that names what was missing, unless
the test is listed, with its reason, in ``tests/allowed-skips.txt``. Elsewhere skips stay skips,
but the summary says loudly how many there were and why.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Generator
from pathlib import Path

import pytest

from tests.support.strict import require_all

ALLOWED_SKIPS = Path(__file__).with_name("allowed-skips.txt")


def _allowed() -> list[tuple[str, str]]:
    """(node id pattern, reason) pairs; a line without a reason is an error, not an allowance."""
    out: list[tuple[str, str]] = []
    for n, raw in enumerate(ALLOWED_SKIPS.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, reason = line.partition(" ")
        if not reason.strip():
            raise pytest.UsageError(f"{ALLOWED_SKIPS}:{n}: '{pattern}' has no reason")
        out.append((pattern, reason.strip()))
    return out


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or not require_all():
        return
    if any(fnmatch.fnmatchcase(item.nodeid, pattern) for pattern, _ in _allowed()):
        return
    reason = _skip_reason(report)
    report.outcome = "failed"
    report.longrepr = (
        f"would have skipped, but this run requires every test to run (CI or HACLUSTER_REQUIRE_ALL=1): "
        f"{reason}\nInstall what is missing (./dev setup), or list this test in "
        f"{ALLOWED_SKIPS.relative_to(ALLOWED_SKIPS.parents[1])} with a reason a reviewer accepts."
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped and not require_all():
        terminalreporter.write_sep("!", f"{len(skipped)} SKIPPED: they proved nothing", red=True, bold=True)
        reasons: dict[str, int] = {}
        for rep in skipped:
            reasons[_skip_reason(rep)] = reasons.get(_skip_reason(rep), 0) + 1
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"  {count:4d} x {reason}")
        terminalreporter.write_line("  CI fails on these; ./dev setup installs what they need.")
