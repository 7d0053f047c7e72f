"""Finding and killing a server's process tree (child processes of a shell, no server)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from messenger.chaos.processes import ProcessError, is_alive, kill_tree, process_tree, read_pid


def _shell_with_children() -> subprocess.Popen[bytes]:
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    deadline = time.monotonic() + 5
    while len(process_tree(shell.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    return shell


def test_the_tree_holds_the_process_and_its_children() -> None:
    shell = _shell_with_children()
    try:
        tree = process_tree(shell.pid)
        assert tree[0] == shell.pid and len(tree) == 3
    finally:
        kill_tree(shell.pid)
        shell.wait()


def test_kill_tree_leaves_nothing_alive() -> None:
    shell = _shell_with_children()
    tree = process_tree(shell.pid)
    killed = kill_tree(shell.pid)
    shell.wait()
    assert killed == tree
    assert not any(is_alive(pid) for pid in tree)


def test_a_missing_pid_file_says_the_server_may_be_down(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match="is the server running"):
        read_pid(tmp_path / "postmaster.pid")


def test_a_stale_pid_file_is_refused(tmp_path: Path) -> None:
    done = subprocess.Popen(["true"])
    done.wait()
    pidfile = tmp_path / "redis.pid"
    pidfile.write_text(f"{done.pid}\n")
    with pytest.raises(ProcessError, match="not running"):
        read_pid(pidfile)
