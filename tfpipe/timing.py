"""Where a stage's wall time goes: its process start-up (interpreter and imports, until the stage's main began) and
the laps of its main, timed in the process. Each stage writes .cache/timings/<stage>.json at its end (not a DVC
output: nothing depends on it, and a failed stage writes none); `make bench` prints them (benchmarks/run.py).

    timing.start()             # first line of main
    ...
    timing.lap("read files")   # the time since the previous lap (or start) is this phase's
    ...
    timing.write("ingest")     # last line of main

Under `dvc repro` the file also says how long DVC ran before the stage's process started (`dvc_before_s`: its own
start-up and checks, data/raw's hashing among them, and the stages before this one), and when the stage started and
ended (`started_at`, `ended_at`, Unix time): what DVC does after it (hashing and caching the outputs, the deps again
for dvc.lock and the run-cache) is the command's end minus `ended_at`, which a benchmark can tell.
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
_context: dict[str, float] = {}


def _started_after_boot(pid: int | str = "self") -> float:
    """When a process started, in seconds after boot (Linux: /proc/<pid>/stat's field 22); OSError elsewhere."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _process_age() -> float:
    """Seconds since this process was created, else 0."""
    try:
        return max(0.0, float(Path("/proc/uptime").read_text().split()[0]) - _started_after_boot())
    except (OSError, ValueError, IndexError):
        return 0.0


def _dvc_before() -> float | None:
    """Seconds between the start of the `dvc` process that runs this stage (an ancestor: DVC runs the stage's command
    through a shell) and this process's, when DVC runs it (it sets DVC_STAGE), else None."""
    if not os.environ.get("DVC_STAGE"):
        return None
    try:
        pid = os.getppid()
        for _ in range(8):
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if any(Path(argument.decode(errors="replace")).name == "dvc" for argument in arguments):
                return max(0.0, _started_after_boot() - _started_after_boot(pid))
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if pid <= 1:
                return None
    except (OSError, ValueError, IndexError):
        return None
    return None


def start() -> None:
    """Marks the start of the stage's main: the process's age is its start-up."""
    _laps.clear()
    _context.clear()
    _laps[START_UP] = _process_age()
    _context["started_at"] = round(time.time() - _laps[START_UP], 3)
    if (before := _dvc_before()) is not None:
        _context["dvc_before_s"] = round(before, 3)
    _last[:] = [time.perf_counter()]


def lap(name: str) -> None:
    """The time since the previous lap (or start) is phase `name`'s (a name used twice adds up)."""
    if not _last:
        start()
    now = time.perf_counter()
    _laps[name] = _laps.get(name, 0.0) + now - _last[0]
    _last[:] = [now]


def summary() -> dict:
    """{"total_s", "phases_s": {phase: seconds, ..., "the rest": after the last lap}, "started_at", "ended_at" and,
    under DVC, "dvc_before_s"}."""
    lap("the rest")
    return {
        "total_s": round(sum(_laps.values()), 3),
        "phases_s": {k: round(v, 3) for k, v in _laps.items()},
        **_context,
        "ended_at": round(time.time(), 3),
    }


def describe(figures: dict) -> str:
    """A summary as one line: the stage's seconds, its phases, and DVC's seconds before it where known."""
    phases = "; ".join(f"{name} {seconds:.1f} s" for name, seconds in figures["phases_s"].items() if seconds >= 0.05)
    before = f" (DVC ran {figures['dvc_before_s']:.1f} s before it)" if "dvc_before_s" in figures else ""
    return f"{figures['total_s']:.1f} s{before}: {phases}"


def write(stage: str) -> dict:
    """.cache/timings/<stage>.json; never fails the stage (the figures are for the benchmarks). Returns the summary."""
    figures = {"stage": stage, **summary()}
    try:
        directory = paths.CACHE / "timings"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{stage}.json").write_text(json.dumps(figures, indent=2) + "\n")
    except OSError:
        pass
    return figures
