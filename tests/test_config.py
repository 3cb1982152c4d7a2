"""params.yaml parsing: bad params stop the pipeline before any work, naming the key."""
from pathlib import Path

import pytest

from pipelines.config import ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.train.model == "lenet5"
    assert params.ingest.expectations.image_height == 28


@pytest.mark.parametrize(
    "raw, key, hint",
    [
        ({"train": {"learning_rat": 0.1}}, "train.learning_rat", "unknown key"),
        ({"trian": {}}, "trian", "unknown key"),
        ({"train": {"epochs": "many"}}, "train.epochs", "integer"),
        ({"train": {"epochs": -1}}, "train.epochs", "greater than or equal to 1"),
        ({"export": {"prune_target_sparsity": 1.0}}, "export.prune_target_sparsity", "less than 1"),
        ({"train": {"optimizer": "adagrad"}}, "train.optimizer", "'adam', 'adamw', 'sgd' or 'rmsprop'"),
        ({"train": {"model": "alexnet"}}, "train.model", "known models: efficientnet_b0, lenet5, mlp, mobilenet_v2, resnet18, resnet50, vgg13"),
        ({"ingest": {"expectations": {"channels": 2}}}, "ingest.expectations.channels", "1 or 3"),
    ],
)
def test_bad_params_name_the_key_and_what_was_expected(raw, key, hint):
    with pytest.raises(ParamsError) as error:
        parse_params(raw, Path("params.yaml"))
    message = str(error.value)
    assert message.startswith("params.yaml:")
    assert key in message
    assert hint in message


def test_params_are_frozen():
    params = parse_params({})
    with pytest.raises(Exception):
        params.train.epochs = 3


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(bad)
