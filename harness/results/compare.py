"""Did my fix help? Comparing two runs variant by variant, with a significance test.

For each variant present in both runs, the failure rates are compared with Fisher's exact test
(two-sided): exact at any count, including the zeros that matter most here. A significant increase
is a regression; a significant decrease, an improvement; anything else is no evidence of change.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.results.stats import fisher_exact
from harness.results.summary import ALPHA, RunReport

__all__ = ["Change", "compare", "fisher_exact"]


@dataclass(frozen=True)
class Change:
    """One variant across two runs."""

    variant: str
    before: tuple[int, int]  # (failures, trials)
    after: tuple[int, int]
    p_value: float

    @property
    def rate_before(self) -> float:
        return self.before[0] / self.before[1] if self.before[1] else 0.0

    @property
    def rate_after(self) -> float:
        return self.after[0] / self.after[1] if self.after[1] else 0.0

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    @property
    def verdict(self) -> str:
        if not self.significant:
            return "not significant"
        return "REGRESSION" if self.rate_after > self.rate_before else "improved"


def comparable(before: RunReport, after: RunReport) -> tuple[str | None, list[str]]:
    """Whether the two runs' failure rates can be compared: the reason they cannot (None: they
    can), and what differs between them that a change in a rate may owe something to.

    A stress-mode run counts trials under perturbation, a controlled one schedules: their rates
    measure different things. Runs with no variant in common have nothing to compare. Runs whose
    knobs differ can be compared, with a warning that names the knobs."""
    a, b = before.info, after.info
    if a.config.mode != b.config.mode:
        return (
            f"{a.run_id} ran in {a.config.mode} mode and {b.run_id} in {b.config.mode} mode: "
            "a share of trials and a share of schedules are different measures",
            [],
        )
    old, new = {s.variant for s in before.variants}, {s.variant for s in after.variants}
    if not old & new:
        return (
            f"no variant in common: {a.run_id} ran {', '.join(sorted(old)) or 'nothing'}; "
            f"{b.run_id} ran {', '.join(sorted(new)) or 'nothing'}",
            [],
        )
    knobs_a, knobs_b = _knobs(before), _knobs(after)
    differ = [
        f"{name} {knobs_a.get(name, '—')} → {knobs_b.get(name, '—')}"
        for name in sorted(set(knobs_a) | set(knobs_b))
        if knobs_a.get(name) != knobs_b.get(name)
    ]
    warnings = [f"the runs' settings differ ({'; '.join(differ)}): a change may come from them"] if differ else []
    return None, warnings


def _knobs(report: RunReport) -> dict[str, str]:
    """The settings of a run that change how often a variant fails."""
    config = report.info.config
    out = {name.replace("_", "-"): str(value) for name, value in config.perturbation.to_dict().items()}
    if config.controlled:
        out.update(strategy=config.strategy, **{"pct-depth": str(config.pct_depth)})
    if config.sweep is not None:
        out["sweep"] = config.sweep.text()
    # The work and the threads of a trial, its deadline, and a replay of one trial's plan change
    # the rate as surely as a knob does.
    for name, value in (
        ("size", config.size),
        ("actors", getattr(config, "actors", None)),
        ("timeout", config.timeout),
    ):
        out[name] = "default" if value is None else str(value)
    out["trial"] = "every trial its own plan" if config.trial is None else f"trial {config.trial}'s plan only"
    for name, value in list(out.items()):
        if value in ("True", "False"):
            out[name] = "on" if value == "True" else "off"
    return out


def compare(before: RunReport, after: RunReport) -> tuple[list[Change], list[str], list[str]]:
    """Changes of the variants in both runs, and the variants only in the first, only in the second."""
    old = {s.variant: s for s in before.variants}
    new = {s.variant: s for s in after.variants}
    changes = []
    for key in [s.variant for s in after.variants if s.variant in old]:
        o, n = old[key], new[key]
        p = fisher_exact(o.failures, o.trials - o.failures, n.failures, n.trials - n.failures)
        changes.append(Change(key, (o.failures, o.trials), (n.failures, n.trials), p))
    return changes, sorted(set(old) - set(new)), sorted(set(new) - set(old))
