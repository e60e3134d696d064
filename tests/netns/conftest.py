"""Fixtures for tests that build network namespaces (marker ``netns``)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest

from tests.support import hosttools, netns
from tests.support.lab import Lab


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


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A built Lab (namespaces sw, n1, n2, client); `indirect` parametrisation passes Lab's fields.
    Its agents' logs are printed (pytest shows them when the test failed)."""
    if reason := hosttools.lab_unavailable():
        pytest.skip(reason)
    with Lab(**getattr(request, "param", {})) as lab:
        try:
            yield lab
        finally:
            # A stopped (SIGSTOP) agent must run again to be killed cleanly by the Lab's teardown.
            for proc in lab.procs.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
            print("n1 log:\n", lab.agent_log("n1")[-4000:], "\nn2 log:\n", lab.agent_log("n2")[-4000:])
