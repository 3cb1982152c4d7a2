"""Evaluation metrics, pictures, the promotion gate, and the champion lookup in a real (tiny) MLflow registry."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pytest
import tf_keras as keras

from components.evaluate import gate as evaluate_gate
from components.evaluate import metrics as evaluate_metrics
from components.evaluate import report as evaluate_report
from components.evaluate import stage as evaluate
from tests.conftest import make_images, write_prepared
from tfpipe import run_records, tracking
from tfpipe.config import EvaluateParams
from tfpipe.outputs import file_sha256, write_json

CLASS_NAMES = ["a", "b", "c"]
GATE = EvaluateParams(min_accuracy=0.9, max_class_recall_drop=0.1)
MODEL_NAME = "test_classifier"
EXPERIMENT = "tfpipe-evaluate-test"


def test_metrics_on_known_predictions():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.6, 0.3, 0.1],  # both right
            [0.2, 0.7, 0.1],
            [0.5, 0.4, 0.1],  # one wrong (1 -> 0), but right in top-2
            [0.1, 0.1, 0.8],
            [0.1, 0.1, 0.8],
        ]
    )
    metrics = evaluate_metrics.compute_metrics(probabilities, labels, CLASS_NAMES, top_k=2)
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    assert metrics["top_2_accuracy"] == 1.0
    assert metrics["per_class"]["b"]["recall"] == 0.5
    assert metrics["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["c"]["f1"] == 1.0
    assert metrics["num_examples"] == 6


def test_calibration_error_is_zero_for_calibrated_and_large_for_overconfident():
    labels = np.array([0, 1] * 50)
    confident_and_right = np.eye(2)[labels]
    assert evaluate_metrics.expected_calibration_error(confident_and_right, labels) == pytest.approx(0.0)
    confident_and_wrong = np.eye(2)[1 - labels]
    assert evaluate_metrics.expected_calibration_error(confident_and_wrong, labels) == pytest.approx(1.0)


def test_empty_test_split_is_an_error():
    with pytest.raises(ValueError, match="test split is empty"):
        evaluate_metrics.compute_metrics(np.zeros((0, 3)), np.zeros((0,), int), CLASS_NAMES, top_k=1)


def metrics_with_recalls(**recalls: float) -> dict:
    """What compute_metrics returns, reduced to what the gate reads (balanced classes)."""
    return {
        "accuracy": float(np.mean(list(recalls.values()))),
        "per_class": {name: {"recall": r} for name, r in recalls.items()},
    }


def gate_against_champion(candidate: dict[str, float], champion: dict[str, float], version: int = 3) -> dict:
    """The gate's decision for a candidate and a champion of these per-class recalls."""
    return evaluate_gate.decide_blessing(
        metrics_with_recalls(**candidate), GATE, metrics_with_recalls(**champion), champion_label=f"champion v{version}"
    )


def test_gate_blesses_a_model_at_least_as_good_as_the_champion_and_a_tie_is_as_good():
    gate = gate_against_champion({"a": 0.96, "b": 0.95, "c": 0.97}, {"a": 0.96, "b": 0.96, "c": 0.96})
    assert gate["blessed"] is True
    assert [reason.split(":")[0] for reason in gate["reasons"]] == ["PASS", "PASS", "PASS"]
    assert gate["reasons"][1] == (
        "PASS: test accuracy 0.9600 vs champion v3's 0.9600 on the same test split (change +0.0000): at least as good "
        "(a champion is replaced only by a model at least as accurate)"
    )
    assert gate["comparison"]["accuracy_change"] == pytest.approx(0.0)


def test_gate_refuses_a_model_any_worse_than_the_champion_unless_a_tolerance_is_opted_into():
    gate = gate_against_champion({"a": 0.95, "b": 0.95, "c": 0.96}, {"a": 0.96, "b": 0.96, "c": 0.96})
    assert gate["blessed"] is False
    assert gate["reasons"][0].startswith("PASS: test accuracy 0.9533")  # min_accuracy alone would bless it
    assert gate["reasons"][1] == (
        "FAIL: test accuracy 0.9533 vs champion v3's 0.9600 on the same test split (change -0.0067): worse "
        "(a champion is replaced only by a model at least as accurate)"
    )
    tolerant = EvaluateParams(min_accuracy=0.9, max_accuracy_regression=0.01)
    allowed = evaluate_gate.decide_blessing(
        metrics_with_recalls(a=0.95, b=0.95, c=0.96), tolerant, metrics_with_recalls(a=0.96, b=0.96, c=0.96)
    )
    assert allowed["blessed"] is True
    assert "(evaluate.max_accuracy_regression 0.01 below it allowed)" in allowed["reasons"][1]


def test_the_gate_says_with_mcnemars_test_whether_the_difference_is_within_noise():
    from components.evaluate import paired

    labels = np.repeat([0, 1, 2], 100)
    right = np.eye(3)[labels]

    def metrics(wrong: np.ndarray) -> dict:
        probabilities = right.copy()
        probabilities[wrong] = np.roll(probabilities[wrong], 1, axis=1)
        return evaluate_metrics.compute_metrics(probabilities, labels, CLASS_NAMES, top_k=1)

    champion = metrics(np.arange(0, 300, 30))  # 10 wrong
    close = evaluate_gate.decide_blessing(metrics(np.arange(1, 300, 33)), GATE, champion)  # 10 other ones wrong
    test = close["comparison"]["paired_test"]
    assert test["within_noise"] is True and (test["candidate_only"], test["champion_only"]) == (10, 10)
    assert (
        test["p_value"] == 1.0 and "the difference is within noise (McNemar's exact test, p = 1" in close["reasons"][1]
    )
    far = evaluate_gate.decide_blessing(metrics(np.array([], int)), GATE, champion)
    assert far["blessed"] is True and far["comparison"]["paired_test"]["within_noise"] is False
    assert far["comparison"]["paired_test"]["p_value"] == pytest.approx(2 * 0.5**10, rel=1e-6)
    assert "not within noise" in far["reasons"][1]
    assert paired.OUTCOMES not in paired.without_outcomes(champion)


def test_the_regression_gate_wants_an_mae_at_most_the_champions_with_wilcoxons_test_beside():
    from components.evaluate import regression

    targets = np.linspace(0, 10, 50)
    champion = regression.regression_metrics(targets + 1.0, targets)
    params = EvaluateParams(max_error=5.0)
    better = regression.decide_regression(regression.regression_metrics(targets + 0.5, targets), params, champion)
    assert better["blessed"] is True and better["comparison"]["paired_test"]["within_noise"] is False
    assert better["reasons"][1].startswith("PASS: test MAE 0.5000 vs the champion's 1.0000 on the same test split")
    tie = regression.decide_regression(regression.regression_metrics(targets - 1.0, targets), params, champion)
    assert tie["blessed"] is True and tie["comparison"]["paired_test"]["within_noise"] is True
    worse = regression.decide_regression(regression.regression_metrics(targets + 1.01, targets), params, champion)
    assert (
        worse["blessed"] is False
        and "worse (a champion is replaced only by a model at least as good)" in (worse["reasons"][1])
    )
    opted = EvaluateParams(max_error=5.0, max_error_increase=0.05)
    assert regression.decide_regression(regression.regression_metrics(targets + 1.01, targets), opted, champion)[
        "blessed"
    ]


def test_gate_refuses_a_class_recall_drop_even_when_accuracy_holds():
    gate = gate_against_champion({"a": 1.0, "b": 0.84, "c": 1.0}, {"a": 0.93, "b": 0.95, "c": 0.93}, version=1)
    assert gate["blessed"] is False
    assert gate["reasons"][1].startswith("PASS")
    assert gate["reasons"][2] == (
        "FAIL: recall of class 'b' fell 0.1100 from champion v1's 0.9500 to 0.8400, "
        "more than evaluate.max_class_recall_drop 0.1"
    )
    assert gate["comparison"]["max_class_recall_drop_class"] == "b"


def test_gate_without_a_champion_decides_by_the_thresholds_alone_and_says_why():
    why = "no champion: registered model 'x' has no 'champion' version yet"
    good = evaluate_gate.decide_blessing(metrics_with_recalls(a=0.9, b=0.9, c=0.93), GATE, None, no_champion_reason=why)
    assert good["blessed"] is True and good["comparison"] is None
    assert good["reasons"][1] == (
        f"SKIP: comparison with a champion (at least as accurate, per-class recall): {why}; the thresholds alone decide"
    )
    weak = evaluate_gate.decide_blessing(metrics_with_recalls(a=0.5, b=0.5, c=0.5), GATE, None, no_champion_reason=why)
    assert weak["blessed"] is False
    assert weak["reasons"][0] == "FAIL: test accuracy 0.5000 is below evaluate.min_accuracy 0.9"


def test_gate_fails_closed_when_the_champion_could_not_be_checked():
    error = "the model registry at http://127.0.0.1:9 could not be read (ConnectionError: refused)"
    gate = evaluate_gate.decide_blessing(metrics_with_recalls(a=1.0, b=1.0, c=1.0), GATE, None, champion_error=error)
    assert gate["blessed"] is False
    assert gate["reasons"][1] == f"FAIL: could not check against the champion: {error}"


def test_gate_refuses_a_network_that_does_not_beat_the_classical_baseline():
    baseline = {"model": "SVC(kernel='rbf') on downscaled pixels", "accuracy": 0.95}
    weak = evaluate_gate.decide_blessing(metrics_with_recalls(a=0.93, b=0.93, c=0.93), GATE, None, baseline=baseline)
    assert weak["blessed"] is False
    assert weak["reasons"][1] == (
        "FAIL: test accuracy 0.9300 vs the classical baseline's 0.9500 (SVC(kernel='rbf') on downscaled pixels, "
        "same splits): margin -0.0200 is below evaluate.min_margin_over_baseline 0.0"
    )
    tie = evaluate_gate.decide_blessing(metrics_with_recalls(a=0.95, b=0.95, c=0.95), GATE, None, baseline=baseline)
    assert tie["blessed"] is True and tie["reasons"][1].startswith("PASS")
    demanding = EvaluateParams(min_accuracy=0.9, min_margin_over_baseline=0.01)
    assert (
        evaluate_gate.decide_blessing(
            metrics_with_recalls(a=0.955, b=0.955, c=0.955), demanding, None, baseline=baseline
        )["blessed"]
        is False
    )


def test_the_baseline_is_an_svm_on_downscaled_pixels_fit_on_train_and_scored_on_test():
    from components.evaluate import baseline

    images, labels = make_images(num_classes=3, per_class=40, shape=(12, 12, 1))
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:90], order[90:]
    result = baseline.fit_and_score(images[train], labels[train], images[test], labels[test])
    assert result["accuracy"] == 1.0 and result["train_examples"] == 90 and result["features"] == 144
    assert result["predictions"].shape == (30,)
    large = np.zeros((2, 64, 64, 3), np.uint8)
    assert baseline.downscale(large).shape == (2, 18 * 18 * 3)  # at most 1024 features, aspect kept
    many = np.repeat([0, 1], [9000, 1000])
    chosen = baseline.sample_per_class(many, 5000, seed=0)
    assert len(chosen) == 5000 and np.bincount(many[chosen]).tolist() == [4500, 500]


def test_gate_params_reject_out_of_range_tolerances():
    with pytest.raises(ValueError, match="max_accuracy_regression"):
        EvaluateParams(max_accuracy_regression=-0.1)
    with pytest.raises(ValueError, match="max_class_recall_drop"):
        EvaluateParams(max_class_recall_drop=1.5)


def test_confident_mistakes_are_the_wrong_predictions_most_confident_first():
    labels = np.array([0, 1, 2, 0])
    probabilities = np.array([[0.9, 0.1, 0.0], [0.7, 0.3, 0.0], [0.1, 0.9, 0.0], [0.2, 0.8, 0.0]])
    assert evaluate_report.select_confident_mistakes(probabilities, labels, count=5).tolist() == [2, 3, 1]
    assert evaluate_report.select_confident_mistakes(probabilities, labels, count=1).tolist() == [2]


def test_pictures_show_labels_and_calibration():
    images, labels = make_images(num_classes=3, per_class=4, shape=(8, 8, 1))
    probabilities = np.full((12, 3), 0.1)
    probabilities[np.arange(12), (labels + (np.arange(12) < 2)) % 3] = 0.8  # the first two are wrong
    files = [f"{CLASS_NAMES[label]}/{index}.png" for index, label in enumerate(labels)]
    grid = evaluate_report.plot_confident_mistakes(images, labels, probabilities, CLASS_NAMES, files)
    titles = [axis.get_title() for axis in grid.axes if axis.get_title()]
    assert titles == ["true a, predicted b (0.80)\na/0.png", "true a, predicted b (0.80)\na/1.png"]
    reliability = evaluate_report.plot_reliability_diagram(probabilities, labels)
    assert "ECE" in reliability.axes[0].get_title()
    perfect = evaluate_report.plot_confident_mistakes(images, labels, np.eye(3)[labels], CLASS_NAMES, files)
    assert "no mistakes" in perfect.axes[0].texts[0].get_text()
    plt.close("all")


# --- The evaluate stage against a real MLflow registry ------------------------------------------------


def build_model(bias: list[float] | None = None) -> keras.Model:
    """Raw pixels in, softmax out, like train's model; a fixed `bias` with zero weights always predicts argmax(bias)."""
    inputs = keras.Input(shape=(12, 12, 1), dtype="float32")
    logits = keras.layers.Dense(3)(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs)))
    model = keras.Model(inputs, keras.layers.Activation("softmax")(logits))
    if bias is not None:
        model.layers[-2].set_weights([np.zeros((144, 3), np.float32), np.asarray(bias, np.float32)])
    return model


def stage_candidate(root: Path, model: keras.Model) -> str:
    """Saves `model` as train would, with a fresh MLflow run; returns the run id."""
    model.save(root / "artifacts/train/model.keras")
    write_json(
        root / "artifacts/train/model.json",
        {"model": "tiny", "model_sha256": file_sha256(root / "artifacts/train/model.keras")},
    )
    with tracking.stage_run(EXPERIMENT, run_name="train") as run:
        run_records.write_run_reference(root / "artifacts/train/run.json", run, EXPERIMENT, tensorboard="train")
    return run.info.run_id


def register_champion(module, run_id: str) -> None:
    """Logs and registers the serving SavedModel as export does (its digest recorded), and gives that version the
    champion alias."""
    from components.export import serving as export_serving

    with mlflow.start_run(run_id=run_id):
        version = export_serving.register_serving_model(
            module,
            model_name=MODEL_NAME,
            example_images=np.zeros((2, 12, 12, 1), np.uint8),
            num_classes=len(CLASS_NAMES),
            tags={},
        )
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, tracking.CHAMPION_ALIAS, str(version))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Runs the evaluate stage twice: a good model with no champion (then registered champion), then a worse one."""
    # The champion is export's serving module; imported here because export pulls in tfmot and TFLite.
    from components.export import serving as export_serving

    root = tmp_path_factory.mktemp("evaluate")
    images, labels = make_images(num_classes=3, per_class=40)
    write_prepared(root / "data/prepared", images, labels, CLASS_NAMES)
    (root / "artifacts/train").mkdir(parents=True)
    (root / "params.yaml").write_text(f"evaluate: {{min_accuracy: 0.6}}\nexport: {{model_name: {MODEL_NAME}}}\n")
    outputs = {"root": root, "uri": f"sqlite:///{root / 'mlflow.db'}"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", outputs["uri"])
        keras.utils.set_random_seed(0)
        good = build_model()
        good.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
        good.fit(images.astype(np.float32), labels, epochs=20, verbose=0)
        outputs["good_run"] = stage_candidate(root, good)
        evaluate.main()
        outputs["good"] = {
            name: (root / name).read_text() for name in ["artifacts/evaluate/blessing.json", "metrics/evaluate.json"]
        }
        register_champion(export_serving.ServingModule(good, CLASS_NAMES), outputs["good_run"])
        outputs["good_model"], outputs["images"] = good, images
        outputs["worse_run"] = stage_candidate(root, build_model(bias=[1.0, 0.0, 0.0]))
        evaluate.main()
    return outputs


def test_first_model_is_blessed_by_the_thresholds_alone_with_its_report(workspace):
    blessing = json.loads(workspace["good"]["artifacts/evaluate/blessing.json"])
    assert blessing["blessed"] is True and blessing["champion"] is None
    assert blessing["reasons"][2].startswith(
        f"SKIP: comparison with a champion (at least as accurate, per-class recall): no champion: registered model "
        f"'{MODEL_NAME}'"
    )
    assert blessing["baseline"]["accuracy"] == 1.0 and blessing["reasons"][1].startswith(
        "PASS: test accuracy 1.0000 vs the classical baseline's 1.0000"
    )
    metrics = json.loads(workspace["good"]["metrics/evaluate.json"])
    assert metrics["baseline"] == 1.0 and metrics["margin"] == 0.0 and metrics["blessed"] is True
    run = mlflow.MlflowClient(tracking_uri=workspace["uri"]).get_run(workspace["good_run"])
    assert run.data.tags["blessed"] == "true" and "SKIP" in run.data.tags["gate.reasons"]
    assert run.data.metrics["baseline_accuracy"] == 1.0


def test_worse_model_is_refused_against_the_champion_but_still_gets_its_report(workspace):
    root = workspace["root"]
    blessing = json.loads((root / "artifacts/evaluate/blessing.json").read_text())
    assert blessing["blessed"] is False
    assert blessing["champion"]["version"] == 1 and blessing["champion"]["comparable"] is True
    assert blessing["champion"]["accuracy"] == 1.0 and blessing["candidate"]["accuracy"] < 0.5  # it always says "a"
    assert any(
        reason.startswith("FAIL: test accuracy") and "vs champion v1's 1.0000" in reason
        for reason in blessing["reasons"]
    )
    assert any(reason.startswith("FAIL: recall of class 'b'") for reason in blessing["reasons"])
    assert json.loads((root / "metrics/evaluate.json").read_text())["blessed"] is False
    metrics = json.loads((root / "artifacts/evaluate/evaluation.json").read_text())
    assert (
        metrics["blessed"] is False
        and metrics["champion"]["version"] == 1
        and metrics["champion"]["accuracy_change"] < -0.5
    )
    pictures = {path.name for path in (root / "artifacts/evaluate").glob("*.png")}
    assert pictures == {"confusion_matrix.png", "confident_mistakes.png", "reliability_diagram.png", "label_issues.png"}
    assert (root / "plots/confusion.csv").read_text().startswith("actual,predicted\n")
    client = mlflow.MlflowClient(tracking_uri=workspace["uri"])
    run = client.get_run(workspace["worse_run"])
    assert run.data.tags["blessed"] == "false" and "FAIL: recall of class 'b'" in run.data.tags["gate.reasons"]
    assert run.data.metrics["champion_accuracy"] == 1.0
    logged = {item.path for item in client.list_artifacts(workspace["worse_run"], "evaluate")}
    assert {"evaluate/blessing.json", "evaluate/confident_mistakes.png", "evaluate/reliability_diagram.png"} <= logged


@pytest.fixture
def registry(workspace):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(workspace["uri"])
    yield workspace
    mlflow.set_tracking_uri(previous)


def score_images(images, labels, class_names):
    """How the image kind scores a champion on the candidate's test images (components/evaluate/kinds/image.py)."""
    return lambda uri: evaluate_metrics.compute_metrics(
        evaluate_gate.predict_with_champion(uri, images, class_names), labels, class_names, 1
    )


def test_champion_predicts_like_the_model_it_serves_and_other_datasets_are_refused(registry):
    uri, images = f"models:/{MODEL_NAME}/1", registry["images"][:8]
    probabilities = evaluate_gate.predict_with_champion(uri, images, CLASS_NAMES)
    np.testing.assert_allclose(
        probabilities, registry["good_model"].predict(images.astype(np.float32), verbose=0), atol=1e-5
    )
    with pytest.raises(
        evaluate_gate.RegistryError, match="has classes .* the candidate \\['x', 'y', 'z'\\]: another dataset's model"
    ):
        evaluate_gate.predict_with_champion(uri, images, ["x", "y", "z"])
    # One class renamed, which the champion never predicts on these images: still another class list.
    never_last = images[probabilities.argmax(axis=1) != len(CLASS_NAMES) - 1]
    assert len(never_last)
    with pytest.raises(evaluate_gate.RegistryError, match="another dataset's model"):
        evaluate_gate.predict_with_champion(uri, never_last, [*CLASS_NAMES[:-1], "renamed"])
    with pytest.raises(
        evaluate_gate.RegistryError, match="shape \\(12, 12, 1\\), the candidate \\(6, 6, 1\\): another dataset's model"
    ):
        evaluate_gate.predict_with_champion(uri, images[:, :6, :6], CLASS_NAMES)
    # Another dataset registered under this name: not comparable, so the gate fails closed and says why.
    check = evaluate_gate.evaluate_champion(MODEL_NAME, score_images(images, np.zeros(8, np.int64), ["x", "y", "z"]))
    assert check["version"]["version"] == 1 and check["metrics"] is None
    assert "another dataset's model" in check["error"] and "data.name or export.model_name" in check["error"]


def test_a_missing_model_or_alias_means_no_champion(registry):
    version = evaluate_gate.find_champion(MODEL_NAME)
    assert version is not None and int(version.version) == 1
    assert evaluate_gate.find_champion("never_registered") is None
    check = evaluate_gate.evaluate_champion(
        "never_registered", score_images(registry["images"][:2], np.zeros(2, np.int64), CLASS_NAMES)
    )
    assert (
        check["error"] == ""
        and check["skip"] == "no champion: registered model 'never_registered' has no 'champion' version yet"
    )
    mlflow.MlflowClient().delete_registered_model_alias(MODEL_NAME, tracking.CHAMPION_ALIAS)
    try:
        assert evaluate_gate.find_champion(MODEL_NAME) is None
    finally:
        mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, tracking.CHAMPION_ALIAS, "1")


def test_a_champion_that_cannot_be_loaded_fails_the_gate_closed(registry, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("saved_model.pb: No such file or directory")

    monkeypatch.setattr(evaluate_gate.tf.saved_model, "load", broken)
    check = evaluate_gate.evaluate_champion(
        MODEL_NAME, score_images(registry["images"][:2], np.zeros(2, np.int64), CLASS_NAMES)
    )
    assert check["version"]["version"] == 1 and check["metrics"] is None
    assert check["error"].startswith(f"champion v1 of '{MODEL_NAME}' could not be loaded (OSError: saved_model.pb")


def test_a_champion_changed_after_its_export_is_never_loaded(registry, monkeypatch):
    """A SavedModel runs its graph: the registry's copy must still have the digest its export recorded."""
    from tfpipe import model_trust

    real = model_trust.download_mlflow_model

    def tampered(uri, destination):
        directory = real(uri, destination)
        (directory / "saved_model.pb").write_bytes((directory / "saved_model.pb").read_bytes() + b"\0")
        return directory

    loaded = []
    monkeypatch.setattr(model_trust, "download_mlflow_model", tampered)
    monkeypatch.setattr(evaluate_gate.tf.saved_model, "load", lambda *args, **kwargs: loaded.append(args))
    check = evaluate_gate.evaluate_champion(
        MODEL_NAME, score_images(registry["images"][:2], np.zeros(2, np.int64), CLASS_NAMES)
    )
    assert check["metrics"] is None and not loaded
    assert "UntrustedModel" in check["error"] and "changed after it was exported" in check["error"]


def test_an_unreachable_registry_fails_the_gate_closed_with_the_reason(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri("http://127.0.0.1:9")  # the discard port: nothing listens
    try:
        with pytest.raises(
            evaluate_gate.RegistryError, match="the model registry at http://127.0.0.1:9 could not be read"
        ):
            evaluate_gate.find_champion(MODEL_NAME)
        check = evaluate_gate.evaluate_champion(
            MODEL_NAME, score_images(np.zeros((1, 12, 12, 1), np.uint8), np.zeros(1, np.int64), CLASS_NAMES)
        )
    finally:
        mlflow.set_tracking_uri(previous)
    assert check["version"] is None and check["error"].startswith(
        "the model registry at http://127.0.0.1:9 could not be read"
    )
    gate = evaluate_gate.decide_blessing(
        metrics_with_recalls(a=1.0, b=1.0, c=1.0), GATE, None, champion_error=check["error"]
    )
    assert gate["blessed"] is False and any(
        reason.startswith("FAIL: could not check against the champion") for reason in gate["reasons"]
    )


def test_a_champion_exported_before_digests_is_loaded_only_once_trusted_deliberately(registry):
    """Upgrading keeps a way forward: an older export's version carries no digest; the gate says so and names the
    command that records it (for a version you trust), after which the comparison runs."""
    from pipelines import store
    from tfpipe import model_trust

    client = mlflow.MlflowClient()
    recorded = client.get_model_version(MODEL_NAME, "1").tags[model_trust.DIGEST_TAG]
    client.delete_model_version_tag(MODEL_NAME, "1", model_trust.DIGEST_TAG)
    try:
        images = registry["images"][:4]
        check = evaluate_gate.evaluate_champion(MODEL_NAME, score_images(images, np.zeros(4, np.int64), CLASS_NAMES))
        assert check["metrics"] is None
        assert f"python -m pipelines.store trust-version {MODEL_NAME} 1" in check["error"]
        assert store.trust_version(MODEL_NAME, "1") == recorded  # the same SavedModel, the same digest
        check = evaluate_gate.evaluate_champion(MODEL_NAME, score_images(images, np.zeros(4, np.int64), CLASS_NAMES))
        assert check["metrics"] is not None and not check["error"]
    finally:
        client.set_model_version_tag(MODEL_NAME, "1", model_trust.DIGEST_TAG, recorded)
