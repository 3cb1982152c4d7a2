"""Predicts with an exported model: image files (the top-k class names and probabilities, one line each), table
files (one prediction a row, as CSV: pipelines/predict_table.py) or documents (text files, or lines on stdin: the
top-k classes of each, pipelines/predict_text.py).

    python -m pipelines.predict --model artifacts/export/saved_model/mnist_5k-classifier/3 digit.png
    python -m pipelines.predict --model artifacts/export/model_int8.tflite --top-k 3 *.png
    python -m pipelines.predict --model models:/mnist_5k-classifier@champion --invert auto photo.jpg
    python -m pipelines.predict --model models:/autompg-regressor@champion cars.csv --output predictions.csv

Reads SavedModel directories, .tflite files (class names from labels.txt beside them) and MLflow
model URIs, nothing else: a .h5, .keras or pickle file can run arbitrary code when loaded, and so can a
SavedModel (its graph may read and write files): one loads only when its digest is what this project's export
recorded (tfpipe/model_trust.py), or with --trust-model, deliberately. Each
image is decoded by the one decoder ingest uses (tfpipe/images.py) with the rules the model was trained
with (exported with it: the SavedModel's `decoding`, decoding.json beside a .tflite): EXIF orientation
applied, converted to the model's channel count, transparency composited on the same background, and an
image of another size centre-cropped and resized to the model's, so serving sees the pixels training saw.
`--invert auto` is for photos of dark digits on light paper (the textbook's "predict a given
image"): MNIST digits are light on black, so an image whose border is light is inverted and its
contrast stretched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import tfpipe  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from tfpipe import model_trust, tflite
from tfpipe.images import DecodeRules, NotAnImage, decode_image, fit_image
from tfpipe.redaction import redact

INVERT_CHOICES = ("never", "auto", "always")


class ModelLoadError(ValueError):
    """The --model argument is not a model this command loads."""


class ImageLoadError(ValueError):
    """A file is not an image Pillow can read."""


def open_saved_model(directory: Path):
    """The export's SavedModel as what predicts with it: a table's model (its schema in `encoding`) or an image
    classifier."""
    import tensorflow as tf

    from pipelines.predict_table import TableSavedModel
    from pipelines.predict_text import TextSavedModel

    loaded = tf.saved_model.load(str(directory))
    if "serving_default" not in loaded.signatures:
        raise ModelLoadError(f"{directory}: SavedModel has no serving_default signature")
    if not hasattr(loaded, "encoding"):
        return SavedModelClassifier(directory, loaded)
    kind = json.loads(loaded.encoding.numpy().decode()).get("kind", "table")
    return TextSavedModel(loaded) if kind == "text" else TableSavedModel(loaded)


class SavedModelClassifier:
    """The export's serving signature: uint8 [N,H,W,C] in, probabilities out."""

    def __init__(self, directory: Path, loaded=None):
        import tensorflow as tf

        loaded = loaded if loaded is not None else tf.saved_model.load(str(directory))
        if "serving_default" not in loaded.signatures:
            raise ModelLoadError(f"{directory}: SavedModel has no serving_default signature")
        self._loaded = loaded  # the signature needs its object kept alive
        self._serve = loaded.signatures["serving_default"]
        ((name, spec),) = self._serve.structured_input_signature[1].items()
        if spec.dtype != tf.uint8 or spec.shape.rank != 4:
            raise ModelLoadError(f"{directory}: serving_default takes {spec}, not uint8 images [N,H,W,C]")
        self._input_name = name
        self.image_shape = tuple(int(size) for size in spec.shape[1:])
        names = getattr(loaded, "class_names", None)
        self.class_names = [name.decode() for name in names.numpy()] if names is not None else None
        decoding = getattr(loaded, "decoding", None)  # older exports have none: the defaults apply
        self.decoding = json.loads(decoding.numpy().decode()) if decoding is not None else {}

    def predict(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self._serve(**{self._input_name: tf.constant(images)})["probabilities"].numpy()


class TFLiteFileClassifier(tflite.TFLiteClassifier):
    def __init__(self, path: Path):
        super().__init__(path)
        labels = path.parent / tflite.LABELS_FILE
        self.class_names = tflite.read_labels(labels) if labels.is_file() else None
        decoding = path.parent / tflite.DECODING_FILE
        self.decoding = json.loads(decoding.read_text()) if decoding.is_file() else {}


def load_mlflow_model(uri: str, trust: bool = False) -> SavedModelClassifier:
    """An MLflow model (models:/name@alias, models:/name/<version>, runs:/...), downloaded, checked against the
    digest its export recorded on the registered version, then loaded."""
    import tempfile

    import mlflow

    from tfpipe import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    scratch = tempfile.mkdtemp(prefix="tfpipe-predict-")
    try:
        which, recorded = model_trust.registered_digest(uri)
        directory = model_trust.download_mlflow_model(uri, Path(scratch))
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    except Exception as error:  # noqa: BLE001  (MlflowException, or a store error: the message says which)
        raise ModelLoadError(
            redact(f"{uri}: cannot download the model from {tracking.tracking_uri()}: {error}")
        ) from None
    if recorded is None and uri.startswith("models:/") and not trust:
        raise ModelLoadError(
            f"{uri}: {which} carries no digest of its SavedModel ({model_trust.DIGEST_TAG}: exported before tfpipe "
            f"recorded one, or not by tfpipe); {model_trust.WHY}. Re-export it, or load it deliberately with "
            "--trust-model"
        )
    try:
        model_trust.check_saved_model(directory, recorded=recorded, trust=trust)
    except model_trust.UntrustedModel as error:
        raise ModelLoadError(str(error)) from None
    return open_saved_model(directory)


def load_classifier(model: str, trust: bool = False):
    """A SavedModel directory, a .tflite file or an MLflow model URI; anything else is refused by name. A SavedModel
    loads only when its digest matches what our export recorded, unless trust (tfpipe/model_trust.py)."""
    if model.startswith(("models:/", "runs:/")):
        return load_mlflow_model(model, trust)
    path = Path(model)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ModelLoadError(
                f"{path}: a directory without saved_model.pb; give a SavedModel version directory, "
                "e.g. artifacts/export/saved_model/<name>/<version>"
            )
        try:
            model_trust.check_saved_model(path, trust=trust)
        except model_trust.UntrustedModel as error:
            raise ModelLoadError(str(error)) from None
        return open_saved_model(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or directory")
    if path.suffix == ".tflite":
        from pipelines.predict_table import TableTFLite, is_table_tflite
        from pipelines.predict_text import TextTFLite, is_text_tflite

        try:
            if is_text_tflite(path):
                return TextTFLite(path)
            return TableTFLite(path) if is_table_tflite(path) else TFLiteFileClassifier(path)
        except tflite.InvalidModelError as error:
            raise ModelLoadError(str(error)) from None
    raise ModelLoadError(
        f"{path}: this command loads only SavedModel directories, .tflite files and "
        "models:/ URIs (a .h5, .keras or pickle file can run code when loaded, so it is refused)"
    )


def should_invert(gray: np.ndarray) -> bool:
    """A light border means a light background: dark ink on paper, the opposite of MNIST."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) > 127


def decode_rules(decoding: dict, channels: int) -> DecodeRules:
    """The model's decoding rules (its channel count wins: it is what the serving signature takes)."""
    return DecodeRules.from_dict({**decoding, "channels": channels})


def load_image(
    path: Path, image_shape: tuple[int, int, int], invert: str = "never", decoding: dict | None = None
) -> np.ndarray:
    """Any image file as uint8 [H,W,C] in the model's size and channel count, decoded as ingest decodes."""
    height, width, channels = image_shape
    try:
        image = decode_image(path.read_bytes(), decode_rules(decoding or {}, channels)).pixels
    except (NotAnImage, OSError, ValueError) as error:
        raise ImageLoadError(f"{path}: not an image that can be read (PNG, JPEG, WebP, TIFF, ...): {error}") from None
    gray = image[..., 0] if channels == 1 else image.mean(axis=2)
    if invert == "always" or (invert == "auto" and should_invert(gray)):
        image = clean_inverted(255 - image)
    if image.shape[:2] != (height, width):
        image = fit_image(image, height, width)
    return image


def clean_inverted(array: np.ndarray) -> np.ndarray:
    """Paper is never white nor ink black: the border's level (the paper) becomes 0, as MNIST's
    background is, and the brightest ink 255."""
    values = array.astype(np.float32)
    border = np.concatenate(
        [values[0].reshape(-1), values[-1].reshape(-1), values[:, 0].reshape(-1), values[:, -1].reshape(-1)]
    )
    values = np.clip(values - np.percentile(border, 90), 0, None)
    top = np.percentile(values, 99.5)
    return np.clip(values * (255 / top), 0, 255).astype(np.uint8) if top > 0 else values.astype(np.uint8)


def top_k(probabilities: np.ndarray, class_names: list[str] | None, k: int) -> list[tuple[str, float]]:
    order = np.argsort(probabilities)[::-1][:k]
    names = class_names or [str(index) for index in range(len(probabilities))]
    return [(names[index], float(probabilities[index])) for index in order]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.predict", description=__doc__.splitlines()[0])
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="image files (PNG, JPEG, ...; any size or channel count); for a table's model, table files (CSV, TSV, "
        "JSON lines, Parquet; - reads CSV on stdin); for a text model, text files (- reads one document a line)",
    )
    parser.add_argument("--output", type=Path, help="a table's model: write the predictions' CSV here (default stdout)")
    parser.add_argument("--model", required=True, help="SavedModel directory, .tflite file or models:/<name>@champion")
    parser.add_argument("--top-k", type=int, default=3, help="how many classes to print per image (default 3)")
    parser.add_argument(
        "--invert",
        choices=INVERT_CHOICES,
        default="never",
        help="invert light-background images: 'auto' for photos of digits on paper (default never)",
    )
    parser.add_argument(
        "--trust-model",
        action="store_true",
        help="load a SavedModel this project's export did not write (it runs its graph: only if you trust it)",
    )
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        classifier = load_classifier(args.model, trust=args.trust_model)
    except (ModelLoadError, FileNotFoundError) as error:
        print(f"error: {redact(error)}", file=sys.stderr)
        return 2
    if hasattr(classifier, "predict_texts"):  # a text model: documents
        from pipelines import predict_text

        return predict_text.main(classifier, args.images, args.top_k)
    if hasattr(classifier, "encoding"):  # a table's model: files of rows
        from pipelines import predict_table

        return predict_table.main(classifier, args.images, args.output)
    failed = 0
    for path in args.images:
        try:
            image = load_image(path, classifier.image_shape, args.invert, classifier.decoding)
        except ImageLoadError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        probabilities = classifier.predict(image[np.newaxis])[0]
        ranked = top_k(probabilities, classifier.class_names, args.top_k)
        print(f"{path}: " + ", ".join(f"{name} {probability:.4f}" for name, probability in ranked))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
