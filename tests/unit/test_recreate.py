"""The operator's rule for a missing ownership Lease (api/hacluster_api/recreate.py): above
every epoch it observed, naming the owner only when every observation agrees."""

from __future__ import annotations

from hacluster_api.recreate import Recreation, recreation


def test_a_new_cluster_gets_an_empty_lease_at_0() -> None:
    assert recreation(None, None, {}) == Recreation("", 0, 0)


def test_status_and_reports_agreeing_name_the_owner_above_the_epoch() -> None:
    r = recreation("n1", 6, {"n1": (True, 6), "n2": (False, 6)})
    assert r == Recreation("n1", 7, 6)


def test_a_report_newer_than_the_status_wins_the_epoch_and_the_owner() -> None:
    """The full stack's campaign: the status still said n2 at 2, n1 had taken at 3."""
    assert recreation("n2", 2, {"n1": (True, 3), "n2": (False, 2)}) == Recreation("n1", 4, 3)


def test_observations_that_disagree_name_nobody() -> None:
    assert recreation("n2", 3, {"n1": (True, 3)}) == Recreation("", 4, 3)
    assert recreation(None, None, {"n1": (True, 3), "n2": (True, 3)}) == Recreation("", 4, 3)
    assert recreation("n1", 2, {}) == Recreation("n1", 3, 2)
    assert recreation(None, None, {"n1": (False, 4)}) == Recreation("", 5, 4)
