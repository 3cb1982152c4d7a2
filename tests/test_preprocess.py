"""The preprocessing model: statistics from train only, the same transform for training and serving."""
import numpy as np
import tf_keras as keras

from components import preprocess


def test_statistics_and_normalization():
    images = np.random.default_rng(0).integers(0, 256, size=(50, 10, 10, 1)).astype(np.uint8)
    statistics = preprocess.compute_statistics(images, 10, 10)
    assert np.allclose(statistics["mean"], images.mean(), atol=1e-3)
    assert np.allclose(statistics["variance"], images.astype(np.float64).var(), rtol=1e-4)
    model = preprocess.build_preprocessor([10, 10, 1], 10, 10, statistics["mean"], statistics["variance"])
    normalized = model.predict(images.astype(np.float32), verbose=0)
    assert abs(normalized.mean()) < 1e-3 and abs(normalized.std() - 1) < 1e-2


def test_resize_is_part_of_the_model_and_survives_saving(tmp_path):
    images = np.full((2, 8, 8, 3), 100, dtype=np.uint8)
    model = preprocess.build_preprocessor([8, 8, 3], 16, 16, [100, 100, 100], [25, 25, 25])
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
    assert (tmp_path / "artifacts/preprocess/preprocessor.keras").is_file()
