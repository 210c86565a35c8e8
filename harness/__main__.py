"""``python -m harness`` is the ``stress`` command."""

from harness.cli import entry

entry()
