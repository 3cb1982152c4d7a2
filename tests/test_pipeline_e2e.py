"""End to end: `dvc repro` in a temporary copy of the repository, as a new user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPRODUCED_PARAMS
from tests.workspace import copy_reproduced, run, set_params

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(reproduced_repo, tmp_path_factory) -> Path:
    """This module's copy of the session's reproduced repository (tests/conftest.py: a fresh clone-like copy,
    the committed data.dvc hash checked after materializing, `dvc repro` with REPRODUCED_PARAMS); the tests
    below change it (bad params, a failing stage, forced reruns), so it is not shared with other modules."""
    return copy_reproduced(reproduced_repo, tmp_path_factory.mktemp("repo"))


def test_repro_runs_every_stage_and_writes_the_promised_outputs(repo):
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert metrics["accuracy"] > 0.5
    assert (repo / "reports/ingest/data_docs/index.html").is_file()
    assert (repo / "artifacts/evaluate/blessing.json").is_file()
    assert list((repo / "artifacts/export").glob("*.tflite"))
    shown = json.loads(run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], repo).stdout)
    (files,) = [revision["data"] for revision in shown.values()]  # the workspace only
    assert set(files) == {f"metrics/{stage}.json" for stage in ("ingest", "train", "evaluate", "export")}
    values = [value for file in files.values() for value in _leaves(file["data"])]
    assert 20 <= len(values) <= 40, values  # the headline only: what a user compares across experiments
    assert files["metrics/evaluate.json"]["data"]["accuracy"] == metrics["accuracy"]


def _leaves(tree) -> list:
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in _leaves(value)]
    return [tree]


def test_the_model_card_is_written_logged_and_the_registered_versions_description(repo):
    card = (repo / "artifacts/export/model_card.md").read_text()
    summary = json.loads((repo / "artifacts/export/summary.json").read_text())
    client = _store(repo)
    version = client.get_model_version("mnist_5k-classifier", str(summary["version"]))
    assert version.description == card
    assert card.startswith(f"# Model card: mnist\\_5k-classifier version {summary['version']}\n")
    sections = ("## Model details", "## Datasets", "## Quantitative analysis", "## Gate verdict", "### Limitations")
    for section in sections:
        assert f"\n{section}\n" in card, section
    data_md5 = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]
    assert data_md5 in card and "| 0 | 400 | 50 | 50 |" in card  # the fingerprint, counts per class and split
    assert "Previous champion: none" in card and "Classical baseline" in card
    logged = [item.path for item in client.list_artifacts(summary["run_id"], "export")]
    assert "export/model_card.md" in logged and "export/summary.json" in logged
    issues = (repo / "artifacts/evaluate/label_issues.csv").read_text().splitlines()
    assert issues[0].startswith("file,split,given,suggested,")
    assert {"evaluate/label_issues.csv", "evaluate/label_issues.png"} <= {
        item.path for item in client.list_artifacts(summary["run_id"], "evaluate")
    }


def test_second_repro_runs_nothing_and_status_is_clean(repo):
    lock = (repo / "dvc.lock").read_bytes()
    second = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "didn't change, skipping" in second.stdout and "Running stage" not in second.stdout
    assert (repo / "dvc.lock").read_bytes() == lock
    status = run([sys.executable, "-m", "dvc", "status", "--json"], repo).stdout
    assert json.loads(status) == {}


def test_the_run_is_in_mlflow_with_per_epoch_metrics_and_tensorboard_logs(repo):
    import mlflow

    reference = json.loads((repo / "artifacts/train/run.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns/mlflow.db'}")
    run_info = mlflow.get_run(reference["run_id"])
    assert run_info.info.status == "FINISHED"
    history = mlflow.MlflowClient().get_metric_history(reference["run_id"], "accuracy")
    assert len(history) == REPRODUCED_PARAMS["train"]["epochs"]  # one point per epoch
    assert "test_accuracy" in run_info.data.metrics
    assert run_info.data.tags["tensorboard.dir"] == f"logs/tensorboard/{reference['tensorboard']}"
    assert list((repo / "logs/tensorboard" / reference["tensorboard"]).rglob("events.out.tfevents.*"))


def test_savedmodel_classifies_uint8_images_and_int8_tflite_has_int8_io(repo):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from tfpipe import records

    images, labels = records.load_split_arrays(repo / "data/prepared", "test")
    versions = sorted((repo / "artifacts/export/saved_model").glob("*/*"))
    assert versions and versions[-1].name.isdigit()
    serving = tf.saved_model.load(str(versions[-1])).signatures["serving_default"]
    outputs = serving(images=tf.constant(images[:32]))
    assert outputs["class_ids"].shape == (32,)
    assert (outputs["class_ids"].numpy() == labels[:32]).mean() > 0.5
    interpreter = Interpreter(model_path=str(repo / "artifacts/export/model_int8.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8


def test_the_served_model_gives_the_training_pipelines_output_on_the_test_split(repo):
    """Train/serve parity on real images: the exported SavedModel (uint8 in) against the trained model fed
    by the training code's own input pipeline (TFRecords -> tf.data, no augmentation)."""
    import tensorflow as tf

    from components.train.data import build_input_pipeline
    from models.loading import load_trained_model
    from tfpipe import records

    model = load_trained_model(repo / "artifacts/train")
    batches = build_input_pipeline(records.read_split(repo / "data/prepared", "test"), batch_size=64, training=False)
    expected = np.concatenate([model(tf.cast(images, tf.float32), training=False).numpy() for images, _ in batches])
    (version,) = (repo / "artifacts/export/saved_model").glob("*/*")
    serving = tf.saved_model.load(str(version)).signatures["serving_default"]
    images, _ = records.load_split_arrays(repo / "data/prepared", "test")
    served = serving(images=tf.constant(images))["probabilities"].numpy()
    assert len(served) == len(expected) == json.loads((repo / "metrics/ingest.json").read_text())["images"]["test"]
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_every_tflite_variant_serves_like_the_exported_saved_model(repo):
    """Serving parity: each .tflite file on disk against the exported SavedModel on the whole test split; the
    agreement measured here is the one the export report states (it measured against the trained model)."""
    import tensorflow as tf

    from tfpipe import records, tflite

    images, _ = records.load_split_arrays(repo / "data/prepared", "test")
    (version,) = (repo / "artifacts/export/saved_model").glob("*/*")
    served = (
        tf.saved_model.load(str(version))
        .signatures["serving_default"](images=tf.constant(images))["probabilities"]
        .numpy()
    )
    reported = json.loads((repo / "artifacts/export/summary.json").read_text())
    files = sorted((repo / "artifacts/export").glob("model_*.tflite"))
    assert [path.stem.removeprefix("model_") for path in files] == sorted(["float32", "int8", "pruned_int8"])
    for path in files:
        probabilities = tflite.TFLiteClassifier(path).predict(images)
        agreement = float(np.mean(probabilities.argmax(axis=1) == served.argmax(axis=1)))
        assert agreement == pytest.approx(reported[f"tflite_{path.stem.removeprefix('model_')}"]["agreement"]), (
            path.name
        )
        if path.stem == "model_float32":
            np.testing.assert_allclose(probabilities, served, atol=1e-4)
        else:
            assert agreement >= 0.9, path.name


def test_editing_code_a_stage_imports_reruns_it_and_logging_settings_retrain_nothing(repo):
    original = (repo / "tfpipe/records.py").read_text()
    params = (repo / "params.yaml").read_text()
    try:
        (repo / "tfpipe/records.py").write_text(original + "\n# edited\n")
        changed = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], repo).stdout)
        assert set(changed) == {"ingest", "preprocess", "evaluate", "export", "train"}, changed
    finally:
        (repo / "tfpipe/records.py").write_text(original)
    try:
        set_params(repo, {"tracking": {"histogram_freq": 5, "log_augmented_images": 0}})
        assert json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], repo).stdout) == {}
    finally:
        (repo / "params.yaml").write_text(params)
    # Bytecode another Python (or a later import) writes beside the code is not code: `models` is a
    # directory dependency, and its __pycache__ must not make a fresh clone's pipeline look stale.
    cache = repo / "models/__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "registry.cpython-399.pyc").write_bytes(b"not the code")
    assert json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], repo).stdout) == {}


def test_bad_params_stop_before_any_work_and_leave_the_lock_alone(repo):
    lock = (repo / "dvc.lock").read_bytes()
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, {"train": {"learning_rat": 0.1}})
        result = run([sys.executable, "-m", "dvc", "repro"], repo, check=False)
        assert result.returncode != 0
        assert "train.learning_rat: unknown key" in result.stdout + result.stderr
        assert (repo / "dvc.lock").read_bytes() == lock
    finally:
        (repo / "params.yaml").write_text(original)


def _cache_listing(repo: Path) -> list[str]:
    return sorted(str(path.relative_to(repo)) for path in (repo / ".dvc/cache").rglob("*") if path.is_file())


def test_second_repro_leaves_the_cache_alone(repo):
    before = _cache_listing(repo)
    run([sys.executable, "-m", "dvc", "repro"], repo)
    assert _cache_listing(repo) == before


def test_a_stage_failing_midway_changes_nothing(repo):
    """Training diverges (NaN): dvc repro fails, dvc.lock is byte-identical, later stages do not run."""
    import mlflow

    lock = (repo / "dvc.lock").read_bytes()
    evaluate_metrics = (repo / "metrics/evaluate.json").read_bytes()
    original = (repo / "params.yaml").read_text()
    try:
        set_params(
            repo, {"train": {"optimizer": "sgd", "learning_rate": 1.0e12, "lr_schedule": "constant", "clipnorm": None}}
        )
        result = run([sys.executable, "-m", "dvc", "repro"], repo, check=False)
        assert result.returncode != 0
        assert "training diverged" in result.stdout + result.stderr
        assert "Running stage 'evaluate'" not in result.stdout
        assert (repo / "dvc.lock").read_bytes() == lock
        assert (repo / "metrics/evaluate.json").read_bytes() == evaluate_metrics
        assert not (repo / "artifacts/train").exists()  # DVC removed the old output; nothing half-written replaced it
        mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns/mlflow.db'}")
        latest = mlflow.search_runs(
            experiment_names=["mnist_5k"], order_by=["attributes.start_time DESC"], max_results=1
        )
        assert latest.iloc[0]["status"] == "FAILED"
    finally:
        (repo / "params.yaml").write_text(original)
    # With the params restored, DVC restores the previous outputs from its cache instead of training again.
    restored = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Running stage 'train'" not in restored.stdout
    assert (repo / "dvc.lock").read_bytes() == lock


def test_a_second_repro_while_one_runs_fails_fast_and_corrupts_nothing(repo):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    first = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--force", "preprocess"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Wait until the first run holds the lock: DVC's rwlock names the process writing the stage's outputs.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None:
            locks = (repo / ".dvc/tmp/rwlock").read_text() if (repo / ".dvc/tmp/rwlock").is_file() else ""
            if locks.strip() and any(
                owner.get("pid") == first.pid for owner in json.loads(locks).get("write", {}).values()
            ):
                break
            time.sleep(0.02)
        else:
            raise AssertionError(f"the first dvc repro never held the lock:\n{first.communicate()[0][-3000:]}")
        started = time.monotonic()
        second = run([sys.executable, "-m", "dvc", "repro"], repo, check=False)
        assert second.returncode != 0
        assert "lock" in (second.stdout + second.stderr).lower()
        assert time.monotonic() - started < 30
    finally:
        output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output[-3000:]
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == {
        "ingest",
        "preprocess",
        "train",
        "evaluate",
        "export",
        "promote",
    }
    assert json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], repo).stdout) == {}


def test_forced_rerun_without_run_cache_is_deterministic(repo):
    """`dvc repro -f --no-run-cache` twice, deterministic: true: identical shards, weights and metrics on CPU."""
    from models.loading import load_trained_model

    def outputs():
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        # data/prepared (the shards) must be byte-identical; Data Docs and .keras files carry timestamps.
        hashes = {"ingest": [out["md5"] for out in lock["ingest"]["outs"] if out["path"] == "data/prepared"]}
        weights = load_trained_model(repo / "artifacts/train").get_weights()  # its custom layers registered
        metrics = json.loads((repo / "artifacts/evaluate/evaluation.json").read_text())
        metrics.pop("run_id", None)
        return hashes, weights, metrics

    results = []
    for _ in range(2):
        run([sys.executable, "-m", "dvc", "repro", "--force", "--no-run-cache", "evaluate"], repo)
        results.append(outputs())
    (hashes_a, weights_a, metrics_a), (hashes_b, weights_b, metrics_b) = results
    assert hashes_a["ingest"] == hashes_b["ingest"]
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b, strict=True))
    assert metrics_a == metrics_b


def _store(repo: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns/mlflow.db'}")


def test_a_stage_sigkilled_then_restored_from_the_run_cache_leaves_no_running_run(repo):
    """kill -9 of the evaluate stage while its run is open, then `dvc repro`, which restores evaluate's outputs from
    DVC's run-cache and runs no project code: nothing but the stage's watcher is left to end the run, and it does."""
    import signal

    import psutil

    run([sys.executable, "-m", "dvc", "repro"], repo)  # everything up to date first (earlier tests changed things)
    client = _store(repo)
    run_id = json.loads((repo / "artifacts/train/run.json").read_text())["run_id"]
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    environment.pop("MLFLOW_TRACKING_URI", None)
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "evaluate"],
        cwd=repo,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while client.get_run(run_id).info.status != "RUNNING":  # evaluate has reopened the model's run
            assert repro.poll() is None and time.monotonic() < deadline, "evaluate never opened its run"
            time.sleep(0.2)
        (stage,) = [
            child
            for child in psutil.Process(repro.pid).children(recursive=True)
            if "components.evaluate" in child.cmdline()
        ]
        stage.send_signal(signal.SIGKILL)
        assert repro.wait(timeout=60) != 0
    finally:
        if repro.poll() is None:
            repro.kill()
    restored = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Stage 'evaluate' is cached - skipping run, checking out outputs" in restored.stdout, restored.stdout
    assert "Running stage" not in restored.stdout
    deadline = time.monotonic() + 60
    while client.get_run(run_id).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    killed = client.get_run(run_id)
    assert killed.info.status == "KILLED" and "marked KILLED by its watcher" in killed.data.tags["tfpipe.stale"]
    running = client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()],
        filter_string="attributes.status = 'RUNNING'",
    )
    assert not running, [item.info.run_id for item in running]


def test_an_export_restored_from_the_run_cache_never_contradicts_the_registry(repo):
    """A gate param changed (evaluate and export rerun: the same model keeps its version), another model made the
    champion meanwhile, then the param changed back: `dvc repro` restores the older evaluate and export from the
    run-cache, running no code of theirs, and promote (which reads the registry) leaves the champion alone. The restored
    DVC metrics state facts of that model only; which version is champion, the registry says, and
    `pipelines.store champion` tells the workspace's export apart from it."""
    run([sys.executable, "-m", "dvc", "repro"], repo)
    tolerance = yaml.safe_load((repo / "params.yaml").read_text())["evaluate"]["max_accuracy_regression"]
    before = json.loads((repo / "artifacts/export/summary.json").read_text())
    set_params(repo, {"evaluate": {"max_accuracy_regression": tolerance + 0.01}})
    run([sys.executable, "-m", "dvc", "repro"], repo)
    newer = json.loads((repo / "artifacts/export/summary.json").read_text())
    assert newer["version"] == before["version"] and newer["registered_before"] and newer["promoted"]
    client = _store(repo)
    exported = repo / "artifacts/export/saved_model/mnist_5k-classifier" / str(before["version"])
    other = client.create_model_version("mnist_5k-classifier", exported.as_uri())  # another pipeline's model
    client.set_registered_model_alias("mnist_5k-classifier", "champion", other.version)
    set_params(repo, {"evaluate": {"max_accuracy_regression": tolerance}})
    restored = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Stage 'export' is cached - skipping run, checking out outputs" in restored.stdout, restored.stdout
    ran = [line for line in restored.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'promote':"], restored.stdout
    assert "not promoted: the champion of 'mnist_5k-classifier' changed since evaluate compared" in restored.stdout
    summary = json.loads((repo / "artifacts/export/summary.json").read_text())
    assert summary["version"] == before["version"] and summary["exported_at"] == before["exported_at"]
    assert "registry's state when this export ran" in summary["registry_note"]
    headline = json.loads((repo / "metrics/export.json").read_text())
    assert set(headline) <= {"float32", "int8", "gate_passed"}, headline  # no version, no promotion: model facts only
    champion = client.get_model_version_by_alias("mnist_5k-classifier", "champion")
    assert champion.version == other.version
    told = run([sys.executable, "-m", "pipelines.store", "champion"], repo).stdout
    assert f"champion is version {other.version}; the workspace's export is version {before['version']}" in told
