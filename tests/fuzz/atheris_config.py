#!/usr/bin/env python3
"""Coverage-guided fuzzing of the ha.cf, haresources and authkeys parsers with atheris/libFuzzer.

    .venv/bin/python tests/fuzz/atheris_config.py -atheris_runs=100000
    .venv/bin/python tests/fuzz/atheris_config.py -max_total_time=300

Seeds (tests/fuzz/corpus/config-seed/, rewritten at start): tests/data/article, the captures'
ha.cf/haresources/authkeys (meta.json) and the unit test samples. Findings go to
tests/fuzz/corpus/config/. Neither is committed.

An input is one selector byte (which parser) and the file's bytes, read as load_directory reads
them (UTF-8, undecodable bytes replaced). The contract: never an exception; every finding names the
file and a line that exists in it (or None), with a message; a model iff no errors; what parses
renders back to the same model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "api"), str(ROOT / "node-agent")]

import pydantic  # noqa: E402,F401  (imported before instrumentation: only our code is instrumented)

with atheris.instrument_imports(include=["hacluster_agent"]):
    from hacluster_api.heartbeat.authkeys import render_authkeys
    from hacluster_api.heartbeat.hacf import render_hacf
    from hacluster_api.heartbeat.haresources import render_haresources

from tests.fuzz.support import CAPTURES, CORPUS, PARSERS, SEEDS, check_config  # noqa: E402

KINDS = list(PARSERS)
RENDER: dict[str, Callable[[Any], str]] = {
    "ha.cf": render_hacf,
    "haresources": render_haresources,
    "authkeys": render_authkeys,
}


def write_seeds(seed_dir: Path) -> int:
    seed_dir.mkdir(parents=True, exist_ok=True)
    texts: dict[str, set[str]] = {kind: set(SEEDS[kind]) for kind in KINDS}
    for meta in CAPTURES.glob("*/meta.json"):
        m = json.loads(meta.read_text())
        texts["ha.cf"].update(m["ha.cf"].values() if isinstance(m["ha.cf"], dict) else [m["ha.cf"]])
        texts["authkeys"].add(m["authkeys"] if isinstance(m["authkeys"], str) else "")
        if m.get("haresources"):
            texts["haresources"].add(m["haresources"])
    n = 0
    for selector, kind in enumerate(KINDS):
        for text in sorted(texts[kind]):
            (seed_dir / f"{n:03d}").write_bytes(bytes([selector]) + text.encode())
            n += 1
    return n


def test_one_input(data: bytes) -> None:
    if not data:
        return
    kind = KINDS[data[0] % len(KINDS)]
    text = data[1:].decode("utf-8", errors="replace")
    model = check_config(kind, text)
    render = RENDER.get(kind)
    if model is not None and render is not None:
        again = check_config(kind, render(model))
        ignore = {"udpport", "baud"} if kind == "ha.cf" else set()
        assert again is not None and again.model_dump(exclude=ignore) == model.model_dump(exclude=ignore)


def main() -> None:
    seed_dir, out_dir = CORPUS / "config-seed", CORPUS / "config"
    out_dir.mkdir(parents=True, exist_ok=True)
    n = write_seeds(seed_dir)
    args = list(sys.argv)
    if not any(a.startswith("-artifact_prefix=") for a in args):  # crash-* files next to this file
        args.insert(1, f"-artifact_prefix={Path(__file__).parent}/")
    if not any(not a.startswith("-") for a in args[1:]):
        args += [str(out_dir), str(seed_dir)]
    print(f"atheris_config: {n} seeds in {seed_dir}", file=sys.stderr)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
