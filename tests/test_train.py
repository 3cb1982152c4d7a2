"""Training: the input pipeline, the model, NaN handling and what a run records."""
import json

import mlflow
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components import train
from pipelines import records
from pipelines.config import AugmentationParams, TrainParams

TINY = "train:\n  model: mlp\n  epochs: 2\n  batch_size: 16\n  augmentation:\n    rotation: 0.05\n"


def test_input_pipeline_batches_float_pixels_and_augments_only_train(prepared_dir):
    augmenter = train.build_augmenter(AugmentationParams(translation=0.2), seed=1)
    split = records.read_split(prepared_dir, "train")
    augmented = train.build_input_pipeline(split, 8, training=True, shuffle_buffer=100, seed=1, augmenter=augmenter)
    plain = train.build_input_pipeline(split, 8, training=False, augmenter=augmenter)
    images, labels = next(iter(plain))
    assert images.dtype == tf.float32 and images.shape == (8, 12, 12, 1) and labels.dtype == tf.int32
    raw = np.stack([image for image, _ in split.take(8).as_numpy_iterator()]).astype(np.float32)
    np.testing.assert_array_equal(images.numpy(), raw)  # eval data is never augmented
    assert sum(int(batch[0].shape[0]) for batch in augmented) == 72


def test_no_augmentation_means_no_augmenter():
    assert train.build_augmenter(AugmentationParams(), seed=0) is None


def _tiny_model():
    preprocessor = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Rescaling(1 / 255)], name="preprocessing")
    classifier = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Flatten(), keras.layers.Dense(3)], name="mlp")
    return train.build_training_model(preprocessor, classifier)


def test_nan_loss_fails_the_stage_instead_of_returning_a_model():
    images = np.full((32, 12, 12, 1), np.nan, dtype=np.float32)
    data = tf.data.Dataset.from_tensor_slices((images, np.zeros(32, np.int32))).batch(8)
    with pytest.raises(train.TrainingDiverged, match="lower train.learning_rate"):
        train.fit_model(_tiny_model(), data, None, TrainParams(epochs=3), callbacks=[])


def test_cosine_schedule_with_warmup_peaks_at_the_learning_rate():
    schedule = train.build_learning_rate(TrainParams(learning_rate=0.01, lr_schedule="cosine", warmup_epochs=1, epochs=4), steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.001)
    assert float(schedule(10)) == pytest.approx(0.01)
    assert float(schedule(40)) < 0.001


def test_main_trains_and_records_the_run(prepared_dir, tmp_path, monkeypatch, mlflow_store):
    from components import preprocess

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("preprocess:\n  image_height: 12\n  image_width: 12\n" + TINY)
    preprocess.main()
    train.main()

    reference = json.loads((tmp_path / "artifacts/train/run.json").read_text())
    run = mlflow.get_run(reference["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.model"] == "mlp" and run.data.params["train.epochs"] == "2"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_accuracy")
    assert [point.step for point in history] == [0, 1]
    assert "git.commit" in run.data.tags
    assert list((tmp_path / "logs/tensorboard" / run.info.run_id / "train").glob("events.out.tfevents.*"))
    model = keras.models.load_model(tmp_path / "artifacts/train/model.keras")
    assert model.output_shape == (None, 3)
    assert json.loads((tmp_path / "metrics/train.json").read_text())["epochs_run"] == 2
    assert not (tmp_path / ".cache/train-backup").exists() or not any((tmp_path / ".cache/train-backup").iterdir())
