"""Controlled mode: real threads, one at a time, every switch chosen by a scheduler.

Stress mode says *how often* a variant fails under perturbation; controlled mode says *exactly how*.
The threads are real — the variant body, the trial's actors, and every thread the code under test
starts itself (``threading.Thread``, a ``Timer``, an executor's workers) — but only one runs at a
time: a baton passes between them at every instruction of the code under test (or every line) and
at every operation of an instrumented primitive, and a strategy decides who gets it. A schedule is
therefore a sequence of choices: it can be recorded as a short string, replayed exactly, shrunk to
its fewest context switches, and — with a bound on preemptions — enumerated exhaustively.

* `scheduler` — the baton, blocking, virtual time, deadlocks and livelocks, letting go;
* `threads` — the threads the code under test starts, brought under the scheduler; deadlocks over
  joins and futures described as cycles;
* `watchdog` — a wait the scheduler cannot see (``select``, a socket) ends the schedule as unsupported;
* `schedule` — a schedule as data and as a compact string;
* `strategies` — random walk, PCT, and forced (replay, exploration, shrinking);
* `explore` — bounded-preemption exhaustive search (CHESS-style), driven from the engine;
* `shrink` — the fewest context switches that still fail;
* `session` — the scheduler, strategy and instrumentation of one controlled trial;
* `trace` — a schedule's steps as an interleaving table, one column per thread;
* `coroutines` — the same for a coroutine trial's tasks, on one event loop with virtual time.

Trials run under a `session` in the engine's workers (`harness.engine.runner`), or in this process
(`harness.engine.local`, for ``stress replay`` and the pytest plugin).
"""
