"""The pytest plugin: ``@pytest.mark.stress`` runs a test as stress trials.

`plugin` is what pytest loads for every session (through the ``pytest11`` entry point): options,
the marker, the ``stress_trial`` fixture, the summary; it imports nothing else, so a session that
marks no test pays nothing. `item` does the work the first time a marked test runs: it turns the test
into a variant, runs it through the engine, and fails the test with the evidence and the command that
replays it.
"""

from __future__ import annotations

import pytest

#: A stress test's actor threads as pytest-run-parallel's markers on it say (None: they say nothing):
#: set by `plugin` at collection, read by `item`.
PARALLEL_THREADS = pytest.StashKey["int | None"]()
