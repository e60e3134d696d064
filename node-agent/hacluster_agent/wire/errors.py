"""Why a received packet was dropped: one reason per counter, as the agent's metrics report them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reject(StrEnum):
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNSUPPORTED = "unsupported"
    NO_AUTH = "no_auth"
    BAD_AUTH = "bad_auth"
    REPLAY = "replay"
    DUPLICATE = "duplicate"
    NOT_A_MEMBER = "not_a_member"
    FROM_SELF = "from_self"
    NOT_FOR_US = "not_for_us"
    BAD_FIELDS = "bad_fields"
    PEER_NOT_UP = "peer_not_up"  # not a status, from a peer not yet heard alive: may be a replay


@dataclass(frozen=True, slots=True)
class Rejected:
    """A typed decoding or verification failure (never an exception escaping the decoder)."""

    reason: Reject
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"
