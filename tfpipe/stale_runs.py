"""Runs left RUNNING by a process that died (SIGKILL, OOM, a reboot) are marked KILLED by whatever next opens the
store: each run records its owner (host, PID and the process start time, so a reused PID does not hide a dead
owner).
"""

from __future__ import annotations

import os
import socket


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), None if there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:  # AccessDenied and the like: it exists, but we cannot tell when it started
        return -1.0


def process_tags() -> dict[str, str]:
    """What identifies the process that owns a run, even after its PID is reused: host, PID and start time."""
    return {
        "tfpipe.host": socket.gethostname(),
        "tfpipe.pid": str(os.getpid()),
        "tfpipe.process_start": f"{process_start_time(os.getpid()):.2f}",
    }


def owner_is_gone(tags: dict[str, str]) -> bool:
    """True when the run's process (same host) no longer exists, or its PID now belongs to a process that started
    later."""
    pid, host, started = tags.get("tfpipe.pid"), tags.get("tfpipe.host"), tags.get("tfpipe.process_start")
    if host != socket.gethostname() or not pid or not pid.isdigit():
        return False  # another host's run: only that host can tell
    actual = process_start_time(int(pid))
    if actual is None:
        return True
    if actual < 0 or started is None:
        return False  # alive, and either not comparable or recorded before start times were
    return abs(actual - float(started)) > 1.0  # the PID was reused by a newer process


def mark_stale_runs(experiment_ids: list[str] | None = None) -> list[str]:
    """Marks KILLED the runs left RUNNING by a process of this host that is gone (SIGKILL, OOM, a reboot).

    Every experiment is searched unless experiment_ids is given. Called wherever the project opens
    the store: each stage's run, `make ui`, `python -m pipelines.store mark-stale`.
    """
    import mlflow

    client = mlflow.MlflowClient()
    if experiment_ids is None:
        experiment_ids = [experiment.experiment_id for experiment in client.search_experiments()]
    stale = []
    for start in range(0, len(experiment_ids), 100):  # MLflow searches at most 100 experiments at a time
        for run in client.search_runs(
            experiment_ids[start : start + 100], filter_string="attributes.status = 'RUNNING'", max_results=50000
        ):
            if owner_is_gone(run.data.tags):
                client.set_tag(
                    run.info.run_id,
                    "tfpipe.stale",
                    f"process {run.data.tags['tfpipe.pid']} died without ending the run; "
                    f"marked KILLED by process {os.getpid()}",
                )
                client.set_terminated(run.info.run_id, status="KILLED")
                stale.append(run.info.run_id)
    return stale
