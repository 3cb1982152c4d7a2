"""Where a stage's wall time goes: its process start-up (interpreter and imports, until the stage's main began) and
the laps of its main, timed in the process. Each stage writes .cache/timings/<stage>.json at its end (not a DVC
output: nothing depends on it, and a failed stage writes none); `make bench` prints them (benchmarks/run.py).

    timing.start()             # first line of main
    ...
    timing.lap("read files")   # the time since the previous lap (or start) is this phase's
    ...
    timing.write("ingest")     # last line of main
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tfpipe import paths

START_UP = "start-up (interpreter and imports)"
_laps: dict[str, float] = {}
_last: list[float] = []


def _process_age() -> float:
    """Seconds since this process was created (Linux: /proc/self/stat's start time), else 0."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time after boot, in ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started)
    except (OSError, ValueError, IndexError):
        return 0.0


def start() -> None:
    """Marks the start of the stage's main: the process's age is its start-up."""
    _laps.clear()
    _laps[START_UP] = _process_age()
    _last[:] = [time.perf_counter()]


def lap(name: str) -> None:
    """The time since the previous lap (or start) is phase `name`'s (a name used twice adds up)."""
    if not _last:
        start()
    now = time.perf_counter()
    _laps[name] = _laps.get(name, 0.0) + now - _last[0]
    _last[:] = [now]


def summary() -> dict:
    """{"total_s", "phases_s": {phase: seconds, ..., "the rest": after the last lap}}."""
    lap("the rest")
    return {"total_s": round(sum(_laps.values()), 3), "phases_s": {k: round(v, 3) for k, v in _laps.items()}}


def write(stage: str) -> None:
    """.cache/timings/<stage>.json; never fails the stage (the figures are for the benchmarks)."""
    try:
        directory = paths.CACHE / "timings"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{stage}.json").write_text(json.dumps({"stage": stage, **summary()}, indent=2) + "\n")
    except OSError:
        pass
