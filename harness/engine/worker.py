"""Worker processes: forked once, reused for many trials, replaced when they die or hang.

The parent (`harness.engine.driver`) owns every deadline; a worker only runs the trials it is sent, in
order, and reports each as it finishes. Three things make a worker safe to lose:

* ``faulthandler`` writes to a file the parent can read. On a hang the parent sends ``SIGABRT``: the
  C-level handler dumps every thread's stack (even one stuck in native code or holding the GIL) and
  the process dies, which tells the parent the dump is complete. A segfault in code under test lands
  in the same file.
* What the code under test prints goes to a per-worker file, so it never garbles the terminal, and its
  tail becomes evidence when the trial fails.
* On Linux the worker asks the kernel to kill it when its parent dies, so a killed run leaves no
  worker behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import faulthandler
import fcntl
import functools
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import types
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, replace
from multiprocessing.connection import Connection
from typing import IO, Any

from harness import actors as actor_threads
from harness import loader, processes
from harness.actors import ActorPool
from harness.controlled.schedule import Schedule
from harness.controlled.session import Control
from harness.controlled.shrink import Attempt, shrink
from harness.controlled.trace import build as build_trace
from harness.detect import instrument, primitives, thread_dump, wait_graph
from harness.detect.findings import Findings
from harness.detect.instrument import Instrumenter
from harness.engine import proc_tree
from harness.engine.beacon import Beacon, Phase
from harness.engine.deadline import Watch
from harness.engine.runner import TrialRun, run_trial
from harness.engine.spool import SpoolReader, SpoolWriter
from harness.errors import ScenarioError
from harness.perturb import mp_delays, pause
from harness.perturb.plan import Plan
from harness.perturb.preempt import Preemptor
from harness.results.outcome import Evidence, Outcome
from harness.scenario import Variant
from harness.scope import HARNESS_DIR, Scope
from harness.text import clip, decode, short_path

__all__ = ["Task", "WorkerHandle"]

OUTPUT_LIMIT = 8_000
DUMP_LIMIT = 64_000
_PR_SET_PDEATHSIG = 1


@dataclass(slots=True)
class Task:
    """One trial to run: the ``seq``-th trial of ``variant``, under ``plan``. Mutable only in
    `ticket`, which each dispatch sets (a run sends thousands a second: no copy per dispatch)."""

    seq: int
    variant: str
    plan: Plan
    size: int
    #: The swept knob's value for this trial, in a sweep.
    sweep: float | None = None
    #: Actors per trial, for variants that let it vary (None: the variant's default).
    actors: int | None = None
    #: Controlled mode: which schedule to run (None: stress mode).
    control: Control | None = None
    #: Why earlier attempts at this trial were not judged (their worker was not in the trial, or
    #: left no evidence): the trial is run again, and says so.
    notes: tuple[str, ...] = ()
    #: Which dispatch to its worker this is (set by `WorkerHandle.send`; unique per worker): what
    #: the worker's beacon names, since ``seq`` repeats across variants.
    ticket: int = -1


class WorkerHandle:
    """The parent's side of one worker process."""

    def __init__(
        self,
        *,
        variants: Mapping[str, Variant],
        scope: Scope,
        close_in_child: Sequence[int] = (),
        start_method: str = "fork",
    ) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child_conn = ctx.Pipe(duplex=True)
        #: Where the worker is: between trials, in a trial's body, or after it (shared memory).
        self.beacon = Beacon()
        # Unlinked at once, closed in close(): nothing is left on disk whatever happens to either side.
        self.dump: IO[bytes] = tempfile.TemporaryFile(prefix="stress-dump-")  # noqa: SIM115
        #: Where the worker appends its trials' results (`harness.engine.spool`).
        self.spool: IO[bytes] = tempfile.TemporaryFile(prefix="stress-results-")  # noqa: SIM115
        self.results = SpoolReader(self.spool, self.beacon)
        # The worker's temporary folder: whatever it (multiprocessing's forkserver socket and
        # shared-memory arenas, the code under test's own files) leaves there when it is killed
        # goes away with it.
        self.tmp = tempfile.mkdtemp(prefix="stress-worker-")
        close = [*close_in_child, self.conn.fileno()]
        self.process = ctx.Process(
            target=_worker_main,
            args=(
                child_conn,
                self.dump,
                self.spool,
                self.beacon,
                variants,
                scope,
                close,
                os.getpid(),
                start_method,
                self.tmp,
                os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None,
            ),
            name="stress-worker",
        )
        with warnings.catch_warnings():
            # Python 3.12+ warns when a process with threads forks (a pytest-xdist worker has an
            # I/O thread). The child runs only stress's worker loop, which takes none of the locks
            # such a thread holds (it does not log, and it replaces fds 1 and 2 at once).
            warnings.filterwarnings("ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning)
            self.process.start()
        # The worker leads its own process group, so that every process a trial starts can be
        # found (and stopped) even after its parent died. Both sides set it: no race.
        with contextlib.suppress(OSError):
            os.setpgid(self.process.pid or 0, self.process.pid or 0)
        child_conn.close()
        self.pending: deque[Task] = deque()
        self.tickets = 0
        self._asked = False
        #: multiprocessing's helpers (resource tracker, forkserver) seen below the worker: they must
        #: be let exit by themselves once the worker is gone, to clean up what they track.
        self.helpers: set[int] = set()
        #: False once a send failed: the process is gone and only waits to be noticed.
        self.alive = True
        #: The deadline of the head of `pending` (None when nothing is pending, or not made yet).
        self.watch: Watch | None = None
        #: When the head of `pending` became the head (the driver's clock).
        self.head_since = 0.0
        #: The CPU the worker is pinned to (None: not pinned).
        self.cpu: int | None = None

    def pin(self, cpu: int | None) -> None:
        """Run the worker (and the actor threads it starts from now on) on ``cpu`` alone; None:
        wherever the kernel likes. With the GIL, one thread of a worker runs at a time anyway; on one
        CPU, handing over between them is a switch on that CPU, not a wake-up of another one (which
        costs tens of microseconds on a virtual machine), and each worker keeps its own CPU."""
        self.cpu = cpu
        pid = self.process.pid
        if cpu is None or not pid or not hasattr(os, "sched_setaffinity"):
            return
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpu})

    @property
    def sentinel(self) -> int:
        return self.process.sentinel

    def fds(self) -> list[int]:
        """Descriptors a later-forked worker must close (they belong to this one)."""
        return [self.conn.fileno(), self.dump.fileno(), self.spool.fileno()]

    def send(self, tasks: Sequence[Task]) -> None:
        """Queue ``tasks`` on the worker, in one message that also says how much of the worker's
        spool has been read; raises `OSError` if the worker is gone."""
        numbered = list(tasks)
        for task in numbered:
            self.tickets += 1
            task.ticket = self.tickets
        self.conn.send(
            (
                "tasks",
                self.results.offset,
                self.results.epoch,
                [(t.ticket, t.variant, t.plan, t.size, t.actors, t.control) for t in numbered],
            )
        )
        self.pending.extend(numbered)

    def receive(self) -> list[tuple[Any, ...]]:
        """Every message waiting on the pipe; stops quietly at end of file."""
        messages: list[tuple[Any, ...]] = []
        try:
            while self.conn.poll():
                messages.append(self.conn.recv())
        except (EOFError, OSError):
            pass
        return messages

    def freeze(self) -> None:
        """Stop the worker where it is (SIGSTOP): it neither reacts nor reaps until `thaw` or death."""
        pid = self.process.pid
        if pid and pid > 0:  # never 0 or less: that would signal our own process group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        pid = self.process.pid
        if pid and pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def abort_for_dump(self, *, grace: float = 0.5) -> None:
        """Make every process of the worker's trial dump its threads' stacks, then end them all.

        The worker is frozen first (so it neither reacts nor reaps; a process of its trial that dies
        meanwhile has its children handed to the worker, a child subreaper, so they stay in the
        tree), its trial's processes dump and die one at a time (so their dumps do not interleave),
        then the worker dumps and dies. multiprocessing's own helpers are left to exit by themselves
        once the worker is gone.
        """
        pid = self.process.pid
        if not pid or pid <= 0:
            return
        self.freeze()
        for child in self.trial_processes():
            proc_tree.signal_and_wait(child, signal.SIGABRT, grace=grace, before=self._header)
            proc_tree.kill_all([child])
        self.kill_trial_processes()  # anything the dumping processes started meanwhile
        self._header(pid, "worker")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGABRT)
            os.kill(pid, signal.SIGCONT)
        self.process.join(grace)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()

    def trial_processes(self) -> list[int]:
        """The processes below the worker that still run (deepest first), but not multiprocessing's
        helpers. While the worker lives, that is every process its trials started: the worker is a
        child subreaper, so an orphan stays below it."""
        pid = self.process.pid
        if not pid:
            return []
        below = [child for child in proc_tree.descendants(pid) if proc_tree.alive(child)]
        helpers = {child for child in below if proc_tree.is_helper(child)}
        self.helpers |= helpers
        return [child for child in below if child not in helpers]

    def kill_trial_processes(self, *, rounds: int = 5) -> None:
        """Kill the processes below the worker (not its helpers). A few rounds, because a process
        killed in one round may have started another meanwhile."""
        for _ in range(rounds):
            remaining = self.trial_processes()
            if not remaining:
                return
            proc_tree.kill_all(remaining)
            time.sleep(0.001)

    def sweep_group(self) -> None:
        """After the worker died on its own: what its trial started was handed to init, and only its
        process group still finds it (a scan of every process: kept off the path of hangs)."""
        pid = self.process.pid
        if not pid or pid <= 0:
            return
        try:
            os.killpg(pid, 0)  # is anyone left in the group at all? (no scan needed if not)
        except OSError:
            return
        for _ in range(5):
            members = [p.pid for p in proc_tree.group_members(pid) if p.pid != pid]
            helpers = {member for member in members if proc_tree.is_helper(member)}
            self.helpers |= helpers
            remaining = [member for member in members if member not in helpers]
            if not remaining:
                return
            proc_tree.kill_all(remaining)
            time.sleep(0.002)

    def _header(self, pid: int, what: str = "process") -> None:
        with contextlib.suppress(OSError):
            os.write(self.dump.fileno(), f"\n--- {what} {pid} ---\n".encode())

    def read_dump(self) -> str:
        size = os.fstat(self.dump.fileno()).st_size
        if not size:
            return ""
        start = max(0, size - DUMP_LIMIT * 2)
        return clip(decode(os.pread(self.dump.fileno(), size - start, start)), DUMP_LIMIT)

    def ask_to_stop(self) -> None:
        """Tell the worker to finish once its queue is empty."""
        if not self._asked:
            self._asked = True
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(None)

    def stop(self, *, grace: float = 1.0) -> None:
        """Ask the worker to finish, then make sure it is gone and reaped."""
        self.ask_to_stop()
        self.process.join(grace)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.beacon.close()
        with contextlib.suppress(OSError):
            self.conn.close()
        with contextlib.suppress(OSError):
            self.dump.close()
        with contextlib.suppress(OSError):
            self.spool.close()
        with contextlib.suppress(ValueError):
            self.process.close()


# -- inside the worker process -------------------------------------------------------------------


class _Output:
    """fd 1 and 2 point at an unlinked temporary file, emptied before each trial."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="stress-output-")  # noqa: SIM115 (lives as long as the worker)
        self.fd = self.file.fileno()
        stat = os.fstat(self.fd)
        self._identity = (stat.st_dev, stat.st_ino)
        # O_APPEND: after the file is truncated, writes land at its (new) start.
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) | os.O_APPEND)
        _flush_std()
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)

    def reset(self) -> None:
        """Empty the file before a trial."""
        if os.fstat(self.fd).st_size:
            os.ftruncate(self.fd, 0)

    def restore(self) -> list[str]:
        """Point the standard streams at the file again if the trial closed or redirected them;
        what had to be restored, by name."""
        lost = []
        for fd, name in ((1, "stdout"), (2, "stderr")):
            if not self._points_here(fd):
                os.dup2(self.fd, fd)
                lost.append(f"fd {fd}")
            stream = getattr(sys, name)
            if stream is None or stream.closed:
                setattr(sys, name, open(fd, "w", buffering=1, closefd=False, errors="backslashreplace"))  # noqa: SIM115
                lost.append(f"sys.{name}")
        return sorted(lost)

    def _points_here(self, fd: int) -> bool:
        try:
            stat = os.fstat(fd)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == self._identity

    def tail(self) -> str | None:
        _flush_std()
        size = os.fstat(self.fd).st_size
        if not size:
            return None
        start = max(0, size - OUTPUT_LIMIT * 2)
        return clip(decode(os.pread(self.fd, size - start, start)), OUTPUT_LIMIT)


def _reset(fd: int) -> None:
    """Empty the dump file before a trial: what a later dump shows is this trial's alone."""
    if os.fstat(fd).st_size:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)


def _note_threads_before(fd: int) -> None:
    """Write into the emptied dump file which threads were running before the trial (a module's
    server or ticker; not stress's own, nor its parked actors): a hang's dump labels their lines,
    which are not the trial's (`harness.detect.thread_dump`)."""
    main = threading.main_thread()
    parked = actor_threads._parked
    idents = [
        t.ident
        for t in threading.enumerate()
        if t is not main
        and t.ident is not None
        and t.ident not in parked
        and t.native_id not in wait_graph._OWN_THREADS
    ]
    if idents:
        with contextlib.suppress(OSError):
            os.write(fd, f"{thread_dump.BEFORE}{', '.join(f'0x{i:016x}' for i in idents)}\n".encode())


#: Processes the user's modules started at import in this worker (a module-level ``Pool``, a
#: helper started with ``subprocess``): the program's, not any trial's (see `_note_program_processes`).
_program_pids: set[int] = set()


def _note_program_processes() -> None:
    """Remember the processes this worker has now, before its first trial: an import run again
    here (`harness.loader.import_again`) started them, as the program does at its start, and no
    trial may be blamed for them, nor have them stopped."""
    _program_pids.update(p.pid for p in multiprocessing.active_children() if p.pid is not None)
    if _has_children():
        helpers = _own_helpers()
        _program_pids.update(c for c in proc_tree.children(os.getpid()) if c not in helpers)


#: Seconds a worker may take to import the user's project again (`harness.loader.import_again`).
IMPORT_LIMIT = 30.0


def _import_stuck(conn: Connection, importer: int) -> None:
    """The worker's import of the user's project has not ended in `IMPORT_LIMIT`: tell the parent
    where it waits. The parent stops the run (and this process, still stuck in the import)."""
    frame = sys._current_frames().get(importer)
    where = ""
    while frame is not None:
        if not frame.f_code.co_filename.startswith(HARNESS_DIR) and not frame.f_code.co_filename.startswith("<"):
            where = f"{short_path(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"
            break
        frame = frame.f_back
    threads = ", ".join(name for names in loader.STARTED_AT_IMPORT.values() for name in names)
    with contextlib.suppress(OSError, ValueError):
        conn.send(
            (
                "import",
                f"importing the project again in a worker did not end in {IMPORT_LIMIT:.0f} s"
                + (f": it waits at {where}" if where else "")
                + f" (for something the first import still holds?); the import starts threads ({threads}), "
                "and a fork copies none, so each worker imports the project again; the import must succeed twice",
            )
        )


def _reap_leftovers(run: TrialRun) -> TrialRun:
    """Processes the variant started and did not join are stopped, and the trial says so."""
    leftovers = [p for p in multiprocessing.active_children() if p.pid not in _program_pids]
    if not leftovers:
        return run
    for process in leftovers:
        process.kill()
        process.join()
    return _add_problem(run, f"the variant left {len(leftovers)} process(es) running; stress stopped them")


def _schedule_info(
    run: TrialRun, control: Control, attempt: Callable[[Control | None], TrialRun], *, minimize: bool
) -> dict[str, Any]:
    """What a controlled trial reports besides its outcome: its length; for exploration, its choice
    points; for a failure, its schedule — and, for the first failure of its kind, the shrunk
    schedule with its interleaving trace."""
    info: dict[str, Any] = {"steps": run.steps, "progress": round(run.progress, 3)}
    if control.record_decisions:
        info["decisions"] = [astuple(d) for d in run.decisions]
    if not run.outcome.is_failure:
        return info
    info["schedule"] = run.schedule
    # Counted as the interleaving trace marks them (a change of the running thread between the
    # trial's steps), as the shrunk schedule's and a replay's are: the scheduler's own count also
    # has its hand-overs to and from the variant body as it starts and ends the actors.
    info["switches"] = build_trace(run.trace).switches if run.trace else run.switches
    if run.unscheduled is not None:
        # Something outside the schedule decided the run: a shrunk form would fail or pass by chance.
        info["unscheduled"] = run.unscheduled
        return info
    if not minimize or run.schedule is None:
        return info

    def forced(schedule: Schedule, record: bool) -> Control:
        return replace(control, strategy="forced", forced=schedule.forced, record_decisions=record)

    def candidate(schedule: Schedule) -> Attempt:
        again = attempt(forced(schedule, True))
        return Attempt(
            fails=again.outcome is run.outcome,
            executed=Schedule.parse(again.schedule or ""),
            switches=again.switches,
            preemptions=again.preemptions,
            decisions=again.decisions,
        )

    result = shrink(Schedule.parse(run.schedule), run.switches, run.preemptions, candidate)
    final = attempt(forced(result.schedule, False))
    if final.outcome is run.outcome:
        info["minimal"] = final.schedule
        info["trace"] = build_trace(final.trace).to_dict()
        info["shrink_runs"] = result.runs + 1
        info["minimal_steps"] = final.steps
        if final.evidence is not None:
            info["minimal_messages"] = list(final.evidence.messages)
    return info


#: Daemon threads a trial may leave behind before the worker is replaced (each holds a stack).
DAEMON_THREADS_KEPT = 50


def _stray_processes(run: TrialRun) -> TrialRun:
    """Processes the variant started outside multiprocessing (``os.fork``, ``subprocess``) and left
    running are stopped, with everything they started, and the trial says so."""
    if not _has_children():
        return run
    me = os.getpid()
    strays = []
    helpers = _own_helpers()
    for child in proc_tree.children(me):
        if child in helpers or child in _program_pids or proc_tree.is_helper(child):
            continue
        if proc_tree.alive(child):
            strays.append(child)
        else:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(child, os.WNOHANG)  # a child that exited: reap it, it leaked nothing
    if not strays:
        return run
    for child in strays:
        proc_tree.kill_all([*proc_tree.descendants(child), child])
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(child, 0)
    return _add_problem(run, f"the variant left {len(strays)} process(es) of its own running; stress stopped them")


def _has_children() -> bool:
    """Whether this process has any child, running or exited (one system call: the scan of
    ``/proc`` is left for the trials that started a process)."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        return True
    try:
        waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except OSError:
        return True
    return True


def _own_helpers() -> set[int]:
    """multiprocessing's helpers this process started, by its own records: between its fork and its
    exec, a resource tracker's command line is still ours, and it must not be taken for a stray."""
    found = set()
    for module, holder, attribute in (
        ("multiprocessing.resource_tracker", "_resource_tracker", "_pid"),
        ("multiprocessing.forkserver", "_forkserver", "_forkserver_pid"),
    ):
        instance = getattr(sys.modules.get(module), holder, None)
        pid = getattr(instance, attribute, None)
        if isinstance(pid, int):
            found.add(pid)
    return found


#: How often the threads a trial left are looked at again while they have their grace.
LEFT_THREADS_POLL = 0.005


def _waits_for_good(thread: threading.Thread) -> bool:
    """Whether ``thread`` waits, with no timeout, on an instrumented primitive nobody released: when
    every thread a trial left does, none of them can end another's wait, and the grace given them
    would only be waited out (a daemon worker parked on ``queue.get()`` after the trial, say)."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code is _BLOCK_CODE:
            waiting = frame.f_locals.get("waiting")
            return waiting is not None and not waiting.timed and not waiting.runnable()
        frame = frame.f_back
    return False


def _stranded(thread: threading.Thread, frames: Mapping[int, types.FrameType]) -> bool:
    """Whether ``thread`` waits, with no timeout, for a lock whose holder waits for good too, or is
    gone, or for a future not done (a deadlock the trial left behind among threads that outlive
    it). ``frames``: every
    thread's innermost frame, taken once for all the threads asked about."""
    frame = frames.get(thread.ident or 0)
    while frame is not None and frame.f_code is not _BLOCK_CODE:
        frame = frame.f_back
    if frame is None:
        return False
    waiting = frame.f_locals.get("waiting")
    if isinstance(waiting, wait_graph.FutureWaiting):
        # Its task is queued behind it, on a module-level executor whose only worker it is: a
        # deadlock the abort left it in (it is not the trial's to unwind).
        return not waiting.runnable()
    lock = getattr(waiting, "lock", None)
    if waiting is None or lock is None or waiting.timed or waiting.runnable():
        return False
    owner = lock._owner
    holder = getattr(owner, "thread", None)
    return holder is None or not holder.is_alive() or holder is thread or _waits_for_good(holder)


_BLOCK_CODE = primitives._block.__code__
_DummyThread: type = threading._DummyThread


def _started_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads running now that were not in ``before`` (a `_thread` thread's "dummy" record, which
    says it is alive for ever, counts while its OS thread runs)."""
    wait_graph.forget_ended_records()
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


def _idle_pool_worker(thread: threading.Thread) -> bool:
    return wait_graph.idle_executor_worker(thread, sys._current_frames())


def _leaked_threads(before: set[threading.Thread], *, grace: float = 0.2) -> tuple[str | None, bool]:
    """Threads the trial started and left running: (what to report, whether the worker must be
    replaced so the next trial starts clean). Threads cannot be stopped, only abandoned with their
    process. A few daemon threads (a queue's feeder, say) are tolerated."""
    deadline = time.monotonic() + grace
    left = _started_since(before)
    while left and time.monotonic() < deadline and not all(_waits_for_good(t) or _idle_pool_worker(t) for t in left):
        wait = min(LEFT_THREADS_POLL, max(0.0, deadline - time.monotonic()))
        # A thread started with `_thread.start_new_thread` is known to `threading` only as a
        # "dummy" once it asked for its Thread object: it cannot be joined, only waited out.
        joinable = [t for t in left if not isinstance(t, _DummyThread)]
        if joinable:
            joinable[0].join(wait)
        else:
            time.sleep(wait)
        left = _started_since(before)
    # An executor's worker waiting for its next task is the executor's, as a module-level pool's
    # is: it runs again in the next trial that submits, or ends when its executor does.
    plain = [t for t in left if not t.daemon and not _idle_pool_worker(t)]
    if plain:
        names = ", ".join(sorted({t.name for t in plain})[:5])
        return f"the variant left {len(plain)} thread(s) running ({names}); the worker was replaced", True
    if len(left) > DAEMON_THREADS_KEPT:
        return f"the variant left {len(left)} daemon threads running; the worker was replaced", True
    return None, False


def _add_problem(run: TrialRun, message: str) -> TrialRun:
    evidence = run.evidence or Evidence()
    outcome = run.outcome if run.outcome.severity >= Outcome.ERROR.severity else Outcome.ERROR
    return replace(run, outcome=outcome, evidence=replace(evidence, messages=(*evidence.messages, message)))


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


def _watch_signal_timers(beacon: Beacon) -> None:
    """Let the parent see the signal timers trials arm (``signal.setitimer``, ``signal.alarm``): a
    thread that waits for what a timer's handler will do is not blocked for good, and nothing in
    ``/proc`` says a timer is pending."""
    setitimer, alarm = signal.setitimer, signal.alarm

    def watched_setitimer(which: int, seconds: float, interval: float = 0.0) -> tuple[float, float]:
        previous = setitimer(which, seconds, interval)
        if which == signal.ITIMER_REAL:
            beacon.set_alarm(time.monotonic() + seconds if seconds > 0 else None)
            wait_graph.note_alarm(time.monotonic() + seconds if seconds > 0 else None)
        return previous

    def watched_alarm(seconds: int) -> int:
        previous = alarm(seconds)
        beacon.set_alarm(time.monotonic() + seconds if seconds > 0 else None)
        wait_graph.note_alarm(time.monotonic() + seconds if seconds > 0 else None)
        return previous

    signal.setitimer = watched_setitimer
    signal.alarm = watched_alarm

    # A signal the code sends its own process is handled on the main thread, maybe only later:
    # until then, its handler may yet end a wait.
    kill, raise_signal, pthread_kill = os.kill, signal.raise_signal, signal.pthread_kill

    def watched_kill(pid: int, signum: int) -> None:
        if pid in (0, os.getpid()):
            wait_graph.note_signal(signum)
        kill(pid, signum)

    def watched_raise_signal(signum: int) -> None:
        wait_graph.note_signal(signum)
        raise_signal(signum)

    def watched_pthread_kill(thread_id: int, signum: int) -> None:
        wait_graph.note_signal(signum)
        pthread_kill(thread_id, signum)

    os.kill = watched_kill
    signal.raise_signal = watched_raise_signal
    signal.pthread_kill = watched_pthread_kill

    install = signal.signal

    def watched_signal(signum: int, handler: Any) -> Any:
        if callable(handler):
            actor_threads.handlers_installed = True  # the main thread must be free to run it
        return install(signum, handler)

    signal.signal = watched_signal  # type: ignore[assignment]


_PR_SET_CHILD_SUBREAPER = 36


def _adopt_orphans() -> None:
    """Linux: become a child subreaper, so a process a trial starts stays below this worker even when
    its own parent dies first (a double fork, a Pool worker's child): the parent finds every process
    of a trial by following the tree down from the worker, in microseconds."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _unpin_children(allowed: set[int] | None) -> None:
    """A worker may be pinned to one CPU (`WorkerHandle.pin`); the processes its trials start are
    not: process actors, a Pool's workers, a subprocess run on every CPU the run may use
    (``allowed``), as the code under test would. Pinned, they would also take the worker's one CPU
    from it while they start (a spawned interpreter is seconds of CPU on a busy machine).

    A child inherits the affinity of the thread that starts it: ``os.fork`` children (fork-started
    process actors) reset theirs at once; for the calls that fork and exec in C (multiprocessing's
    spawn and forkserver, its resource tracker, ``subprocess``, ``os.posix_spawn``) the calling thread
    is unpinned for the length of the call."""
    if not allowed or not hasattr(os, "sched_setaffinity"):
        return

    def unpin() -> None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, allowed)

    os.register_at_fork(after_in_child=unpin)

    def unpinned(start: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(start)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                mine = os.sched_getaffinity(0)
            except OSError:
                return start(*args, **kwargs)
            if mine == allowed:
                return start(*args, **kwargs)
            unpin()
            try:
                return start(*args, **kwargs)
            finally:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, mine)

        return call

    import _posixsubprocess
    import subprocess

    fork_exec = _posixsubprocess.fork_exec
    _posixsubprocess.fork_exec = unpinned(fork_exec)  # multiprocessing.util.spawnv_passfds
    if getattr(subprocess, "_fork_exec", None) is fork_exec:
        subprocess._fork_exec = _posixsubprocess.fork_exec  # type: ignore[attr-defined]
    for name in ("posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            setattr(os, name, unpinned(getattr(os, name)))


#: Seconds a worker whose parent died still gives the trial it is in before it exits.
ORPHAN_GRACE = 1.0
#: The signal the kernel sends a worker when its parent dies (Linux); a real-time one, which no
#: trial has a use for.
_ORPHANED = getattr(signal, "SIGRTMIN", 34) + 3
_parent_gone = False


def _die_with_parent(parent: int) -> None:
    """Linux: exit soon after the parent dies, even if it was ``kill -9``-ed.

    Not at once, though: a process killed at an arbitrary instruction can leave behind what it was
    half-way through making — a named semaphore ``sem_open`` had created and multiprocessing had not
    yet told its resource tracker of stays in ``/dev/shm`` for good. So the kernel sends `_ORPHANED`,
    whose handler (run between two bytecodes of the worker's main thread, never inside C) lets the
    trial in flight finish — its pools close, their semaphores go — and the worker leaves before the
    next one; after `ORPHAN_GRACE` it leaves whatever the trial is doing. The janitor gives the
    workers that long before it stops what they leave (`harness.engine.janitor`)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError, ValueError):
        signal.signal(_ORPHANED, _orphaned)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, _ORPHANED, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _orphaned(signum: int, frame: object) -> None:
    global _parent_gone
    if _parent_gone:
        return
    _parent_gone = True
    threading.Thread(target=_exit_after, args=(ORPHAN_GRACE,), name="stress-orphaned", daemon=True).start()


def _exit_after(seconds: float) -> None:
    time.sleep(seconds)
    os._exit(1)


def _worker_main(
    conn: Connection,
    dump: IO[bytes],
    spool_file: IO[bytes],
    beacon: Beacon,
    variants: Mapping[str, Variant],
    scope: Scope,
    close: Sequence[int],
    parent: int,
    start_method: str,
    tmp: str,
    allowed: set[int] | None,
) -> None:
    for fd in close:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # The stress command turns SIGTERM into an exception; the processes of a trial (a Pool's workers,
    # which their pool stops with SIGTERM) must die of it at once, as usual, not run exit handlers.
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    _die_with_parent(parent)
    _adopt_orphans()
    _unpin_children(allowed)
    faulthandler.enable(file=dump, all_threads=True)
    os.environ["TMPDIR"] = tmp  # for the processes trials start, too
    tempfile.tempdir = tmp
    # A spawned child re-imports its parent's __main__ — here the `stress` command, with its CLI
    # and renderers. A worker needs none of it, so its children should not pay for it.
    sys.modules["__main__"] = types.ModuleType("__main__")
    multiprocessing.set_start_method(start_method, force=True)
    # A forkserver that has the scenarios (and the process-actor code) imported forks ready
    # children in milliseconds, instead of each child importing them again.
    multiprocessing.set_forkserver_preload(sorted({v.fn.__module__ for v in variants.values()} | {"harness.processes"}))
    processes.configure(
        processes.ChildSetup(
            tuple(scope.files),
            tuple(scope.dirs),
            dump.fileno(),
            scope_forced=scope.forced,
            scope_excluded=scope.excluded,
        )
    )
    pause.hook = beacon.tick  # stress's own sleeps count as progress, never as the trial's
    pause.timer_hook = beacon.set_loop_timer

    def dump_text(text: str) -> None:
        with contextlib.suppress(OSError):
            os.write(dump.fileno(), text.encode(errors="replace"))

    pause.dump_hook = dump_text
    primitives.wait_hook = beacon.note_wait
    _watch_signal_timers(beacon)
    mp_delays.install()
    output = _Output()
    told_atomic = 0
    preemptor = Preemptor(scope)
    instrumenter = Instrumenter(scope)
    instrumenter.hold()
    # Threads the scenarios' imports started are not in this forked process: import the user's
    # project again (instrumented now, the modules' new locks are visible to the wait-for graph).
    # An import that waits for what the first one holds (a file lock taken at import, in stress's
    # own process) would never end: after `IMPORT_LIMIT` the run stops, saying where it waits.
    # (The timer's thread is gone before the first trial: one left running, from before the trial,
    # would count as a thread that may end the trial's waits, and no deadlock would be confirmed.)
    stuck = threading.Timer(IMPORT_LIMIT, _import_stuck, (conn, threading.get_ident()))
    stuck.daemon = True
    if loader.STARTED_AT_IMPORT:
        stuck.start()
    try:
        fresh = loader.import_again()
    except ScenarioError as exc:
        stuck.cancel()
        conn.send(("import", str(exc)))
        with contextlib.suppress(EOFError, OSError):
            while conn.recv() is not None:  # the parent stops the run: wait for it, as an idle worker
                pass
        return
    finally:
        if stuck.is_alive():
            stuck.cancel()
            stuck.join()
    _note_program_processes()
    variants = {
        key: dataclasses.replace(v, fn=fresh[v.scenario].variants[v.name].fn)
        if v.scenario in fresh and v.name in fresh[v.scenario].variants
        else v
        for key, v in variants.items()
    }
    pool = ActorPool()
    pool.on_parked = beacon.set_parked
    findings = Findings(tmp)
    lock_orders: dict[str, dict[Any, set[str]]] = {}
    #: Controlled mode: (variant, outcome) pairs whose first failure this worker already shrank.
    shrunk: set[tuple[str, Outcome]] = set()
    spool = SpoolWriter(spool_file, beacon)
    queue: deque[tuple[Any, ...]] = deque()
    try:
        while True:
            if _parent_gone:
                break  # between trials: nothing of the code under test is half-made
            if not queue:
                conn.send(("idle",))  # out of work: the parent sends more at once, not at its next look
                try:
                    message = conn.recv()
                except EOFError:
                    break
                if message is None:
                    break
                _, offset, epoch, tasks = message
                spool.consumed(offset, epoch)
                queue.extend(tasks)
                continue
            ticket, key, plan, size, actors, control = queue.popleft()
            output.reset()
            _reset(dump.fileno())
            _note_threads_before(dump.fileno())

            def phases(phase: Phase, ticket: int = ticket) -> None:
                beacon.set(ticket, phase)

            def attempt(
                control: Control | None,
                key: str = key,
                plan: Plan = plan,
                size: int = size,
                actors: int | None = actors,
                phases: Callable[[Phase], None] | None = None,
            ) -> TrialRun:
                return run_trial(
                    variants[key],
                    plan,
                    size=size,
                    preemptor=preemptor,
                    instrumenter=instrumenter,
                    lock_order=lock_orders.setdefault(key, {}),
                    start_method=start_method,
                    actors=actors,
                    control=control,
                    phases=phases,
                    findings=findings,
                    pool=pool if control is None else None,
                )

            threads_before = set(threading.enumerate())
            run = _stray_processes(_reap_leftovers(attempt(control, phases=phases)))
            lost = output.restore()
            if lost:
                run = _add_problem(run, f"the variant closed or redirected {', '.join(lost)}; stress restored them")
            leaked, retire = _leaked_threads(threads_before)
            if leaked is not None:
                run = _add_problem(run, leaked)
            # A thread from before the trial (a module-level pool's worker) left waiting for a lock
            # of the trial that nobody will release: the next trial would find it stuck.
            if not retire:
                frames = sys._current_frames()
                retire = any(_stranded(t, frames) for t in threads_before if t.is_alive())
            # A module's lock the trial left held would make every later trial wait for it (a
            # variant that takes a lock once and keeps it, beside one that waits for it): the next
            # trial starts on a fresh worker, with the module as it was imported.
            retire = retire or bool(instrument.left_held())
            # Stress ended threads the code started (a module's lazily started flusher, unwound by
            # a deadlock's abort or left at a schedule's end): the module would count on them.
            retire = retire or bool(run.abandoned)
            evidence = run.evidence
            if evidence is not None:
                printed = output.tail()
                if printed:
                    evidence = replace(evidence, output=printed)
            schedule = None
            if control is not None:
                first = (key, run.outcome) not in shrunk and run.outcome.is_failure
                if first:
                    shrunk.add((key, run.outcome))
                    conn.send(("shrinking", ticket))  # it takes more than one trial's deadline
                schedule = _schedule_info(run, control, attempt, minimize=first)
            beacon.set(ticket, Phase.IDLE)
            if len(preemptor.atomic) > told_atomic:
                told_atomic = len(preemptor.atomic)
                conn.send(("atomic", sorted(preemptor.atomic)))
            spool.append(
                (
                    ticket,
                    run.outcome.label,
                    run.duration,
                    evidence.to_dict() if evidence is not None else None,
                    [[(s.actor, s.delay) for s in group] for group in run.starts],
                    # Controlled mode: counted as its schedule's are (the trace's changes of thread).
                    schedule.get("switches", run.switches) if schedule is not None else run.switches,
                    run.lock_order,
                    schedule,
                    run.delay_used,
                )
            )
            if retire:
                # Leaked threads would keep a normal exit waiting for them: leave at once.
                conn.send(("retire",))
                _flush_std()
                os._exit(0)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("internal", traceback.format_exc()))
        raise
    finally:
        preemptor.close()
