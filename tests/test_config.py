"""params.yaml parsing: bad params stop the pipeline before any work, naming the key."""

import dataclasses
from pathlib import Path

import pytest

from tfpipe.config import ParamsError
from tfpipe.params_file import load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.train.model == "lenet5_s2d"
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
        ({"ingest": {"expectations": {"channels": 2}}}, "ingest.expectations.channels", "1 or 3"),
        # Strict types: YAML's quoted "0.5" is a string, "yes" is not a boolean, true is not an integer.
        (
            {"evaluate": {"min_accuracy": "0.5"}},
            "evaluate.min_accuracy",
            "valid number, or input should be 'auto' (got '0.5', a string",
        ),
        ({"ingest": {"resize": "yes"}}, "ingest.resize", "valid boolean (got 'yes', a string"),
        ({"evaluate": {"top_k": True}}, "evaluate.top_k", "valid integer (got True, a boolean)"),
        ({"train": {"epochs": 3.0}}, "train.epochs", "valid integer, or input should be 'auto' (got 3.0, a number)"),
        ({"export": {"variants": "int8"}}, "export.variants", "valid"),
        ({"train": {"histogram_freq": 1}}, "train.histogram_freq", "it moved to tracking.histogram_freq"),
        ({"data": {"name": "my data/set"}}, "data.name", "letters, digits"),
    ],
)
def test_bad_params_name_the_key_and_what_was_expected(raw, key, hint):
    with pytest.raises(ParamsError) as error:
        parse_params(raw, Path("params.yaml"))
    message = str(error.value)
    assert message.startswith("params.yaml:")
    assert key in message
    assert hint in message


def test_integers_are_numbers_and_lists_are_tuples():
    params = parse_params({"evaluate": {"min_accuracy": 1}, "export": {"variants": ["float32", "int8"]}})
    assert params.evaluate.min_accuracy == 1.0 and params.export.variants == ("float32", "int8")


def test_an_unknown_model_is_refused_by_the_train_stage_naming_the_key_and_the_known_models():
    from components.train.schedule import check_model_params
    from models import registry

    with pytest.raises(
        ParamsError,
        match=f"params.yaml: train.model: unknown model 'alexnet'; known models: {', '.join(registry.names())}$",
    ):
        check_model_params(parse_params({"train": {"model": "alexnet"}}).train)
    with pytest.raises(ParamsError, match="train.backbone.head_epochs \\(3\\) is above train.epochs \\(2\\)"):
        check_model_params(parse_params({"train": {"model": "mobilenet_v2", "epochs": 2}}).train)


def test_the_registered_model_follows_the_dataset_unless_named():
    from tfpipe.config import dataset_name, registered_model_name

    assert registered_model_name(parse_params({})) == "mnist_5k-classifier"
    assert registered_model_name(parse_params({"data": {"source": "tfds:cifar10"}})) == "tfds-cifar10-classifier"
    assert (
        registered_model_name(parse_params({"data": {"source": "folder", "name": "flowers"}})) == "flowers-classifier"
    )
    assert dataset_name(parse_params({"data": {"source": "folder", "name": "flowers"}})) == "flowers"
    assert registered_model_name(parse_params({"export": {"model_name": "shop_classifier"}})) == "shop_classifier"


def test_params_are_frozen():
    params = parse_params({})
    with pytest.raises(dataclasses.FrozenInstanceError):
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


def test_on_and_off_are_the_values_the_schema_names_as_dvc_reads_them(tmp_path):
    """PyYAML alone reads YAML 1.1, where an unquoted `on` is True: `jit_compile: on` was refused as a boolean."""
    from tfpipe.params_file import update_params_file

    path = tmp_path / "params.yaml"
    path.write_text(
        "train:\n  jit_compile: on\n  mixed_precision: off\n  deterministic: false\n  learning_rate: 1e-3\n"
    )
    train = load_params(path).train
    assert (train.jit_compile, train.mixed_precision, train.deterministic, train.learning_rate) == (
        "on",
        "off",
        False,
        0.001,
    )
    update_params_file({"train": {"jit_compile": "off"}}, path)  # ruamel (YAML 1.2) writes the string unquoted
    assert "jit_compile: off" in path.read_text() and load_params(path).train.jit_compile == "off"
    path.write_text("train:\n  deterministic: yes\n")  # a string in YAML 1.2, as DVC reads it: not a boolean
    with pytest.raises(
        ParamsError, match="train.deterministic: Input should be a valid boolean \\(got 'yes', a string"
    ):
        load_params(path)
