"""Pretrained Keras Applications backbones: input rule, in-model preprocessing, weights, two-phase training, export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components.export import fine_tune as export_fine_tune
from components.export import quantization as export_quantization
from components.export import variants as export_variants
from components.export.examples import Examples
from components.train.fit import fit_model
from components.train.model import build_classifier, build_training_model
from components.train.schedule import compile_model, plan_phases
from models import applications, registry
from models.preprocessing import build_preprocessor
from tfpipe import tflite
from tfpipe.config import BackboneParams, TrainParams
from tfpipe.params_file import yaml_load

BACKBONES = sorted(applications.BACKBONES)
NUM_CLASSES = 3


def make_toy_images(shape, count=24, seed=0):
    """Class k has a bright stripe in the k-th third of the image: learnable, tiny."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % NUM_CLASSES
    images = rng.integers(0, 60, size=(count, *shape))
    band = shape[0] // NUM_CLASSES
    for index, label in enumerate(labels):
        images[index, label * band : (label + 1) * band] += 150
    return images.astype(np.uint8), labels


def train_params(model: str, **backbone) -> TrainParams:
    backbone.setdefault("head_epochs", 1)
    return TrainParams(
        model=model,
        epochs=2,
        early_stopping_patience=2,  # resolved, as the stage's set-up resolves "auto" before any fit
        batch_size=8,
        learning_rate=1e-3,
        dropout_rate=0.1,
        weight_decay=1e-4,
        deterministic=False,
        backbone=BackboneParams(**backbone),
    )


def build_model(params: TrainParams, shape):
    preprocessor = build_preprocessor(
        list(shape),
        shape[0],
        shape[1],
        [0.0] * shape[2],
        [1.0] * shape[2],
        normalize=not registry.takes_raw_pixels(params.model),
    )
    return build_training_model(preprocessor, build_classifier(params, shape, NUM_CLASSES))


def save_backbone_weights(name: str, path, seed: int = 7):
    """What a user brings: a Keras .h5 weights file of the backbone without its top (random weights here)."""
    keras.utils.set_random_seed(seed)
    backbone = applications.BACKBONES[name].constructor(include_top=False, weights=None, input_shape=(32, 32, 3))
    backbone.save_weights(str(path))
    return backbone


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize(
    "shape, backbone_size", [((28, 28, 1), (32, 32)), ((40, 48, 3), (40, 48)), ((20, 40, 3), (32, 64))]
)
def test_grayscale_and_small_images_are_repeated_to_rgb_and_resized_up(name, shape, backbone_size):
    classifier = registry.get_builder(name)(input_shape=shape, num_classes=NUM_CLASSES)
    assert classifier.output_shape == (None, NUM_CLASSES)
    adapter = [layer for layer in classifier.layers if layer.name.startswith("input_")]
    assert tuple((adapter[-1].output if adapter else classifier.input).shape[1:]) == (*backbone_size, 3)
    assert [layer for layer in classifier.layers if isinstance(layer, keras.Model)] == [], "tfmot needs a flat model"


@pytest.mark.parametrize(
    "name, reference",
    [
        ("mobilenet_v2", keras.applications.mobilenet_v2.preprocess_input),
        ("resnet50", keras.applications.resnet50.preprocess_input),
    ],
)
def test_the_backbones_preprocess_input_is_inside_the_model(name, reference):
    classifier = registry.get_builder(name)(input_shape=(32, 32, 3), num_classes=NUM_CLASSES)
    last_adapter_layer = [layer for layer in classifier.layers if layer.name.startswith("input_")][-1]
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3)).astype(np.float32)
    inside = keras.Model(classifier.input, last_adapter_layer.output)(images).numpy()
    np.testing.assert_allclose(inside, reference(images.copy()), atol=1e-4)


def test_efficientnet_keeps_its_own_scaling_and_serving_stays_raw_pixels():
    classifier = registry.get_builder("efficientnet_b0")(input_shape=(32, 32, 3), num_classes=NUM_CLASSES)
    assert any(isinstance(layer, keras.layers.Rescaling) for layer in applications.backbone_layers(classifier))
    assert registry.takes_raw_pixels("efficientnet_b0") and not registry.takes_raw_pixels("lenet5")


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0"])
def test_a_weights_file_saved_by_the_test_is_loaded_layer_for_layer(name, tmp_path):
    # Built once before, so Keras numbers EfficientNet's auto-named layers differently from the file.
    registry.get_builder(name)(input_shape=(32, 32, 3), num_classes=NUM_CLASSES)
    saved = save_backbone_weights(name, tmp_path / "backbone.h5")
    classifier = build_classifier(train_params(name, weights=str(tmp_path / "backbone.h5")), (32, 32, 3), NUM_CLASSES)
    expected = [weight for layer in saved.layers for weight in layer.get_weights()]
    loaded = [weight for layer in applications.backbone_layers(classifier) for weight in layer.get_weights()]
    assert len(expected) == len(loaded) > 100
    for want, got in zip(expected, loaded, strict=True):
        np.testing.assert_array_equal(want, got)


def test_imagenet_weights_missing_from_the_cache_say_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(applications.WeightsNotFound) as error:
        build_classifier(train_params("resnet50", weights="imagenet"), (32, 32, 3), NUM_CLASSES)
    message = str(error.value)
    assert str(tmp_path / "keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5") in message
    assert (
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
        in message
    )
    assert "train.backbone.weights" in message and "none" in message


def test_imagenet_weights_are_read_from_the_keras_cache_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cache = tmp_path / "keras/models"
    cache.mkdir(parents=True)
    # MobileNetV2's file has no published hash: any file of the right layers loads (28x28 becomes 32, so the 224 file).
    save_backbone_weights("mobilenet_v2", cache / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    assert (
        applications.resolve_weights("mobilenet_v2", "imagenet", 32)
        == cache / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    )
    build_classifier(train_params("mobilenet_v2", weights="imagenet"), (28, 28, 1), NUM_CLASSES)
    # ResNet50's has one: a different file under its name is refused instead of loaded.
    (cache / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"not the weights")
    with pytest.raises(applications.WeightsNotFound, match="does not match the hash"):
        applications.resolve_weights("resnet50", "imagenet", 32)


def test_a_weights_file_of_another_backbone_is_a_clear_error(tmp_path):
    save_backbone_weights("mobilenet_v2", tmp_path / "mobilenet.h5")
    with pytest.raises(ValueError, match=r"mobilenet.h5 cannot be loaded into resnet50"):
        build_classifier(train_params("resnet50", weights=str(tmp_path / "mobilenet.h5")), (32, 32, 3), NUM_CLASSES)
    with pytest.raises(applications.WeightsNotFound, match="missing.h5 is not a file"):
        build_classifier(train_params("resnet50", weights=str(tmp_path / "missing.h5")), (32, 32, 3), NUM_CLASSES)


def test_phases_follow_the_params():
    assert [phase.name for phase in plan_phases(train_params("lenet5"))] == ["train"]
    assert [phase.name for phase in plan_phases(train_params("mobilenet_v2", weights="none", head_epochs=1))] == [
        "train"
    ]
    head, fine_tune = plan_phases(
        train_params("mobilenet_v2", weights="x.h5", head_epochs=1, fine_tune_layers=10, fine_tune_learning_rate=1e-5)
    )
    assert (head.initial_epoch, head.end_epoch, head.trainable_top_layers) == (0, 1, 0)
    assert (fine_tune.initial_epoch, fine_tune.end_epoch, fine_tune.trainable_top_layers, fine_tune.learning_rate) == (
        1,
        2,
        10,
        1e-5,
    )


def test_head_then_fine_tune_moves_only_what_each_phase_trains(tmp_path):
    """Phase 1 moves the head only; phase 2 also the top layers, and batch norm keeps its ImageNet statistics."""
    save_backbone_weights("mobilenet_v2", tmp_path / "backbone.h5")
    params = train_params(
        "mobilenet_v2",
        weights=str(tmp_path / "backbone.h5"),
        head_epochs=1,
        fine_tune_layers=12,
        fine_tune_learning_rate=1e-3,
    )
    images, labels = make_toy_images((32, 32, 3))
    data = tf.data.Dataset.from_tensor_slices((images.astype(np.float32), labels)).batch(8)
    model = build_model(params, (32, 32, 3))
    classifier = model.get_layer("mobilenet_v2")
    layers = applications.backbone_layers(classifier)
    top = layers[-12:]

    def snapshot():
        return {layer.name: [weight.copy() for weight in layer.get_weights()] for layer in classifier.layers}

    def moved(before, layer):
        return any(not np.array_equal(a, b) for a, b in zip(before[layer.name], layer.get_weights(), strict=True))

    for phase in plan_phases(params):
        applications.freeze_backbone(classifier, phase.trainable_top_layers)
        compile_model(model, params, steps_per_epoch=3, jit_compile=False, phase=phase)
        before = snapshot()
        fit_model(model, data, None, params, callbacks=[], phase=phase)
        assert moved(before, classifier.get_layer("logits"))
        for layer in layers:
            if not layer.weights:
                continue
            trains = (
                phase.name == "fine_tune" and layer in top and not isinstance(layer, keras.layers.BatchNormalization)
            )
            assert moved(before, layer) == trains, f"{phase.name}: {layer.name}"


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_trains_a_step_converts_to_int8_and_runs(name):
    params = train_params(name, weights="none")
    images, labels = make_toy_images((28, 28, 1))
    model = build_model(params, (28, 28, 1))
    compile_model(model, params, steps_per_epoch=3, jit_compile=False)
    history = fit_model(
        model,
        tf.data.Dataset.from_tensor_slices((images.astype(np.float32), labels)).batch(8),
        None,
        dataclasses.replace(params, epochs=1),
        callbacks=[],
    )
    assert np.isfinite(history.history["loss"]).all()
    content = export_variants.convert_to_tflite(model, "int8", images[:8].astype(np.float32))
    classifier = tflite.TFLiteClassifier(content)
    assert classifier.input["dtype"] == np.int8 and classifier.image_shape == (28, 28, 1)
    probabilities = classifier.predict(images[:4])
    assert probabilities.shape == (4, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.02)


def test_pruning_reaches_the_backbone_convs_and_leaves_depthwise_kernels_dense(tmp_path):
    images, labels = make_toy_images((32, 32, 3), count=32)
    options = {
        "target_sparsity": 0.5,
        "epochs": 2,
        "end_fraction": 0.5,
        "learning_rate": 1e-4,
        "min_weights": 1000,
        "seed": 0,
        "log_dir": tmp_path / "pruning",
    }
    mobilenet = export_fine_tune.prune_classifier(
        build_model(train_params("mobilenet_v2", weights="none"), (32, 32, 3)),
        "mobilenet_v2",
        Examples.from_arrays(images, labels),
        **options,
    )
    layers = mobilenet.get_layer("mobilenet_v2").layers
    depthwise = [layer.depthwise_kernel.numpy() for layer in layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    pointwise = [
        layer.kernel.numpy()
        for layer in layers
        if type(layer) is keras.layers.Conv2D and layer.kernel.shape.num_elements() >= 1000
    ]
    assert all(np.count_nonzero(kernel) == kernel.size for kernel in depthwise)
    assert np.mean([np.mean(kernel == 0) for kernel in pointwise]) == pytest.approx(0.5, abs=0.02)
    assert export_fine_tune.weight_kernel(keras.layers.Rescaling(1.0)) is None


def test_layers_tfmot_cannot_train_stay_float_and_are_named():
    """EfficientNet's own Rescaling/Normalization and its squeeze-excite Multiply have no QAT config."""
    import tensorflow_model_optimization as tfmot

    classifier = build_classifier(train_params("efficientnet_b0", weights="none"), (32, 32, 3), NUM_CLASSES)
    quantized, float_layers = export_quantization.quantize_apply_skipping(
        classifier, tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()
    )
    kinds = {entry.split(" (")[1].rstrip(")") for entry in float_layers}
    assert kinds == {"Rescaling", "Normalization", "Multiply"}
    assert len([entry for entry in float_layers if "Multiply" in entry]) == 16  # one squeeze-excite per MBConv block
    wrapped = [layer for layer in quantized.layers if isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2)]
    float_names = {entry.split(" (")[0] for entry in float_layers}
    assert len(wrapped) > 100
    for layer in wrapped:  # the float ones carry a config that quantizes nothing
        assert isinstance(layer.quantize_config, export_quantization.float_quantize_config_class()) == (
            layer.layer.name in float_names
        ), layer.name
    assert (
        export_quantization.layers_without_quantize_config(
            build_classifier(train_params("resnet50", weights="none"), (32, 32, 3), NUM_CLASSES),
            tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme(),
        )
        == []
    )


def test_run_problem_names_what_the_interpreter_refuses():
    assert "not a TFLite model" in tflite.run_problem(b"definitely not a flatbuffer", np.zeros((1, 4, 4, 1), np.uint8))


def write_shapes_folder(root, per_class: int = 30, seed: int = 0) -> None:
    """A user's photo folder in miniature: circles, squares and triangles in random colours, of mixed sizes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for name in ("circle", "square", "triangle"):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            width, height = (int(side) for side in rng.integers(36, 64, size=2))
            picture = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 120, size=3)))
            draw = ImageDraw.Draw(picture)
            size = int(rng.integers(14, min(width, height) - 4))
            left, top = int(rng.integers(0, width - size)), int(rng.integers(0, height - size))
            colour = tuple(int(c) for c in rng.integers(140, 256, size=3))
            box = [left, top, left + size, top + size]
            if name == "circle":
                draw.ellipse(box, fill=colour)
            elif name == "square":
                draw.rectangle(box, fill=colour)
            else:
                draw.polygon([(left, top + size), (left + size, top + size), (left + size // 2, top)], fill=colour)
            picture.save(root / name / f"{index:03d}.{'jpg' if index % 2 else 'png'}")


@pytest.mark.e2e
def test_folder_mobilenet_v2_preset_runs_end_to_end_with_weights_none(tmp_path):
    """A fresh copy, the preset applied, a folder of mixed-size photos, `dvc repro`: a SavedModel and an int8 model
    that work."""
    import json
    import sys

    from pipelines import presets
    from tests import workspace

    repo = workspace.copy_repository(tmp_path / "repo", materialize=False)
    presets.apply_preset("folder-mobilenet_v2", repo / "params.yaml")
    workspace.set_params(
        repo,
        {  # the preset, scaled down to seconds: 32 px, two epochs, two export variants
            "ingest": {"expectations": {"image_height": 32, "image_width": 32, "min_per_class": 20}},
            "preprocess": {"image_height": 32, "image_width": 32},
            "train": {"epochs": 2, "batch_size": 16, "backbone": {"weights": "none"}},
            "evaluate": {
                "min_accuracy": 0.0,
                "min_margin_over_baseline": -1.0,
            },  # two epochs from scratch do not beat an SVM
            "export": {
                "variants": ["int8"],
                "representative_samples": 16,
                "latency_runs": 20,
                "throughput_batch_size": 8,
                "max_int8_accuracy_drop": 1.0,
                "max_int8_class_drop": 1.0,
            },
        },
    )
    write_shapes_folder(tmp_path / "photos")
    workspace.run(
        [sys.executable, "-m", "pipelines.materialize", "--source", "folder", "--from", str(tmp_path / "photos")], repo
    )
    workspace.run([sys.executable, "-m", "dvc", "repro"], repo)

    examples = (repo / "data/prepared/examples.csv").read_text()
    assert "source_height" in examples.splitlines()[0]
    params = yaml_load((repo / "params.yaml").read_text())
    assert params["train"]["model"] == "mobilenet_v2" and params["data"]["source"] == "folder"
    export = json.loads((repo / "artifacts/export/summary.json").read_text())
    assert export["promoted"] and "tflite_int8" in export
    interpreter = tflite.TFLiteClassifier(repo / "artifacts/export/model_int8.tflite")
    assert interpreter.image_shape == (32, 32, 3)
    version_dir = next((repo / "artifacts/export/saved_model/photos-classifier").iterdir())
    serving = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    output = serving(images=tf.zeros((2, 32, 32, 3), tf.uint8))
    assert output["probabilities"].shape == (2, 3) and set(output["class_names"].numpy()) <= {
        b"circle",
        b"square",
        b"triangle",
    }


def test_the_train_stage_runs_head_then_fine_tune_with_a_weights_file(
    prepared_dir, tmp_path, monkeypatch, mlflow_store
):
    """Pretrained weights (a file saved here, as ImageNet's would be): train.main() runs and records both phases."""
    import json

    import mlflow

    from components.preprocess import stage as preprocess
    from components.train import stage as train

    save_backbone_weights("mobilenet_v2", tmp_path / "backbone.h5")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        "preprocess:\n  image_height: 12\n  image_width: 12\n"
        "train:\n  model: mobilenet_v2\n  epochs: 2\n  batch_size: 16\n  deterministic: false\n"
        f"  backbone:\n    weights: {tmp_path / 'backbone.h5'}\n    head_epochs: 1\n    fine_tune_layers: 10\n"
        "tracking:\n  log_augmented_images: 0\n"
    )
    preprocess.main()
    train.main()

    history = (tmp_path / "plots/history.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in history[1:]] == [["1", "head"], ["2", "fine_tune"]]
    run = mlflow.get_run(json.loads((tmp_path / "artifacts/train/run.json").read_text())["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["train.phases"] == (
        "head: epochs 1-1, lr 0.002, backbone frozen; "
        "fine_tune: epochs 2-2, lr 1e-05, top 10 backbone layers (batch norm frozen)"
    )
    assert not list((tmp_path / ".cache/train-backup").rglob("*.index")), (
        "both phases' backups are removed after success"
    )
    model = keras.models.load_model(tmp_path / "artifacts/train/model.keras", compile=False)
    assert model.get_layer("preprocessing").get_layer("raw_pixels") is not None, (
        "no dataset normalization before a backbone"
    )
