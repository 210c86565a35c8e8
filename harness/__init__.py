"""stress: find and measure concurrency bugs in Python synchronization code.

Declare a `Scenario` with variants (implementation strategies, each tagged ``expect="safe"`` or
``"unsafe"``); every variant receives a `Trial`, starts its actors through it and checks its
invariants. `run` executes the variants thousands of times under perturbation and returns a ranked
`RunReport`. The ``stress`` command line is a thin layer over this module.

Names are loaded on first use: a scenario file, or a process actor started with ``spawn``, imports
only what it needs (`Scenario` and `Trial`), not the whole engine.
"""

import importlib as _importlib
import os as _os
import typing as _typing

if _os.environ.get("STRESS_USER_FILES"):  # a process a worker started with spawn or forkserver
    _importlib.import_module("harness.loader").install_user_files()

if _typing.TYPE_CHECKING:
    from harness.config import RunConfig, build_config
    from harness.detect.primitives import atomic
    from harness.engine.driver import RunObserver, run
    from harness.errors import ConfigError, InternalError, ScenarioError, ScenarioNotFound, StressError, UserError
    from harness.perturb.knobs import Knob, Perturbation
    from harness.perturb.plan import Plan, make_plan
    from harness.registry import Registry
    from harness.results.outcome import Evidence, Outcome, TrialResult
    from harness.results.stats import VariantSummary, Verdict, wilson
    from harness.results.summary import RunInfo, RunReport
    from harness.scenario import Expect, Scenario, Variant
    from harness.trial import ActorGroup, Trial

__version__ = "0.1.0"

_WHERE = {
    "ActorGroup": "harness.trial",
    "ConfigError": "harness.errors",
    "Evidence": "harness.results.outcome",
    "Expect": "harness.scenario",
    "InternalError": "harness.errors",
    "Knob": "harness.perturb.knobs",
    "Outcome": "harness.results.outcome",
    "Perturbation": "harness.perturb.knobs",
    "Plan": "harness.perturb.plan",
    "Registry": "harness.registry",
    "RunConfig": "harness.config",
    "RunInfo": "harness.results.summary",
    "RunObserver": "harness.engine.driver",
    "RunReport": "harness.results.summary",
    "Scenario": "harness.scenario",
    "ScenarioError": "harness.errors",
    "ScenarioNotFound": "harness.errors",
    "StressError": "harness.errors",
    "Trial": "harness.trial",
    "TrialResult": "harness.results.outcome",
    "UserError": "harness.errors",
    "Variant": "harness.scenario",
    "VariantSummary": "harness.results.stats",
    "Verdict": "harness.results.stats",
    "atomic": "harness.detect.primitives",
    "build_config": "harness.config",
    "make_plan": "harness.perturb.plan",
    "run": "harness.engine.driver",
    "wilson": "harness.results.stats",
}

__all__ = [
    "ActorGroup",
    "ConfigError",
    "Evidence",
    "Expect",
    "InternalError",
    "Knob",
    "Outcome",
    "Perturbation",
    "Plan",
    "Registry",
    "RunConfig",
    "RunInfo",
    "RunObserver",
    "RunReport",
    "Scenario",
    "ScenarioError",
    "ScenarioNotFound",
    "StressError",
    "Trial",
    "TrialResult",
    "UserError",
    "Variant",
    "VariantSummary",
    "Verdict",
    "__version__",
    "atomic",
    "build_config",
    "make_plan",
    "run",
    "wilson",
]


def __getattr__(name: str) -> _typing.Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
