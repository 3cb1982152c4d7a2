"""`python -m pipelines.params check` (pipelines/params.py): params.yaml and the YAML files dvc.yaml reads are read
the bounded way before DVC parses them (DVC's parser expands an alias bomb without limit), and `make repro` runs the
check before DVC."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines.params import check, files_dvc_reads
from tfpipe.config import ParamsError

ROOT = Path(__file__).resolve().parents[1]
# Nine levels of ten: over 10**9 values from 600 bytes. A safe_load of it, or DVC's, does not come back.
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]\n" for level in range(1, 9)
)


@pytest.fixture
def project(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def run_check(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.params", "check", "--dir", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_projects_files_pass(project):
    result = run_check(project)
    assert result.returncode == 0, result.stderr
    assert "params.yaml: " in result.stdout and "dvc.yaml: " in result.stdout


def test_an_alias_bomb_in_params_yaml_is_refused_in_seconds_naming_the_file(project):
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + BOMB)
    start = time.monotonic()
    result = run_check(project)
    assert time.monotonic() - start < 20
    assert result.returncode != 0 and "params.yaml" in result.stderr
    assert "values once its YAML aliases (*name) expand, more than 100,000" in result.stderr


def test_a_bomb_in_a_file_dvc_yaml_names_is_refused_too(project):
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())
    pipeline["vars"] = [*pipeline.get("vars", []), "extra.yaml"]
    (project / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    (project / "extra.yaml").write_text(BOMB)
    assert files_dvc_reads(pipeline, project) == [project / "extra.yaml"]
    with pytest.raises(ParamsError, match="extra.yaml: 1,234,567,909 values"):
        check(project)
    (project / "dvc.yaml").write_text(BOMB)  # and in dvc.yaml itself
    with pytest.raises(ParamsError, match="dvc.yaml: 1,234,567,909 values"):
        check(project)


def test_a_mistyped_key_is_named_before_dvc_starts(project):
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "\nbogus_section: 1\n")
    result = run_check(project)
    assert result.returncode != 0 and "bogus_section: unknown key" in result.stderr


def test_make_repro_checks_before_dvc_parses_anything():
    dry_run = subprocess.run(["make", "-n", "repro"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = dry_run.splitlines()
    checked = next(index for index, line in enumerate(lines) if "-m pipelines.params check" in line)
    first_dvc = next(index for index, line in enumerate(lines) if "dvc " in line or "pipelines.materialize" in line)
    assert checked < first_dvc
