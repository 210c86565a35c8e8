"""A Markdown summary, fit for a pull-request comment or a CI step summary."""

from __future__ import annotations

from pathlib import Path

from harness.results.run_dir import write_text
from harness.results.summary import RunReport

__all__ = ["render_markdown", "write_markdown"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: RunReport) -> str:
    info = report.info
    status = "" if report.complete else (" (interrupted)" if report.interrupted else " (incomplete)")
    unit = info.unit  # "trial", or "schedule" in controlled mode
    lines = [
        f"### stress: {', '.join(info.scenarios)}{status}",
        "",
        f"{report.trials} {unit}{'' if report.trials == 1 else 's'} in {report.wall:.1f} s"
        f" · seed `{info.config.seed}` · `{info.command or 'stress'}`",
        "",
        f"| # | variant | expect | {unit}s | failure rate (95 % CI) | verdict | failures |",
        "|---:|---|---|---:|---|---|---|",
    ]
    for rank, summary in enumerate(report.variants, 1):
        kinds = ", ".join(f"{o.label} {n}" for o, n in summary.by_outcome.items() if o.label != "passed")
        if summary.potential_deadlocks:
            kinds = ", ".join(filter(None, [kinds, f"potential deadlock {len(summary.potential_deadlocks)}"]))
        verdict = summary.verdict.label if summary.verdict.as_expected else f"**{summary.verdict.label}**"
        lines.append(
            f"| {rank} | `{_cell(summary.variant)}` | {summary.expect.value} | {summary.trials} | "
            f"{_cell(summary.rate_text())} | {verdict} | {_cell(kinds) or '—'} |"
        )
    lines += _sweep(report)
    health = report.health()
    if health:
        lines += ["", *(f"> {_cell(note)}  " for note in health)]
    failing = [s for s in report.variants if s.example is not None]
    if failing:
        lines += ["", f"<details><summary>Replay a failing {unit}</summary>", ""]
        for summary in failing:
            assert summary.example is not None
            example = summary.example
            message = example.evidence.summary() if example.evidence else example.outcome.label
            lines.append(  # a backslash ends the line (a hard break): the command goes below the message
                f"- `{_cell(summary.variant)}` {unit} {example.trial} ({example.outcome.label}): {_cell(message)}\\"
            )
            lines.append(f"  `{info.replay(example)}`")
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _sweep(report: RunReport) -> list[str]:
    """With ``--sweep``: each variant's failure rate per swept value (the GIL on and off, say)."""
    sweep = report.info.config.sweep
    if sweep is None:
        return []
    headers = [sweep.heading(value) for value in sweep.values]
    lines = ["", f"{sweep.title}:", "", f"| variant | {' | '.join(headers)} |", "|---|" + "---|" * len(headers)]
    for summary in report.variants:
        cells = [summary.sweep_text(value) or "—" for value in sweep.values]
        lines.append(f"| `{_cell(summary.variant)}` | {' | '.join(cells)} |")
    only = report.safe_only_under_gil()
    if only or (report.info.config.gil_sweep and report.complete):  # an interrupted run may lack a side
        found = ", ".join(f"`{_cell(s.variant)}`" for s in only) if only else "none"
        lines += ["", f"**Safe only under the GIL** (held with it, failed without it): {found}"]
    return lines


def write_markdown(report: RunReport, path: Path) -> Path:
    write_text(path, render_markdown(report))
    return path
