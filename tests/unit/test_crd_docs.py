"""docs/crd-reference.md is generated from the models: it may not drift from them."""

from __future__ import annotations

from pathlib import Path

from hacluster_operator.crd_docs import reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "crd-reference.md"


def test_crd_reference_is_current() -> None:
    assert DOC.read_text() == reference(), (
        "run: python -m hacluster_operator.crd_docs > docs/crd-reference.md"
    )


def test_reference_lists_the_rules_users_hit() -> None:
    text = reference()
    for needle in (
        "deadtime must be more than twice keepalive",
        "spec.heartbeat.keepalive",
        "spec.failover.switchoverTo",
        "status.epoch",
    ):
        assert needle in text
