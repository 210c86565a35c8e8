"""Running the CLI the way a user does, and reading what a run left on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "e2e" / "fixtures"


def stress_command() -> list[str]:
    """The installed ``stress`` script next to this interpreter, else ``python -m harness``."""
    script = Path(sys.executable).parent / "stress"
    return [str(script)] if script.exists() else [sys.executable, "-m", "harness"]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def stress(*args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> Result:
    environment = {**os.environ, "TERM": "dumb", "NO_COLOR": "1", "COLUMNS": "120", **(env or {})}
    done = subprocess.run(
        [*stress_command(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def summary(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return data


def variant(data: dict[str, Any], name: str) -> dict[str, Any]:
    for entry in data["variants"]:
        if entry["variant"] == name or entry["name"] == name:
            found: dict[str, Any] = entry
            return found
    raise KeyError(name)


def results(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
