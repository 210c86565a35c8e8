"""Exhaustive search over the chapter's thread examples as written: how many schedules each has
within K preemptions, how long the search takes, and that none of the safe ones fails.

The examples are ``tests/e2e/fixtures/as_written.py`` (copied from the chapter into variant bodies:
the Lock counter, the bank withdrawal, the two-lock programs, Semaphore, Event, ThreadPoolExecutor).
The suite searches the three small ones with ``--max-preemptions 2``; the others have tens or
hundreds of thousands of schedules within that bound and belong here. Each search runs as a user
would run it (``stress run FILE -V NAME --mode controlled --max-preemptions K``), one at a time, with
the CPU count's workers. A line per example: schedules, whether the search completed, failures,
wall time and schedules/s; the last column is the machine's load average while it ran, since these
runs take minutes and machines are shared.

    python benchmarks/exhaustive_chapter.py                      # K = 2, the safe examples
    python benchmarks/exhaustive_chapter.py -K 1 --unsafe        # K = 1, the unsafe ones too
    python benchmarks/exhaustive_chapter.py --examples semaphore --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "e2e" / "fixtures" / "as_written.py"
SAFE = ["counter-with-lock", "bank-safe-withdraw", "two-locks-same-order", "semaphore", "event-signal", "executor"]
UNSAFE = ["counter-without-lock", "bank-withdraw", "two-locks"]


def search(name: str, bound: int, limit: int) -> dict[str, Any]:
    """One exhaustive search, run through the command line; its summary's figures."""
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "run"
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness",
                "run",
                str(FIXTURE),
                "-V",
                name,
                "--mode",
                "controlled",
                "--max-preemptions",
                str(bound),
                "--iterations",
                str(limit),
                "--quiet",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        load = (load_before + os.getloadavg()[0]) / 2
        if not (out / "summary.json").exists():
            return {"example": name, "error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
        summary = json.loads((out / "summary.json").read_text())
    (entry,) = (v for v in summary["variants"] if v["variant"].endswith("/" + name))
    exploration = entry.get("exploration") or {}
    return {
        "example": name,
        "expect": entry["expect"],
        "schedules": entry["trials"],
        "complete": bool(exploration.get("complete")),
        "failures": entry["failures"],
        "seconds": round(wall, 1),
        "schedules_per_second": round(entry["trials"] / wall, 1) if wall else None,
        "load": round(load, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-K", "--max-preemptions", type=int, default=2, help="the preemption bound [2]")
    parser.add_argument("--examples", nargs="+", choices=SAFE + UNSAFE, help="which examples [the safe ones]")
    parser.add_argument("--unsafe", action="store_true", help="the unsafe examples too")
    parser.add_argument("--limit", type=int, default=5_000_000, help="stop a search after this many schedules")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    names = args.examples or SAFE + (UNSAFE if args.unsafe else [])
    rows = []
    if not args.json:
        print(f"exhaustive search, ≤ {args.max_preemptions} preemptions, {os.cpu_count()} CPUs")
        header = f"{'example':22} {'expect':6} {'schedules':>10} {'complete':>8} {'failed':>7}"
        print(f"{header} {'wall':>8} {'/s':>6} {'load':>5}")
    for name in names:
        row = search(name, args.max_preemptions, args.limit)
        rows.append(row)
        if args.json:
            continue
        if "error" in row:
            print(f"{name:22} error: {row['error']}")
            continue
        print(
            f"{name:22} {row['expect']:6} {row['schedules']:>10,} {'yes' if row['complete'] else 'NO':>8} "
            f"{row['failures']:>7,} {row['seconds']:>7.1f}s {row['schedules_per_second']:>6.0f} {row['load']:>5.1f}",
            flush=True,
        )
    if args.json:
        print(json.dumps({"max_preemptions": args.max_preemptions, "cpus": os.cpu_count(), "examples": rows}))


if __name__ == "__main__":
    main()
