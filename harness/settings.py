"""Where run settings come from besides the command line: ``STRESS_*`` environment variables and
``[tool.stress]`` in the project's ``pyproject.toml``.

Each source becomes a `harness.config.Layer` that names every value's origin, so a bad one is
reported where it was written ("iterations = -3 in [tool.stress] of /src/app/pyproject.toml: must be
an integer >= 1"). Precedence, highest first: command-line flags, the environment, ``[tool.stress]``,
the scenario's and stress's defaults.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.config import KNOWN, Layer
from harness.errors import ConfigError, did_you_mean

__all__ = ["ENV_PREFIX", "environment_layer", "find_pyproject", "layers", "pyproject_layer"]

ENV_PREFIX = "STRESS_"


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


#: Options of ``stress run`` that say what to run or where to write, not how: the command line only.
COMMAND_LINE_ONLY = ("variant", "out", "junit_xml", "markdown", "quiet")


def environment_layer(environ: Mapping[str, str] | None = None) -> Layer:
    """``STRESS_ITERATIONS=500`` and the like. One rule for every ``STRESS_*`` variable: one that
    names a setting is used; one that names, or nearly names, any other option of ``stress run`` is
    refused with the reason (a typo, or a wish stress cannot grant, would otherwise pass unnoticed);
    the others belong to someone else."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        key = _key(name[len(ENV_PREFIX) :])
        if key in KNOWN:
            values[key] = value
            continue
        close = difflib.get_close_matches(key, [*KNOWN, *COMMAND_LINE_ONLY], n=1, cutoff=0.6)
        option = key if key in COMMAND_LINE_ONLY else close[0] if close else None
        if option in COMMAND_LINE_ONLY:
            assert option is not None
            raise ConfigError(
                f"environment variable {name}: --{option.replace('_', '-')} says what to run or where to write, "
                "so it is a command-line option only; pass it to stress run"
            )
        if close:
            raise ConfigError(f"environment variable {name}: unknown setting {key!r}" + did_you_mean(key, KNOWN))
    return Layer(values, lambda key, value: f"{ENV_PREFIX}{key.upper()}={value} (environment)")


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start`` (the working directory)."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / "pyproject.toml"
        if path.is_file():
            return path
    return None


def pyproject_layer(path: Path | None) -> Layer:
    """``[tool.stress]`` of ``path`` (none: an empty layer). Keys may be written with dashes."""
    if path is None:
        return Layer({}, lambda key, value: "")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{path}: 'tool' must be a table ([tool.stress] and the like), not {type(tool).__name__}")
    table = tool.get("stress", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[tool.stress] of {path}: must be a table of settings")
    values = {}
    for name, value in table.items():
        if isinstance(value, dict | list):
            if _key(name) == "sweep" and isinstance(value, list):
                raise ConfigError(f"sweep in [tool.stress] of {path}: write it as a string, 'preempt=0,0.01'")
            raise ConfigError(f"{name} in [tool.stress] of {path}: must be a single value, not a table or a list")
        values[_key(name)] = value

    def where(key: str, value: Any) -> str:
        shown = repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else value
        return f"{key} = {shown} in [tool.stress] of {path}"

    return Layer(values, where)


def layers(flags: Layer, *, start: Path | None = None, environ: Mapping[str, str] | None = None) -> list[Layer]:
    """Every layer of a run's settings, highest precedence first."""
    return [flags, environment_layer(environ), pyproject_layer(find_pyproject(start))]
