"""Per-peer sequence and generation bookkeeping (Heartbeat's replay and duplicate rules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

MAX_MISSING = 500
MAX_GAP = 250


class Verdict(StrEnum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"
    REPLAY = "replay"
    RESTARTED = "restarted"  # accepted: a higher generation, the peer restarted


@dataclass
class Ordering:
    """Generation and sequence state for one peer. Memory is bounded by MAX_MISSING."""

    generation: int | None = None
    last_seq: int | None = None
    missing: set[int] = field(default_factory=set)

    def check(self, generation: int, seq: int | None) -> tuple[Verdict, list[int]]:
        """Classify one message; returns the verdict and newly missing seqs to ask for."""
        if self.generation is not None and generation < self.generation:
            return Verdict.REPLAY, []
        restarted = self.generation is not None and generation > self.generation
        if self.generation is None or restarted:
            self.generation, self.last_seq, self.missing = generation, None, set()
        if seq is None:  # NS_ types carry no sequence number
            return (Verdict.RESTARTED if restarted else Verdict.ACCEPT), []
        verdict = Verdict.RESTARTED if restarted else Verdict.ACCEPT
        last = self.last_seq
        if last is None or seq == last + 1:
            self.last_seq = seq
            return verdict, []
        if seq == last:
            return Verdict.DUPLICATE, []
        if seq > last:
            gap = seq - last - 1
            self.last_seq = seq
            if gap > MAX_GAP:
                self.missing.clear()
                return verdict, []
            new = list(range(last + 1, seq))
            self.missing.update(new)
            if len(self.missing) > MAX_MISSING:  # forget the oldest (one sort, not a min() per seq)
                self.missing.difference_update(sorted(self.missing)[: len(self.missing) - MAX_MISSING])
            return verdict, new
        if seq in self.missing:
            self.missing.discard(seq)
            return verdict, []
        return Verdict.DUPLICATE, []
