"""What the instrumented primitives cost, and how fast a deadlock is caught.

Prints, from one run (ratios and medians measured together; the machine is shared):

1. uncontended ``with lock:`` on the instrumented Lock against the C lock, best of several rounds,
   outside a trial and inside one (with a wait-for graph and lock-order recording), as ratios;
2. deadlock detection: two threads take two locks in opposite order behind a barrier, so the cycle
   closes every time; the median time from the cycle closing to the first `DeadlockError`, and
   until both threads are free (the other one either gets the same error or, once the first has
   unwound and let go of its lock, simply acquires it).

Usage: ``python benchmarks/primitives.py [--rounds N] [--deadlocks N]``
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from _thread import allocate_lock

from harness.detect import primitives
from harness.detect.wait_graph import DeadlockError, WaitGraph
from harness.scope import Scope


def _with_loop(lock: object, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        with lock:  # type: ignore[attr-defined]
            pass
    return (time.perf_counter() - start) / n


def _session() -> primitives.Session:
    graph = WaitGraph(
        scope=Scope(files=[__file__]),
        main=threading.get_ident(),
        preexisting={t.ident for t in threading.enumerate() if t.ident is not None},
    )
    return primitives.Session(graph=graph)


def lock_costs(rounds: int, n: int = 200_000) -> dict[str, float]:
    """Best per-iteration time of each kind of lock, interleaved round by round."""
    c_lock = allocate_lock()
    plain = primitives.Lock()
    primitives.activate(_session())
    in_trial = primitives.Lock()
    primitives.deactivate()
    best = {"C lock": float("inf"), "instrumented": float("inf"), "instrumented, in a trial": float("inf")}
    for _ in range(rounds):
        best["C lock"] = min(best["C lock"], _with_loop(c_lock, n))
        best["instrumented"] = min(best["instrumented"], _with_loop(plain, n))
        primitives.activate(_session())
        best["instrumented, in a trial"] = min(best["instrumented, in a trial"], _with_loop(in_trial, n))
        primitives.deactivate()
    return best


def one_deadlock() -> tuple[float, float]:
    """Close one opposite-order cycle; seconds until the first DeadlockError, and until both
    threads are free."""
    session = _session()
    primitives.activate(session)
    lock_a, lock_b = primitives.Lock(), primitives.Lock()
    both_hold_one = threading.Barrier(2)
    waiting_since = [0.0, 0.0]
    raised_at = [float("inf"), float("inf")]
    free_at = [0.0, 0.0]

    def take(index: int, first_lock: primitives.Lock, second_lock: primitives.Lock) -> None:
        with first_lock:
            both_hold_one.wait()
            waiting_since[index] = time.perf_counter()
            try:
                with second_lock:
                    free_at[index] = time.perf_counter()
            except DeadlockError:
                raised_at[index] = free_at[index] = time.perf_counter()

    threads = [
        threading.Thread(target=take, args=(0, lock_a, lock_b)),
        threading.Thread(target=take, args=(1, lock_b, lock_a)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    primitives.deactivate()
    closed = max(waiting_since)
    return min(raised_at) - closed, max(free_at) - closed


def deadlock_latency(times: int) -> tuple[list[float], list[float]]:
    """Seconds from the cycle closing to the first DeadlockError, and until both threads are free."""
    results = [one_deadlock() for _ in range(times)]
    return [first for first, _ in results], [free for _, free in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--deadlocks", type=int, default=200)
    args = parser.parse_args()
    costs = lock_costs(args.rounds)
    base = costs["C lock"]
    for name, seconds in costs.items():
        print(f"{name + ':':28s} {seconds * 1e9:7.1f} ns per with-block   {seconds / base:5.2f}x the C lock")
    print("acceptance: instrumented uncontended acquire/release <= 3x the C lock")
    first, last = deadlock_latency(args.deadlocks)
    print(
        f"deadlock detection, {args.deadlocks} cycles: median {statistics.median(first) * 1e3:.2f} ms to the first "
        f"DeadlockError (p90 {statistics.quantiles(first, n=10)[-1] * 1e3:.2f} ms), "
        f"median {statistics.median(last) * 1e3:.2f} ms until both threads are released"
    )


if __name__ == "__main__":
    main()
