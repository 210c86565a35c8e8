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
took an edge is known by role, the same in every trial; lockdep and ThreadSanitizer warn about one
thread's inversions too, since in their world any code may run on many threads — in a trial, only
the threads seen may. And the N threads must be able to take their edges at the same time: edges
ordered by thread starts and joins (a phase joined before the next starts) cannot meet, as in
Bensalem and Havelund's segmentation graph (`harness.detect.happens_before`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from harness.detect.happens_before import Clock, parallel
from harness.detect.wait_graph import describe_site
from harness.text import short_where

__all__ = ["LockOrder", "PotentialDeadlock"]

Identity = tuple[str, int, int]
#: Who took an edge: the thread's role in its trial and its start and join clock then.
Taker = tuple[str, Clock]


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
    MAX_SEARCH = 200_000

    #: Takers kept per edge; an edge more took may be taken by any thread.
    MAX_THREADS = 16
    #: Choices of takers tried per cycle; a cycle not settled within them is reported (as if no
    #: start or join ordered its edges).
    MAX_STEPS = 20_000

    def __init__(self) -> None:
        self.edges: dict[tuple[Identity, Identity], dict[str, Any]] = {}
        #: Per edge, the gates (identity -> capacity) present in *every* observation of it.
        self.gates: dict[tuple[Identity, Identity], dict[Identity, int]] = {}
        #: Per edge, its takers, each with its first record; None once more than `MAX_THREADS` (or
        #: a record that names no thread) did: then any thread may.
        self.takers: dict[tuple[Identity, Identity], dict[Taker, dict[str, Any]] | None] = {}

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
            if takers is None:
                continue
            role = record.get("role", record.get("thread"))
            clock: Clock = tuple((str(r), int(n)) for r, n in record.get("clock", ()))
            if role is None or len(takers) >= self.MAX_THREADS:
                self.takers[key] = None
            else:
                takers.setdefault((str(role), clock), record)

    def cycles(self) -> list[PotentialDeadlock]:
        """Every elementary cycle (up to a bound) that some interleaving could close."""
        found = []

        def closes(cycle: list[Identity]) -> bool:
            if self._gated(cycle):
                return False
            threads = self._threads_for(cycle)
            if threads is None:
                return False
            found.append(self._explain(cycle, threads))
            return True

        self._elementary_cycles(closes)
        return found

    def _threads_for(self, cycle: list[Identity]) -> list[Taker | None] | None:
        """A taker for each edge of ``cycle`` (None for an edge any thread may take) such that the
        cycle could close: different threads, whose clocks are pairwise parallel (no start or join
        orders one edge before another). None when no such choice exists. A backtracking search,
        edges with the fewest takers first, of at most `MAX_STEPS` choices."""
        pairs = [(held, cycle[(i + 1) % len(cycle)]) for i, held in enumerate(cycle)]
        choices = [self.takers.get(pair) for pair in pairs]
        order = sorted(range(len(cycle)), key=lambda edge: len(choices[edge] or ()))
        chosen: list[Taker | None] = [None] * len(cycle)
        steps = 0

        def place(at: int) -> bool:
            nonlocal steps
            if at == len(order):
                return True
            edge = order[at]
            takers = choices[edge]
            if takers is None:
                return place(at + 1)
            picked = [taker for taker in chosen if taker is not None]
            for taker in takers:
                steps += 1
                if steps > self.MAX_STEPS:
                    return True  # not settled: reported, as without the clocks
                if any(taker[0] == other[0] or not parallel(taker[1], other[1]) for other in picked):
                    continue
                chosen[edge] = taker
                if place(at + 1):
                    return True
                chosen[edge] = None
            return False

        return chosen if place(0) else None

    def _gated(self, cycle: list[Identity]) -> bool:
        """Every edge of the cycle is taken inside one gate that admits fewer threads than the
        cycle needs (one per lock): it cannot close."""
        pairs = [(held, cycle[(i + 1) % len(cycle)]) for i, held in enumerate(cycle)]
        common = dict(self.gates[pairs[0]])
        for pair in pairs[1:]:
            common = {g: c for g, c in common.items() if g in self.gates[pair]}
        return any(capacity < len(cycle) for capacity in common.values())

    def _elementary_cycles(self, closes: Callable[[list[Identity]], bool]) -> None:
        """Offer ``closes`` the elementary cycles of the edge graph, shortest first, until it has
        accepted `MAX_CYCLES` or none of more than `MAX_LENGTH` locks is left; within each strongly
        connected component only (Tarjan's algorithm): locks always taken in one global order form
        no component of more than one lock, and are not searched (every path through forty such
        locks is more than any search finishes). The search stops after `MAX_SEARCH` steps."""
        successors: dict[Identity, list[Identity]] = {}
        for held, acquiring in sorted(self.edges):
            successors.setdefault(held, []).append(acquiring)
        component = _components(successors)
        sizes: dict[int, int] = {}
        for number in component.values():
            sizes[number] = sizes.get(number, 0) + 1
        starts = [start for start in sorted(successors) if sizes[component[start]] > 1 or start in successors[start]]
        accepted = 0
        steps = 0

        def extend(path: list[Identity], on_path: set[Identity], length: int) -> None:
            nonlocal steps, accepted
            here = component[path[0]]
            for nxt in successors.get(path[-1], ()):
                steps += 1
                if accepted >= self.MAX_CYCLES or steps > self.MAX_SEARCH:
                    return
                if nxt == path[0]:
                    if len(path) == length and closes(list(path)):
                        accepted += 1
                elif len(path) < length and nxt > path[0] and component.get(nxt) == here and nxt not in on_path:
                    on_path.add(nxt)
                    path.append(nxt)
                    extend(path, on_path, length)
                    path.pop()
                    on_path.discard(nxt)

        # Each cycle is offered once: at its own length, from its smallest lock, through larger ones.
        for length in range(1, self.MAX_LENGTH + 1):
            for start in starts:
                extend([start], {start}, length)

    def _explain(self, cycle: list[Identity], threads: list[Taker | None]) -> PotentialDeadlock:
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


def _components(successors: dict[Identity, list[Identity]]) -> dict[Identity, int]:
    """Each lock's strongly connected component, numbered (Tarjan's algorithm, iterative)."""
    index: dict[Identity, int] = {}
    low: dict[Identity, int] = {}
    component: dict[Identity, int] = {}
    stack: list[Identity] = []
    on_stack: set[Identity] = set()
    count = 0
    nodes = sorted(set(successors) | {n for targets in successors.values() for n in targets})
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, at = work.pop()
            if at == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = successors.get(node, [])
            if at < len(targets):
                work.append((node, at + 1))
                nxt = targets[at]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                count += 1
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = count
                    if member == node:
                        break
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return component


def _lock_name(edges: dict[tuple[Identity, Identity], dict[str, Any]], identity: Identity) -> str:
    file, line, ordinal = identity
    count = 1 + max(other[2] for pair in edges for other in pair if other[:2] == (file, line))
    return describe_site(file, line, ordinal, count=count)
