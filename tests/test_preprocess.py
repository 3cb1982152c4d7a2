"""The preprocessing model: statistics from train only, the same transform for training and serving."""

import numpy as np
import tf_keras as keras

from components.preprocess import stage as preprocess
from components.preprocess.kinds import image as preprocess_image
from models.preprocessing import build_preprocessor, load_preprocessor


def test_statistics_and_normalization():
    images = np.random.default_rng(0).integers(0, 256, size=(50, 10, 10, 1)).astype(np.uint8)
    statistics = preprocess_image.compute_statistics(images, 10, 10)
    assert np.allclose(statistics["mean"], images.mean(), atol=1e-3)
    assert np.allclose(statistics["variance"], images.astype(np.float64).var(), rtol=1e-4)
    model = build_preprocessor([10, 10, 1], 10, 10, statistics["mean"], statistics["variance"])
    normalized = model.predict(images.astype(np.float32), verbose=0)
    assert abs(normalized.mean()) < 1e-3 and abs(normalized.std() - 1) < 1e-2


def test_statistics_streamed_in_batches_equal_the_whole_split_at_once():
    """The stage reads the train split in batches (memory for one batch, whatever the split's size)."""
    images = np.random.default_rng(1).integers(0, 256, size=(700, 8, 8, 3)).astype(np.uint8)
    whole = preprocess_image.compute_statistics(images, 8, 8)
    pixels = images.reshape(-1, 3).astype(np.float64)
    assert whole["mean"] == pixels.mean(axis=0).tolist() and whole["variance"] == pixels.var(axis=0).tolist()
    streamed = preprocess_image.compute_statistics(iter([images[:100], images[100:450], images[450:]]), 8, 8)
    assert streamed["num_images"] == 700
    np.testing.assert_allclose(streamed["mean"], whole["mean"], rtol=1e-12)
    np.testing.assert_allclose(streamed["variance"], whole["variance"], rtol=1e-12)


def test_resize_is_part_of_the_model_and_survives_saving(tmp_path):
    images = np.full((2, 8, 8, 3), 100, dtype=np.uint8)
    model = build_preprocessor([8, 8, 3], 16, 16, [100, 100, 100], [25, 25, 25])
    assert model.output_shape == (None, 16, 16, 3)
    model.save(tmp_path / "p.keras")
    restored = keras.models.load_model(tmp_path / "p.keras")
    np.testing.assert_allclose(restored.predict(images.astype(np.float32), verbose=0), 0.0, atol=1e-5)


def test_main_writes_the_model_from_the_train_split(prepared_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("preprocess:\n  image_height: 12\n  image_width: 12\n")
    preprocess.main()
    statistics = (tmp_path / "artifacts/preprocess/statistics.json").read_text()
    assert '"num_images": 72' in statistics  # 80% of 90 images: the train split only
    rebuilt = load_preprocessor(tmp_path / "artifacts/preprocess/statistics.json")
    assert rebuilt.name == "preprocessing" and rebuilt.output_shape == (None, 12, 12, 1)
    first = (tmp_path / "artifacts/preprocess/statistics.json").read_bytes()
    preprocess.main()
    assert (tmp_path / "artifacts/preprocess/statistics.json").read_bytes() == first  # same analysis, same bytes


def test_serving_and_training_see_the_same_tensor(prepared_dir):
    """No train/serve skew: the uint8 serving path and the tf.data training path feed identical features."""
    import tensorflow as tf

    from components.export.serving import ServingModule
    from components.train.data import build_input_pipeline
    from components.train.model import build_training_model
    from tfpipe import records

    images, _ = records.load_split_arrays(prepared_dir, "train")
    statistics = preprocess_image.compute_statistics(images, 12, 12)
    preprocessor = build_preprocessor([12, 12, 1], 12, 12, statistics["mean"], statistics["variance"])
    classifier = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Flatten(), keras.layers.Dense(3)], name="mlp")
    model = build_training_model(preprocessor, classifier)

    batch, _ = next(iter(build_input_pipeline(records.read_split(prepared_dir, "train"), 8, training=False)))
    training_features = model.get_layer("preprocessing")(batch)
    serving = ServingModule(model, ["a", "b", "c"])
    serving_features = model.get_layer("preprocessing")(tf.cast(tf.constant(images[:8]), tf.float32))
    np.testing.assert_array_equal(training_features.numpy(), serving_features.numpy())
    np.testing.assert_allclose(
        serving.serve(tf.constant(images[:8]))["probabilities"].numpy(), model(batch).numpy(), rtol=1e-6
    )
