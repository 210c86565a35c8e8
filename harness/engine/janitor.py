"""The janitor: a tiny process that cleans up after a run whose parent was killed.

A run's workers exit soon after their parent (the kernel tells them; each finishes the trial in
flight first), but nothing of the parent runs after ``kill -9``: the workers' temporary folders and
any process their trials left in the workers' process groups would stay behind. The janitor is
forked before the first worker and blocks reading a pipe only the parent writes to. The parent tells
it what to clean (folders, process groups) as it creates them, and says ``clean`` when it cleaned up
itself. If the pipe reaches end-of-file without that word,
the parent died: the janitor gives the workers a moment to leave, kills what is left of their groups,
removes the folders, and exits.

It holds nothing else: standard streams point at ``/dev/null`` and every other descriptor is closed,
so it never keeps a pipe open that someone waits on (a worker's, a captured stdout).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
import warnings

from harness.engine import proc_tree

__all__ = ["Janitor"]

_CLEAN = "clean"


class Janitor:
    """The parent's side: `watch` what to clean, `close` when the run cleaned up after itself."""

    def __init__(self) -> None:
        read, self.fd = os.pipe()
        with warnings.catch_warnings():
            # 3.12+ warns when a process with threads forks; the janitor only reads a pipe and
            # removes files, taking no lock another thread may hold.
            warnings.filterwarnings("ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the janitor, which never returns to Python callers
            code = 0
            try:
                _serve(read)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(read)
        self.pid = pid

    def watch_folder(self, path: str) -> None:
        self._say(f"dir {path}")

    def watch_group(self, pgid: int) -> None:
        if pgid > 0:
            self._say(f"group {pgid}")

    def close(self) -> None:
        """The run cleaned up after itself: the janitor leaves without touching anything."""
        if self.fd < 0:
            return
        self._say(_CLEAN)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def _say(self, line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self.fd, (line + "\n").encode("utf-8", "surrogateescape"))


def _serve(read: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the stress command's handler
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, read)
    os.closerange(read + 1, os.sysconf("SC_OPEN_MAX"))
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    lines = data.decode("utf-8", "surrogateescape").splitlines()
    if _CLEAN in lines:
        return
    groups = {int(line.split(" ", 1)[1]) for line in lines if line.startswith("group ")}
    folders = [line.split(" ", 1)[1] for line in lines if line.startswith("dir ")]
    _stop_groups(groups)
    # A process killed a moment ago may still be closing its files; give the folders a few tries.
    deadline = time.monotonic() + 2.0
    while True:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        folders = [folder for folder in folders if os.path.lexists(folder)]
        if not folders or time.monotonic() > deadline:
            return
        time.sleep(0.02)


#: Seconds the workers get to leave by themselves (they finish the trial in flight first; see
#: `harness.engine.worker.ORPHAN_GRACE`) before what is left of their groups is killed.
LEADERS_GRACE = 1.5


def _stop_groups(groups: set[int], *, grace: float = 5.0, leaders: float = LEADERS_GRACE) -> None:
    """Kill what the dead run's workers left in their process groups — after the workers (each leads
    its group) had `LEADERS_GRACE` to finish their trials and leave — but let multiprocessing's
    helpers go by themselves: a resource tracker removes the named semaphores and shared memory it
    tracks once the last process using it is gone, and killing it first would leave them in
    ``/dev/shm`` for good."""
    deadline = time.monotonic() + leaders
    while time.monotonic() < deadline and any(proc_tree.alive(group) for group in groups):
        time.sleep(0.02)
    helpers: set[int] = set()
    for _ in range(5):
        members = proc_tree.members_of(groups)
        found = {m.pid for m in members if proc_tree.is_helper(m.pid)}
        helpers |= found
        others = [m.pid for m in members if m.pid not in found]
        if not others:
            break
        proc_tree.kill_all(others)
        time.sleep(0.02)
    deadline = time.monotonic() + grace
    while helpers and time.monotonic() < deadline:
        time.sleep(0.02)
        helpers = {pid for pid in helpers if proc_tree.alive(pid)}
    proc_tree.kill_all(pid for pid in helpers if proc_tree.is_helper(pid))
    for group in groups:  # anything left that started meanwhile
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
