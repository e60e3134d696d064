"""Fixtures for tests that build network namespaces (marker ``netns``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import netns


@pytest.fixture
def netns_ok() -> None:
    """Skip unless this process can create namespaces (root, iproute2, nft)."""
    reason = netns.netns_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def net2(netns_ok: None) -> Iterator[netns.Network]:
    """Two hosts on one bridged link (192.0.2.11, 192.0.2.12)."""
    with netns.network(2) as net:
        yield net
