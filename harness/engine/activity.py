"""What a worker's processes are doing, read from ``/proc``: CPU, thread states, and what each waits for.

A trial past its deadline is judged by what its threads do, not by the wall clock. A loaded machine
stretches wall time 10–100×, but it cannot make a blocked thread run, nor a runnable one block. For
the worker and every process below it (found through ``/proc/PID/task/TID/children``: a few
microseconds, never a scan of the machine's processes), `snapshot` reads:

* the CPU time each process has used, from its process CPU-time clock (``clock_gettime`` on the
  clock ``clock_getcpuclockid`` would give: nanoseconds, finished threads included);
* each thread's state: running or waiting for a CPU (``R``), in an uninterruptible wait such as disk
  I/O (``D``), or asleep (``S``);
* for a sleeping thread, the system call it sleeps in (``/proc/PID/task/TID/syscall``) and, when the
  call has a timeout, when it wakes up by itself: the timeout is read from the process's memory
  (``/proc/PID/mem``; the parent may read its descendants' memory). A thread in ``time.sleep``,
  ``lock.acquire(timeout=...)`` or ``select(..., timeout)`` will run again without anybody's help; a
  thread in ``lock.acquire()``, ``Thread.join()`` or a pipe ``read`` will not;
* how long the threads waited for a CPU (``schedstat``): how much the machine held the trial back.

Linux only, x86-64 and AArch64 system call numbers. Anything that cannot be read (another platform,
a call not in the table, a ``restart_syscall``) is counted as *unknown*: a wait that might end by
itself, so that stress never calls a trial blocked on a guess.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from harness.engine import proc_tree

__all__ = ["Snapshot", "describe", "snapshot"]

#: A system call a thread can sleep in, by name: how to find its timeout. ``None``: it has none
#: (it waits until somebody else acts); otherwise (argument index, encoding, absolute?).
_NO_TIMEOUT = None
_Timeout = tuple[int, str, bool] | None

_WAITS: dict[str, _Timeout] = {
    "read": _NO_TIMEOUT,
    "readv": _NO_TIMEOUT,
    "pread64": _NO_TIMEOUT,
    "write": _NO_TIMEOUT,
    "writev": _NO_TIMEOUT,
    "recvfrom": _NO_TIMEOUT,
    "recvmsg": _NO_TIMEOUT,
    "sendto": _NO_TIMEOUT,
    "sendmsg": _NO_TIMEOUT,
    "accept": _NO_TIMEOUT,
    "accept4": _NO_TIMEOUT,
    "connect": _NO_TIMEOUT,
    "wait4": _NO_TIMEOUT,
    "waitid": _NO_TIMEOUT,
    "pause": _NO_TIMEOUT,
    "rt_sigsuspend": _NO_TIMEOUT,
    "flock": _NO_TIMEOUT,
    "fcntl": _NO_TIMEOUT,
    "msgrcv": _NO_TIMEOUT,
    "semop": _NO_TIMEOUT,
    "nanosleep": (0, "timespec", False),
    "clock_nanosleep": (2, "timespec", False),  # absolute when flags (argument 1) has TIMER_ABSTIME
    "select": (4, "timeval", False),
    "pselect6": (4, "timespec", False),
    "ppoll": (2, "timespec", False),
    "poll": (2, "ms", False),
    "epoll_wait": (3, "ms", False),
    "epoll_pwait": (3, "ms", False),
    "epoll_pwait2": (3, "timespec", False),
    "rt_sigtimedwait": (2, "timespec", False),
    "semtimedop": (3, "timespec", False),
    "futex": (3, "timespec", False),  # depends on the operation: see _futex
    "futex_waitv": (3, "timespec", True),
}

_SYSCALLS = {
    "x86_64": {
        0: "read", 1: "write", 7: "poll", 17: "pread64", 19: "readv", 20: "writev", 23: "select",
        34: "pause", 35: "nanosleep", 42: "connect", 43: "accept", 44: "sendto", 45: "recvfrom",
        46: "sendmsg", 47: "recvmsg", 61: "wait4", 65: "semop", 70: "msgrcv", 72: "fcntl", 73: "flock",
        128: "rt_sigtimedwait", 130: "rt_sigsuspend", 202: "futex", 220: "semtimedop",
        230: "clock_nanosleep", 232: "epoll_wait", 247: "waitid", 270: "pselect6", 271: "ppoll",
        281: "epoll_pwait", 288: "accept4", 441: "epoll_pwait2", 449: "futex_waitv",
    },
    "aarch64": {
        22: "epoll_pwait", 25: "fcntl", 32: "flock", 63: "read", 64: "write", 65: "readv",
        66: "writev", 67: "pread64", 72: "pselect6", 73: "ppoll", 95: "waitid", 98: "futex",
        101: "nanosleep", 115: "clock_nanosleep", 133: "rt_sigsuspend", 137: "rt_sigtimedwait",
        188: "msgrcv", 192: "semtimedop", 193: "semop", 202: "accept", 203: "connect",
        206: "sendto", 207: "recvfrom", 211: "sendmsg", 212: "recvmsg", 242: "accept4",
        260: "wait4", 441: "epoll_pwait2", 449: "futex_waitv",
    },
}.get(platform.machine(), {})  # fmt: skip

_TIMESPEC = struct.Struct("=qq")  # struct timespec / timeval on a 64-bit machine
_FUTEX_CMD_MASK = 0x7F
_FUTEX_CLOCK_REALTIME = 256
_FUTEX_WAIT, _FUTEX_LOCK_PI, _FUTEX_WAIT_BITSET, _FUTEX_WAIT_REQUEUE_PI, _FUTEX_LOCK_PI2 = 0, 6, 9, 11, 13
_TIMER_ABSTIME = 1
_CLOCK_REALTIME = 0
#: What a person reads for the call a blocked thread is in.
_PLAIN = {
    "futex": "a lock, condition or join",
    "read": "a read",
    "readv": "a read",
    "wait4": "a child process",
    "waitid": "a child process",
    "recvfrom": "a socket",
    "recvmsg": "a socket",
    "accept": "a socket",
    "accept4": "a socket",
    "connect": "a socket",
    "write": "a write",
    "select": "a select or poll",
    "pselect6": "a select or poll",
    "poll": "a select or poll",
    "ppoll": "a select or poll",
    "epoll_wait": "a select or poll",
    "epoll_pwait": "a select or poll",
    "epoll_pwait2": "a select or poll",
    "nanosleep": "a sleep",
    "clock_nanosleep": "a sleep",
}


@dataclass(frozen=True)
class Snapshot:
    """What a worker's process tree was doing at one moment.

    Attributes:
        at: When it was taken (``time.monotonic()``, seconds).
        cpu: CPU seconds the tree's processes have used so far (multiprocessing's helpers excluded).
        waited: Seconds the tree's live threads have spent waiting for a CPU so far.
        threads: Threads seen.
        active: Threads running, waiting for a CPU, or in an uninterruptible wait (disk I/O).
        wakes_in: Seconds until the first sleeping thread wakes up by itself (``inf``: none will).
        unknown: Sleeping threads whose wait could not be read (they might wake by themselves).
        waits: For each sleeping thread, what it waits in, for a person (with the time left, for a
            wait with a timeout).
        paused: How many of stress's own pauses the trial had taken (from the worker's beacon; 0
            when unknown): a sleep of stress's is not a sleep of the code under test.
    """

    at: float
    cpu: float
    waited: float
    threads: int
    active: int
    wakes_in: float
    unknown: int
    waits: tuple[str, ...] = ()
    paused: int = 0


def snapshot(pid: int) -> Snapshot:
    """The state of process ``pid`` and of every process below it."""
    at = time.monotonic()
    real = time.time()
    cpu = waited = 0.0
    threads = active = unknown = 0
    wakes_in = math.inf
    waits: list[str] = []
    for process in [pid, *proc_tree.descendants(pid)]:
        if process != pid and proc_tree.is_helper(process):
            continue
        with contextlib.suppress(OSError, OverflowError):
            cpu += time.clock_gettime(((~process) << 3) | 2)  # the process's CPU-time clock
        try:
            tids = os.listdir(f"/proc/{process}/task")
        except OSError:
            continue
        for tid in tids:
            state, run_wait = _thread_state(process, tid)
            if state is None:
                continue
            threads += 1
            waited += run_wait
            if state in "RD":
                active += 1
                continue
            if state != "S":  # stopped or traced: nothing it does on its own
                waits.append(f"{state} (stopped)")
                continue
            kind, wake = _wait(process, tid, at, real)
            if kind is None:
                active += 1  # it ran between the two reads
            elif wake is None:
                unknown += 1
            elif math.isinf(wake):
                waits.append(kind)
            else:
                wakes_in = min(wakes_in, max(0.0, wake - at))
                waits.append(f"{kind} for {max(0.0, wake - at):.2g} s")
    return Snapshot(at, cpu, waited, threads, active, wakes_in, unknown, tuple(waits))


def _thread_state(pid: int, tid: str) -> tuple[str | None, float]:
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None, 0.0
    state = stat[stat.rfind(b")") + 2 :][:1].decode()
    if state in ("Z", "X", "x", ""):
        return None, 0.0
    waited = 0.0
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as file,
    ):
        waited = int(file.read().split()[1]) / 1e9
    return state, waited


def _wait(pid: int, tid: str, now: float, real: float) -> tuple[str | None, float | None]:
    """What a sleeping thread waits in, and when it wakes by itself: (what, monotonic time), with
    ``inf`` for never and None for unknown. (None, None): it is running after all."""
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall", "rb") as file:
            fields = file.read().split()
    except OSError:
        return "?", None
    if not fields or fields[0] == b"running":
        return None, None
    name = _SYSCALLS.get(int(fields[0])) if fields[0].lstrip(b"-").isdigit() else None
    if name is None or name not in _WAITS:
        return name or "?", None
    args = [int(a, 16) for a in fields[1:7]]
    spec = _WAITS[name]
    what = _PLAIN.get(name, name)
    if spec is None:
        if name in ("read", "readv", "write", "recvfrom", "recvmsg") and _is_socket(pid, args[0]):
            what = "a socket"
        return what, math.inf
    index, encoding, absolute = spec
    clock_realtime = False
    if name == "futex":
        command = args[1] & _FUTEX_CMD_MASK
        if command not in (_FUTEX_WAIT, _FUTEX_LOCK_PI, _FUTEX_WAIT_BITSET, _FUTEX_WAIT_REQUEUE_PI, _FUTEX_LOCK_PI2):
            return None, None  # a wake or requeue: it is about to run
        absolute = command != _FUTEX_WAIT
        clock_realtime = command == _FUTEX_LOCK_PI or bool(args[1] & _FUTEX_CLOCK_REALTIME)
    elif name == "clock_nanosleep":
        absolute = bool(args[1] & _TIMER_ABSTIME)
        clock_realtime = args[0] == _CLOCK_REALTIME
    elif name == "futex_waitv":
        clock_realtime = args[4] == _CLOCK_REALTIME
    if encoding == "ms":
        timeout_ms = args[index] - (1 << 64) if args[index] >= 1 << 63 else args[index]
        return what, math.inf if timeout_ms < 0 else now + timeout_ms / 1000
    if args[index] == 0:
        return what, math.inf  # a null timeout: no timeout
    seconds = _read_time(pid, args[index], encoding)
    if seconds is None:
        return what, None
    if not absolute:
        return what, now + seconds  # at most that long from now: the call began before this look
    return what, (now + seconds - real) if clock_realtime else seconds


def _read_time(pid: int, address: int, encoding: str) -> float | None:
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.pread(fd, 16, address)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) < 16:
        return None
    whole, part = _TIMESPEC.unpack(data)
    return float(whole) + float(part) / (1e6 if encoding == "timeval" else 1e9)


def _is_socket(pid: int, fd: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    except OSError:
        return False


def describe(waits: Iterable[str]) -> str:
    """``"2 in a lock, condition or join, 1 in a read"``."""
    counts: dict[str, int] = {}
    for what in waits:
        counts[what] = counts.get(what, 0) + 1
    return ", ".join(f"{n} in {what}" for what, n in sorted(counts.items(), key=lambda kv: -kv[1]))
