"""DVC experiments (`dvc exp run`, a queued one) each become their own MLflow run in the repository's store,
and `dvc exp show` agrees with MLflow on their metrics."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.workspace import run
from tfpipe import run_records
from tfpipe.params_file import yaml_load

# Each experiment also trains one epoch and exports two variants (the baseline: two epochs, three
# variants): seconds less per stage, and nothing below depends on either.
LEANER = ("-S", "train.epochs=1", "-S", "export.variants=[float32,int8]")


def _dvc(repo: Path, *arguments: str, check: bool = True):
    return run([sys.executable, "-m", "dvc", *arguments], repo, check=check)


def _stop_queue_workers(repo: Path) -> None:
    """The queue's celery workers run detached: stop them, then end any process still working in the copy."""
    import psutil

    _dvc(repo, "queue", "stop", "--kill", check=False)
    for process in psutil.process_iter(["pid", "cwd"]):
        with_cwd = process.info.get("cwd") or ""
        if with_cwd.startswith(str(repo)) and process.pid != psutil.Process().pid:
            try:
                process.terminate()
                process.wait(timeout=20)
            except psutil.Error:
                pass


def _experiments(shown: list) -> dict[str, dict]:
    """`dvc exp show --json` -> {name: {'params': train section, 'metrics': metrics/evaluate.json,
    'experiment': whether it is a DVC experiment (not the workspace or a commit)}}."""
    found = {}
    for commit in shown:
        experiments = [rev for experiment in (commit.get("experiments") or []) for rev in experiment["revs"]]
        for entry in [commit] + experiments:
            data = entry.get("data") or {}
            metrics = (data.get("metrics") or {}).get("metrics/evaluate.json", {}).get("data")
            if metrics:
                params = data["params"]["params.yaml"]["data"]["train"]
                found[entry.get("name") or entry["rev"]] = {
                    "params": params,
                    "metrics": metrics,
                    "experiment": entry is not commit,
                }
    return found


def test_dvc_lock_tags_name_each_output_of_the_upstream_stages(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  ingest:\n    outs:\n    - path: data/prepared\n      md5: abc.dir\n"
        "  preprocess:\n    outs:\n    - path: artifacts/preprocess\n      md5: def.dir\n"
        "  train:\n    outs:\n    - path: artifacts/train\n      md5: stale.dir\n"
    )
    assert run_records.dvc_lock_tags(("ingest", "preprocess"), lock) == {
        "dvc.lock.ingest.data/prepared": "abc.dir",
        "dvc.lock.preprocess.artifacts/preprocess": "def.dir",
    }
    assert run_records.dvc_lock_tags(lock_file=tmp_path / "missing.lock") == {}


def test_what_the_pipeline_writes_never_makes_a_run_dirty(tmp_path, monkeypatch):
    """A fresh `make repro` rewrites dvc.lock, metrics/ and plots/ (tracked): the runs it makes are not git.dirty;
    an edited params.yaml or source file is."""
    for name in ("dvc.lock", "metrics/evaluate.json", "plots/history.csv", "params.yaml"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("committed\n")
    run(["git", "init", "-q"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(COMMIT + ["baseline"], tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in ("dvc.lock", "metrics/evaluate.json", "plots/history.csv"):
        (tmp_path / name).write_text("written by a run\n")
    assert run_records.git_tags()["git.dirty"] == "false"
    (tmp_path / "params.yaml").write_text("edited\n")
    assert run_records.git_tags()["git.dirty"] == "true"


def test_flatten_keeps_types_for_the_hparams_dashboard():
    nested = {
        "train": {"epochs": 3, "nesterov": False, "clipnorm": None, "augmentation": {"flip": "none"}},
        "variants": ["a"],
    }
    assert run_records.flatten("", nested)["train.epochs"] == "3"
    assert run_records.flatten("", nested, as_text=False) == {
        "train.epochs": 3,
        "train.nesterov": False,
        "train.clipnorm": "null",
        "train.augmentation.flip": "none",
        "variants": '["a"]',
    }


@pytest.fixture(scope="module")
def experiments(reproduced_repo, tmp_path_factory):
    """A copy of the session's reproduced repository (tests/conftest.py: `dvc repro` of the whole pipeline,
    2 epochs, weight histograms on), committed as the baseline, then a queued experiment (learning rate x2)
    and a workspace one (mlp), which each rerun train, evaluate and export. The workspace keeps the mlp's outputs."""

    from tests.workspace import copy_reproduced

    repo = copy_reproduced(reproduced_repo, tmp_path_factory.mktemp("experiments") / "repo")
    run(["git", "add", "-A"], repo)
    run(
        COMMIT + ["baseline"], repo
    )  # the baseline a user commits after `make repro`; experiments are compared against it
    train = yaml_load((repo / "params.yaml").read_text())["train"]
    base_rate, base_model = train["learning_rate"], train["model"]
    try:
        # Queued first: a queued experiment takes the workspace as it is when queued, and the next one changes it.
        _dvc(repo, "exp", "run", "--queue", "-S", f"train.learning_rate={base_rate * 2}", *LEANER)
        _dvc(repo, "exp", "run", "-S", "train.model=mlp", *LEANER)
        _dvc(repo, "queue", "start", "--jobs", "1")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = _dvc(repo, "queue", "status").stdout
            if not any(state in status for state in ("Queued", "Running")):
                break
            time.sleep(5)
        assert "Success" in status and "Failed" not in status, status
        shown = _experiments(json.loads(_dvc(repo, "exp", "show", "--json").stdout))
    finally:
        _stop_queue_workers(repo)
    return {"repo": repo, "shown": shown, "base_rate": base_rate, "base_model": base_model}


COMMIT = ["git", "-c", "user.email=t@localhost", "-c", "user.name=t", "commit", "-qm"]


@pytest.mark.e2e
@pytest.mark.xdist_group("experiments")  # its module fixture built once (make test: --dist loadgroup)
def test_each_experiment_is_its_own_mlflow_run_and_dvc_exp_show_agrees(experiments):
    import mlflow

    repo, shown, base_rate, model = (experiments[key] for key in ("repo", "shown", "base_rate", "base_model"))
    # The baseline (the commit), the workspace experiment and the queued one: three runs.
    by_params = {(item["params"]["model"], item["params"]["learning_rate"]): item for item in shown.values()}
    assert set(by_params) == {(model, base_rate), ("mlp", base_rate), (model, base_rate * 2)}, shown.keys()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns/mlflow.db'}")
    # The DVC metrics are the headline and name no run; each run is found by the params that tell it apart.
    runs = {
        (mlflow_run.data.params["train.model"], float(mlflow_run.data.params["train.learning_rate"])): mlflow_run
        for mlflow_run in client.search_runs(
            [client.get_experiment_by_name("mnist_5k").experiment_id],
            filter_string="attributes.status = 'FINISHED'",
        )
        if "mlflow.parentRunId" not in mlflow_run.data.tags
    }
    for item in shown.values():
        item["metrics"]["run_id"] = runs[(item["params"]["model"], item["params"]["learning_rate"])].info.run_id
    run_ids = {item["metrics"]["run_id"] for item in by_params.values()}
    assert len(run_ids) == 3
    # Runs are named by what tells them apart: each experiment's run by its DVC experiment name, the
    # others (the baseline's plain `dvc repro`, the workspace) by their params; no two alike.
    names = {name: client.get_run(item["metrics"]["run_id"]).info.run_name for name, item in shown.items()}
    assert len(set(names.values())) == 3, names
    for name, item in shown.items():
        mlflow_run = client.get_run(item["metrics"]["run_id"])
        if item["experiment"]:
            assert mlflow_run.info.run_name == name, (name, mlflow_run.info.run_name)
        assert mlflow_run.data.tags["mlflow.note.content"].startswith("test accuracy ")
    for (model, learning_rate), item in by_params.items():
        mlflow_run = client.get_run(item["metrics"]["run_id"])
        assert mlflow_run.info.status == "FINISHED"
        assert mlflow_run.data.params["train.model"] == model
        assert float(mlflow_run.data.params["train.learning_rate"]) == learning_rate
        assert mlflow_run.data.metrics["test_accuracy"] == pytest.approx(item["metrics"]["accuracy"], abs=1e-9)
        # (System metrics are sampled every 3 s: a 1-epoch run may end before the first sample, so
        # their presence is not asserted here.)
        tags = mlflow_run.data.tags
        assert tags["git.commit"] and tags["data.dvc.md5"] and tags["dvc.lock.ingest.data/prepared"].endswith(".dir")
        assert [dataset.dataset.name for dataset in mlflow_run.inputs.dataset_inputs] == ["mnist_5k"]
        assert any(path.name == "blessing.json" for path in _artifact_files(client, mlflow_run.info.run_id, "evaluate"))
    # The queued experiment ran in .dvc/tmp/exps/; its run, artifacts and TensorBoard logs are in the repository's.
    assert not list((repo / ".dvc/tmp").rglob("mlflow.db"))
    for run_id in run_ids:
        log_dir = repo / client.get_run(run_id).data.tags["tensorboard.dir"]
        tags = _summary_tags(log_dir)
        assert "_hparams_/session_start_info" in tags[log_dir]
        assert "confusion_matrix" in tags[log_dir / "evaluate"] and "test_accuracy" in tags[log_dir / "evaluate"]
        assert any(tag.endswith("histogram") for tag in tags[log_dir / "train"]), tags[log_dir / "train"]


def _artifact_files(client, run_id: str, path: str) -> list[Path]:
    return [Path(item.path) for item in client.list_artifacts(run_id, path)]


def _summary_tags(log_dir: Path) -> dict[Path, set[str]]:
    """{directory: summary tags in its event files} for a run's TensorBoard directory."""
    import tensorflow as tf

    tags: dict[Path, set[str]] = {}
    for events in log_dir.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            tags.setdefault(events.parent, set()).update(value.tag for value in event.summary.value)
    return tags


@pytest.mark.e2e
@pytest.mark.xdist_group("experiments")  # its module fixture built once (make test: --dist loadgroup)
def test_metrics_and_plots_diff_compare_two_commits_of_the_pipelines_own_outputs(experiments, tmp_path):
    """The mlp experiment's outputs (in the workspace) committed on top of the baseline (the default model)."""
    repo = experiments["repo"]
    run(["git", "add", "-A"], repo)
    run(COMMIT + ["mlp"], repo)
    diff = json.loads(_dvc(repo, "metrics", "diff", "HEAD~1", "HEAD", "--json", "--all").stdout)
    evaluate = diff["metrics/evaluate.json"]
    committed = {
        revision: json.loads(run(["git", "show", f"{revision}:metrics/evaluate.json"], repo).stdout)
        for revision in ("HEAD~1", "HEAD")
    }
    assert (
        evaluate["accuracy"]["old"] == committed["HEAD~1"]["accuracy"]
        and evaluate["accuracy"]["new"] == committed["HEAD"]["accuracy"]
    )
    assert evaluate["baseline"]["old"] == evaluate["baseline"]["new"]  # same splits, same baseline
    assert "val_accuracy" in diff["metrics/train.json"] and "int8.accuracy" in diff["metrics/export.json"]

    rendered = json.loads(_dvc(repo, "plots", "diff", "HEAD~1", "HEAD", "--json", "--split").stdout)
    assert not rendered.get("errors"), rendered.get("errors")
    expected = {
        "Training curves (accuracy)",
        "Training curves (loss)",
        "Confusion matrix (test split)",
        "artifacts/evaluate/confident_mistakes.png",
        "artifacts/evaluate/reliability_diagram.png",
        "artifacts/export/variants.png",
    }
    assert expected <= set(rendered["data"])
    for name in expected:
        revisions = {revision for item in rendered["data"][name] for revision in item["revisions"]}
        assert revisions == {"HEAD~1", "HEAD"}, (name, revisions)
    _dvc(repo, "plots", "diff", "HEAD~1", "HEAD", "-o", str(tmp_path / "html"))
    page = (tmp_path / "html/index.html").read_text()
    assert "Confusion matrix (test split)" in page and "reliability_diagram.png" in page


@pytest.fixture(scope="module")
def two_experiments(reproduced_repo, tmp_path_factory):
    """A copy of the reproduced repository committed as the baseline, then two experiments that differ from it and
    from each other in one param: the int8 gate's threshold (export reruns; the variants come from its cache)."""
    from tests.workspace import copy_reproduced

    repo = copy_reproduced(reproduced_repo, tmp_path_factory.mktemp("two") / "repo")
    run(["git", "add", "-A"], repo)
    run(COMMIT + ["baseline"], repo)
    for threshold in ("0.01", "0.5"):
        _dvc(repo, "exp", "run", "-S", f"export.max_int8_accuracy_drop={threshold}")
    return repo


@pytest.mark.e2e
@pytest.mark.xdist_group("two_experiments")  # its module fixture built once (make test: --dist loadgroup)
def test_exp_show_only_changed_and_metrics_diff_fit_a_120_column_terminal(two_experiments):
    """What `dvc exp show --only-changed` and `dvc metrics diff` print in a terminal 120 columns wide: every changed
    column shown whole (DVC collapses the columns that do not fit into "…"), and the headline's values in it."""
    repo = two_experiments
    narrow = {"COLUMNS": "120", "LINES": "50"}
    shown = run([sys.executable, "-m", "dvc", "exp", "show", "--only-changed", "--no-pager"], repo, env=narrow).stdout
    lines = [line.rstrip() for line in shown.splitlines() if line.strip()]
    assert max(len(line) for line in lines) <= 120, shown
    assert "…" not in shown, shown  # no collapsed column
    header = lines[1]
    assert "export.max_int8_accuracy_drop" in header and "int8.p50_us" in header, shown
    assert sum("[" in line for line in lines) == 2, shown  # the two experiments, each named
    diff = run([sys.executable, "-m", "dvc", "metrics", "diff"], repo, env=narrow, check=False)
    assert diff.returncode == 0 and max(map(len, diff.stdout.splitlines() or [""])) <= 120, diff.stdout
    (values,) = [revision["data"] for revision in json.loads(_dvc(repo, "metrics", "show", "--json").stdout).values()]
    assert sum(len(_flat(file["data"])) for file in values.values()) <= 40


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _champion(repo: Path) -> int:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns/mlflow.db'}")
    return int(client.get_model_version_by_alias("mnist_5k-classifier", "champion").version)


def _versions(repo: Path) -> dict[int, str]:
    """{version: the model's identity} of every registered version of the demo's model."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns/mlflow.db'}")
    return {
        int(version.version): version.tags.get("tfpipe.model_identity")
        for version in client.search_model_versions("name = 'mnist_5k-classifier'")
    }


@pytest.fixture(scope="module")
def sweep(reproduced_repo, tmp_path_factory):
    """The docs' queued sweep (docs/tracking.md) on a copy of the reproduced repository, committed as the baseline:
    two queued experiments, one worse than the champion (1 epoch; the baseline trained 3) and one better (5), run by
    `dvc queue start`. Returns the repository and each experiment's name and test accuracy."""
    from tests.workspace import copy_reproduced

    repo = copy_reproduced(reproduced_repo, tmp_path_factory.mktemp("sweep") / "repo")
    run(["git", "add", "-A"], repo)
    run(COMMIT + ["baseline"], repo)
    before = {"champion": _champion(repo), "versions": _versions(repo)}
    try:
        for epochs in (1, 5):  # the int8 gate loosened: it is not what this sweep compares
            gate = ("-S", "export.max_int8_accuracy_drop=0.05", "-S", "export.max_int8_class_drop=0.2")
            _dvc(repo, "exp", "run", "--queue", "-S", f"train.epochs={epochs}", *LEANER[2:], *gate)
        _dvc(repo, "queue", "start", "--jobs", "1")
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            status = _dvc(repo, "queue", "status").stdout
            if not any(state in status for state in ("Queued", "Running")):
                break
            time.sleep(5)
        assert status.count("Success") == 2, status
        shown = _experiments(json.loads(_dvc(repo, "exp", "show", "--json").stdout))
    finally:
        _stop_queue_workers(repo)
    by_epochs = {item["params"]["epochs"]: (name, item["metrics"]["accuracy"]) for name, item in shown.items()}
    return {"repo": repo, "before": before, "worse": by_epochs[1], "better": by_epochs[5], "baseline": by_epochs[3]}


@pytest.mark.e2e
@pytest.mark.xdist_group("sweep")  # its module fixture built once (make test: --dist loadgroup)
def test_a_sweep_keeps_the_best_model_champion_until_the_better_experiment_is_applied(sweep):
    repo, before = sweep["repo"], sweep["before"]
    (worse, worse_accuracy), (better, better_accuracy) = sweep["worse"], sweep["better"]
    champion_accuracy = sweep["baseline"][1]
    assert worse_accuracy < champion_accuracy <= better_accuracy, (worse_accuracy, champion_accuracy, better_accuracy)
    # The queued experiments registered their models and left the alias alone: the last to finish did not win.
    versions = _versions(repo)
    assert _champion(repo) == before["champion"] and len(versions) == len(before["versions"]) + 2
    assert len(set(versions.values())) == len(versions)  # one version per distinct model

    _dvc(repo, "exp", "apply", better)
    exported = json.loads((repo / "artifacts/export/summary.json").read_text())
    assert exported["promoted"] is False and "dvc exp apply" in exported["not_promoted_because"][0]
    repro = _dvc(repo, "repro")
    assert [line for line in repro.stdout.splitlines() if line.startswith("Running stage")] == [
        "Running stage 'promote':"
    ], repro.stdout
    assert _champion(repo) == exported["version"] != before["champion"]

    _dvc(repo, "exp", "apply", worse)  # refused by evaluate against the champion it would have replaced
    assert "evaluate did not bless the model" in _dvc(repo, "repro").stdout
    assert _champion(repo) == exported["version"] and _versions(repo) == versions  # nothing registered again


@pytest.mark.e2e
@pytest.mark.xdist_group("two_experiments")  # its module fixture built once (make test: --dist loadgroup)
def test_the_docs_export_only_experiments_keep_one_version_which_stays_champion(two_experiments):
    """`dvc exp run -S export.max_int8_accuracy_drop=...` exports the same model again: the registry keeps its one
    version, which was and stays the champion, with no further command."""
    summary = json.loads((two_experiments / "artifacts/export/summary.json").read_text())
    assert summary["registered_before"] and summary["promoted"] and summary["not_promoted_because"] == []
    assert list(_versions(two_experiments)) == [summary["version"]] and _champion(two_experiments) == summary["version"]
