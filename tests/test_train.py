"""Training: the input pipeline, the model, NaN handling and what a run records."""

import json

import mlflow
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components.train import fit as train_fit
from components.train import model as train_model
from components.train import schedule as train_schedule
from components.train import stage as train
from components.train.data import build_augmenter, build_input_pipeline
from tfpipe import records
from tfpipe.config import AugmentationParams, TrainParams

TINY = "train:\n  model: mlp\n  epochs: 2\n  batch_size: 16\n  augmentation:\n    rotation: 0.05\n"


def test_input_pipeline_batches_stored_pixels_and_augments_only_train(prepared_dir):
    augmenter = build_augmenter(AugmentationParams(translation=0.2), seed=1)
    split = records.read_split(prepared_dir, "train")
    augmented = build_input_pipeline(split, 8, training=True, shuffle_buffer=100, seed=1, augmenter=augmenter)
    plain = build_input_pipeline(split, 8, training=False, augmenter=augmenter)
    images, labels = next(iter(plain))
    assert images.dtype == tf.uint8 and images.shape == (8, 12, 12, 1) and labels.dtype == tf.int32
    raw = np.stack([image for image, _ in split.take(8).as_numpy_iterator()])
    np.testing.assert_array_equal(images.numpy(), raw)  # eval data is never augmented
    augmented_images, _ = next(iter(augmented))
    assert augmented_images.dtype == tf.float32 and float(tf.reduce_max(augmented_images)) > 1.0  # pixels stay 0..255
    assert sum(int(batch[0].shape[0]) for batch in augmented) == 72


def test_no_augmentation_means_no_augmenter():
    assert build_augmenter(AugmentationParams(), seed=0) is None


def test_every_augmentation_keeps_shape_and_changes_pixels():
    images = tf.constant(np.random.default_rng(0).integers(0, 255, size=(16, 12, 12, 1)).astype(np.float32))
    for params in [
        AugmentationParams(flip="horizontal"),
        AugmentationParams(rotation=0.1),
        AugmentationParams(zoom=0.2),
        AugmentationParams(translation=0.2),
        AugmentationParams(contrast=0.5),
        AugmentationParams(crop_padding=0.25),
        AugmentationParams(erasing=1.0),
    ]:
        augmented = build_augmenter(params, seed=3)(images, training=True)
        assert augmented.shape == images.shape, params
        assert not np.array_equal(augmented.numpy(), images.numpy()), params
        np.testing.assert_array_equal(build_augmenter(params, seed=3)(images, training=False).numpy(), images.numpy())


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_every_optimizer_with_smoothing_and_clipping_trains(optimizer):
    params = TrainParams(
        optimizer=optimizer,
        nesterov=True,
        label_smoothing=0.1,
        clipnorm=1.0,
        lr_schedule="exponential",
        epochs=2,
        early_stopping_patience=4,
    )
    images = np.random.default_rng(0).integers(0, 255, size=(32, 12, 12, 1)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((images, np.arange(32) % 3)).batch(8)
    model = _tiny_model()
    train_schedule.compile_model(model, params, steps_per_epoch=4, jit_compile=False)
    history = train_fit.fit_model(model, data, None, params, callbacks=[])
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


def _tiny_model():
    preprocessor = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Rescaling(1 / 255)], name="preprocessing")
    classifier = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Flatten(), keras.layers.Dense(3)], name="mlp")
    return train_model.build_training_model(preprocessor, classifier)


def test_nan_loss_fails_the_stage_instead_of_returning_a_model():
    images = np.full((32, 12, 12, 1), np.nan, dtype=np.float32)
    data = tf.data.Dataset.from_tensor_slices((images, np.zeros(32, np.int32))).batch(8)
    model = _tiny_model()
    params = TrainParams(epochs=3, early_stopping_patience=4)
    train_schedule.compile_model(model, params, steps_per_epoch=4, jit_compile=False)
    with pytest.raises(train_fit.TrainingDiverged, match="lower train.learning_rate"):
        train_fit.fit_model(model, data, None, params, callbacks=[])


def test_cosine_schedule_with_warmup_peaks_at_the_learning_rate():
    schedule = train_schedule.build_learning_rate(
        TrainParams(learning_rate=0.01, lr_schedule="cosine", warmup_epochs=1, epochs=4), steps_per_epoch=10
    )
    assert float(schedule(0)) == pytest.approx(0.001)
    assert float(schedule(10)) == pytest.approx(0.01)
    assert float(schedule(40)) < 0.001


def test_main_trains_and_records_the_run(prepared_dir, tmp_path, monkeypatch, mlflow_store):
    from components.preprocess import stage as preprocess

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
    assert list((tmp_path / run.data.tags["tensorboard.dir"] / "train").glob("events.out.tfevents.*"))
    model = keras.models.load_model(tmp_path / "artifacts/train/model.keras", compile=False)
    assert model.output_shape == (None, 3)
    assert json.loads((tmp_path / "metrics/train.json").read_text())["epochs"] == 2
    described = json.loads((tmp_path / "artifacts/train/model.json").read_text())
    assert described["epochs_run"] == 2 and described["run_id"] == run.info.run_id
    assert described["params"]["epochs"] == 2 and "val_accuracy" in described["final_epoch"]
    assert not (tmp_path / ".cache/train-backup").exists() or not any((tmp_path / ".cache/train-backup").iterdir())
