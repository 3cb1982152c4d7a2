"""Workload presets: each one validates against the schema, and applying one keeps params.yaml's comments."""
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines import presets
from pipelines.config import load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_the_textbook_workloads_are_all_there():
    names = presets.preset_names()
    for expected in ["mnist_5k-lenet5", "mnist-mlp", "fashion_mnist-lenet5", "fashion_mnist-vgg13", "cifar10-vgg13", "cifar10-resnet18"]:
        assert expected in names


@pytest.mark.parametrize("name", presets.preset_names())
def test_every_preset_validates_against_the_schema(name):
    with (ROOT / "params.yaml").open() as stream:
        base = yaml.safe_load(stream)
    params = parse_params(presets.merge(base, presets.load_preset(name)))
    assert params.train.model in name


def test_apply_merges_and_keeps_comments(tmp_path):
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    presets.apply_preset("cifar10-resnet18", target)
    params = load_params(target)
    assert params.train.model == "resnet18" and params.train.augmentation.crop_padding == 4
    assert params.ingest.expectations.channels == 3
    assert params.evaluate == load_params(ROOT / "params.yaml").evaluate  # untouched sections stay
    assert "# One section per stage" in target.read_text()


def test_show_prints_dvc_exp_run_arguments():
    arguments = presets.set_arguments({"train": {"model": "vgg13", "nesterov": True}})
    assert arguments == ["train.model=vgg13", "train.nesterov=true"]


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="known presets: .*mnist_5k-lenet5"):
        presets.load_preset("imagenet-alexnet")
