"""Fresh copies of this repository (tracked files only, a new git repo), for end-to-end tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(
    command: list[str], cwd: Path, check: bool = True, env: dict | None = None, input: str | None = None
) -> subprocess.CompletedProcess:
    """Runs a command with this interpreter's venv first on PATH (dvc stages call `python`); `input`: its stdin."""
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **(env or {}),
    }
    if env is None or "MLFLOW_TRACKING_URI" not in env:
        environment.pop("MLFLOW_TRACKING_URI", None)  # each copy has its own mlruns/
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def copy_repository(destination: Path, materialize: bool = True) -> Path:
    """Copies the tracked (and untracked, not ignored) files, commits them, and materializes data/raw."""
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.splitlines()
    for name in listed:
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    run(["git", "init", "-q"], destination)
    run(["git", "add", "-A"], destination)
    run(["git", "-c", "user.email=tfpipe@localhost", "-c", "user.name=tfpipe", "commit", "-qm", "copy"], destination)
    if materialize:
        run([sys.executable, "-m", "pipelines.materialize"], destination)
    return destination


def set_params(repo: Path, overrides: dict) -> None:
    """Merges {section: {key: value}} into the copy's params.yaml (nested sections merge too), keeping its comments.
    Not validated: tests also write params the pipeline must refuse."""
    from tfpipe.params_file import update_params_file

    update_params_file(overrides, repo / "params.yaml", validate=False)


def copy_reproduced(source: Path, destination: Path) -> Path:
    """Copies a reproduced copy (git repo, outputs, DVC cache, MLflow store, TensorBoard logs) to `destination`.

    The local MLflow store records absolute paths (each experiment's artifact location, each run's and
    model's artifact URI, the MLmodel files): they are moved to the copy's, so that the copy reads and
    writes only its own mlruns/, as if `dvc repro` had run there. DVC's files hold relative paths only.
    """
    import sqlite3

    source, destination = Path(source).resolve(), Path(destination).resolve()
    shutil.copytree(source, destination, symlinks=True, dirs_exist_ok=True)
    old, new = f"{source}/", f"{destination}/"
    store = destination / "mlruns"
    database = store / "mlflow.db"
    if database.is_file():
        with contextlib.closing(sqlite3.connect(database)) as connection, connection:
            tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for column in [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]:
                    connection.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                        f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                        (old, new, old),
                    )
    for mlmodel in store.rglob("MLmodel") if store.is_dir() else []:
        text = mlmodel.read_text()
        if old in text:
            mlmodel.write_text(text.replace(old, new))
    return destination
