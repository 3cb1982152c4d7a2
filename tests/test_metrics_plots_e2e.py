"""`dvc metrics diff` and `dvc plots diff` between two commits of a temporary git repo.

The repo's dvc.yaml declares metrics and plots exactly as ours does (copied from it), without
running the pipeline: each commit just holds different metric and plot files.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def declared_like_ours() -> dict:
    """Our dvc.yaml's metrics and plots declarations (train and evaluate stages, top-level plots), with no-op commands."""
    ours = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stages = {name: {"cmd": "true", **{key: ours["stages"][name][key] for key in ("metrics", "plots") if key in ours["stages"][name]}}
              for name in ("train", "evaluate")}
    return {"stages": stages, "plots": ours["plots"]}


def write_outputs(repo: Path, accuracy: float, seed: int) -> None:
    """What train and evaluate write, with `accuracy` as the test accuracy."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "plots").mkdir(exist_ok=True)
    (repo / "metrics/train.json").write_text(json.dumps({"accuracy": accuracy + 0.01, "val_accuracy": accuracy, "epochs_run": 3}))
    (repo / "metrics/evaluate.json").write_text(json.dumps({
        "accuracy": accuracy, "macro_f1": accuracy - 0.01, "blessed": accuracy > 0.9,
        "per_class": {"0": {"recall": accuracy}}, "champion": {"version": 1, "accuracy": 0.95, "accuracy_change": accuracy - 0.95},
    }))
    epochs = np.arange(1, 4)
    history = ["epoch,accuracy,loss,val_accuracy,val_loss"] + [f"{e},{accuracy * e / 3},{1 / e},{accuracy * e / 3.1},{1.1 / e}" for e in epochs]
    (repo / "plots/history.csv").write_text("\n".join(history) + "\n")
    actual = rng.integers(0, 3, 30)
    predicted = np.where(rng.random(30) < accuracy, actual, (actual + 1) % 3)
    (repo / "plots/confusion.csv").write_text("actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in zip(actual, predicted)))
    for picture in [path for path in declared_like_ours()["plots"] if isinstance(path, str) and path.endswith(".png")]:
        (repo / picture).parent.mkdir(parents=True, exist_ok=True)
        plt.imsave(repo / picture, rng.random((8, 8)))


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message], repo)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("diffs")
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(declared_like_ours(), sort_keys=False))
    write_outputs(repo, accuracy=0.95, seed=0)
    commit(repo, "champion")
    write_outputs(repo, accuracy=0.80, seed=1)
    commit(repo, "weak model")
    return repo


def test_metrics_diff_compares_test_accuracy_and_the_champion_comparison(repo):
    diff = json.loads(run([sys.executable, "-m", "dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], repo))
    evaluate = diff["metrics/evaluate.json"]
    assert evaluate["accuracy"]["old"] == 0.95 and evaluate["accuracy"]["new"] == 0.80
    assert evaluate["accuracy"]["diff"] == pytest.approx(-0.15)
    assert evaluate["champion.accuracy_change"]["new"] == pytest.approx(-0.15)
    assert "val_accuracy" in diff["metrics/train.json"]


def test_plots_diff_renders_curves_confusion_matrix_and_pictures_for_both_commits(repo, tmp_path):
    rendered = json.loads(run([sys.executable, "-m", "dvc", "plots", "diff", "HEAD~1", "HEAD", "--json", "--split"], repo))
    assert not rendered.get("errors"), rendered.get("errors")
    plots = rendered["data"]
    expected = {"Training curves (accuracy)", "Training curves (loss)", "Confusion matrix (test split)",
                "artifacts/evaluate/confident_mistakes.png", "artifacts/evaluate/reliability_diagram.png"}
    assert expected <= set(plots)
    for name in expected:
        revisions = {revision for item in plots[name] for revision in item["revisions"]}
        assert revisions == {"HEAD~1", "HEAD"}, (name, revisions)
    run([sys.executable, "-m", "dvc", "plots", "diff", "HEAD~1", "HEAD", "-o", str(tmp_path / "html")], repo)
    page = (tmp_path / "html/index.html").read_text()
    assert "Confusion matrix (test split)" in page and "reliability_diagram.png" in page
