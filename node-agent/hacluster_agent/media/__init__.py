"""Heartbeat media: small asyncio adapters that move bytes over UDP and serial lines.

They know nothing about messages, authentication or membership; see :mod:`.base` for the
interface the agent uses.
"""

from .base import (
    DEFAULT_LOCK_DIR,
    DEFAULT_RETRY_INTERVAL,
    Medium,
    MediumEvents,
    MediumFailure,
    MediumStats,
    SupervisedMedium,
    build_media,
    host_addresses,
    open_media,
)
from .framer import ClassicFramer
from .serial import PacedWriter, SerialLine, lock_name
from .udp import UdpBroadcast, UdpMedium, UdpMulticast, UdpUnicast

__all__ = [
    "DEFAULT_LOCK_DIR",
    "DEFAULT_RETRY_INTERVAL",
    "ClassicFramer",
    "Medium",
    "MediumEvents",
    "MediumFailure",
    "MediumStats",
    "PacedWriter",
    "SerialLine",
    "SupervisedMedium",
    "UdpBroadcast",
    "UdpMedium",
    "UdpMulticast",
    "UdpUnicast",
    "build_media",
    "host_addresses",
    "lock_name",
    "open_media",
]
