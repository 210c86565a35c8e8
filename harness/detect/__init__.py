"""Detection: seeing what the threads of a trial wait for, and when they can never go on.

`instrument` swaps the constructors of ``threading``'s and ``queue``'s primitives, for the code under
test only, for the length of a trial; `primitives` are the instrumented versions (same semantics,
plus bookkeeping). Every blocking wait registers in the trial's `wait_graph`, which confirms a
deadlock — a cycle of lock waits, or every thread waiting for something only another could do — and
releases the threads in it with an exception. `lock_order` merges the "held A, then took B" edges of
all trials into potential deadlocks (lockdep's idea), keeping only cycles whose edges thread starts
and joins do not order (`happens_before`). `thread_dump` reads the ``faulthandler`` dumps
of hung trials down to the blocked line of each thread. A process forked during a trial finds its own
deadlocks and reports them to the trial through `findings`, so a deadlock anywhere in the trial's
process tree is the trial's outcome. A coroutine trial's event loop (`aio`) steps tasks out around
asyncio's primitives and finds the deadlock of tasks that nothing left can wake.

Entry points: `harness.detect.instrument.Instrumenter`, `harness.detect.wait_graph.WaitGraph`,
`harness.detect.lock_order.LockOrder`, `harness.detect.thread_dump.blocked_at`,
`harness.detect.aio.StressLoop`.
"""
