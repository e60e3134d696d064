"""Fixtures for tests against the real Heartbeat 3.0.6 daemon (markers ``netns``, ``interop``).

``hb_factory(node, host, ha_cf, ...)`` creates a :class:`RealHeartbeat` in a host namespace
and closes it (killing every process, removing its directory) at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest

from tests.support import netns
from tests.support.realheartbeat import (
    RealHeartbeat,
    authkeys_text,
    ha_cf_text,
    heartbeat_available,
)

HbFactory = Callable[..., RealHeartbeat]

SHA1_KEY = "interop-test-key"


@pytest.fixture
def heartbeat_ok() -> None:
    reason = netns.netns_available() or heartbeat_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def net2(heartbeat_ok: None) -> Iterator[netns.Network]:
    with netns.network(2) as net:
        yield net


@pytest.fixture
def hb_factory(heartbeat_ok: None) -> Iterator[HbFactory]:
    made: list[RealHeartbeat] = []

    def make(
        node: str,
        host: netns.Host,
        ha_cf: str,
        authkeys: str = authkeys_text("sha1", SHA1_KEY),
        haresources: str = "",
        resource_scripts: Mapping[str, str] | None = None,
    ) -> RealHeartbeat:
        hb = RealHeartbeat(host.ns, node, ha_cf, authkeys, haresources, resource_scripts)
        made.append(hb)
        return hb

    yield make
    for hb in reversed(made):
        hb.close()


@pytest.fixture
def ucast_pair(net2: netns.Network, hb_factory: HbFactory) -> tuple[RealHeartbeat, RealHeartbeat]:
    """hb1 on net2[0], hb2 on net2[1]: ucast over eth0, sha1, keepalive 1 s, deadtime 5 s.
    Not started."""
    a, b = net2[0], net2[1]
    hb1 = hb_factory("hb1", a, ha_cf_text(media=[f"ucast eth0 {b.ip}"]))
    hb2 = hb_factory("hb2", b, ha_cf_text(media=[f"ucast eth0 {a.ip}"]))
    return hb1, hb2
