"""The engine: running trials, in a pool of worker processes or in this process.

The parent side (`driver`) plans every trial from the run seed, feeds a pool of forked workers
(`worker`) in batches, reads their results from the files they append them to (`spool`: no message
per trial) and records what the workers cannot: trials that hung, workers that died. It owns every
deadline (`deadline`): a trial's clock starts when its body starts, which the worker says through a
few bytes of shared memory (`beacon`), and a trial past its deadline is judged by what its threads
are doing (`activity`: CPU, thread states, the timeouts of their waits), never by the wall clock
alone. `proc_tree` finds and stops a worker's processes; a small `janitor` process cleans up after a
run killed with ``kill -9``. Inside a worker, `runner` applies a trial's plan around the variant and
judges its outcome. `local` runs controlled trials in this process, without workers: `replay` re-runs
a stored schedule with it (``stress replay``), and so does the pytest plugin. `gil_sweep` runs a
sweep over the GIL (``--sweep gil=on,off``): each setting in an interpreter of its own, one report.

Entry points: `harness.engine.driver.run` (a whole run; exported as `harness.run`),
`harness.engine.runner.run_trial` (one trial, here), `harness.engine.local.LocalRunner` and
`harness.engine.replay.replay`.
"""
