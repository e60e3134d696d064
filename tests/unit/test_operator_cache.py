"""The operator's watch cache (kube.Cache): a watched kind is answered from the watch, a Secret or
ConfigMap is fetched once per version and only if read; nothing else is cached."""

from __future__ import annotations

import asyncio
from typing import Any

from hacluster_operator.kube import Cache, Kube, lease_path, secret_path


class FakeApi:
    """Counts what reached the server (Kube.request is replaced: no HTTP here)."""


def kube_with(cache: Cache, served: dict[str, dict[str, Any]]) -> tuple[Kube, list[str]]:
    kube = Kube(FakeApi(), cache=cache)  # type: ignore[arg-type]
    sent: list[str] = []

    async def request(method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        sent.append(f"{method} {path}")
        return served[path]

    kube.request = request  # type: ignore[method-assign]
    return kube, sent


def test_a_watched_object_is_read_from_the_watch_and_a_missing_one_is_missing() -> None:
    lease = {"metadata": {"name": "web", "resourceVersion": "7"}}
    cache = Cache({"leases": {lease_path("ha", "web"): [lease]}}, {})
    kube, sent = kube_with(cache, {})
    got = asyncio.run(kube.get_lease("ha", "web"))
    assert got == lease and got is not lease  # a copy: the caller may change it
    assert asyncio.run(kube.get_lease("ha", "gone")) is None
    assert sent == []


def test_a_secret_is_fetched_once_per_version_it_has() -> None:
    path = secret_path("ha", "web-auth")
    versions: dict[str, list[str]] = {path: ["1"]}
    served = {path: {"metadata": {"name": "web-auth", "resourceVersion": "1"}, "data": {"k": "djE="}}}
    kube, sent = kube_with(Cache({}, {"secrets": versions}), served)
    for _ in range(3):
        assert asyncio.run(kube.get(path)) == served[path]
    assert sent == [f"GET {path}"]
    versions[path] = ["2"]  # the watch saw a change: read it again, once
    served[path] = {"metadata": {"name": "web-auth", "resourceVersion": "2"}, "data": {"k": "djI="}}
    assert asyncio.run(kube.get(path)) == served[path]
    assert asyncio.run(kube.get(path)) == served[path]
    assert sent == [f"GET {path}"] * 2
    del versions[path]  # deleted
    assert asyncio.run(kube.get(path)) is None
    assert path not in kube.cache.fetched  # type: ignore[union-attr]


def test_a_fresh_read_and_an_unwatched_kind_go_to_the_server() -> None:
    lease = {"metadata": {"name": "web", "resourceVersion": "7"}}
    newer = {"metadata": {"name": "web", "resourceVersion": "8"}}
    node = "/api/v1/nodes/n1"
    kube, sent = kube_with(Cache({"leases": {lease_path("ha", "web"): [lease]}}, {}), {
        lease_path("ha", "web"): newer, node: {"metadata": {"name": "n1"}},
    })  # fmt: skip
    assert asyncio.run(kube.get_lease("ha", "web", fresh=True)) == newer
    assert asyncio.run(kube.get(node)) == {"metadata": {"name": "n1"}}
    assert sent == [f"GET {lease_path('ha', 'web')}", f"GET {node}"]
