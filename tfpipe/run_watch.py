"""A watcher for each stage's MLflow run: whatever kills the stage (SIGKILL, the OOM killer), the run does not stay
RUNNING for anyone who opens the store afterwards, with `mlflow ui`, the MLflow API or a team's server.

A stage that starts or resumes a run starts `python -m tfpipe.run_watch RUN_ID` in its own session (Ctrl-C or a
signal to the stage's process group does not reach it), reading a pipe only the stage holds. The stage writes
"done" into it when it has ended the run itself (FINISHED, FAILED or KILLED on SIGTERM). When the stage dies any
other way, the kernel closes the pipe: the watcher reads end-of-file without "done" and, if the run is still
RUNNING, marks it KILLED with a `tfpipe.stale` tag saying why, at once, and whether or not anything of the project
ever runs again (a later `dvc repro` that restores every output from DVC's run-cache runs no project code).

While it waits, the watcher is a bare Python process blocked on a read: MLflow is imported only when the stage died.
Its own errors go to .cache/run_watch.log (it has no terminal).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

DONE = b"done\n"
LOG = Path(".cache") / "run_watch.log"
_pipes: dict[str, int] = {}  # run id -> the write end this process holds


def watch(run_id: str, tracking_uri: str) -> None:
    """Starts the watcher of `run_id` (the active stage's run, in store `tracking_uri`)."""
    read_end, write_end = os.pipe()  # neither end is inherited by other children (O_CLOEXEC)
    try:
        subprocess.Popen(
            [sys.executable, "-m", "tfpipe.run_watch", run_id, str(os.getpid())],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": _importable_path()},
        )
    except OSError:
        os.close(write_end)  # no watcher: the stage still runs; the stale-run sweep is the fallback
        return
    finally:
        os.close(read_end)
    previous = _pipes.pop(run_id, None)
    if previous is not None:
        os.close(previous)
    _pipes[run_id] = write_end


def _importable_path() -> str:
    """PYTHONPATH for the watcher: the project's root first (it imports tfpipe from whatever directory the stage's
    run was started in), then the stage's own PYTHONPATH."""
    inherited = os.environ.get("PYTHONPATH", "")
    root = str(Path(__file__).resolve().parents[1])
    return root + (os.pathsep + inherited if inherited else "")


def release(run_id: str) -> None:
    """Tells the watcher of `run_id` that the stage ended the run itself; it exits without touching the store."""
    write_end = _pipes.pop(run_id, None)
    if write_end is None:
        return
    try:
        os.write(write_end, DONE)
    except OSError:
        pass
    finally:
        os.close(write_end)


def mark_killed(run_id: str, pid: str) -> bool:
    """Marks the run, and any child run of it (the train search's candidates) still RUNNING, KILLED; True if the
    run was still RUNNING."""
    import mlflow

    client = mlflow.MlflowClient()
    why = f"process {pid} died without ending the run (SIGKILL, out of memory); marked KILLED by its watcher"
    for attempt in range(5):  # a server may be briefly unreachable, a SQLite store briefly locked
        try:
            run = client.get_run(run_id)
            children = client.search_runs(
                [run.info.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'",
            )
            for stale in [*children, *([run] if run.info.status == "RUNNING" else [])]:
                client.set_tag(stale.info.run_id, "tfpipe.stale", why)
                client.set_terminated(stale.info.run_id, status="KILLED")
            return run.info.status == "RUNNING"
        except Exception:
            if attempt == 4:
                raise
            time.sleep(2**attempt)
    return False


def main(argv: list[str]) -> None:
    run_id, pid = argv
    received = b""
    while chunk := os.read(0, 64):  # blocks until the stage writes "done" or is gone
        received += chunk
    if received.endswith(DONE):
        return
    try:
        if mark_killed(run_id, pid):
            _log(f"run {run_id}: process {pid} died; run marked KILLED")
    except Exception as error:  # noqa: BLE001 - no terminal: the log is the only place to say it
        from tfpipe.redaction import redact

        _log(redact(f"run {run_id}: process {pid} died; could not mark the run KILLED: {error!r}"))


def _log(message: str) -> None:
    try:
        LOG.parent.mkdir(exist_ok=True)
        with LOG.open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")
    except OSError:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
