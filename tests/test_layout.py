"""The layout a newcomer can see: floors that only import down, one folder per stage, files a reader can hold, one
home for each fact (the params schema's defaults are params.yaml's; models are found by scanning models/)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from tfpipe import lineage

ROOT = Path(__file__).resolve().parents[1]
# Lower floors first: a module may import its own floor and the ones below, never one above.
FLOORS = {"tfpipe": 0, "models": 1, "components": 2, "pipelines": 3}
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
MAX_LINES = 300


def project_modules() -> list[Path]:
    return sorted(path for package in FLOORS for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", project_modules(), ids=lambda path: str(path.relative_to(ROOT)))
def test_imports_only_point_down_and_no_stage_imports_another(path):
    relative = path.relative_to(ROOT)
    floor = relative.parts[0]
    for name in lineage.imported_names(path):
        top = name.split(".")[0]
        if top in FLOORS:
            assert FLOORS[top] <= FLOORS[floor], f"{relative} imports {name}: a floor above its own"
        if floor == "components" and top == "components" and len(name.split(".")) > 1 and len(relative.parts) > 2:
            assert name.split(".")[1] == relative.parts[1], f"{relative} imports {name}: another stage's module"


def test_each_stage_is_one_folder_that_dvc_runs():
    for stage, entry in STAGES.items():
        assert entry["cmd"] == f"python -m components.{stage}"
        folder = ROOT / "components" / stage
        assert (folder / "__main__.py").is_file() and (folder / "stage.py").is_file(), stage
        assert f"components/{stage}" in entry["deps"], f"dvc.yaml: {stage} should depend on its folder"
    folders = {path.name for path in (ROOT / "components").iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert folders == set(STAGES), "a folder in components/ that is no stage, or a stage without a folder"


def test_no_source_file_is_longer_than_a_reader_can_hold_unless_it_says_why():
    long = []
    for path in project_modules():
        text = path.read_text()
        docstring = re.match(r'"""(.*?)"""', text, re.S)
        if text.count("\n") > MAX_LINES and not (docstring and "in one place" in docstring.group(1)):
            long.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not long, f"over {MAX_LINES} lines without saying why it is kept in one place: {long}"


def test_the_params_schema_defaults_are_params_yaml():
    """One home for each default: a reader of tfpipe/config.py and a reader of params.yaml see the same values."""
    from tfpipe.params_file import load_params, parse_params

    defaults = json.loads(json.dumps(asdict(parse_params({}))))
    committed = json.loads(json.dumps(asdict(load_params(ROOT / "params.yaml"))))
    assert defaults == committed


def test_every_model_file_is_found_by_the_registry_without_a_list():
    from models import registry

    registered = {builder.__module__ for builder in registry.BUILDERS.values()} if registry.names() else set()
    declaring = {f"models.{path.stem}" for path in (ROOT / "models").glob("*.py") if "@register(" in path.read_text()}
    assert declaring <= registered


def test_readme_and_docs_name_the_folders_that_exist():
    readme = (ROOT / "README.md").read_text()
    for folder in ("tfpipe/", "models/", "pipelines/", "components/<stage>/", "tests/", "benchmarks/", "docs/"):
        assert folder in readme, folder
    for document in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for mentioned in re.findall(r"`((?:components|pipelines|tfpipe|models)/[\w/]+\.py)`", document.read_text()):
            assert (ROOT / mentioned).is_file(), f"{document.name} names {mentioned}, which does not exist"
