"""Potential deadlocks: cycles in the order in which locks are taken (Linux's lockdep, for Python).

Every trial of a variant reports the lock-order edges it showed its worker for the first time:
"while holding A, a thread acquired (or tried to acquire, blocking) B". Merged over all trials, the
edges form a graph over lock identities — where a lock was created and the how-many-th it was at
that line in its trial, so that five forks made in one loop stay five locks. A cycle in that graph
(A before B somewhere, B before A elsewhere) can deadlock under some interleaving even if no trial
happened to: it is reported as a potential deadlock, with the code path of every edge.

Only blocking acquisitions without a timeout make edges: a try-lock or a timed acquire cannot wait
for ever, which is exactly why back-off strategies are safe. A cycle whose every edge is taken
inside the same *gate* — a lock held around all of it, or a semaphore — that admits fewer threads
than the cycle needs cannot close either (the waiter who seats four of five philosophers). Nor can
a cycle of N locks without N different threads to take its edges, one each: a thread holds one
lock of the cycle while it waits for the next, so one thread that takes two locks in both orders
(possible with plain Locks, which any thread may release) is no deadlock on its own. Which threads
took an edge is known by name, the actor's, the same in every trial (`Session.thread_key`); lockdep
and ThreadSanitizer warn about one thread's inversions too, since in their world any code may run
on many threads — in a trial, only the threads seen may.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.detect.wait_graph import describe_site
from harness.text import short_where

__all__ = ["LockOrder", "PotentialDeadlock"]

Identity = tuple[str, int, int]


def _identity(data: dict[str, Any]) -> Identity:
    return (str(data["file"]), int(data["line"]), int(data["ordinal"]))


@dataclass(frozen=True)
class PotentialDeadlock:
    """A cycle of lock-order edges.

    Attributes:
        locks: The locks of the cycle, in order (each is taken while holding the previous one).
        paths: For each edge, how it was seen: thread, where the held lock was taken, where the
            next one was.
    """

    locks: tuple[str, ...]
    paths: tuple[str, ...]

    def summary(self) -> str:
        return " → ".join((*self.locks, self.locks[0]))

    def to_dict(self) -> dict[str, Any]:
        return {"cycle": list(self.locks), "paths": list(self.paths)}


class LockOrder:
    """The lock-order graph of one variant, merged from every worker."""

    #: Enough for any scenario a person reads; a larger graph reports the first cycles found.
    MAX_CYCLES = 20
    MAX_LENGTH = 12

    #: Threads kept per edge; an edge more threads took may be taken by any thread.
    MAX_THREADS = 4

    def __init__(self) -> None:
        self.edges: dict[tuple[Identity, Identity], dict[str, Any]] = {}
        #: Per edge, the gates (identity -> capacity) present in *every* observation of it.
        self.gates: dict[tuple[Identity, Identity], dict[Identity, int]] = {}
        #: Per edge, the threads seen taking it, each with its first record; None once more than
        #: `MAX_THREADS` (or a record that names no thread) did: then any thread may.
        self.takers: dict[tuple[Identity, Identity], dict[str, dict[str, Any]] | None] = {}

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            key = (_identity(record["held"]), _identity(record["acquiring"]))
            gates = {_identity(gate): int(gate["capacity"]) for gate in record.get("gates", ())}
            if key in self.gates:
                common = self.gates[key]
                self.gates[key] = {g: c for g, c in common.items() if g in gates}
            else:
                self.gates[key] = gates
            self.edges.setdefault(key, record)
            takers = self.takers.setdefault(key, {})
            thread = record.get("thread")
            if takers is None or thread in takers:
                continue
            if thread is None or len(takers) >= self.MAX_THREADS:
                self.takers[key] = None
            else:
                takers[str(thread)] = record

    def cycles(self) -> list[PotentialDeadlock]:
        """Every elementary cycle (up to a bound) that some interleaving could close."""
        found = []
        for cycle in self._elementary_cycles():
            if self._gated(cycle):
                continue
            threads = self._threads_for(cycle)
            if threads is not None:
                found.append(self._explain(cycle, threads))
        return found

    def _threads_for(self, cycle: list[Identity]) -> list[str | None] | None:
        """A different thread for each edge of ``cycle``, each one seen taking its edge (None for an
        edge any thread may take), or None when there are not enough threads to close it: a
        bipartite matching by augmenting paths (Kuhn's algorithm), over at most `MAX_THREADS`
        threads per edge."""
        pairs = [(held, cycle[(i + 1) % len(cycle)]) for i, held in enumerate(cycle)]
        choices = [self.takers.get(pair) for pair in pairs]
        owner: dict[str, int] = {}  # thread -> the edge it is matched to

        def place(edge: int, tried: set[str]) -> bool:
            takers = choices[edge]
            assert takers is not None
            for thread in takers:
                if thread in tried:
                    continue
                tried.add(thread)
                other = owner.get(thread)
                if other is None or place(other, tried):
                    owner[thread] = edge
                    return True
            return False

        for edge, takers in enumerate(choices):
            if takers is not None and not place(edge, set()):
                return None
        chosen: list[str | None] = [None] * len(cycle)
        for thread, edge in owner.items():
            chosen[edge] = thread
        return chosen

    def _gated(self, cycle: list[Identity]) -> bool:
        """Every edge of the cycle is taken inside one gate that admits fewer threads than the
        cycle needs (one per lock): it cannot close."""
        pairs = [(held, cycle[(i + 1) % len(cycle)]) for i, held in enumerate(cycle)]
        common = dict(self.gates[pairs[0]])
        for pair in pairs[1:]:
            common = {g: c for g, c in common.items() if g in self.gates[pair]}
        return any(capacity < len(cycle) for capacity in common.values())

    def _elementary_cycles(self) -> list[list[Identity]]:
        successors: dict[Identity, list[Identity]] = {}
        for held, acquiring in sorted(self.edges):
            successors.setdefault(held, []).append(acquiring)
        found: list[list[Identity]] = []

        def extend(path: list[Identity], on_path: set[Identity]) -> None:
            for nxt in successors.get(path[-1], ()):
                if len(found) >= self.MAX_CYCLES:
                    return
                if nxt == path[0]:
                    found.append(list(path))
                elif nxt > path[0] and nxt not in on_path and len(path) < self.MAX_LENGTH:
                    on_path.add(nxt)
                    path.append(nxt)
                    extend(path, on_path)
                    path.pop()
                    on_path.discard(nxt)

        # Each cycle is found once: from its smallest lock, through larger ones only.
        for start in sorted(successors):
            extend([start], {start})
        return found

    def _explain(self, cycle: list[Identity], threads: list[str | None]) -> PotentialDeadlock:
        names = [_lock_name(self.edges, identity) for identity in cycle]
        paths = []
        for index, held in enumerate(cycle):
            acquiring = cycle[(index + 1) % len(cycle)]
            pair = (held, acquiring)
            takers, thread = self.takers.get(pair), threads[index]
            record = takers[thread] if takers is not None and thread is not None else self.edges[pair]
            paths.append(
                f"{record.get('thread', 'a thread')} took {names[index]} at {short_where(record['held_at'])}, "
                f"then {names[(index + 1) % len(cycle)]} at {short_where(record['acquiring_at'])}"
            )
        return PotentialDeadlock(tuple(names), tuple(paths))


def _lock_name(edges: dict[tuple[Identity, Identity], dict[str, Any]], identity: Identity) -> str:
    file, line, ordinal = identity
    count = 1 + max(other[2] for pair in edges for other in pair if other[:2] == (file, line))
    return describe_site(file, line, ordinal, count=count)
