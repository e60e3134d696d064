"""Heartbeat's message model: an ordered list of (name, type, value) fields."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import IntEnum
from typing import NamedTuple


class FieldType(IntEnum):
    """Heartbeat's field types. Core traffic uses STRING and BINARY (the 16-byte UUIDs)."""

    STRING = 0
    BINARY = 1
    STRUCT = 2
    LIST = 3
    COMPRESS = 4
    UNCOMPRESS = 5


class Field(NamedTuple):
    """One field. A named tuple, not a frozen dataclass: every message sent builds a dozen of
    them, and a tuple is built several times faster (the simulation builds millions)."""

    name: str
    value: bytes
    type: FieldType = FieldType.STRING

    @property
    def text(self) -> str:
        return self.value.decode("latin-1")


_STRING, _BINARY = FieldType.STRING, FieldType.BINARY
_field = tuple.__new__
"""Field(name, value, type) without the named tuple's Python-level __new__ (the same tuple): every
status message builds about 17 fields, the simulation millions."""


class Message:
    """An ordered, possibly repeating list of fields, kept exactly as sent so digests re-verify."""

    __slots__ = ("fields",)

    def __init__(self, fields: Iterable[Field] = ()) -> None:
        self.fields: list[Field] = list(fields)

    @classmethod
    def of(cls, *pairs: tuple[str, str | bytes]) -> Message:
        """Build from (name, value) pairs: str values are strings, bytes values are binary."""
        return cls(
            [
                _field(Field, (name, value, _BINARY))
                if isinstance(value, bytes)
                else _field(Field, (name, value.encode("latin-1"), _STRING))
                for name, value in pairs
            ]
        )

    def add(self, name: str, value: str | bytes) -> Message:
        """A copy with one more field at the end."""
        return Message([*self.fields, *Message.of((name, value)).fields])

    def extend(self, *pairs: tuple[str, str | bytes]) -> Message:
        """A copy with these fields at the end (one copy, not one per field)."""
        return Message([*self.fields, *Message.of(*pairs).fields])

    def without(self, name: str) -> Message:
        return Message(f for f in self.fields if f.name != name)

    def get(self, name: str) -> str | None:
        """The first string field of that name, decoded as latin-1 (Heartbeat is 8-bit clean)."""
        for f in self.fields:
            if f[0] == name and f[2] is _STRING:
                return f[1].decode("latin-1")
        return None

    def get_bytes(self, name: str) -> bytes | None:
        for f in self.fields:
            if f.name == name:
                return f.value
        return None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.fields)

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and self.fields == other.fields

    def __hash__(self) -> int:
        return hash(tuple(self.fields))

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={f.text!r}" if f.type is FieldType.STRING else f"{f.name}=<{len(f.value)}B>"
            for f in self.fields
        )
        return f"Message({shown})"

    @property
    def type(self) -> str | None:
        return self.get("t")


GROUP_TAG = "hacgrp"
"""The field naming the resource group a message is for, when a pair runs several groups (each its
own engine, on the same media: hacluster_agent/groups.py). Not Heartbeat's: a message without it
is the main group's, so a single-group pair speaks plain Heartbeat."""
