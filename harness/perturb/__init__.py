"""Perturbation: what stress does to a trial so that its races show.

A run's `knobs` (forced-switch probabilities, switch interval, start jitter, process delays, start
order, barrier) are off, fixed, or ranges; `plan` turns them, with the run seed and the trial index,
into one trial's concrete values, so any trial replays exactly. During the trial, `preempt` forces
thread switches at individual bytecode instructions of the code under test (``sys.monitoring`` on
3.12+, ``sys.settrace`` on 3.11), and `mp_delays` pauses processes around multiprocessing operations,
where time, not a yield, is what lets another process in. Every sleep stress injects goes through
`pause`, which counts it, so that a trial slowed by stress is never judged as sleeping by itself.
On a free-threaded build, `gil` gives a run the GIL it asks for (``--gil on|off``): the whole run
starts again with ``PYTHON_GIL`` set when its interpreter has the other setting.

Entry points: `harness.perturb.knobs.Perturbation`, `harness.perturb.plan.make_plan`,
`harness.perturb.preempt.Preemptor`, `harness.perturb.mp_delays.activate`.
"""
