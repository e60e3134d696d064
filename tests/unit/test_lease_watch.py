"""The operator's Lease watch when its stream breaks: it goes on from the last event it handed
over, never from where the stream began (the server would replay minutes of renewals, old over
new in the cache meanwhile), and a 410 in the stream means a new list."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from hacluster_operator.kube import lease_path
from hacluster_operator.leasewatch import LeaseWatch


def event(kind: str, name: str, version: str, holder: str = "n1") -> bytes:
    obj = {"metadata": {"name": name, "namespace": "ha", "resourceVersion": version},
           "spec": {"holderIdentity": holder}}  # fmt: skip
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


class Stream:
    status = 200

    def __init__(self, chunks: list[bytes], then: BaseException | None = None) -> None:
        self.chunks, self.then, self.closed = chunks, then, False
        self.response = self

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        yield from self.chunks
        if self.then is not None:
            raise self.then

    def close(self) -> None:
        self.closed = True


def watch_with(streams: list[Stream]) -> tuple[LeaseWatch, list[str]]:
    seen: list[str] = []
    watch = LeaseWatch(
        None, ["ha"], "x=y", lambda kind, obj: seen.append(f"{kind} {obj['metadata']['name']}")
    )  # type: ignore[arg-type]
    asked: list[str] = []

    def get(path: str, **_: Any) -> Stream:
        asked.append(path)
        return streams.pop(0)

    watch._get = get  # type: ignore[method-assign]
    watch._post = lambda fn, *args: fn(*args)  # type: ignore[method-assign]
    watch.asked = asked  # type: ignore[attr-defined]
    return watch, seen


def test_a_broken_stream_goes_on_from_the_last_event_handed_over() -> None:
    broken = Stream([event("MODIFIED", "web-n1", "11") + event("MODIFIED", "web-n2", "12")],
                    then=ConnectionResetError("reset by peer"))  # fmt: skip
    watch, seen = watch_with([broken])
    watch._versions["ha"] = "10"
    with pytest.raises(ConnectionResetError):
        watch._watch("ha")
    assert seen == ["MODIFIED web-n1", "MODIFIED web-n2"]
    assert watch._versions["ha"] == "12" and broken.closed
    assert set(watch.store) == {lease_path("ha", "web-n1"), lease_path("ha", "web-n2")}


def test_a_bookmark_moves_the_version_and_a_410_in_the_stream_asks_for_a_list() -> None:
    gone = json.dumps({"type": "ERROR", "object": {"code": 410, "message": "too old"}}).encode() + b"\n"
    watch, seen = watch_with(
        [Stream([event("BOOKMARK", "", "20")]), Stream([event("ADDED", "db-n1", "21") + gone])]
    )
    watch._versions["ha"] = "10"
    watch._watch("ha")
    assert watch._versions["ha"] == "20" and seen == []
    watch._watch("ha")
    assert seen == ["ADDED db-n1"] and watch._versions["ha"] == ""  # the next round lists again
    assert "resourceVersion=20" in watch.asked[1]  # type: ignore[attr-defined]
