"""The benchmark scripts run as the docs name them: every project name a script imports exists (a stale import fails
a script minutes in, or only on the dataset that reaches it), and the ones docs/benchmarks.md names run, in their
quick forms, in a copy of the reproduced repository. The figures themselves are `make bench`'s."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

from tests.workspace import run

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmarks", "components", "models", "pipelines", "tfpipe", "tests")
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


def project_imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name or None) for every import of a project module in the file, those inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in PACKAGES:
                found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] in PACKAGES]
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_project_name_a_benchmark_imports_exists(script):
    missing = []
    for module, name in project_imports(script):
        try:
            imported = importlib.import_module(module)
        except ImportError as error:
            missing.append(f"{module}: {error}")
            continue
        if name is not None and not hasattr(imported, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"from {module} import {name}")
    assert not missing, f"{script.relative_to(ROOT)}: " + "; ".join(missing)


@pytest.mark.e2e
def test_the_documented_benchmarks_run_in_a_reproduced_copy(reproduced_copy):
    """docs/benchmarks.md's scripts, each in the quick form its --help names (seconds, not figures): int8_ops on the
    reproduced model, bench_ingest on 200 generated images (bench_export runs as written in tests/test_docs.py;
    bench_datasets is a whole pipeline a dataset, minutes even with --quick: its imports are checked above)."""
    python = sys.executable
    quick = [
        ([python, "-m", "benchmarks.int8_ops", "--quick"], "cut after each layer"),
        ([python, "-m", "benchmarks.bench_ingest", "--images", "200", "--skip-mnist"], "generated 200 x 28x28 PNG"),
    ]
    for command, printed in quick:
        result = run(command, reproduced_copy, check=False)
        output = f"{' '.join(command[1:])}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        assert result.returncode == 0 and printed in result.stdout, output
