"""Parse and render authkeys: `auth N` picks the signing key; `N crc|md5 KEY|sha1 KEY` define keys."""

from __future__ import annotations

import os
import re
import stat
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .issues import Findings
from .lines import is_number, logical_lines

AuthMethod = Literal["crc", "md5", "sha1"]
MAX_AUTH_INDEX = 15


class AuthKey(BaseModel):
    """One authkeys entry. The key is a SecretStr, so it never shows in a repr or a log line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0, le=MAX_AUTH_INDEX)
    method: AuthMethod
    key: SecretStr | None = None

    @property
    def key_bytes(self) -> bytes:
        return self.key.get_secret_value().encode() if self.key is not None else b""


class AuthKeys(BaseModel):
    """The keys a node accepts, and the one (`auth N`) it signs with. Several keys allow rotation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    active: int
    keys: dict[int, AuthKey]

    @property
    def signing_key(self) -> AuthKey:
        return self.keys[self.active]


def parse_authkeys(text: str, filename: str = "authkeys") -> tuple[AuthKeys | None, Findings]:
    f = Findings(filename)
    active: int | None = None
    active_line = 0
    keys: dict[int, AuthKey] = {}
    key_lines: dict[int, int] = {}
    for line in logical_lines(text):
        w = line.words
        n = line.number
        if w[0] == "auth":
            if active is not None:
                f.error(n, f"'auth' is already set on line {active_line}")
            elif len(w) != 2 or not _is_index(w[1]):
                f.error(n, f"'auth' takes one key index 0-{MAX_AUTH_INDEX}")
            else:
                active, active_line = int(w[1]), n
            continue
        if not _is_index(w[0]):
            f.error(n, f"expected 'auth N' or 'N method [key]', got {_shown(w[0])}")
            continue
        index = int(w[0])
        if index in keys:
            f.error(n, f"key index {index} is already defined on line {key_lines[index]}")
            continue
        if len(w) < 2 or w[1] not in ("crc", "md5", "sha1"):
            got = _shown(w[1]) if len(w) > 1 else "nothing"
            f.error(n, f"key {index}: method must be crc, md5 or sha1, got {got}")
            continue
        method: AuthMethod = w[1]  # type: ignore[assignment]
        if method == "crc":
            f.warn(n, f"key {index} uses crc: it detects corruption but authenticates nothing; "
                   "anyone on the heartbeat network can forge messages. Use sha1.")  # fmt: skip
            if len(w) > 2:
                f.warn(n, f"key {index}: crc takes no key; the rest of the line is ignored")
            keys[index] = AuthKey(index=index, method=method)
        else:
            if len(w) < 3:
                f.error(n, f"key {index}: {method} needs a key")
                continue
            if len(w) > 3:
                f.warn(n, f"key {index}: a key is one word; the rest of the line is ignored")
            keys[index] = AuthKey(index=index, method=method, key=SecretStr(w[2]))
        key_lines[index] = n
    if active is None:
        f.error(None, "no 'auth N' line: no authentication specified")
    elif active not in keys and not f.errors:
        f.error(active_line, f"'auth {active}' names a key index that is not defined")
    if f.errors or active is None:
        return None, f
    return AuthKeys(active=active, keys=keys), f


_METHOD_LIKE = re.compile(r"(?i)^(auth|crc\d*|md\d|sha-?\d*|hmac[-\w]*|none)$")


def _shown(word: str) -> str:
    """An unexpected word of authkeys, for an error message: quoted only if it reads like a keyword
    (a typo such as 'sha256'); anything else may be a key, and an error message may reach a log."""
    return repr(word) if _METHOD_LIKE.match(word) else "a word not shown here (it may be a key)"


def _is_index(word: str) -> bool:
    return is_number(word) and 0 <= int(word) <= MAX_AUTH_INDEX


def authkeys_mode_problem(mode: int) -> str | None:
    """Heartbeat refuses an authkeys file that group or others may read, write or run: what is
    wrong with one of this st_mode, or None (only the owner has access)."""
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"mode {stat.S_IMODE(mode):04o} lets group or others access the keys; "
                "run 'chmod 600' on it (Heartbeat refuses it too)")  # fmt: skip
    return None


def render_authkeys(cfg: AuthKeys) -> str:
    """The file contains the keys: write it with mode 0600 (see write_secret_file)."""
    out = [f"auth {cfg.active}"]
    for index in sorted(cfg.keys):
        k = cfg.keys[index]
        out.append(f"{index} {k.method}" + (f" {k.key.get_secret_value()}" if k.key else ""))
    return "\n".join(out) + "\n"


def write_secret_file(path: str | os.PathLike[str], text: str) -> None:
    """Create or replace a file with mode 0600 from the first byte (no window where it is readable)."""
    tmp = f"{os.fspath(path)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
