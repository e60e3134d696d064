"""The script driver against real shell scripts in temporary resource.d / init.d directories."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from hacluster_agent.resources import ResourceError, ResourceState, ScriptDriver, ScriptOptions


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(config_dir, init_dir): config_dir/resource.d holds heartbeat-style scripts."""
    (tmp_path / "ha.d" / "resource.d").mkdir(parents=True)
    (tmp_path / "init.d").mkdir()
    return tmp_path / "ha.d", tmp_path / "init.d"


def write_script(path: Path, body: str, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def driver(dirs: tuple[Path, Path], script: str, *args: str, **opts: object) -> ScriptDriver:
    config_dir, init_dir = dirs
    return ScriptDriver(script, args, config_dir=config_dir, options=ScriptOptions(init_dir=init_dir, **opts))  # type: ignore[arg-type]


def gone(pid: int) -> bool:
    """The process no longer runs (missing, or a zombie waiting for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def group_members(pgid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


async def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.01)
    return path.read_text()


@pytest.mark.asyncio
async def test_heartbeat_style_script_gets_its_arguments_before_the_action(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    log = tmp_path / "calls"
    write_script(dirs[0] / "resource.d" / "Filesystem", f'echo "$*" >> {log}\n')
    fs = driver(dirs, "Filesystem", "/dev/sda1", "/data1", "ext2")
    assert fs.name == "Filesystem::/dev/sda1::/data1::ext2"
    await fs.start()
    await fs.stop()
    assert log.read_text().splitlines() == ["/dev/sda1 /data1 ext2 start", "/dev/sda1 /data1 ext2 stop"]


@pytest.mark.asyncio
async def test_lsb_script_from_init_dir_gets_just_the_action(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    log = tmp_path / "calls"
    write_script(dirs[1] / "httpd", f'echo "$*" >> {log}\n')
    httpd = driver(dirs, "httpd")
    await httpd.start()
    await httpd.status()
    await httpd.stop()
    assert log.read_text().splitlines() == ["start", "status", "stop"]


@pytest.mark.asyncio
async def test_resource_d_wins_over_init_d_and_non_executable_is_skipped(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    log = tmp_path / "calls"
    write_script(dirs[0] / "resource.d" / "svc", f"echo resource.d >> {log}\n")
    write_script(dirs[1] / "svc", f"echo init.d >> {log}\n")
    await driver(dirs, "svc").start()
    (dirs[0] / "resource.d" / "svc").chmod(0o644)  # Heartbeat needs -f and -x
    await driver(dirs, "svc").start()
    assert log.read_text().splitlines() == ["resource.d", "init.d"]


@pytest.mark.asyncio
async def test_missing_script_is_an_error_naming_both_directories(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(ResourceError) as e:
        await driver(dirs, "nosuch").start()
    msg = str(e.value)
    assert "nosuch" in msg and "start" in msg
    assert str(dirs[0] / "resource.d") in msg and str(dirs[1]) in msg
    with pytest.raises(ResourceError):
        await driver(dirs, "nosuch").status()


@pytest.mark.parametrize(
    ("rc", "output", "state"),
    [
        (0, "httpd (pid 42) is running...", ResourceState.RUNNING),
        (0, "OK", ResourceState.RUNNING),
        (0, "", ResourceState.RUNNING),  # LSB: 0 means running
        (0, "httpd is not running", ResourceState.STOPPED),  # heartbeat-style scripts exit 0 regardless
        (0, "NOT Running", ResourceState.STOPPED),
        (0, "stopped", ResourceState.STOPPED),
        (3, "", ResourceState.STOPPED),
        (3, "httpd is stopped", ResourceState.STOPPED),
        (1, "httpd dead but pid file exists", ResourceState.FAILED),
        (2, "httpd dead but subsys locked", ResourceState.FAILED),
        (4, "unknown", ResourceState.FAILED),
    ],
)
@pytest.mark.asyncio
async def test_status_follows_lsb_exit_codes_and_heartbeat_output_check(
    dirs: tuple[Path, Path], rc: int, output: str, state: ResourceState
) -> None:
    write_script(dirs[1] / "httpd", f'[ "$1" = status ] || exit 9\necho "{output}"\nexit {rc}\n')
    assert await driver(dirs, "httpd").status() == state


@pytest.mark.asyncio
async def test_failed_start_says_which_resource_exit_code_and_last_stderr(dirs: tuple[Path, Path]) -> None:
    write_script(
        dirs[0] / "resource.d" / "Filesystem",
        "echo checking >&2\necho 'mount: /dev/sdz1: no such device' >&2\nexit 32\n",
    )
    with pytest.raises(ResourceError) as e:
        await driver(dirs, "Filesystem", "/dev/sdz1", "/data").start()
    assert e.value.resource == "Filesystem::/dev/sdz1::/data"
    assert e.value.action == "start"
    assert "exit code 32" in str(e.value)
    assert "mount: /dev/sdz1: no such device" in str(e.value)


@pytest.mark.asyncio
async def test_output_kept_for_the_message_is_bounded(dirs: tuple[Path, Path]) -> None:
    write_script(
        dirs[1] / "noisy",
        "i=0; while [ $i -lt 20000 ]; do echo 'line of noise noise noise' >&2; i=$((i+1)); done\n"
        "echo 'the real reason' >&2\nexit 1\n",
    )
    with pytest.raises(ResourceError) as e:
        await driver(dirs, "noisy", output_limit=4096).start()
    assert "the real reason" in str(e.value)
    assert len(str(e.value)) < 1000


@pytest.mark.asyncio
async def test_timeout_kills_the_whole_process_group_and_leaves_no_process(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    write_script(
        dirs[1] / "hang",
        f"sleep 300 &\necho $$ $! > {pids}\necho 'waiting for the disk' \nwait\n",
    )
    task = asyncio.create_task(driver(dirs, "hang", stop_timeout=1.0).stop())
    await wait_for_file(pids)
    with pytest.raises(ResourceError) as e:
        await task
    msg = str(e.value)
    assert "hang: stop failed" in msg and "timed out after 1 s" in msg and "killed" in msg
    assert "waiting for the disk" in msg
    script_pid, child_pid = map(int, pids.read_text().split())
    deadline = time.monotonic() + 5
    while not (gone(script_pid) and gone(child_pid)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert gone(script_pid) and gone(child_pid)
    assert group_members(script_pid) == []


@pytest.mark.asyncio
async def test_cancelling_an_action_kills_its_process_group(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    write_script(dirs[1] / "slow", f"sleep 300 &\necho $$ $! > {pids}\nwait\n")
    task = asyncio.create_task(driver(dirs, "slow").start())
    script_pid, child_pid = map(int, (await wait_for_file(pids)).split())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 5
    while not (gone(script_pid) and gone(child_pid)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert gone(script_pid) and gone(child_pid)


@pytest.mark.asyncio
async def test_service_left_running_by_start_keeps_running_and_does_not_block(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """A start script that launches its daemon with `&` (holding our pipes) returns promptly."""
    pid_file = tmp_path / "daemon.pid"
    write_script(dirs[1] / "daemon", f"sleep 300 &\necho $! > {pid_file}\necho started\nexit 0\n")
    t0 = time.monotonic()
    await driver(dirs, "daemon", start_timeout=30).start()
    assert time.monotonic() - t0 < 5
    daemon_pid = int(pid_file.read_text())
    try:
        assert not gone(daemon_pid)
    finally:
        os.kill(daemon_pid, signal.SIGKILL)


@pytest.mark.asyncio
async def test_script_killed_by_a_signal_is_reported(dirs: tuple[Path, Path]) -> None:
    write_script(dirs[1] / "crash", "kill -SEGV $$\n")
    with pytest.raises(ResourceError, match="killed by SIGSEGV"):
        await driver(dirs, "crash").start()


def test_script_name_cannot_escape_the_script_directories(dirs: tuple[Path, Path]) -> None:
    for bad in ("../evil", "/bin/sh", ""):
        with pytest.raises(ValueError):
            driver(dirs, bad)


@pytest.mark.asyncio
async def test_cancelled_while_the_script_is_being_spawned_it_is_killed_and_nothing_hangs(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Cancelled inside asyncio's subprocess_exec, asyncio waits for the child to exit: a script
    that waits on its own children hung the cancel for as long as they ran (this file's other
    cancellation test timed out at 300 s on a loaded machine)."""
    pids = tmp_path / "pids"
    write_script(dirs[1] / "slow", f"sleep 30 &\necho $$ $! > {pids}\nwait\n")
    task = asyncio.create_task(driver(dirs, "slow").start())
    await asyncio.sleep(0)  # the spawn is under way, not done
    task.cancel()
    t0 = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert time.monotonic() - t0 < 8
    if pids.exists():
        script_pid, child_pid = map(int, pids.read_text().split())
        deadline = time.monotonic() + 5
        while not (gone(script_pid) and gone(child_pid)) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert gone(script_pid) and gone(child_pid)
