"""Tests for pipelines/predict.py with a tiny hand-weighted model exported as SavedModel and TFLite."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from PIL import Image

from components.export import serving as export_serving
from components.export import variants as export_variants
from pipelines import predict
from tfpipe import model_trust, tflite

CLASS_NAMES = ["top", "middle", "bottom"]
IMAGE_SHAPE = (12, 12, 1)


def band_image(label: int, size=(12, 12), background=(20, 60), ink=200, seed=0) -> np.ndarray:
    """Class k is a bright horizontal band in the k-th third of the image."""
    rng = np.random.default_rng(seed)
    image = rng.integers(*background, size=size).astype(np.int32)
    third = size[0] // 3
    image[label * third : (label + 1) * third] = ink
    return np.clip(image, 0, 255).astype(np.uint8)


def build_band_model() -> keras.Model:
    """No training needed: the mean brightness of each third, scaled, is the logit of its class."""
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="float32", name="image")
    means = keras.layers.AveragePooling2D(pool_size=(4, 12))(inputs)  # [3, 1, 1]
    logits = keras.layers.Dense(3, kernel_initializer="identity", use_bias=False)(
        keras.layers.Rescaling(0.05)(keras.layers.Flatten()(means))
    )
    return keras.Model(inputs, keras.layers.Activation("softmax")(logits))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder whose artifacts/export holds what the export stage writes (its manifest included)."""
    return tmp_path_factory.mktemp("project")


@pytest.fixture
def exported(project, monkeypatch):
    """artifacts/export of the project (the working directory): a SavedModel version directory, float/int8 .tflite
    files with labels.txt and the manifest that records the SavedModel's digest, as export writes them."""
    monkeypatch.chdir(project)
    root = project / "artifacts/export"
    if not (root / model_trust.MANIFEST_FILE).is_file():
        write_export(root)
    return root


def write_export(root):
    model = build_band_model()
    module = export_serving.ServingModule(model, CLASS_NAMES)
    saved_model = root / "saved_model" / "bands" / "1"
    tf.saved_model.save(module, str(saved_model), signatures={"serving_default": module.serve})
    representative = np.stack([band_image(k % 3, seed=k) for k in range(30)])[..., np.newaxis].astype(np.float32)
    files = {
        "model_float32.tflite": export_variants.convert_to_tflite(model, "float32"),
        "model_int8.tflite": export_variants.convert_to_tflite(model, "int8", representative),
        tflite.LABELS_FILE: "".join(f"{name}\n" for name in CLASS_NAMES).encode(),
    }
    for name, content in files.items():
        (root / name).write_bytes(content)
    model_trust.write_manifest(root, saved_model, files)
    images = root / "images"
    images.mkdir()
    for label, name in enumerate(CLASS_NAMES):
        Image.fromarray(band_image(label, size=(36, 36), seed=label)).save(images / f"{name}.png")
    # An RGB JPEG of another size: converted to the model's one channel and 12x12.
    rgb = np.repeat(band_image(2, size=(60, 45), seed=7)[..., np.newaxis], 3, axis=-1)
    Image.fromarray(rgb).save(images / "bottom_rgb.jpg", quality=95)


def run_predict(capsys, *args) -> tuple[int, str, str]:
    code = predict.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("model", ["saved_model/bands/1", "model_float32.tflite", "model_int8.tflite"])
def test_predict_prints_the_right_class_first_for_every_model_format(exported, capsys, model):
    images = sorted((exported / "images").iterdir())
    code, out, _ = run_predict(capsys, "--model", exported / model, "--top-k", "2", *images)
    assert code == 0
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    for path in images:
        ranked = lines[str(path)].split(", ")
        assert len(ranked) == 2
        assert ranked[0].split()[0] == path.stem.split("_")[0]
        assert 0.5 < float(ranked[0].split()[1]) <= 1.0


def test_a_photo_of_dark_ink_on_light_paper_needs_invert_auto(exported, capsys, tmp_path):
    """Light paper, dark middle band, RGB, larger than the model: the textbook's 'predict a given image'."""
    paper = band_image(1, size=(90, 120), background=(200, 235), ink=35, seed=3)
    photo = np.stack([paper, paper - 5, paper - 15], axis=-1).clip(0, 255).astype(np.uint8)  # yellowish paper
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo).save(path)
    _, auto, _ = run_predict(capsys, "--model", exported / "saved_model/bands/1", "--invert", "auto", path)
    assert auto.split(": ", 1)[1].startswith("middle ")
    _, never, _ = run_predict(capsys, "--model", exported / "saved_model/bands/1", "--invert", "never", path)
    assert not never.split(": ", 1)[1].startswith("middle ")
    assert predict.should_invert(np.asarray(Image.open(path).convert("L")))
    assert not predict.should_invert(band_image(1, size=(30, 30)))


def test_a_non_image_file_is_a_clear_error_and_the_other_images_still_run(exported, capsys, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not a picture")
    good = exported / "images" / "top.png"
    code, out, err = run_predict(capsys, "--model", exported / "model_float32.tflite", fake, good)
    assert code == 1
    assert f"{fake}: not an image" in err
    assert out.startswith(f"{good}: top ")


@pytest.mark.parametrize("name", ["model.h5", "model.keras", "model.pkl"])
def test_other_model_formats_are_refused_without_loading_them(exported, capsys, tmp_path, name):
    (tmp_path / name).write_bytes(b"\x80\x04 not loaded")
    code, _, err = run_predict(capsys, "--model", tmp_path / name, exported / "images/top.png")
    assert code == 2
    assert "loads only SavedModel directories, .tflite files and models:/ URIs" in err


def test_a_truncated_tflite_file_is_a_clear_error(exported, capsys, tmp_path):
    content = (exported / "model_int8.tflite").read_bytes()
    for size in (len(content) // 2, 6):
        (tmp_path / "truncated.tflite").write_bytes(content[:size])
        code, _, err = run_predict(capsys, "--model", tmp_path / "truncated.tflite", exported / "images/top.png")
        assert code == 2
        assert "truncated.tflite" in err and ("not a TFLite model" in err or "cannot be loaded" in err)


def test_a_directory_that_is_not_a_saved_model_is_refused(exported, capsys):
    code, _, err = run_predict(capsys, "--model", exported / "saved_model/bands", exported / "images/top.png")
    assert code == 2 and "without saved_model.pb" in err


def test_load_image_follows_the_model_shape(exported):
    image = predict.load_image(exported / "images/bottom_rgb.jpg", (12, 12, 1))
    assert image.shape == (12, 12, 1) and image.dtype == np.uint8
    assert predict.load_image(exported / "images/top.png", (8, 10, 3)).shape == (8, 10, 3)


def test_a_saved_model_this_project_did_not_export_is_refused_unless_trusted(exported, capsys, tmp_path):
    """A SavedModel runs its graph: one that writes a file when called, from outside this project's export."""

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 12, 12, 1], tf.uint8, name="images")])
        def serve(self, images):
            tf.io.write_file(str(tmp_path / "written_by_the_model.txt"), "pwned")
            return {"probabilities": tf.ones([tf.shape(images)[0], 3]) / 3}

    writer = Writer()
    foreign = tmp_path / "foreign/1"
    tf.saved_model.save(writer, str(foreign), signatures={"serving_default": writer.serve})
    code, out, err = run_predict(capsys, "--model", foreign, exported / "images/top.png")
    assert code == 2 and out == "" and not (tmp_path / "written_by_the_model.txt").exists()
    assert "not a SavedModel this project exported" in err and "--trust-model" in err and "runs its graph" in err
    code, out, _ = run_predict(capsys, "--trust-model", "--model", foreign, exported / "images/top.png")
    assert code == 0 and (tmp_path / "written_by_the_model.txt").exists()  # deliberately trusted: it ran
    # Our own export, changed after it was written: refused too.
    copy = exported / "saved_model/bands/2"
    import shutil

    shutil.copytree(exported / "saved_model/bands/1", copy)
    (copy / "saved_model.pb").write_bytes((copy / "saved_model.pb").read_bytes() + b"\0")
    code, _, err = run_predict(capsys, "--model", copy, exported / "images/top.png")
    assert code == 2 and "not a SavedModel this project exported" in err
    shutil.rmtree(copy)
