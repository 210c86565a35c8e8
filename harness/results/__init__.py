"""Results: what trials ended as, on disk as they arrive, and what the numbers say.

A trial ends as one `outcome` (a closed set) with its evidence. The `run_dir` holds ``run.json``,
``results.jsonl`` (appended as trials finish) and ``summary.json``. `stats` turns tallies into failure
rates with Wilson intervals and verdicts; `summary` is a run's `RunReport`, the one thing renderers
read. `reload` rebuilds a report from a run folder alone (``stress report``, even after a kill), and
`compare` sets two runs side by side with Fisher's exact test (``stress compare``). Nothing here
draws: the renderers (`harness.render`) do.

Entry points: `harness.results.outcome.TrialResult`, `harness.results.run_dir.ResultsWriter`,
`harness.results.stats.wilson`, `harness.results.summary.RunReport`,
`harness.results.reload.load_report`, `harness.results.compare.compare`.
"""
