"""The image kind's export: the trained model itself is converted (it takes raw pixels), the fine-tunes and the int8
calibration read the train split's images, labels.txt and decoding.json ship beside the .tflite files, and the
SavedModel takes uint8 images (components/export/serving.py). Reads data/prepared, writes nothing itself."""

from __future__ import annotations

import json

from components.export.examples import Examples
from components.export.prepared import Prepared
from components.export.serving import ServingModule, check_serving_parity, register_serving_model
from tfpipe import paths, records, tflite


def card_inputs(manifest: dict) -> tuple[str, ...]:
    """The model card's lines on what the model takes and returns."""
    height, width, channels = manifest["image_shape"]
    decoding = manifest.get("decoding") or {}
    colour = {1: "greyscale (colour converted by luma)", 3: "RGB (greyscale repeated)"}.get(channels, f"{channels}")
    return (
        f"- Input: one {height}×{width} image, {colour}, uint8 pixels 0–255 (the SavedModel's `serving_default` also "
        "takes encoded image bytes and decodes them as ingest did)",
        "- Decoding, as at training: EXIF orientation applied, transparency composited on grey level "
        f"{decoding.get('alpha_background', 255)}, 16-bit scaled to 8 bits"
        + (
            ", other sizes centre-cropped and resized to the training size"
            if decoding.get("resize")
            else "; images of another size are refused by ingest and resized by the served model"
        ),
        "- Output: a probability for each class, in the order of `labels.txt`",
    )


def prepare(model, description: dict, manifest: dict) -> Prepared:
    test = records.load_split_arrays(paths.PREPARED, "test")  # images, labels
    class_names, decoding = description["class_names"], manifest.get("decoding", {})
    module = ServingModule(model, class_names, decoding)

    def register(saved_model, model_name: str, tags: dict) -> int:
        return register_serving_model(
            module, model_name=model_name, example_images=test[0][:2], num_classes=len(class_names), tags=tags
        )

    return Prepared(
        task="classification",
        deployable=model,
        classifier=description["model"],
        train=Examples.from_split(paths.PREPARED, "train"),  # streamed: a split of any size fits
        val=Examples.from_split(paths.PREPARED, "val") if "val" in manifest["splits"] else None,
        test=test,
        files={
            tflite.LABELS_FILE: "".join(f"{name}\n" for name in class_names).encode(),
            tflite.DECODING_FILE: (json.dumps(decoding, indent=2, sort_keys=True) + "\n").encode(),
        },
        module=module,
        check_parity=lambda saved_model: check_serving_parity(saved_model, model, test[0]),
        register=register,
        card_inputs=card_inputs(manifest),
        unit="images",
    )
