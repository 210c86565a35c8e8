"""The terminal report, rendered at a pinned width without colour, compared as text."""

from __future__ import annotations

import io
import sysconfig
from pathlib import Path

import pytest
from rich.console import Console

from harness.config import RunConfig
from harness.perturb.knobs import Perturbation
from harness.perturb.plan import make_plan
from harness.render import html, terminal
from harness.render.terminal import LiveProgress, TrimmedLines, print_report
from harness.results.outcome import Evidence, Outcome, TrialResult
from harness.results.stats import VariantStats
from harness.results.summary import RunInfo, RunReport, VariantInfo, ranked
from harness.scenario import Expect


def _report() -> RunReport:
    config = RunConfig(iterations=10, seed=1, jobs=2)
    info = RunInfo(
        run_id="RUN",
        run_dir=Path("reports/RUN"),
        config=config,
        variants=(VariantInfo("bank/unsafe", "unsafe", ""), VariantInfo("bank/lock", "safe", "")),
        command="stress run bank",
        started="T0",
        python={},
        jobs=2,
        scenarios={"bank": "Accounts"},
        targets={"bank": "bank"},
    )
    unsafe = VariantStats("bank/unsafe", Expect.UNSAFE)
    lock = VariantStats("bank/lock", Expect.SAFE)
    for seq in range(10):
        plan = make_plan(Perturbation(), seed=1, trial=seq)
        failing = seq % 2 == 1
        unsafe.add(
            TrialResult(
                "bank/unsafe",
                seq,
                seq,
                Outcome.FAILED if failing else Outcome.PASSED,
                0.002,
                plan,
                evidence=Evidence(messages=("overdrawn: customers withdrew 260 from an account holding 250",))
                if failing
                else None,
            )
        )
        lock.add(TrialResult("bank/lock", seq, seq, Outcome.PASSED, 0.002, plan))
    return RunReport(
        info=info,
        variants=ranked([unsafe.summary(), lock.summary()]),
        finished="T1",
        wall=2.0,
        trials=20,
        complete=True,
    )


def test_report_text() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, color_system=None, force_terminal=False, highlight=False)
    print_report(console, _report())
    text = "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())

    assert text.strip("\n") == EXPECTED.strip("\n")


def test_a_run_stopped_before_any_trial_says_nothing_ran() -> None:
    info = _report().info
    empty = RunReport(
        info=info,
        variants=ranked(
            [VariantStats("bank/unsafe", Expect.UNSAFE).summary(), VariantStats("bank/lock", Expect.SAFE).summary()]
        ),
        finished="T1",
        wall=0.3,
        trials=0,
        complete=False,
        interrupted=True,
        stopped_by="SIGINT",
    )
    buffer = io.StringIO()
    print_report(Console(file=buffer, width=100, color_system=None, force_terminal=False), empty)
    text = buffer.getvalue()
    assert "nothing ran" in text
    assert "not exposed" not in text  # not "in 0 trials (< 100 %)"
    assert {s.verdict.label for s in empty.variants} == {"not run"}
    assert empty.exit_code() == 130
    assert empty.to_dict()["exit_code"] == 130


def test_off_a_terminal_progress_is_logged_every_few_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(terminal.time, "monotonic", lambda: now[0])
    buffer = io.StringIO()
    progress = LiveProgress(Console(file=buffer, width=100, color_system=None, force_terminal=False))
    info = _report().info
    progress.started(info)
    unsafe = VariantStats("bank/unsafe", Expect.UNSAFE)
    lock = VariantStats("bank/lock", Expect.SAFE)
    plan = make_plan(Perturbation(), seed=1, trial=0)

    def finish(stats: VariantStats, seq: int, outcome: Outcome) -> None:
        result = TrialResult(stats.variant, seq, seq, outcome, 0.002, plan)
        stats.add(result)
        progress.result(result, stats)

    for seq in range(4):
        finish(unsafe, seq, Outcome.FAILED if seq % 2 else Outcome.PASSED)
        finish(lock, seq, Outcome.PASSED)
    now[0] += terminal.LOG_EVERY - 0.5
    progress.tick()
    assert "progress" not in buffer.getvalue()  # not yet
    now[0] += 1.0
    progress.tick()
    first = buffer.getvalue()
    assert "progress · 8/20 trials · 6 s · about 8.2 s left" in first
    assert "bank/unsafe  4/10 trials · 2 failed (50.0 %)" in first
    assert "bank/lock  4/10 trials · 0 failed (0.0 %)" in first
    for seq in range(4, 10):
        finish(lock, seq, Outcome.PASSED)
    now[0] += terminal.LOG_EVERY
    progress.tick()
    second = buffer.getvalue()[len(first) :]
    assert "bank/lock  10/10 trials" in second  # its last line says it is done
    now[0] += terminal.LOG_EVERY
    progress.tick()
    third = buffer.getvalue()[len(first) + len(second) :]
    assert "progress · 14/20 trials" in third
    assert "bank/lock" not in third
    assert "bank/unsafe  4/10" in third


def test_the_line_announcing_a_failure_names_the_reports_example_the_first_by_number() -> None:
    # Workers finish trials out of order: trial 3 fails first, then trial 1. The line waits until
    # trials 0 to 2 are in, and names trial 1, as the report's example does.
    buffer = io.StringIO()
    progress = LiveProgress(Console(file=buffer, width=100, color_system=None, force_terminal=False))
    progress.started(_report().info)
    unsafe = VariantStats("bank/unsafe", Expect.UNSAFE)
    plan = make_plan(Perturbation(), seed=1, trial=0)

    def finish(seq: int, outcome: Outcome) -> str:
        before = len(buffer.getvalue())
        result = TrialResult("bank/unsafe", seq, seq, outcome, 0.002, plan)
        unsafe.add(result)
        progress.result(result, unsafe)
        return buffer.getvalue()[before:]

    assert finish(3, Outcome.FAILED) == ""  # trials 0 to 2 may fail yet
    assert finish(1, Outcome.FAILED) == ""
    assert finish(2, Outcome.PASSED) == ""
    line = finish(0, Outcome.PASSED)
    assert "bank/unsafe fails: trial 1 failed" in line
    assert unsafe.first_failure is not None
    assert unsafe.first_failure.seq == 1
    assert finish(4, Outcome.FAILED) == ""  # said once


def test_trimmed_lines_drop_trailing_spaces_and_keep_everything_else() -> None:
    out = io.StringIO()
    stream = TrimmedLines(out)
    stream.write("a table cell   \n  indented  ")
    stream.write("text \x1b[0m\nlast")
    assert out.getvalue() == "a table cell\n  indented  text\x1b[0m\n"
    stream.write("\n")
    assert out.getvalue().endswith("last\n")
    assert not stream.isatty()


EXPECTED = """
bank: Accounts
Ranked by failure rate · 20 trials in 2.0 s (10 trials/s) · seed 1
#  variant  expect  trials  failure rate        verdict  failures
─────────────────────────────────────────────────────────────────
1  unsafe   unsafe      10  50.0 % (23.7–76.3)  exposed  failed 5
2  lock     safe        10  0 (< 30.0 %)        held     —
failure rate: observed (95 % Wilson interval); none in N means < 3/N at 95 %

Example failures

bank/unsafe · trial 1 · failed after 2.0 ms
  overdrawn: customers withdrew 260 from an account holding 250
  plan     preempt 0.0027 · sync 0.052 · delay 25 µs · switch 13 µs · jitter ≤ 20 µs
  replay   stress run bank --variant unsafe --seed 1 --trial 1

results: reports/RUN
"""


def test_inline_code_in_descriptions_is_styled_in_a_terminal_and_plain_elsewhere() -> None:
    text = terminal.inline_code("Four threads (`actors`) add 1, `size` times")
    assert text.plain == "Four threads (actors) add 1, size times"
    assert [text.plain[span.start : span.end] for span in text.spans] == ["actors", "size"]
    assert terminal.inline_code("a lone ` stays").plain == "a lone ` stays"
    assert str(html.inline_code("`a<b>` & <i>")) == "<code>a&lt;b&gt;</code> &amp; &lt;i&gt;"
    assert str(html.inline_code("a lone ` <stays>")) == "a lone ` &lt;stays&gt;"


def test_stress_frames_are_folded_out_of_the_way_of_the_code_under_test() -> None:
    from harness.text import fold_frames

    def own(file: str) -> bool:
        return file.startswith("/site/harness/")

    traceback = (
        "in worker:\n"
        "Traceback (most recent call last):\n"
        '  File "/app/jobs.py", line 32, in worker\n'
        "    dine(seat)\n"
        '  File "/site/harness/trial.py", line 10, in run\n'
        "    return function(*args)\n"
        "           ^^^^^^^^^^^^^^^\n"
        '  File "/site/harness/detect/primitives.py", line 20, in acquire\n'
        "    self._take()\n"
        '  File "/app/jobs.py", line 40, in callback\n'
        "    raise KeyError(seat)\n"
        "KeyError: 3\n"
    )
    assert fold_frames(traceback, own) == (
        "in worker:\n"
        "Traceback (most recent call last):\n"
        '  File "/app/jobs.py", line 32, in worker\n'
        "    dine(seat)\n"
        "  … 2 frames of stress …\n"
        '  File "/app/jobs.py", line 40, in callback\n'
        "    raise KeyError(seat)\n"
        "KeyError: 3\n"
    )
    # Raised inside a primitive's stand-in (an unheld lock released): it ends in the user's call,
    # as the C primitive, which shows no frame, would; the stand-in's frames fold.
    raised_inside = traceback.replace('"/app/jobs.py", line 40', '"/site/harness/x.py", line 40')
    assert fold_frames(raised_inside, own).endswith(
        '  File "/app/jobs.py", line 32, in worker\n    dine(seat)\n  … 3 frames of stress …\nKeyError: 3\n'
    )
    # A traceback with no frame of the user's (a fault of stress's own) keeps where it came from.
    own_only = raised_inside.replace('"/app/jobs.py", line 32', '"/site/harness/y.py", line 32')
    assert '"/site/harness/x.py", line 40' in fold_frames(own_only, own)
    dump = (
        "Thread 0x01 (most recent call first):\n"
        '  File "/site/harness/detect/primitives.py", line 520 in _wait_visibly\n'
        '  File "/site/harness/detect/primitives.py", line 480 in _block\n'
        '  File "/app/jobs.py", line 31 in outer\n'
    )
    assert fold_frames(dump, own) == (
        'Thread 0x01 (most recent call first):\n  … 2 frames of stress …\n  File "/app/jobs.py", line 31 in outer\n'
    )
    # What called the user's outermost frame (stress's worker, threading's bootstrap, the stress
    # command and click) is one line; a thread that runs no code of the user's keeps its innermost
    # frame outside stress (where it waits).
    stdlib = sysconfig.get_paths()["stdlib"]
    site = sysconfig.get_paths()["purelib"]
    callers = [
        f'  File "{stdlib}/threading.py", line 982 in run\n',
        '  File "/site/harness/engine/worker.py", line 872 in _worker_main\n',
        f'  File "{stdlib}/multiprocessing/process.py", line 108 in run\n',
        f'  File "{site}/click/core.py", line 911 in invoke\n',
    ]
    assert fold_frames(dump + "".join(callers), own).endswith(
        '  File "/app/jobs.py", line 31 in outer\n'
        "  … 4 frames that called it (threading, stress, multiprocessing, click) …\n"
    )
    waiter = (
        "Current thread 0x02 (most recent call first):\n"
        '  File "/site/harness/detect/primitives.py", line 520 in _wait_visibly\n'
        f'  File "{stdlib}/threading.py", line 629 in wait\n'
        f'  File "{stdlib}/threading.py", line 982 in run\n'
        '  File "/site/harness/actors.py", line 252 in run\n'
    )
    assert fold_frames(waiter, own) == (
        "Current thread 0x02 (most recent call first):\n  … 1 frame of stress …\n"
        f'  File "{stdlib}/threading.py", line 629 in wait\n  … 2 frames that called it (threading, stress) …\n'
    )


def test_a_trace_note_under_a_long_place_stays_whole() -> None:
    # Three threads at 120 columns give each 36: a note put under a long file name, indented to
    # the code's column, broke in the middle ("← read" / ".size").
    from harness.controlled.trace import Row, Trace
    from harness.render.terminal import trace_table

    code = "for round_no in range(trial.size):"
    rows = tuple(
        Row(thread, "b04_barrier_no_abort.py", 35, code, 1, thread != "a", ("LOAD_ATTR size",)) for thread in "abc"
    )
    trace = Trace(("a", "b", "c"), rows, 2, 0)
    console = Console(width=120, file=io.StringIO(), no_color=True, highlight=False)
    console.print(trace_table(trace, width=120))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert sum("← read .size" in line for line in text.splitlines()) == 3, text  # whole, beside or under its line
    assert not any(line.rstrip().endswith("← read") for line in text.splitlines()), text


def test_a_wrapped_traceback_line_continues_deeper_than_the_line_it_continues() -> None:
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/app/jobs.py", line 4, in deep\n'
        '    raise ValueError("this message goes on past the width of a narrow terminal, and on, and on")\n'
        "ValueError: this message goes on past the width of a narrow terminal, and on, and on"
    )
    console = Console(file=io.StringIO(), width=60, no_color=True, highlight=False)
    console.print(terminal._own_indents(terminal.Text(traceback)))
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert all(len(line) <= 60 for line in lines), lines
    source = next(i for i, line in enumerate(lines) if line.startswith('    raise ValueError("'))
    indent = len(lines[source + 1]) - len(lines[source + 1].lstrip())
    assert indent == 6, lines  # the source line's 4, and 2 deeper
    last = next(i for i, line in enumerate(lines) if line.startswith("ValueError:"))
    assert len(lines[last + 1]) - len(lines[last + 1].lstrip()) == 2, lines


def test_a_path_wider_than_the_terminal_is_never_broken_inside() -> None:
    path = "/tmp/" + "a-very-long-folder-name/" * 4 + "reports/run"
    console = Console(file=io.StringIO(), width=60, no_color=True, highlight=False)
    terminal.print_unbroken(console, terminal.Text("results: " + path))
    terminal.print_command(console, terminal.Text("  replay   "), f"stress replay {path} --variant x --trial 3")
    terminal.print_command(
        console, terminal.Text("  replay   "), "stress run counter --variant no-lock --seed 1 --trial 2"
    )
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[0] == f"results: {path}"  # whole, for the terminal to wrap: it still copies as one path
    # Broken between words all the same: the path whole, on a line of its own.
    assert lines[1:4] == ["  replay   stress replay \\", f"           {path} \\", "           --variant x --trial 3"]
    # A command of short words folds between them, each line but the last ending in a backslash.
    assert [line.rstrip() for line in lines[4:]] == [
        "  replay   stress run counter --variant no-lock --seed 1 \\",
        "           --trial 2",
    ]


def test_a_long_line_of_the_trace_wraps_under_its_code_not_its_line_number() -> None:
    from harness.controlled.trace import Row, Trace
    from harness.render.terminal import trace_table

    long = "if (index, round_no) == failing and not errors and len(done) < parties:"
    rows = (
        Row("a", "jobs.py", 35, "for round_no in range(size):", 1, False, ()),
        Row("a", "jobs.py", 36, long, 1, False, ()),
    )
    console = Console(width=60, file=io.StringIO(), no_color=True, highlight=False)
    console.print(trace_table(Trace(("a", "b"), rows, 0, 0), width=60))
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    start = next(i for i, line in enumerate(lines) if " 36 if (index," in line)
    code_column = lines[start].index("if (index,")
    assert lines[start + 1][:code_column].strip() == "", lines  # nothing left of the code
    assert lines[start + 1][code_column] != " ", lines  # and it starts right under it
    assert all(len(line.rstrip()) <= 60 for line in lines), lines
