"""When an exported version becomes the champion (tfpipe/promotion.py): one version per distinct model (its identity),
a queued experiment leaves the alias to the one applied, a changed champion is re-checked by a command that does what
it says (python -m pipelines.store promote), and the promote stage catches up after `dvc exp apply`."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import tf_keras as keras

from tests.conftest import make_images, write_prepared
from tfpipe import model_trust, promotion, tracking

NAME = "promotion_test_classifier"
CLASS_NAMES = ["a", "b", "c"]


def test_a_temporary_experiment_is_a_copy_under_dvc_tmp_exps(tmp_path, monkeypatch):
    copy = tmp_path / "repo/.dvc/tmp/exps/tmpabc123"
    copy.mkdir(parents=True)
    monkeypatch.setenv("DVC_EXP_NAME", "lusty-lamb")
    assert promotion.temporary_experiment(copy) == "lusty-lamb"
    # A workspace `dvc exp run` (DVC_EXP_NAME set too) and `dvc repro` run in the repository itself.
    assert promotion.temporary_experiment(tmp_path / "repo") is None
    monkeypatch.delenv("DVC_EXP_NAME")
    assert promotion.temporary_experiment(copy) == "tmpabc123"


def tiny_model(bias: list[float] | None = None, seed: int = 0) -> keras.Model:
    """12x12x1 pixels in, softmax over 3 classes: trained on the toy classes, or (bias) always argmax(bias)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(12, 12, 1), dtype="float32")
    logits = keras.layers.Dense(3)(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs)))
    model = keras.Model(inputs, keras.layers.Activation("softmax")(logits))
    if bias is not None:
        model.layers[-2].set_weights([np.zeros((144, 3), np.float32), np.asarray(bias, np.float32)])
    else:
        images, labels = make_images(num_classes=3, per_class=20, seed=1)
        model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
        model.fit(images.astype(np.float32), labels, epochs=30, verbose=0)
    return model


def test_one_model_saved_twice_has_two_digests_and_one_identity(tmp_path):
    import tensorflow as tf

    from components.export.serving import ServingModule

    module = ServingModule(tiny_model(bias=[1.0, 0.0, 0.0]), CLASS_NAMES)
    saved = []
    for name in ("first", "second"):
        tf.saved_model.save(module, str(tmp_path / name), signatures={"serving_default": module.serve})
        saved.append(tmp_path / name)
    digests = {model_trust.saved_model_digest(path) for path in saved}
    identities = {model_trust.model_identity(path) for path in saved}
    assert len(digests) == 2 and len(identities) == 1  # saved_model.pb names its functions by a process counter
    other = ServingModule(tiny_model(bias=[0.0, 1.0, 0.0]), CLASS_NAMES)
    tf.saved_model.save(other, str(tmp_path / "other"), signatures={"serving_default": other.serve})
    assert model_trust.model_identity(tmp_path / "other") not in identities


def register(module, tags: dict | None = None) -> int:
    """A version of NAME as export registers it (digest recorded), in a run of its own."""
    from components.export.serving import register_serving_model

    mlflow.set_experiment("promotion-test")
    with mlflow.start_run():
        return register_serving_model(
            module,
            model_name=NAME,
            example_images=np.zeros((2, 12, 12, 1), np.uint8),
            num_classes=3,
            tags=tags or {},
        )


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A store with two versions of NAME: v1 a trained model (right on the toy classes), v2 one that always says
    'a' (a third right); and a workspace (params.yaml, data/prepared) whose test split both are scored on."""
    from components.export.serving import ServingModule

    root = tmp_path_factory.mktemp("promotion")
    images, labels = make_images(num_classes=3, per_class=30, seed=3)
    write_prepared(root / "data/prepared", images, labels, CLASS_NAMES)
    (root / "params.yaml").write_text(f"export: {{model_name: {NAME}}}\n")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        good = register(ServingModule(tiny_model(), CLASS_NAMES), {model_trust.IDENTITY_TAG: "good"})
        weak = register(ServingModule(tiny_model(bias=[1.0, 0.0, 0.0]), CLASS_NAMES), {model_trust.IDENTITY_TAG: "a"})
    mlflow.set_tracking_uri(None)
    return {"root": root, "uri": uri, "good": good, "weak": weak}


@pytest.fixture
def store(registry, monkeypatch):
    monkeypatch.chdir(registry["root"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    mlflow.set_tracking_uri(registry["uri"])
    mlflow.MlflowClient().delete_registered_model_alias(NAME, tracking.CHAMPION_ALIAS)
    yield registry
    mlflow.set_tracking_uri(None)


def test_the_registry_finds_a_model_it_holds_by_its_identity(store):
    assert model_trust.registered_version_of(NAME, "good") == store["good"]
    assert model_trust.registered_version_of(NAME, "unknown") is None
    assert model_trust.registered_version_of("no-such-model", "good") is None


def test_a_version_becomes_champion_only_from_the_workspace_and_against_the_champion_it_was_compared_with(
    store, monkeypatch
):
    good, weak = store["good"], store["weak"]
    first = promotion.decide(NAME, good, [], compared=None)  # no champion then, none now
    assert first.promote and not first.already and first.reasons == []
    promotion.move_champion(NAME, good)
    assert promotion.decide(NAME, good, [], compared=None).already  # the docs' export-only experiment: same model
    refused = promotion.decide(NAME, weak, ["evaluate did not bless the model"], compared=good)
    assert not refused.promote and refused.reasons == ["evaluate did not bless the model"]
    changed = promotion.decide(NAME, weak, [], compared=None)
    assert not changed.promote and changed.reasons == [
        f"the champion of {NAME!r} changed since evaluate compared against no champion (now v{good}): "
        f"`python -m pipelines.store promote` compares version {weak} with v{good} on this test split and makes it "
        "the champion if it is at least as good"
    ]
    queued = store["root"] / ".dvc/tmp/exps/tmpq1"
    queued.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(queued)
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-bolt")
    deferred = promotion.decide(NAME, weak, [], compared=good)
    assert not deferred.promote and deferred.reasons == [
        "experiment brisk-bolt ran in a temporary copy (queued or --temp): its version is registered and "
        "`champion` is left to the experiment you apply: `dvc exp apply brisk-bolt`, then `dvc repro`"
    ]


def write_summary(root: Path, version: int, *, compared: int | None, blessed: bool = True) -> Path:
    """What export leaves for the promote stage and for `pipelines.store promote`: registration.json (as
    tfpipe.promotion.registration writes it) and summary.json (its part both read)."""
    record = promotion.registration(
        NAME,
        version,
        "r",
        "good" if version == 1 else "a",
        {"blessed": blessed, "champion": {"version": compared} if compared else None},
        {"passed": True, "reasons": ["int8: accuracy drop 0.0 <= 0.002"]},
    )
    (root / "artifacts/export").mkdir(parents=True, exist_ok=True)
    (root / "artifacts/registration.json").write_text(json.dumps(record))
    (root / "artifacts/export/summary.json").write_text(json.dumps({**record, "promoted": False}))
    return root / "artifacts/export/summary.json"


def test_the_promote_stage_promotes_an_applied_export_and_writes_what_it_decided(store, monkeypatch):
    from components.promote import stage as promote

    good, weak = store["good"], store["weak"]
    promotion.move_champion(NAME, weak)
    write_summary(store["root"], good, compared=weak)  # evaluated against the champion it would replace
    promote.main()
    decided = json.loads((store["root"] / "artifacts/promotion.json").read_text())
    assert decided["outcome"] == "now the champion" and decided["version"] == good and decided["experiment"] is None
    assert int(mlflow.MlflowClient().get_model_version_by_alias(NAME, tracking.CHAMPION_ALIAS).version) == good
    promote.main()
    assert json.loads((store["root"] / "artifacts/promotion.json").read_text())["outcome"] == "the champion"
    record = json.loads((store["root"] / "artifacts/registration.json").read_text())
    assert record["int8_gate"] == {"passed": True, "reasons": []}  # a passed gate's reasons (thresholds) are left out
    decision, outcome = promote.decide({**record, "model_identity": "other"})
    assert outcome == "not promoted" and "is another model: nothing to promote" in decision.reasons[0]


def test_store_promote_compares_with_the_champion_now_on_the_test_split(store):
    from pipelines.store import promote

    good, weak = store["good"], store["weak"]
    promotion.move_champion(NAME, good)
    told = promote(write_summary(store["root"], weak, compared=None))
    assert told.startswith(f"{NAME} version {weak}: not promoted:\n  FAIL: test accuracy 0.")
    assert f"vs champion v{good}'s 1.0000 on the same test split" in told
    assert "not within noise (McNemar's exact test" in told
    assert int(mlflow.MlflowClient().get_model_version_by_alias(NAME, tracking.CHAMPION_ALIAS).version) == good
    promotion.move_champion(NAME, weak)
    told = promote(write_summary(store["root"], good, compared=None))
    assert told.startswith(f"{NAME} version {good}: now the champion\n  PASS: test accuracy")
    assert int(mlflow.MlflowClient().get_model_version_by_alias(NAME, tracking.CHAMPION_ALIAS).version) == good
    assert promote(write_summary(store["root"], good, compared=None)) == f"{NAME} version {good}: the champion already"
    refused = promote(write_summary(store["root"], weak, compared=good, blessed=False))
    assert refused == f"{NAME} version {weak}: not promoted: evaluate did not bless it"
