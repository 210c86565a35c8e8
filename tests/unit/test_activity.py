"""Reading what a process tree does: thread states, CPU, and when each sleeping thread wakes by itself."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from harness.engine.activity import Snapshot, describe, snapshot
from harness.engine.beacon import Beacon, Phase

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

#: Each program prints "ready" just before it settles into the wait under test.
PROGRAMS = {
    "lock": "import threading; l = threading.Lock(); l.acquire(); print('ready', flush=True); l.acquire()",
    "join": (
        "import threading; e = threading.Event(); t = threading.Thread(target=e.wait); t.start(); "
        "print('ready', flush=True); t.join()"
    ),
    "pipe": "import os; r, w = os.pipe(); print('ready', flush=True); os.read(r, 1)",
    "socket": ("import socket; a, b = socket.socketpair(); print('ready', flush=True); a.recv(1)"),
    "sleep": "import time; print('ready', flush=True); time.sleep(100)",
    "timed_acquire": (
        "import threading; l = threading.Lock(); l.acquire(); print('ready', flush=True); l.acquire(timeout=30)"
    ),
    "select": "import os, select; r, w = os.pipe(); print('ready', flush=True); select.select([r], [], [], 20)",
    "child_sleeps": (
        "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(40)']); "
        "print('ready', flush=True); p.wait()"
    ),
    "spin": "print('ready', flush=True)\nwhile True: pass",
}


@contextmanager
def running(name: str) -> Iterator[int]:
    process = subprocess.Popen([sys.executable, "-c", PROGRAMS[name]], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield process.pid
    finally:
        for child in _children(process.pid):
            os.kill(child, 9)
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as file:
            found += [int(c) for c in file.read().split()]
    return found


def settled(pid: int, until: Callable[[Snapshot], bool], *, within: float = 10.0) -> Snapshot:
    """The first snapshot of ``pid`` for which ``until`` holds (the program may still be on its way)."""
    deadline = time.monotonic() + within
    while True:
        look = snapshot(pid)
        if until(look) or time.monotonic() > deadline:
            return look
        time.sleep(0.01)


def asleep(look: Snapshot) -> bool:
    return look.active == 0 and look.threads > 0 and len(look.waits) + look.unknown == look.threads


@pytest.mark.parametrize(
    ("name", "what"),
    [("lock", "a lock, condition or join"), ("join", "a lock, condition or join"), ("pipe", "a read"),
     ("socket", "a socket")],
)  # fmt: skip
def test_a_wait_with_no_timeout_is_read_as_such(name: str, what: str) -> None:
    with running(name) as pid:
        look = settled(pid, lambda s: asleep(s) and math.isinf(s.wakes_in) and what in s.waits)
    assert look.active == 0
    assert math.isinf(look.wakes_in)
    assert what in look.waits
    assert look.unknown == 0


@pytest.mark.parametrize(("name", "seconds"), [("sleep", 100), ("timed_acquire", 30), ("select", 20)])
def test_a_wait_with_a_timeout_says_when_it_ends(name: str, seconds: float) -> None:
    with running(name) as pid:
        look = settled(pid, lambda s: asleep(s) and not math.isinf(s.wakes_in))
    assert look.active == 0
    assert seconds - 10 < look.wakes_in <= seconds + 1  # the wait may have begun after the look began


def test_the_tree_below_the_process_is_read_too() -> None:
    with running("child_sleeps") as pid:
        look = settled(pid, lambda s: s.threads >= 2 and asleep(s) and not math.isinf(s.wakes_in))
    assert look.threads >= 2
    assert 30 < look.wakes_in <= 41  # the grandchild's sleep (it may have begun after the look began)
    assert "a child process" in look.waits  # the parent's wait4


def test_a_spinning_thread_is_active_and_uses_cpu() -> None:
    with running("spin") as pid:
        first = snapshot(pid)
        time.sleep(0.2)
        second = settled(pid, lambda s: s.cpu_since(first) > 0)
    assert second.cpu_since(first) > 0
    assert second.moved_since(first)


def test_a_socket_to_the_world_is_outside_the_trial_a_socketpair_is_not() -> None:
    with running("socket") as pid:  # a socketpair: what multiprocessing.Pipe() makes
        look = settled(pid, lambda s: asleep(s) and "a socket" in s.waits)
    assert look.external == 0
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        PROGRAMS["client"] = (
            f"import socket; s = socket.create_connection(('127.0.0.1', {port})); print('ready', flush=True); s.recv(1)"
        )
        with running("client") as pid:
            look = settled(pid, lambda s: asleep(s) and s.external == 1)
            conn, _ = server.accept()
            conn.close()
    assert look.external == 1
    assert any("outside the trial" in what for what in look.waits)


def test_describe_counts_alike_waits() -> None:
    waits = ("a lock, condition or join", "a read", "a lock, condition or join")
    assert describe(waits) == "2 in a lock, condition or join, 1 in a read"


def test_a_beacon_is_shared_with_a_forked_child() -> None:
    beacon = Beacon()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            beacon.set(42, Phase.BODY)
            os._exit(0)
        os.waitpid(pid, 0)
        reading = beacon.read()
        assert (reading.seq, reading.phase) == (42, Phase.BODY)
        assert 0 <= time.monotonic() - reading.since < 10
    finally:
        beacon.close()


def test_a_beacon_caught_in_the_middle_of_a_write_says_nothing_of_any_trial() -> None:
    # A worker frozen (SIGSTOP, to be looked at) inside a write leaves the generation odd and the
    # data half written: a start time of 0 made a safe trial "still running after 1.3e+04 s" (the
    # machine's uptime), judged undecided with that duration.
    from harness.engine import beacon as module

    beacon = Beacon()
    try:
        beacon.set(7, Phase.BODY)
        module._GENERATION.pack_into(beacon._map, 0, 3)  # odd: being written
        module._DATA.pack_into(beacon._map, module._GENERATION.size, 8, Phase.BODY, 0.0)
        reading = beacon.read()
        assert reading.seq == -1  # no trial's
        assert reading.phase is Phase.IDLE
        assert 0 <= time.monotonic() - reading.since < 10
    finally:
        beacon.close()
