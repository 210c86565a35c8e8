"""The janitor removes what a killed run leaves behind, and touches nothing after a clean one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.engine.janitor import Janitor

OWNER = """
import os, subprocess, sys, time
from harness.engine.janitor import Janitor

janitor = Janitor()
janitor.watch_folder(sys.argv[1])
sleeper = subprocess.Popen(["sleep", "60"], process_group=0)
janitor.watch_group(sleeper.pid)
print(janitor.pid, sleeper.pid, flush=True)
time.sleep(60)
"""


def wait_until(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_clean_close_leaves_everything_alone(tmp_path: Path) -> None:
    folder = tmp_path / "kept"
    folder.mkdir()
    janitor = Janitor()
    janitor.watch_folder(str(folder))
    janitor.close()
    assert folder.exists()
    assert gone(janitor.pid)


def test_when_its_owner_is_killed_it_removes_folders_and_kills_groups(tmp_path: Path) -> None:
    folder = tmp_path / "worker-tmp"
    folder.mkdir()
    (folder / "socket").write_text("left behind")
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    janitor, sleeper = map(int, owner.stdout.readline().split())
    owner.send_signal(signal.SIGKILL)
    owner.communicate()
    assert wait_until(lambda: not folder.exists())
    assert wait_until(lambda: gone(sleeper))
    assert wait_until(lambda: gone(janitor))
