"""stress: find and measure concurrency bugs in Python synchronization code.

Declare a `Scenario` with variants (implementation strategies, each tagged ``expect="safe"`` or
``"unsafe"``); every variant receives a `Trial`, starts its actors through it and checks its
invariants. `run` executes the variants thousands of times under perturbation and returns a ranked
`RunReport`. The ``stress`` command line is a thin layer over this module.
"""

from harness.config import RunConfig, build_config
from harness.engine import RunObserver, run
from harness.errors import ConfigError, InternalError, ScenarioError, ScenarioNotFound, StressError, UserError
from harness.knobs import Knob, Perturbation
from harness.outcome import Evidence, Outcome, TrialResult
from harness.plan import Plan, make_plan
from harness.registry import Registry
from harness.scenario import Expect, Scenario, Variant
from harness.stats import VariantSummary, Verdict, wilson
from harness.summary import RunInfo, RunReport
from harness.trial import ActorGroup, Trial

__version__ = "0.1.0"

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
    "build_config",
    "make_plan",
    "run",
    "wilson",
]
