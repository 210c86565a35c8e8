"""Text stress shows people: bounded output of the code under test, short paths, actor names.

Messages, tracebacks, dumps and printed output can be arbitrarily large (or binary). Everything that
goes into a result passes through `clip`, which keeps the head and the tail and says how much was cut,
so a 10 MB exception message costs a few kilobytes and is still recognisable, and escapes what UTF-8
cannot carry. `short_path` and `actor_names` give files and actors the names reports use for them.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["EMPHASIS", "actor_names", "clip", "decode", "per_second", "plural", "short_path", "short_where"]


def decode(data: bytes) -> str:
    """Bytes from a file or pipe as text, with undecodable bytes shown as escapes."""
    return data.decode("utf-8", errors="backslashreplace")


def clip(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its head and tail around a marker. Lone
    surrogates (undecodable bytes smuggled into a str) and control characters become escapes: the
    result is valid UTF-8 and safe to print."""
    text = _encodable(text)
    if len(text) <= limit:
        return text
    keep = max(limit - 60, 2)
    head = keep * 2 // 3
    tail = keep - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters cut by stress ...]\n{text[-tail:]}"


#: Control characters other than newline and tab (C0, DEL and C1), shown as escapes: raw, they would
#: reach the terminal (an escape sequence from code under test could rewrite the screen).
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0, 9), *range(11, 32), *range(127, 160))}
_CONTROLS.update({0x2028: "\\u2028", 0x2029: "\\u2029"})  # line breaks to splitlines(), not to us


def _encodable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text.replace("\r\n", "\n").translate(_CONTROLS)


def and_join(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c`` (``names`` non-empty)."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def short_path(file: str) -> str:
    """A file as a person wants to read it: relative to the working directory when inside it,
    else just its name (a scenario installed in site-packages has a long, useless prefix)."""
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed
        return os.path.basename(file)
    return _short_path(file, cwd)


@functools.lru_cache(maxsize=1024)
def _short_path(file: str, cwd: str) -> str:
    # Cached: a deadlock's description names each file several times, under the wait-for graph's
    # lock, while the trial's threads wait for it.
    try:
        relative = os.path.relpath(file, cwd)
    except ValueError:
        return os.path.basename(file)
    return relative if not relative.startswith("..") else os.path.basename(file)


def short_where(where: str) -> str:
    """``/long/path/x.py:12 in f`` -> ``x.py:12 in f`` (see `short_path`)."""
    file, sep, rest = where.partition(":")
    return f"{short_path(file)}{sep}{rest}" if sep else where


def actor_names(actors: list[tuple[Callable[..., Any], str]]) -> list[str]:
    """Names for actors: the given one, else the function's (``transfer``), numbered when several
    actors run the same function (``increment#0``, ``increment#1``)."""
    functions = [getattr(fn, "__name__", "actor") for fn, _ in actors]
    functions = ["actor" if f == "<lambda>" else f for f in functions]
    seen: dict[str, int] = {}
    names = []
    for (_, given), function in zip(actors, functions, strict=True):
        if given:
            names.append(given)
            continue
        number = seen.get(function, 0)
        seen[function] = number + 1
        names.append(f"{function}#{number}" if functions.count(function) > 1 else function)
    return names


_FRAME_LINE = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>.+)$')


def exception_headline(where: str, text: str, in_scope: Callable[[str], bool]) -> str:
    """One line for a formatted traceback ``text`` raised in ``where`` (an actor's name): the
    exception, who raised it, and the innermost line of the code under test it passed through
    (files for which ``in_scope`` is true): ``FileExistsError: [Errno 17] ... — in worker#0, at
    app.py:53 in ensure_dir``."""
    lines = [line for line in text.rstrip().splitlines() if line.strip()]
    exception = lines[-1].strip() if lines else "an exception"
    site = ""
    for line in lines:
        frame = _FRAME_LINE.match(line)
        if frame is not None and in_scope(frame["file"]):
            site = f", at {short_path(frame['file'])}:{frame['line']} in {frame['function']}"
    return clip(f"{exception} — in {where}{site}", 500)  # escaped like the traceback it comes from


_FILE_LINE = re.compile(r'^(?P<indent>\s*)File "(?P<file>[^"]+)", line \d+')


def fold_frames(text: str, own: Callable[[str], bool]) -> str:
    """A traceback or a thread dump with each run of frames from files ``own`` says are stress's
    folded into one line (``  … 3 frames of stress …``): the code under test's frames stay in view.
    A frame is its ``File "...", line N`` line and the more indented lines under it (its source
    and ``^^^`` marks). A traceback whose exception came from inside stress's stand-in for a
    primitive (``lock.release()`` of an unheld lock) ends in the user's call, the stand-in folded,
    as the C primitive shows no frame; only a traceback with no frame of the user's keeps its last
    one (where the exception came from)."""
    lines = _fold_callers(text.splitlines(), own)
    traceback = "Traceback (most recent call last)" in text and not any(
        (match := _FILE_LINE.match(line)) is not None and not own(match["file"]) for line in lines
    )
    out: list[str] = []
    run = 0
    indent = ""
    index = 0
    while index < len(lines):
        match = _FILE_LINE.match(lines[index])
        end = index + 1
        if match is not None:
            while (
                end < len(lines) and lines[end].startswith(match["indent"] + " ") and not _FILE_LINE.match(lines[end])
            ):
                end += 1
        last = traceback and match is not None and not any(_FILE_LINE.match(line) for line in lines[end:])
        if match is not None and own(match["file"]) and not last:
            if run == 0:
                indent = match["indent"]
            run += 1
        else:
            if run:
                out.append(f"{indent}… {run} frame{'s' if run != 1 else ''} of stress …")
                run = 0
            out.extend(lines[index:end])
        index = end
    if run:
        out.append(f"{indent}… {run} frame{'s' if run != 1 else ''} of stress …")
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


#: The heading of one thread's frames in a ``faulthandler`` dump, innermost first.
_DUMP_THREAD = re.compile(r"^(Current thread|Thread) 0x[0-9a-f]+ .*most recent call first\):$")


def _fold_callers(lines: list[str], own: Callable[[str], bool]) -> list[str]:
    """In a thread dump, each thread's frames outside its outermost frame of the user's (stress's
    worker loop, ``threading``'s bootstrap, the ``stress`` command's own callers, ``click``) as one
    line: ``… 20 frames that called it (stress, multiprocessing, click) …``. A thread that runs no
    code of the user's (a ``Thread(target=event.wait)``) keeps its innermost frame outside stress."""
    out: list[str] = []
    index = 0
    while index < len(lines):
        out.append(lines[index])
        index += 1
        if not _DUMP_THREAD.match(out[-1]):
            continue
        frames: list[tuple[str, str]] = []
        while index < len(lines) and (match := _FILE_LINE.match(lines[index])) is not None:
            frames.append((lines[index], match["file"]))
            index += 1
        users = [i for i, (_, file) in enumerate(frames) if not own(file) and _origin(file) is None]
        others = [i for i, (_, file) in enumerate(frames) if not own(file)]
        keep = users[-1] if users else others[0] if others else len(frames) - 1
        out.extend(line for line, _ in frames[: keep + 1])
        callers = frames[keep + 1 :]
        if callers:
            indent = _FILE_LINE.match(callers[0][0])["indent"]  # type: ignore[index]
            origins = dict.fromkeys("stress" if own(file) else _origin(file) or "?" for _, file in callers)
            count = f"{len(callers)} frame{'s' if len(callers) != 1 else ''}"
            out.append(f"{indent}… {count} that called it ({', '.join(origins)}) …")
    return out


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    found |= {os.path.join(prefix, "bin") for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return tuple(sorted({os.path.realpath(d) + os.sep for d in found} | {d + os.sep for d in found}))


def _origin(file: str) -> str | None:
    """The library ``file`` belongs to (``threading``, ``multiprocessing``, ``click``, the ``stress``
    command's script), None for the user's own code."""
    if file.startswith("<"):  # <frozen importlib._bootstrap>
        return file.strip("<>").split()[-1].split(".")[0]
    for marker in (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}"):
        _, found, rest = file.partition(marker)
        if found:
            return rest.split(os.sep, 1)[0].removesuffix(".py")
    for folder in _library_dirs():
        if file.startswith(folder):
            return file[len(folder) :].split(os.sep, 1)[0].removesuffix(".py")
    return None


def plural(count: int, word: str) -> str:
    """``1 trial``, ``2 trials``, ``1,000 schedules``, ``3 switches``: a count and its noun, agreeing."""
    if count == 1:
        return f"{count:,} {word}"
    return f"{count:,} {word}{'es' if word.endswith(('s', 'x', 'ch', 'sh')) else 's'}"


def per_second(rate: float) -> str:
    """A rate for people: ``1,892`` from ten on, two significant digits below (``0.13``, not ``0``)."""
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"


#: Markdown's emphasis in a description, ``*try*`` (not ``a * b``): split on it, the odd pieces
#: are the emphasised words.
EMPHASIS = re.compile(r"(?<![\w*])\*([^*\s](?:[^*]*[^*\s])?)\*(?![\w*])")


#: An absolute path in a message (up to a quote, a space or a bracket).
_PATH = re.compile(r"/[^\s'\"()\[\]]+")
#: What `tempfile` adds to a name it makes up (``mkdtemp(prefix="logs-")`` -> ``logs-k3j_x9q2``).
_TEMP_SUFFIX = re.compile(r"(?<=[-_.])[a-z0-9_]{8}$|^tmp[a-z0-9_]{8}$")


def untemp(message: str) -> str:
    """``message`` with its temporary paths made alike, to compare two runs' messages: the temp
    root and stress's worker folder dropped (``<tmp>/``), each random name `tempfile` made up
    starred (``bug02-*``), and a place in the code by its file's name (``jobs.py:12``, however the
    folder it was run from showed it). Two runs of the same code say the same."""
    roots = sorted({tempfile.gettempdir(), "/tmp", "/var/tmp"}, key=len, reverse=True)

    def plain(match: re.Match[str]) -> str:
        path = match.group(0)
        root = next((r for r in roots if path == r or path.startswith(r.rstrip("/") + "/")), None)
        if root is None:
            return path
        parts = [p for p in path[len(root) :].split("/") if p and not p.startswith("stress-worker-")]
        return "<tmp>/" + "/".join(_TEMP_SUFFIX.sub("*", p) for p in parts)

    return _FILE_PLACE.sub(r"\1", _PATH.sub(plain, message))


#: A place in a file, ``some/dir/jobs.py:12``: compared by the file's name alone
#: (``jobs.py:12``), as places are shown relative to the folder stress runs in.
_FILE_PLACE = re.compile(r"(?<![\w.])(?:[\w.-]*/)+([\w.-]+\.py:\d+)")
