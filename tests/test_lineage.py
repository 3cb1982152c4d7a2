"""dvc.yaml lists, for every stage, each project module the stage imports (trust rule 2), and no logging-only param."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tfpipe import lineage
from tfpipe.params_file import yaml_load

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(dep) or Path(dep) in path.parents for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_imports_is_one_of_its_deps(stage):
    entry = STAGES[stage]
    module = entry["cmd"].removeprefix("python -m ")
    closure = lineage.import_closure(module)
    assert Path(module.replace(".", "/")) / "__main__.py" in closure  # `python -m components.<stage>` runs it
    missing = [str(path) for path in closure if not covered(path, entry["deps"])]
    assert not missing, f"dvc.yaml: stage {stage!r} imports {missing} but does not list them as deps"
    code_deps = [dep for dep in entry["deps"] if dep.split("/")[0] in lineage.PACKAGES]
    unused = [dep for dep in code_deps if not any(covered(path, [dep]) for path in closure)]
    assert not unused, f"dvc.yaml: stage {stage!r} lists {unused} as deps but never imports them"


def test_the_closure_follows_lazy_imports_and_package_init_files(tmp_path):
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines/__init__.py").write_text("")
    (tmp_path / "pipelines/a.py").write_text("def f():\n    from pipelines import b\n")
    (tmp_path / "pipelines/b.py").write_text("import numpy\nfrom pipelines.c import thing\n")
    (tmp_path / "pipelines/c.py").write_text("thing = 1\n")
    (tmp_path / "pipelines/unused.py").write_text("")
    assert [str(path) for path in lineage.import_closure("pipelines.a", tmp_path)] == [
        "pipelines/__init__.py",
        "pipelines/a.py",
        "pipelines/b.py",
        "pipelines/c.py",
    ]


def test_logging_only_params_retrain_nothing():
    for stage, entry in STAGES.items():
        params = entry.get("params", [])
        assert not any(str(param).split(".")[0] == "tracking" for param in params), stage
    assert "tracking" in yaml_load((ROOT / "params.yaml").read_text())
