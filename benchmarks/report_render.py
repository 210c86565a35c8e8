"""How long `stress report` takes on a big run, and how big the HTML report gets.

Writes a synthetic run folder of N trials (default 100 000) over four variants — realistic
records: plans, outcomes of every kind, tracebacks, thread dumps, wait-for cycles, lock-order
edges — then times rebuilding the report from results.jsonl and rendering every artifact.

Usage: ``python benchmarks/report_render.py [--trials N] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from harness.config import RunConfig
from harness.perturb.knobs import Perturbation
from harness.perturb.plan import make_plan
from harness.render.html import write_html
from harness.render.junit import write_junit
from harness.render.markdown import write_markdown
from harness.results.outcome import Evidence, Outcome, TrialResult
from harness.results.reload import load_report
from harness.results.run_dir import RUN, ResultsWriter, write_json
from harness.results.summary import RunInfo, VariantInfo, python_info

VARIANTS = [
    ("big/racy", "unsafe", 0.6),
    ("big/deadlocky", "unsafe", 0.3),
    ("big/rare", "safe", 0.001),
    ("big/clean", "safe", 0.0),
]
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "app.py", line 12, in work\n'
    '    raise ValueError("<script>alert(1)</script>")\n'
    "ValueError: <script>alert(1)</script>\n"
)
DUMP = "".join(
    f'Thread 0x{i:012x} (most recent call first):\n  File "app.py", line {i}, in wait\n\n' for i in range(40)
)


def write_run(run_dir: Path, trials: int, *, seed: int = 1) -> None:
    """A run folder holding ``trials`` trials split over `VARIANTS`."""
    config = RunConfig(iterations=trials // len(VARIANTS), seed=seed, jobs=2)
    info = RunInfo(
        run_id=run_dir.name, run_dir=run_dir, config=config,
        variants=tuple(VariantInfo(key, expect, "synthetic") for key, expect, _ in VARIANTS),
        command="stress run big", started="2026-11-25T10:00:00+00:00", python=python_info(), jobs=2,
        scenarios={"big": "a synthetic run"}, targets={"big": "big"},
    )  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / RUN, info.to_dict())
    writer = ResultsWriter(run_dir)
    rng = random.Random(seed)
    kinds = [Outcome.FAILED, Outcome.ERROR, Outcome.DEADLOCKED, Outcome.HUNG, Outcome.CRASHED]
    for seq in range(config.iterations):
        plan = make_plan(Perturbation(), seed=seed, trial=seq)
        for key, _, rate in VARIANTS:
            outcome = rng.choice(kinds) if rng.random() < rate else Outcome.PASSED
            evidence = None
            if outcome is not Outcome.PASSED:
                evidence = Evidence(
                    messages=(f"lost {rng.randint(1, 50)} updates",),
                    tracebacks=(TRACEBACK,) if outcome is Outcome.ERROR else (),
                    dump=DUMP if outcome in (Outcome.HUNG, Outcome.CRASHED) else None,
                    wait_for=("t1 waits for a held by t2", "t2 waits for b held by t1")
                    if outcome is Outcome.DEADLOCKED
                    else (),
                )
            writer.write(TrialResult(key, seq, seq, outcome, rng.uniform(0.0005, 0.02), plan, evidence=evidence))
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="Write the run folder here instead of a temporary one.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.keep or Path(tmp) / "big"
        started = time.perf_counter()
        write_run(run_dir, args.trials)
        written = time.perf_counter() - started
        started = time.perf_counter()
        report = load_report(run_dir)
        loaded = time.perf_counter() - started
        html = write_html(report)
        write_junit(report, run_dir / "junit.xml")
        write_markdown(report, run_dir / "summary.md")
        rendered = time.perf_counter() - started - loaded
        size = html.stat().st_size
        results = (run_dir / "results.jsonl").stat().st_size
        mb = results / 1e6
        print(
            f"trials:                      {report.trials:,} ({mb:.0f} MB of results.jsonl, written in {written:.1f} s)"
        )
        print(f"rebuild from results.jsonl:  {loaded:.2f} s")
        print(f"render HTML, JUnit, Markdown: {rendered:.2f} s")
        print(f"total (stress report):       {loaded + rendered:.2f} s   (acceptance: <= 5 s)")
        print(f"report.html:                 {size / 1e6:.2f} MB   (acceptance: <= 5 MB)")


if __name__ == "__main__":
    main()
