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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from harness.engine import proc_tree
from harness.perturb.knobs import format_seconds

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
#: What a thread blocked on a futex with no timeout waits in, for a person.
LOCK_WAIT = "a lock, condition or join"
#: What a person reads for the call a blocked thread is in.
_PLAIN = {
    "futex": LOCK_WAIT,
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
        cpu: CPU seconds each process of the tree has used so far, by pid.
        runs: For each thread of the tree, by thread id: how many times it has been put on a CPU,
            and the nanoseconds it ran (``schedstat``). A thread that ran at all between two
            snapshots shows new figures, even if it is asleep again at both.
        waited: Seconds the tree's live threads have spent waiting for a CPU so far.
        threads: Threads seen.
        active: Threads running, waiting for a CPU, or in an uninterruptible wait (disk I/O).
        wakes_in: Seconds until the first sleeping thread wakes up by itself (``inf``: none will).
        timed: Sleeping threads whose wait has a timeout.
        unknown: Sleeping threads whose wait could not be read (they might wake by themselves).
        external: Sleeping threads that wait on something outside the trial's processes: a
            network socket, a named socket, a terminal (a slow peer and a hang look the same).
        waits: For each sleeping thread, what it waits in, for a person (with the time left, for a
            wait with a timeout).
        paused: How many of stress's own pauses the trial had taken (from the worker's beacon; 0
            when unknown): a sleep of stress's is not a sleep of the code under test.
        alarm_in: Seconds until a signal timer the trial armed (``signal.setitimer``, ``alarm``)
            fires (from the worker's beacon; ``inf``: none).
        waiters: Threads of the worker in untimed waits on instrumented primitives, and
        wait_ends: how many such waits had ended (both from the worker's beacon). Such a waiter
            wakes every few milliseconds to look for a deadlock: while none of those waits ends,
            its waking up is not the trial making progress.
    """

    at: float
    cpu: Mapping[int, float]
    runs: Mapping[int, tuple[int, int]]
    waited: float
    threads: int
    active: int
    wakes_in: float
    unknown: int
    timed: int = 0
    external: int = 0
    waits: tuple[str, ...] = ()
    paused: int = 0
    alarm_in: float = math.inf
    waiters: int = 0
    wait_ends: int = 0

    def cpu_since(self, before: Snapshot) -> float:
        """CPU seconds the tree used since ``before``, over the processes alive at both."""
        return sum(max(0.0, used - before.cpu[pid]) for pid, used in self.cpu.items() if pid in before.cpu)

    def moved_since(self, before: Snapshot) -> bool:
        """Whether anything in the tree ran since ``before``: a thread put on a CPU, a thread or a
        process started or gone, one of stress's own pauses taken — other than instrumented
        waiters waking to look for a deadlock while none of their waits ends."""
        if self.paused != before.paused or self.cpu.keys() != before.cpu.keys():
            return True
        movers = sum(1 for tid, figures in self.runs.items() if before.runs.get(tid) != figures)
        if not movers:
            return False
        only_waiters = (
            self.waiters > 0
            and self.waiters == before.waiters
            and self.wait_ends == before.wait_ends
            and movers <= self.waiters
            and self.cpu_since(before) < 0.001 * (1 + self.waiters)
        )
        return not only_waiters


def snapshot(pid: int) -> Snapshot:
    """The state of process ``pid`` and of every process below it (multiprocessing's helpers
    included: a forkserver forks the trial's children, a resource tracker serves them)."""
    at = time.monotonic()
    real = time.time()
    cpu: dict[int, float] = {}
    runs: dict[int, tuple[int, int]] = {}
    waited = 0.0
    threads = active = unknown = external = timed = 0
    wakes_in = math.inf
    waits: list[str] = []
    sockets = _UnixSockets()
    for process in [pid, *proc_tree.descendants(pid)]:
        with contextlib.suppress(OSError, OverflowError):
            cpu[process] = time.clock_gettime(((~process) << 3) | 2)  # the process's CPU-time clock
        try:
            tids = os.listdir(f"/proc/{process}/task")
        except OSError:
            continue
        for tid in tids:
            state, run_wait, count = _thread_state(process, tid)
            if state is None:
                continue
            threads += 1
            waited += run_wait
            runs[int(tid)] = count
            if state in "RD":
                active += 1
                continue
            if state != "S":  # stopped or traced: nothing it does on its own
                waits.append(f"{state} (stopped)")
                continue
            wait = _wait(process, tid, at, real, sockets)
            if wait.running:
                active += 1  # it ran between the two reads
            elif wait.wake is None:
                unknown += 1
                waits.append(wait.what)
            else:
                external += wait.external
                if math.isinf(wait.wake):
                    waits.append(wait.what)
                else:
                    timed += 1
                    left = max(0.0, wait.wake - at)
                    wakes_in = min(wakes_in, left)
                    waits.append(f"{wait.what} that ends in {format_seconds(left)}")
    return Snapshot(at, cpu, runs, waited, threads, active, wakes_in, unknown, timed, external, tuple(waits))


def _thread_state(pid: int, tid: str) -> tuple[str | None, float, tuple[int, int]]:
    """(state, seconds waited for a CPU, (times run, nanoseconds run)) of one thread; state None if
    it is gone."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None, 0.0, (0, 0)
    state = stat[stat.rfind(b")") + 2 :][:1].decode()
    if state in ("Z", "X", "x", ""):
        return None, 0.0, (0, 0)
    waited, count = 0.0, (0, 0)
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as file,
    ):
        fields = file.read().split()
        waited, count = int(fields[1]) / 1e9, (int(fields[2]), int(fields[0]))
    return state, waited, count


@dataclass(frozen=True)
class _Wait:
    what: str = "?"
    wake: float | None = None  # monotonic time it wakes by itself; inf: never; None: unknown
    external: bool = False
    running: bool = False


#: A timeout further away than this (about four months) is taken as a misread, not as a sleep.
_ABSURD = 1e7


def _wait(pid: int, tid: str, now: float, real: float, sockets: _UnixSockets) -> _Wait:
    """What a sleeping thread waits in and when it wakes by itself. The system call is read again
    after its arguments: a thread that moved on meanwhile is unknown, not misread."""
    first = _syscall(pid, tid)
    if first is None:
        return _Wait()
    if not first or first[0] == b"running":
        return _Wait(running=True)
    wait = _decode(pid, first, now, real, sockets)
    if _syscall(pid, tid) != first:
        return _Wait(what=wait.what)  # it left the call while we read it: no telling
    if wait.wake is not None and not math.isinf(wait.wake) and abs(wait.wake - now) > _ABSURD:
        return _Wait(what=wait.what)
    return wait


def _syscall(pid: int, tid: str) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall", "rb") as file:
            return file.read().split()
    except OSError:
        return None


def _decode(pid: int, fields: list[bytes], now: float, real: float, sockets: _UnixSockets) -> _Wait:
    name = _SYSCALLS.get(int(fields[0])) if fields[0].lstrip(b"-").isdigit() else None
    if name is None or name not in _WAITS:
        return _Wait(what=name or "?")
    args = [int(a, 16) for a in fields[1:7]]
    spec = _WAITS[name]
    what = _PLAIN.get(name, name)
    fds = _waited_fds(pid, name, args)
    outside = any(sockets.outside(pid, fd) for fd in fds)
    if outside:
        what = f"{what} (on a socket or terminal outside the trial)"
    if spec is None:
        return _Wait(what, math.inf, outside)
    index, encoding, absolute = spec
    clock_realtime = False
    if name == "futex":
        command = args[1] & _FUTEX_CMD_MASK
        if command not in (_FUTEX_WAIT, _FUTEX_LOCK_PI, _FUTEX_WAIT_BITSET, _FUTEX_WAIT_REQUEUE_PI, _FUTEX_LOCK_PI2):
            return _Wait(running=True)  # a wake or requeue: it is about to run
        absolute = command != _FUTEX_WAIT
        clock_realtime = command == _FUTEX_LOCK_PI or bool(args[1] & _FUTEX_CLOCK_REALTIME)
    elif name == "clock_nanosleep":
        absolute = bool(args[1] & _TIMER_ABSTIME)
        clock_realtime = args[0] == _CLOCK_REALTIME
    elif name == "futex_waitv":
        clock_realtime = args[4] == _CLOCK_REALTIME
    if encoding == "ms":
        timeout_ms = args[index] - (1 << 64) if args[index] >= 1 << 63 else args[index]
        return _Wait(what, math.inf if timeout_ms < 0 else now + timeout_ms / 1000, outside)
    if args[index] == 0:
        return _Wait(what, math.inf, outside)  # a null timeout: no timeout
    seconds = _read_time(pid, args[index], encoding)
    if seconds is None:
        return _Wait(what)
    if not absolute:
        return _Wait(what, now + seconds, outside)  # at most that long from now: it began earlier
    return _Wait(what, (now + seconds - real) if clock_realtime else seconds, outside)


def _read_memory(pid: int, address: int, size: int) -> bytes | None:
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.pread(fd, size, address)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_time(pid: int, address: int, encoding: str) -> float | None:
    data = _read_memory(pid, address, _TIMESPEC.size)
    if data is None or len(data) < _TIMESPEC.size:
        return None
    whole, part = _TIMESPEC.unpack(data)
    return float(whole) + float(part) / (1e6 if encoding == "timeval" else 1e9)


_POLLFD = struct.Struct("=ihh")
_FD_ARGUMENT = {"read", "readv", "pread64", "write", "writev", "recvfrom", "recvmsg", "sendto", "sendmsg",
                "accept", "accept4", "connect"}  # fmt: skip


def _waited_fds(pid: int, name: str, args: list[int]) -> list[int]:
    """The descriptors a call waits on (best effort: what cannot be read is left out)."""
    if name in _FD_ARGUMENT:
        return [args[0]]
    if name in ("poll", "ppoll"):
        count = min(args[1], 4096)
        data = _read_memory(pid, args[0], count * _POLLFD.size) if count else b""
        if not data:
            return []
        return [fd for (fd, _, _) in _POLLFD.iter_unpack(data[: len(data) // _POLLFD.size * _POLLFD.size])]
    if name in ("select", "pselect6"):
        count = min(args[0], 65536)
        found: list[int] = []
        for pointer in args[1:4]:
            if not pointer or not count:
                continue
            data = _read_memory(pid, pointer, (count + 7) // 8) or b""
            found += [fd for fd in range(min(count, len(data) * 8)) if data[fd // 8] >> (fd % 8) & 1]
        return found
    if name in ("epoll_wait", "epoll_pwait", "epoll_pwait2"):
        try:
            with open(f"/proc/{pid}/fdinfo/{args[0]}", encoding="ascii", errors="replace") as file:
                return [int(line.split()[1]) for line in file if line.startswith("tfd:")]
        except (OSError, ValueError, IndexError):
            return []
    return []


class _UnixSockets:
    """Which descriptors lead outside the trial. A pipe, an eventfd, a file, or an unnamed UNIX
    socket (a ``socketpair``: what ``multiprocessing.Pipe`` makes) joins processes of the trial; a
    network socket, a named UNIX socket or a terminal may lead anywhere. ``/proc/net/unix`` is read
    once per snapshot, and only if a socket is waited on."""

    def __init__(self) -> None:
        self._unnamed: set[int] | None = None

    def outside(self, pid: int, fd: int) -> bool:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            return False
        if target.startswith("socket:["):
            inode = int(target[8:-1]) if target[8:-1].isdigit() else -1
            return inode not in self._socketpairs()
        return target.startswith(("/dev/pts/", "/dev/tty"))

    def _socketpairs(self) -> set[int]:
        if self._unnamed is None:
            self._unnamed = set()
            try:
                with open("/proc/net/unix", encoding="ascii", errors="replace") as file:
                    next(file, None)
                    for line in file:
                        fields = line.split()
                        if len(fields) == 7 and fields[6].isdigit():  # no path: an unnamed socket
                            self._unnamed.add(int(fields[6]))
            except OSError:
                pass
        return self._unnamed


def describe(waits: Iterable[str], *, ends: bool = True) -> str:
    """``"2 in a lock, condition or join, 1 in a read"``; without ``ends``, no wait says when it
    ends (an instrumented waiter's slice is stress's, not a timeout of the trial's)."""
    counts: dict[str, int] = {}
    for what in waits:
        if not ends:
            what = what.partition(" that ends in ")[0]
        counts[what] = counts.get(what, 0) + 1
    return ", ".join(f"{n} in {what}" for what, n in sorted(counts.items(), key=lambda kv: -kv[1]))
