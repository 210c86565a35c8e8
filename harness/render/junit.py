"""JUnit XML: one test case per variant, for CI systems that read test reports.

A variant whose verdict is as expected passes; an expected-safe variant that failed (or is
deadlock-prone) is a failure carrying its example and replay command; an expected-unsafe variant
that was never exposed is skipped, with the reason. The XML is built with ElementTree, which
escapes everything that came from the code under test.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.results.run_dir import write_text
from harness.results.stats import Verdict, percent, rule_of_three
from harness.results.summary import RunReport
from harness.text import plural

__all__ = ["write_junit"]


_UNJUDGED = (Verdict.UNDECIDED, Verdict.UNSUPPORTED)


def write_junit(report: RunReport, path: Path) -> Path:
    info = report.info
    unit = info.unit
    # Variants run side by side on the workers: each case's time is its share of the run's wall
    # time (by the worker time its trials took), so that the cases add up to the suite's.
    busy = {s.variant: s.trials / s.trials_per_second if s.trials_per_second else 0.0 for s in report.variants}
    total = sum(busy.values())
    times = {variant: report.wall * spent / total if total else 0.0 for variant, spent in busy.items()}
    suite = ET.Element(
        "testsuite",
        name="stress " + ", ".join(info.scenarios),
        tests=str(len(report.variants)),
        failures=str(sum(1 for s in report.variants if not s.verdict.as_expected)),
        skipped=str(
            sum(
                1
                for s in report.variants
                if s.verdict in (Verdict.NOT_EXPOSED, Verdict.UNDECIDED, Verdict.UNSUPPORTED, Verdict.NOT_RUN)
            )
        ),
        time=f"{report.wall:.3f}",
        timestamp=info.started,
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (("seed", str(info.config.seed)), ("run", str(info.run_dir)), ("command", info.command)):
        ET.SubElement(properties, "property", name=name, value=value)
    for summary in report.variants:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"stress.{summary.scenario}",
            name=summary.name,
            time=f"{math.floor(times[summary.variant] * 1000) / 1000:.3f}",  # rounded, never above the suite's
        )
        ET.SubElement(case, "system-out").text = (
            f"expect {summary.expect.value}; {summary.trials} {unit}s; failure rate {summary.rate_text()}; "
            f"verdict {summary.verdict.label}"
        )
        if summary.verdict is Verdict.NOT_EXPOSED:
            ET.SubElement(
                case,
                "skipped",
                message=f"expected unsafe, but not exposed in {plural(summary.judged, unit)} "
                f"(failure rate < {percent(rule_of_three(summary.judged))} at 95 %)",
            )
        elif summary.verdict is Verdict.NOT_RUN:
            ET.SubElement(case, "skipped", message="not run: the run was stopped before any of its trials finished")
        elif summary.verdict is Verdict.UNDECIDED:
            ET.SubElement(case, "skipped", message=f"stress could not judge any of its {summary.trials} {unit}s")
        elif summary.verdict is Verdict.UNSUPPORTED:
            ET.SubElement(case, "skipped", message=summary.verdict.description)
        elif not summary.verdict.as_expected:
            failure = ET.SubElement(case, "failure", message=f"{summary.verdict.description}: {summary.rate_text()}")
            failure.text = _details(report, summary)
    ET.indent(suite)
    write_text(path, '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n")
    return path


def _details(report: RunReport, summary: object) -> str:
    from harness.results.stats import VariantSummary

    assert isinstance(summary, VariantSummary)
    unit = report.info.unit
    lines = [f"{summary.failures} of {plural(summary.trials, unit)} failed"]
    example = summary.example
    if example is not None and example.evidence is not None:
        lines.append(f"{unit} {example.trial}: {example.outcome.label}: {example.evidence.summary()}")
        lines.extend(example.evidence.wait_for)
        lines.append("replay: " + report.info.replay(example))
    lines.extend(f"potential deadlock: {p.summary()}" for p in summary.potential_deadlocks)
    return "\n".join(lines)
