"""Fresh copies of this repository (tracked files only, a new git repo), for end-to-end tests and benchmarks."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs a command with this interpreter's venv first on PATH (dvc stages call `python`)."""
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    if env is None or "MLFLOW_TRACKING_URI" not in env:
        environment.pop("MLFLOW_TRACKING_URI", None)  # each copy has its own mlruns/
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
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
    """Merges {section: {key: value}} into the copy's params.yaml (nested sections merge too)."""
    from pipelines.presets import merge

    path = repo / "params.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), overrides), sort_keys=False))
