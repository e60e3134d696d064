"""The three config parsers on random and mutated text (seeds: tests/data/article and the unit test
samples). Never a traceback: every fault is a finding naming the file and a line that exists in
the file (None for whole-file faults), with a message. A file that parses renders back to itself."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hacluster_api.heartbeat.authkeys import render_authkeys
from hacluster_api.heartbeat.directory import load_directory
from hacluster_api.heartbeat.hacf import render_hacf
from hacluster_api.heartbeat.haresources import render_haresources
from hacluster_api.heartbeat.issues import ConfigError, Severity
from tests.fuzz.support import (
    AUTHKEYS_SEEDS,
    DIRECTIVES,
    HACF_SEEDS,
    HARESOURCES_SEEDS,
    PARSERS,
    SEEDS,
    TRICKY_WORDS,
    budget,
    check_config,
)

SETTINGS = settings(max_examples=budget(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
check = check_config


word_st = st.one_of(
    st.sampled_from(TRICKY_WORDS),
    st.sampled_from(DIRECTIVES),
    st.text(max_size=8),
    st.integers(-5, 2**70).map(str),
)
line_st = st.lists(word_st, min_size=0, max_size=6).map(" ".join)


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[str, ...]) -> str:
    lines = draw(st.sampled_from(seeds)).split("\n")
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["insert", "delete", "dup", "word", "char", "join", "split"]))
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if op == "insert":
            lines.insert(i, draw(line_st))
        elif op == "delete" and lines:
            del lines[i]
        elif op == "dup" and lines:
            lines.insert(i, lines[i])
        elif op == "word" and lines:
            words = lines[i].split(" ")
            words[draw(st.integers(0, len(words) - 1))] = draw(word_st)
            lines[i] = " ".join(words)
        elif op == "char" and lines:
            p = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:p] + draw(st.sampled_from(TRICKY_WORDS) | st.characters()) + lines[i][p:]
        elif op == "join" and len(lines) > i + 1:
            lines[i : i + 2] = [lines[i] + draw(st.sampled_from([" \\", "\\", " "])) + lines[i + 1]]
        elif op == "split" and lines:
            p = draw(st.integers(0, len(lines[i])))
            lines[i : i + 1] = [lines[i][:p], lines[i][p:]]
    sep = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return sep.join(lines)


@pytest.mark.parametrize("kind", PARSERS)
@SETTINGS
@given(data=st.data())
def test_mutated_seed_files(kind: str, data: st.DataObject) -> None:
    check(kind, data.draw(mutated(SEEDS[kind])))


@pytest.mark.parametrize("kind", PARSERS)
@settings(max_examples=budget(150), deadline=None)
@given(text=st.one_of(st.text(max_size=300), st.lists(line_st, max_size=12).map("\n".join)))
def test_random_text(kind: str, text: str) -> None:
    check(kind, text)


RENDER: dict[str, Callable[[Any], str]] = {
    "ha.cf": render_hacf,
    "haresources": render_haresources,
    "authkeys": render_authkeys,
}


@pytest.mark.parametrize("kind", RENDER)
@SETTINGS
@given(data=st.data())
def test_what_parses_renders_back_to_the_same_model(kind: str, data: st.DataObject) -> None:
    model = check(kind, data.draw(mutated(SEEDS[kind])))
    if model is not None:
        again = check(kind, RENDER[kind](model))
        # ha.cf's global udpport/baud only matter for the media declared after them (each medium
        # keeps its own); a trailing `baud` with no serial line after it is not rendered back.
        ignore = {"udpport", "baud"} if kind == "ha.cf" else set()
        assert again is not None and again.model_dump(exclude=ignore) == model.model_dump(exclude=ignore)


@settings(max_examples=budget(40), deadline=None)
@given(
    st.sampled_from(HACF_SEEDS).map(str.encode) | st.binary(max_size=200),
    st.sampled_from(HARESOURCES_SEEDS).map(str.encode) | st.binary(max_size=200),
    st.sampled_from(AUTHKEYS_SEEDS).map(str.encode) | st.binary(max_size=80),
    st.sampled_from([0o600, 0o644]),
)
def test_load_directory_raises_only_config_errors(hacf: bytes, hares: bytes, keys: bytes, mode: int) -> None:
    """Arbitrary bytes (not UTF-8, NULs) in the three files: a ClusterConfig or a ConfigError whose
    findings all carry the file path, nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "ha.cf").write_bytes(hacf)
        (d / "haresources").write_bytes(hares)
        (d / "authkeys").write_bytes(keys)
        os.chmod(d / "authkeys", mode)
        try:
            cfg = load_directory(d)
        except ConfigError as e:
            assert e.errors
            for f in e.findings:
                assert f.file.startswith(tmp) and f.message.strip()
                if f.line is not None:
                    assert f.line >= 1
            return
        assert all(w.severity is Severity.WARNING for w in cfg.warnings)
