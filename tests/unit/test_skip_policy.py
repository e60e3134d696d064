"""In CI a skip is a failure that names what was missing; the allow-list is the only way out."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).resolve().parents[1] / "conftest.py").read_text()
SKIPPING = """
import pytest

def test_needs_nft():
    pytest.skip("nft not installed (Debian package nftables (./dev setup installs it))")

def test_runs():
    pass
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> pytest.RunResult:
    for name in ("CI", "HACLUSTER_REQUIRE_ALL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_tools=SKIPPING)
    return pytester.runpytest_inprocess("-ra")


def test_in_ci_a_skip_fails_and_names_what_is_missing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pytester.path / "allowed-skips.txt").write_text("# none\n")
    result = _run(pytester, monkeypatch, {"CI": "true"})
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*nft not installed (Debian package nftables*"])


def test_require_all_is_the_same_outside_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pytester.path / "allowed-skips.txt").write_text("")
    _run(pytester, monkeypatch, {"HACLUSTER_REQUIRE_ALL": "1"}).assert_outcomes(passed=1, failed=1)


def test_on_a_laptop_it_skips_loudly(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    (pytester.path / "allowed-skips.txt").write_text("")
    result = _run(pytester, monkeypatch, {"CI": "false"})
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*1 SKIPPED: they proved nothing*", "*1 x nft not installed*"])


def test_a_listed_skip_with_a_reason_is_allowed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pytester.path / "allowed-skips.txt").write_text("test_tools.py::test_needs_nft a reviewer agreed\n")
    _run(pytester, monkeypatch, {"CI": "true"}).assert_outcomes(passed=1, skipped=1)


def test_a_listed_skip_without_a_reason_is_refused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pytester.path / "allowed-skips.txt").write_text("test_tools.py::test_needs_nft\n")
    result = _run(pytester, monkeypatch, {"CI": "true"})
    result.stdout.fnmatch_lines(["*allowed-skips.txt:1: 'test_tools.py::test_needs_nft' has no reason*"])
    assert result.ret != 0
