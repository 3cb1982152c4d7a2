"""Workload presets: each one validates against the schema, and applying one keeps params.yaml's comments."""

import shutil
from pathlib import Path

import pytest
import yaml

from components.preprocess.kinds.image import resolve_image_size
from components.train.schedule import resolve_train_schedule
from pipelines import presets
from tfpipe.params_file import load_params, merge, parse_params, yaml_load

ROOT = Path(__file__).resolve().parents[1]


def test_the_textbook_workloads_are_all_there():
    names = presets.preset_names()
    for expected in [
        "mnist_5k-lenet5",
        "mnist-mlp",
        "fashion_mnist-lenet5",
        "fashion_mnist-vgg13",
        "cifar10-vgg13",
        "cifar10-resnet18",
        "folder-mobilenet_v2",
    ]:
        assert expected in names


@pytest.mark.parametrize("name", presets.preset_names())
def test_every_preset_validates_against_the_schema(name):
    with (ROOT / "params.yaml").open() as stream:
        base = yaml.safe_load(stream)
    params = parse_params(merge(base, presets.load_preset(name)))
    assert params.train.model in name
    from components.train.schedule import check_model_params

    check_model_params(params.train)  # a known model, a schedule that fits


def test_apply_merges_and_keeps_comments(tmp_path):
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    presets.apply_preset("cifar10-resnet18", target)
    params = load_params(target)
    assert params.train.model == "resnet18" and params.train.augmentation.crop_padding == 0.125
    assert params.ingest.expectations.channels == 3
    assert params.evaluate == load_params(ROOT / "params.yaml").evaluate  # untouched sections stay
    assert "# One section per stage" in target.read_text()


def test_show_prints_dvc_exp_run_arguments():
    arguments = presets.set_arguments({"train": {"model": "vgg13", "nesterov": True}})
    assert arguments == ["train.model=vgg13", "train.nesterov=true"]


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="known presets: .*mnist_5k-lenet5"):
        presets.load_preset("imagenet-alexnet")


@pytest.mark.parametrize("name", presets.preset_names())
def test_every_preset_trains_a_step_with_its_model_optimizer_and_augmentation(name):
    """Each workload's training config (model at its input size, optimizer, schedule, augmentation) runs.

    The full-size datasets need a network (tfds); their materialize/ingest path is tested with
    tfds.testing.mock_data in tests/test_materialize.py.
    """
    import dataclasses

    import numpy as np
    import tensorflow as tf

    from components.train.data import build_augmenter
    from components.train.fit import fit_model
    from components.train.model import build_classifier, build_training_model
    from components.train.schedule import compile_model
    from models import registry
    from models.preprocessing import build_preprocessor

    with (ROOT / "params.yaml").open() as stream:
        params = parse_params(merge(yaml_load(stream.read()), presets.load_preset(name)))
    # No ImageNet weights offline: a pretrained-backbone preset trains a step from scratch here.
    train_params = dataclasses.replace(
        resolve_train_schedule(params.train, 16),
        epochs=1,
        backbone=dataclasses.replace(params.train.backbone, weights="none"),
    )
    expected = params.ingest.expectations
    shape = (
        *resolve_image_size(
            params.preprocess, expected.image_height, expected.image_width, registry.min_input_size(train_params.model)
        ),
        expected.channels,
    )
    images = np.random.default_rng(0).integers(0, 256, size=(16, *shape)).astype(np.float32)
    augmenter = build_augmenter(train_params.augmentation, train_params.seed)
    data = tf.data.Dataset.from_tensor_slices((images, np.arange(16) % 10)).batch(8)
    if augmenter is not None:
        data = data.map(lambda x, y: (augmenter(x, training=True), y))
    preprocessor = build_preprocessor(
        list(shape),
        shape[0],
        shape[1],
        [127.0] * shape[2],
        [5000.0] * shape[2],
        normalize=not registry.takes_raw_pixels(train_params.model),
    )
    model = build_training_model(preprocessor, build_classifier(train_params, shape, 10))
    compile_model(model, train_params, steps_per_epoch=2, jit_compile=False)
    history = fit_model(model, data, None, train_params, callbacks=[])
    assert model.output_shape == (None, 10) and np.isfinite(history.history["loss"]).all()


def test_python_m_pipelines_lists_the_tools_and_runs_one(capsys):
    from pipelines.__main__ import TOOLS, main

    with pytest.raises(SystemExit) as ran:
        main(["presets", "list"])
    assert ran.value.code == 0 and "mnist_5k-lenet5" in capsys.readouterr().out
    with pytest.raises(SystemExit) as listed:
        main([])
    printed = capsys.readouterr().out
    assert listed.value.code == 0 and all(tool in printed for tool in TOOLS)
    with pytest.raises(SystemExit, match="unknown tool 'train'"):
        main(["train"])
