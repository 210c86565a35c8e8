"""Suite-wide guards: no test may leave a thread, a process, a shared-memory segment or a temporary
file behind — and no test is blamed for what another program on the machine does.

The pytest process makes itself a *child subreaper* (Linux), so a worker orphaned by a CLI run under
test is re-parented to pytest instead of init, and the guard below sees it. Each test gets a
temporary folder of its own as ``TMPDIR`` (and `tempfile.tempdir`): what a test, and every process it
starts, leaves there is that test's, whatever other runs of stress do in the machine's temp folder
meanwhile. Shared memory has no such folder: a new ``/dev/shm`` entry counts as left behind only if
no live process still maps it. Ctrl-C is given back its default when the suite was started with it
ignored, so that the signal tests test stress and not the shell that started pytest.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing.util
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

_PR_SET_CHILD_SUBREAPER = 36

if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

# A shell runs a background command (``pytest &`` in a script) with SIGINT ignored, and an ignored
# signal stays ignored across exec: every stress the tests start would then shrug off the Ctrl-C the
# signal tests send it. A handler (not an ignore) is reset to the default in an exec'd child.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def child_pids(pid: int | None = None) -> set[int]:
    """Direct children of ``pid`` (default: this process), from /proc."""
    pid = os.getpid() if pid is None else pid
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as file:
                found.update(int(child) for child in file.read().split())
        except OSError:
            continue
    return found


def _reap(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


def temp_files(folder: str) -> set[str]:
    """What stress and multiprocessing leave in ``folder`` if they do not clean up."""
    try:
        return {name for name in os.listdir(folder) if name.startswith(("pymp-", "stress-"))}
    except OSError:
        return set()


def mapped_anywhere(names: set[str]) -> set[str]:
    """Which of these ``/dev/shm`` entries a live process still maps (or holds open): another
    program's, or one still in use. Reads every process's maps: only called when something is new."""
    found: set[str] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/maps", encoding="utf-8", errors="replace") as file:
                text = file.read()
        except OSError:
            continue
        found.update(name for name in names if f"/dev/shm/{name}" in text)
    return found


#: The machine's temp folder when the suite started: each test's own folder is made inside it.
_MACHINE_TMP = tempfile.gettempdir()


def shared_memory() -> set[str]:
    """Named semaphores and shared-memory segments (Linux keeps them in /dev/shm)."""
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


@pytest.fixture(scope="session", autouse=True)
def _session_temp_folders(tmp_path_factory: pytest.TempPathFactory) -> None:
    # pytest and multiprocessing each make a temp folder once, on first use, and keep it: make them
    # now, in the machine's temp folder, not in the first test's own folder (removed after it).
    tmp_path_factory.getbasetemp()
    multiprocessing.util.get_temp_dir()


@pytest.fixture(autouse=True)
def _own_temp_folder(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="pytest-own-tmp-", dir=_MACHINE_TMP)
    monkeypatch.setenv("TMPDIR", folder)
    monkeypatch.setattr(tempfile, "tempdir", folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _nothing_left_behind(_own_temp_folder: str) -> Iterator[None]:
    threads_before = set(threading.enumerate())
    children_before = child_pids()
    shm_before = shared_memory()
    temp_before = temp_files(_own_temp_folder)
    yield
    deadline = time.monotonic() + 2.0
    leftover = [t for t in threading.enumerate() if t not in threads_before]
    for thread in leftover:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in leftover if t.is_alive()]
    children = child_pids() - children_before
    while children and time.monotonic() < deadline:
        # A child that already exited is a zombie until reaped; reaping it is not a leak.
        for pid in list(children):
            with contextlib.suppress(ChildProcessError, OSError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    children.discard(pid)
        if children:
            time.sleep(0.01)
    _reap(children)
    leaked = shared_memory() - shm_before
    while leaked and time.monotonic() < deadline + 1.0:  # a resource tracker may still be cleaning up
        time.sleep(0.01)
        leaked = shared_memory() - shm_before
    if leaked:
        # Another program's, still in use, or one whose users just died and whose resource tracker
        # is about to remove it: only what nobody maps and nobody removes counts against this test.
        leaked -= mapped_anywhere(leaked)
        settle = time.monotonic() + 3.0
        while leaked and time.monotonic() < settle:
            time.sleep(0.05)
            leaked &= shared_memory()
    assert not alive, f"test left threads running: {alive}"
    assert not children, f"test left child processes behind: {sorted(children)}"
    assert not leaked, f"test left shared memory behind in /dev/shm: {sorted(leaked)}"
    stray = temp_files(_own_temp_folder) - temp_before
    while stray and time.monotonic() < deadline + 1.0:
        time.sleep(0.01)
        stray = temp_files(_own_temp_folder) - temp_before
    assert not stray, f"test left temporary files behind: {sorted(stray)}"
