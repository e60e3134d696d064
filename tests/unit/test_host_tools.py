"""host-tools.tsv is complete, ./dev installs it, and this machine has all of it.

A program that a test runs but nobody installs passes on the developer's machine and fails (or
worse, skips) on a fresh one; these tests make that a failure here.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import hosttools

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("api", "node-agent", "operator", "tests", "bench")
# calls that start a program: an argv list literal among their positional arguments ...
SPAWNERS = {"run", "Popen", "check_output", "check_call", "call", "create_subprocess_exec",
            "subprocess_exec", "execv", "execvp", "execvpe", "_run", "sh", "ns_run", "ns_spawn",
            "spawn", "exec"}  # fmt: skip
# ... or, for the project's own module-level varargs wrappers, the positional arguments themselves
VARARGS_SPAWNERS = {"_run", "sh"}
# argv lists built before the call: literals assigned to names like these are scanned too
ARGV_NAMES = re.compile(r"(argv|cmd|command|full)\w*")
# shell words that are not programs
SHELL_WORDS = {"set", "exec", "echo", "cd", "if", "then", "else", "elif", "fi", "for", "in", "do",
               "done", "while", "until", "case", "esac", "trap", "wait", "read", "export", "test",
               "[", "[[", ":", "true", "false", "printf", "ulimit", "exit", "return", "local",
               "shift", "{", "}", "(", ")", "!", "eval", "unset", "umask", "command", "."}  # fmt: skip
PROGRAM = re.compile(r"[A-Za-z_/][\w./+-]*")
PYTHONS = {"python", "python3"}


def _argv(elts: list[ast.expr], consts: dict[str, str]) -> list[str] | None:
    """An argv whose head is a string (a literal or a module constant); other elements
    become placeholders."""
    out: list[str] = []
    for e in elts:
        if isinstance(e, ast.Starred):
            break
        if isinstance(e, ast.Constant) and isinstance(e.value, str):
            out.append(e.value)
        elif isinstance(e, ast.Name) and e.id in consts:
            out.append(consts[e.id])
        else:
            out.append("{…}")
    return out if out and out[0] != "{…}" else None


def _literal_argvs(node: ast.AST, consts: dict[str, str]) -> Iterator[list[str]]:
    if isinstance(node, ast.Call):
        func = node.func
        fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if fname not in SPAWNERS:
            return
        for arg in node.args:
            if isinstance(arg, (ast.List, ast.Tuple)) and (argv := _argv(list(arg.elts), consts)):
                yield argv
        if isinstance(func, ast.Name) and fname in VARARGS_SPAWNERS and (argv := _argv(node.args, consts)):
            yield argv
    elif isinstance(node, ast.Assign) and isinstance(node.value, (ast.List, ast.Tuple)):
        names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if any(ARGV_NAMES.fullmatch(n) for n in names) and (argv := _argv(list(node.value.elts), consts)):
            yield argv


def _shell_programs(script: str) -> Iterator[str]:
    for part in re.split(r"[;\n|&()]+", script.replace("\\\n", " ")):
        try:
            words = shlex.split(part, comments=True)
        except ValueError:
            words = part.split()
        while words and ("=" in words[0] or words[0] in ("exec", "command", "!", "then", "do", "else")):
            words = words[1:]
        if words and words[0] not in SHELL_WORDS and PROGRAM.fullmatch(words[0]):
            yield words[0]


def _programs(argv: list[str]) -> Iterator[str]:
    """The programs an argv runs, through ip netns exec, nsenter/unshare, timeout and sh -c."""
    while argv:
        head = argv[0]
        if not PROGRAM.fullmatch(head):
            return
        yield head
        name = Path(head).name
        if name == "ip" and argv[1:3] == ["netns", "exec"]:
            argv = argv[4:]
        elif name in ("nsenter", "unshare", "setsid", "env", "nice", "stdbuf") and "--" in argv:
            argv = argv[argv.index("--") + 1 :]
        elif name == "timeout" and len(argv) > 2:
            argv = argv[2:]
        elif name in ("sh", "bash") and len(argv) > 2 and argv[1] == "-c":
            yield from _shell_programs(argv[2])
            return
        else:
            return


def spawned_programs() -> dict[str, set[str]]:
    """Program name -> files that run it (literal argvs only; built-up argvs are not followed)."""
    found: dict[str, set[str]] = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if ".venv" in path.parts:
                continue
            tree = ast.parse(path.read_text(), str(path))
            consts = {
                t.id: n.value.value
                for n in tree.body
                if isinstance(n, ast.Assign)
                and isinstance(n.value, ast.Constant)
                and isinstance(n.value.value, str)
                for t in n.targets
                if isinstance(t, ast.Name)
            }
            for node in ast.walk(tree):
                for argv in _literal_argvs(node, consts):
                    for prog in _programs(argv):
                        found.setdefault(prog, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_spawned_program_is_in_the_table() -> None:
    table = hosttools.tools()
    found = spawned_programs()
    assert {"ip", "nft", "tcpdump", "arping", "socat"} <= set(found), "the scan lost its way"
    unlisted = {
        prog: sorted(files)
        for prog, files in found.items()
        if Path(prog).name not in table and Path(prog).name not in PYTHONS
    }
    assert not unlisted, (
        f"programs run but not in host-tools.tsv (add a row and its Debian package): {unlisted}"
    )


def test_shell_scripts_are_read_through() -> None:
    assert list(_programs(["ip", "netns", "exec", "ns1", "nft", "-f", "-"])) == ["ip", "nft"]
    assert list(_programs(["sh", "-c", "set -e; X=1 tcpdump -i eth0 | head; exec socat - TCP:x"])) == [
        "sh",
        "tcpdump",
        "head",
        "socat",
    ]


def test_dev_installs_every_debian_package_of_the_table() -> None:
    out = subprocess.run([str(ROOT / "dev"), "packages"], capture_output=True, text=True, check=True).stdout
    want = {t.debian_package for t in hosttools.tools().values() if t.debian_package}
    assert set(out.split()) == want


def test_every_tool_in_the_table_is_on_this_machine() -> None:
    if gone := hosttools.missing():
        pytest.skip(hosttools.describe(gone))


def test_table_rows_name_a_source_and_a_use() -> None:
    for t in hosttools.tools().values():
        assert t.used_by and (t.debian_package or t.source in ("machine", "cache:kubetools")), t
