"""The operator's own metrics, as a scrape shows them."""

from __future__ import annotations

import gc

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hacluster_operator.metrics import OperatorMetrics


def scrape(m: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(m.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_full_garbage_collection_shows_as_a_pause_of_generation_2() -> None:
    m = OperatorMetrics()
    m.watch_gc()
    try:
        before = scrape(m).get(("hacluster_operator_gc_pause_seconds_count", (("generation", "2"),)), 0.0)
        gc.collect()
        after = scrape(m)
    finally:
        gc.callbacks.remove(m._on_gc)
    assert after[("hacluster_operator_gc_pause_seconds_count", (("generation", "2"),))] == before + 1
    assert after[("hacluster_operator_gc_pause_seconds_sum", (("generation", "2"),))] > 0
