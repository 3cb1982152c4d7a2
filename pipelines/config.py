"""Reads params.yaml into frozen, validated dataclasses; an unknown or mistyped key is an error."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

import pydantic
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from ruamel.yaml import YAML, YAMLError

PARAMS_FILE = Path("params.yaml")

# extra="forbid" turns a typo such as `learning_rat` into an error instead of a silent default;
# parse_params validates in strict mode, so "0.5" is not a number and "yes" not a boolean.
STRICT = ConfigDict(extra="forbid")
Positive = Annotated[int, Field(ge=1)]
# Every integer has a range: a typo such as `epochs: 1e23` or `seed: -1` is an error naming its key, not a
# traceback deep inside TensorFlow. Seeds are what numpy and TensorFlow both take.
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
Epochs = Annotated[int, Field(ge=1, le=10_000)]
Side = Annotated[int, Field(ge=1, le=8192)]
# A name that becomes a path and an MLflow name: letters, digits, '_', '.', '-', not starting with a dot.
SAFE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
Auto = Literal["auto"]  # resolved from the data when the stage runs; the resolved value is logged to MLflow
# Keys that moved to another section: the error says where they went.
MOVED_KEYS = {
    "train.log_augmented_images": "tracking.log_augmented_images",
    "train.histogram_freq": "tracking.histogram_freq",
    "data.raw_dir": "dvc.yaml's vars (paths.raw): the raw folder is a DVC dependency, not a param",
}


class ParamsError(ValueError):
    """Raised when params.yaml is missing, unreadable or does not match the schema."""


def check_safe_name(name: str | None, what: str) -> str | None:
    """A name that becomes a path (and an MLflow name) matches SAFE_NAME: no separator, no leading dot, no `..`
    to climb out of the project, at most 100 characters."""
    if name is not None and not re.fullmatch(SAFE_NAME, name):
        raise ValueError(
            f"expected 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit (it names {what}); "
            "a path elsewhere is not a name"
        )
    return name


@dataclass(frozen=True, config=STRICT)
class DataParams:
    source: str = "mnist_5k"  # mnist_5k | tfds:<name> | folder (pipelines/materialize.py)
    # The dataset's name: its MLflow experiment and, unless export.model_name is set, its registered
    # model (<name>-classifier). null: derived from source ("tfds:cifar10" -> "tfds-cifar10").
    name: str | None = None

    @pydantic.field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        # tfds names: a builder, optionally a config and a version (cifar10, imagenet2012/subset, mnist:3.0.1).
        if source in ("mnist_5k", "folder") or re.fullmatch(
            r"tfds:[a-z0-9_]{1,80}(/[A-Za-z0-9_.]{1,80})?(:[0-9.]{1,20})?", source
        ):
            return source
        raise ValueError("expected mnist_5k, folder or tfds:<name> (e.g. tfds:fashion_mnist)")

    @pydantic.field_validator("name")
    @classmethod
    def _usable_name(cls, name: str | None) -> str | None:
        return check_safe_name(name, "an MLflow experiment, a registered model and a folder")


@dataclass(frozen=True, config=STRICT)
class ExpectationParams:
    image_height: int = Field(28, ge=1, le=8192)
    image_width: int = Field(28, ge=1, le=8192)
    channels: Literal[1, 3] = 1
    pixel_min: int = Field(0, ge=0, le=255)
    pixel_max: int = Field(255, ge=0, le=255)
    num_classes: int | None = Field(
        None, ge=2, le=100_000
    )  # null: any number (at least 2); a class that disappears fails when set
    min_per_class: int = Field(10, ge=1, le=10_000_000)
    min_class_share: float = Field(0.0, ge=0, le=1)
    max_class_share: float = Field(0.5, gt=0, le=1)
    image_mean_min: float = Field(5.0, ge=0, le=255)
    image_mean_max: float = Field(200.0, ge=0, le=255)
    # Bits that may differ between the 256-bit perceptual hashes of two images for them to count as near
    # duplicates: grouped into one split, and a leak when the user's own train/ and test/ folders part them.
    # -1 turns near duplicates off (identical images are still grouped).
    near_duplicate_max_distance: int = Field(8, ge=-1, le=31)

    @pydantic.model_validator(mode="after")
    def _ordered_bounds(self):
        for low, high in (
            ("pixel_min", "pixel_max"),
            ("image_mean_min", "image_mean_max"),
            ("min_class_share", "max_class_share"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) is above {high} ({getattr(self, high)})")
        return self


@dataclass(frozen=True, config=STRICT)
class IngestParams:
    seed: Seed = 42
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    num_shards: int = Field(2, ge=1, le=1024)
    # Decompression-bomb guard: an image with more pixels is an error before it is decoded
    # (at most Pillow's own hard limit, 2 x Image.MAX_IMAGE_PIXELS).
    max_image_pixels: int = Field(25_000_000, ge=1, le=178_956_970)
    samples_per_class: int = Field(8, ge=1, le=32)  # columns of reports/ingest/samples.png
    resize: bool = False  # true: images of another size are centre-cropped and resized to the expected size
    alpha_background: int = Field(255, ge=0, le=255)  # grey level transparent pixels are composited on (255 white)
    expectations: ExpectationParams = ExpectationParams()

    @pydantic.model_validator(mode="after")
    def _fractions_leave_a_train_split(self):
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be below 1, got {self.val_fraction + self.test_fraction}"
            )
        return self


@dataclass(frozen=True, config=STRICT)
class PreprocessParams:
    """The model's input size. auto: the data's size, scaled up (aspect kept) to the smallest side the model was
    designed for (models/registry.py: lenet5 28, vgg13 and resnet18 32, the backbones 32, mlp any)."""

    image_height: Side | Auto = "auto"
    image_width: Side | Auto = "auto"


@dataclass(frozen=True, config=STRICT)
class AugmentationParams:
    """Random transforms applied to the train split only; 0 disables one."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    rotation: float = Field(0.0, ge=0, le=0.5)  # fraction of a full turn
    zoom: float = Field(0.0, ge=0, lt=1)
    translation: float = Field(0.0, ge=0, lt=1)  # fraction of height/width
    contrast: float = Field(0.0, ge=0, lt=1)
    crop_padding: float = Field(
        0.0, ge=0, le=0.5
    )  # fraction of height/width padded on each side before a random crop back to size
    erasing: float = Field(0.0, ge=0, le=1)  # probability of erasing a random rectangle


# The augmentation settings train.augmentation: auto chooses among (components/train_search.py holds each one's
# transforms): shift (small rotation, zoom and translation: the digits' recipe), the same plus horizontal flips,
# and CIFAR's random crop after 4 px of padding plus horizontal flips.
AugmentationPreset = Literal["shift", "shift_flip", "crop_flip"]


@dataclass(frozen=True, config=STRICT)
class SearchParams:
    """train.model: auto and train.augmentation: auto: a short seeded comparison on the validation split. Each
    candidate trains `fraction` of the final run's epochs (at least one) on a learning-rate schedule of its own,
    complete in that time; the winner then trains from the start."""

    models: tuple[str, ...] = ("lenet5_s2d", "resnet_small")  # registered models (models/registry.py)
    augmentations: tuple[AugmentationPreset, ...] = ("shift", "shift_flip", "crop_flip")
    fraction: float = Field(0.1, gt=0, le=1)

    @pydantic.model_validator(mode="after")
    def _not_empty(self):
        for name in ("models", "augmentations"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{name} must list at least one candidate, each once; got {list(values)}")
        return self


@dataclass(frozen=True, config=STRICT)
class BackboneParams:
    """Keras Applications backbones only (models/applications.py); ignored by the other models."""

    weights: str = "imagenet"  # imagenet (the Keras cache, never downloaded) | none | path to a .h5 weights file
    head_epochs: int = Field(3, ge=0, le=10_000)  # phase 1: the new head trains on the frozen backbone
    fine_tune_layers: int = Field(
        20, ge=0, le=10_000
    )  # phase 2: the top N backbone layers train too (batch norm stays frozen)
    fine_tune_learning_rate: float = Field(1e-5, gt=0)  # phase 2's rate
    min_image_size: int = Field(32, ge=32, le=1024)  # smaller images are resized up to this inside the model


@dataclass(frozen=True, config=STRICT)
class TrainParams:
    model: str = "lenet5"  # a registered model, or auto: the search picks one of search.models
    # Options of the model's builder beyond the common ones (resnet_small: width, depth); checked against its
    # signature when the stage starts.
    model_options: dict[str, int | float | bool | str] = Field(default_factory=dict)
    epochs: Epochs | Auto = "auto"  # auto: resolve_train_schedule (about 2,500 optimizer steps, 20..300 epochs)
    batch_size: Annotated[int, Field(ge=1, le=65_536)] | Auto = (
        "auto"  # auto: the power of two nearest sqrt(train images), 16..128
    )
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd and rmsprop
    nesterov: bool = False  # sgd
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    clipnorm: float | None = Field(None, gt=0)  # gradient clipping by norm; null disables
    lr_schedule: Literal["constant", "cosine", "exponential"] = "constant"
    warmup_epochs: int = Field(0, ge=0, le=10_000)
    dropout_rate: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)  # L2 on conv/dense kernels
    batch_norm: bool = False
    augmentation: AugmentationParams | Auto = AugmentationParams()  # auto: the search picks a preset
    search: SearchParams = SearchParams()
    early_stopping_patience: Epochs | Auto = "auto"  # auto: 15% of the epochs, at least 6
    shuffle_buffer: int = Field(5000, ge=1, le=10_000_000)
    cache: str = "memory"  # memory | none | a file path prefix for splits larger than memory
    seed: Seed = 42
    deterministic: bool = True
    # Hardware: "auto" picks mixed precision and XLA on a capable GPU, float32 and no XLA on CPU.
    mixed_precision: Literal["auto", "off", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: Literal["auto", "on", "off"] = "auto"
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    steps_per_execution: int = Field(1, ge=1, le=10_000)
    backbone: BackboneParams = BackboneParams()


@dataclass(frozen=True, config=STRICT)
class TrackingParams:
    """Logging only: train reads it, but no stage lists it in dvc.yaml, so changing it retrains nothing."""

    log_augmented_images: int = Field(8, ge=0, le=256)  # an augmented batch shown in TensorBoard; 0 disables
    histogram_freq: int = Field(0, ge=0, le=10_000)  # weight histograms in TensorBoard every N epochs; 0 disables


@dataclass(frozen=True, config=STRICT)
class EvaluateParams:
    """The promotion gate's thresholds; the champion is compared on the candidate's own test split."""

    top_k: int = Field(3, ge=1, le=1000)
    # The floor: a number is the user's own; auto is the classical baseline's test accuracy plus
    # min_margin_over_baseline (what the schema command writes for a dataset of the user's own).
    min_accuracy: Annotated[float, Field(ge=0, le=1)] | Auto = 0.97
    max_accuracy_regression: float = Field(0.01, ge=0, le=1)  # vs the champion's test accuracy
    max_class_recall_drop: float = Field(0.1, ge=0, le=1)  # vs the champion's recall of each class
    # test accuracy - the classical baseline's (components/baseline.py, same splits) must be at least this
    min_margin_over_baseline: float = Field(0.0, ge=-1, le=1)


ExportVariant = Literal["float32", "float16", "dynamic_range", "int8", "pruned_int8", "qat_int8", "pqat_int8"]


@dataclass(frozen=True, config=STRICT)
class ExportParams:
    """The exported variants, their fine-tunes, how they are measured, and the int8 promotion gate."""

    model_name: str | None = None  # the registered model; null: <data name>-classifier, one per dataset

    @pydantic.field_validator("model_name")
    @classmethod
    def _usable_model_name(cls, name: str | None) -> str | None:
        return check_safe_name(name, "a registered model and the folder artifacts/export/saved_model/<name>")

    variants: tuple[ExportVariant, ...] = (
        "float32",
        "float16",
        "dynamic_range",
        "int8",
        "pruned_int8",
        "qat_int8",
        "pqat_int8",
    )
    representative_samples: int = Field(200, ge=1, le=100_000)  # train images that calibrate full-integer quantization
    seed: Seed = 42
    prune_target_sparsity: float = Field(0.75, ge=0, lt=1)
    prune_epochs: int = Field(4, ge=1, le=1000)
    prune_end_fraction: float = Field(0.5, gt=0, le=1)  # the sparsity ramp ends here; the rest recovers accuracy
    prune_learning_rate: float = Field(2e-4, gt=0)
    prune_min_weights: int = Field(1000, ge=0, le=2**31 - 1)  # smaller kernels (LeNet's first conv: 150) stay dense
    qat_epochs: int = Field(1, ge=1, le=1000)  # quantization-aware fine-tune, for qat_int8 and pqat_int8
    qat_learning_rate: float = Field(1e-4, gt=0)
    num_threads: int = Field(1, ge=1, le=1024)  # every variant is measured with the same interpreter settings
    latency_runs: int = Field(300, ge=10, le=1_000_000)
    throughput_batch_size: int = Field(64, ge=1, le=65_536)
    gate_variant: ExportVariant = "int8"  # the int8 variant that must pass the gate for `champion`
    max_int8_accuracy_drop: float = Field(0.002, ge=0, le=1)  # vs the float Keras model, whole test split
    max_int8_class_drop: float = Field(0.04, ge=0, le=1)  # per-class recall vs the float model

    @pydantic.model_validator(mode="after")
    def _gate_variant_is_exported(self):
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants lists a variant twice: {list(self.variants)}")
        if self.gate_variant not in self.variants:
            raise ValueError(f"gate_variant {self.gate_variant!r} is not in variants {list(self.variants)}")
        if self.gate_variant in ("float32", "float16", "dynamic_range"):
            raise ValueError(f"gate_variant must be a full-integer variant (*int8), got {self.gate_variant!r}")
        return self


@dataclass(frozen=True, config=STRICT)
class Params:
    data: DataParams = DataParams()
    ingest: IngestParams = IngestParams()
    preprocess: PreprocessParams = PreprocessParams()
    train: TrainParams = TrainParams()
    tracking: TrackingParams = TrackingParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()


def dataset_name(params: Params) -> str:
    """data.name, else derived from data.source: the MLflow experiment ("tfds:cifar10" -> "tfds-cifar10")."""
    return params.data.name or params.data.source.replace(":", "-").replace("/", "-")


def registered_model_name(params: Params) -> str:
    """export.model_name, else one registered model per dataset: "<dataset name>-classifier"."""
    return params.export.model_name or f"{dataset_name(params)}-classifier"


MAX_PARAMS_BYTES = 1_000_000  # params.yaml is a page of settings; a megabyte is not a mistake
MAX_PARAMS_NODES = 100_000  # values after YAML aliases expand: nested aliases reach billions ("billion laughs")


def expanded_nodes(text: str) -> int:
    """How many values the document holds once every alias (*name) is expanded, counted from the parser's events
    without building anything (pure-Python parser: lazy)."""
    from ruamel.yaml import events

    sizes: dict[str, int] = {}  # anchor -> the values its node holds
    stack: list[list] = []  # open collections: [anchor, values so far]
    total = 0
    for event in YAML(typ="rt", pure=True).parse(text):
        if isinstance(event, events.CollectionStartEvent):
            stack.append([event.anchor, 1])
            continue
        if isinstance(event, events.CollectionEndEvent):
            anchor, count = stack.pop()
        elif isinstance(event, events.ScalarEvent):
            anchor, count = event.anchor, 1
        elif isinstance(event, events.AliasEvent):
            anchor, count = None, sizes.get(event.anchor, 1)
        else:
            continue
        if anchor:
            sizes[anchor] = count
        if stack:
            stack[-1][1] += count
        else:
            total += count
    return total


def yaml_load(text: str, path: Path | str = PARAMS_FILE):
    """A YAML document as plain data, read as DVC reads params.yaml (ruamel.yaml's safe loader, YAML 1.2): `1e-5`
    is a float, `on` a string (`jit_compile: on`), `010` is ten, so a stage sees what `dvc params diff` shows.

    Its size, and its size once aliases expand, are bounded before anything is built (an alias bomb exhausts
    memory in seconds): a ParamsError names the file and the limit."""
    if len(text) > MAX_PARAMS_BYTES:
        raise ParamsError(
            f"{path}: {len(text):,} characters, more than the {MAX_PARAMS_BYTES:,} a params file may hold"
        )
    try:
        nodes = expanded_nodes(text)
    except YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    if nodes > MAX_PARAMS_NODES:
        raise ParamsError(
            f"{path}: {nodes:,} values once its YAML aliases (*name) expand, more than {MAX_PARAMS_NODES:,}: nested "
            "aliases expand exponentially (an alias bomb); write the values out"
        )
    return YAML(typ="safe").load(text)


def _describe(error: pydantic.ValidationError, path: Path) -> str:
    lines, seen = [f"{path}: {{count}} invalid parameter(s)"], {}
    for item in error.errors():
        # A union (an integer or "auto") reports one error per branch, tagged "constrained-int", "literal['auto']":
        # one line a key.
        # A union with a section (a mapping or "auto") tags the section's branch by its class name.
        key = ".".join(
            str(part) for part in item["loc"] if not re.search(r"[-\[]", str(part)) and not str(part).endswith("Params")
        )
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            moved = f"; it moved to {MOVED_KEYS[key]}" if key in MOVED_KEYS else ""
            seen[key] = f"  {key}: unknown key (check the spelling; see the schema in pipelines/config.py){moved}"
        elif key in seen:
            seen[key] = seen[key].replace(" (got ", f", or {item['msg'][0].lower()}{item['msg'][1:]} (got ", 1)
        else:
            value = item.get("input")
            seen[key] = f"  {key}: {item['msg']} (got {value!r}, {_yaml_type(value)})"
    lines += seen.values()
    return "\n".join(lines).replace("{count}", str(len(seen)), 1)


def _yaml_type(value) -> str:
    """How YAML read a value, for error messages: '0.5' in quotes is a string, not a number."""
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string (quoted or not a number)",
        list: "a list",
        dict: "a mapping",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def parse_params(raw: dict, path: Path = PARAMS_FILE) -> Params:
    """Validates a params mapping strictly (no "0.5" -> 0.5, "yes" -> True, true -> 1); raises ParamsError naming
    every bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        document = json.dumps(
            raw
        )  # JSON's strict mode: a list is a valid tuple, an integer a valid float, nothing else converts
    except (TypeError, ValueError) as error:
        raise ParamsError(
            f"{path}: a value YAML read as neither text, number, boolean, list nor mapping ({error}); quote it"
        ) from None
    try:
        return pydantic.TypeAdapter(Params).validate_json(document, strict=True)
    except pydantic.ValidationError as error:
        raise ParamsError(_describe(error, path)) from None


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Reads and validates params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found (run from the repository root)")
    try:
        raw = yaml_load(path.read_text(), path) or {}
    except YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    return parse_params(raw, path)


def merge(base: dict, overrides: dict) -> dict:
    """Nested dict merge: overrides win, sections not mentioned stay as they are."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = (
            merge(base.get(key, {}), value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return merged


def update_params_file(
    overrides: dict, path: Path | str = PARAMS_FILE, comments: dict[str, str] | None = None, validate: bool = True
) -> str:
    """Merges `overrides` into params.yaml keeping its comments and layout (ruamel.yaml round trip); returns a
    unified diff.

    The merged params are validated first (unless validate=False): a change that would not load is
    refused and nothing is written. `comments` sets end-of-line comments by dotted key ("ingest.expectations": "# ...").
    """
    import difflib
    import io

    from pipelines.outputs import write_text

    path = Path(path)
    before = path.read_text() if path.is_file() else ""
    if validate:
        parse_params(merge(yaml_load(before, path) or {}, overrides), path)
    round_trip = YAML()
    round_trip.width = 4096  # never re-wrap a long line or flow list
    round_trip.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    document = round_trip.load(before) if before.strip() else {}

    def update(node, values):
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                update(node[key], value)
            else:
                node[key] = value

    update(document, overrides)
    for dotted, comment in (comments or {}).items():
        *parents, key = dotted.split(".")
        node = document
        for parent in parents:
            node = node[parent]
        existing = node.ca.items.get(key, [None, None, None, None])[2]
        node.yaml_add_eol_comment(
            comment if comment.startswith("#") else f"# {comment}",
            key,
            column=existing.column if existing is not None else None,
        )
    buffer = io.StringIO()
    round_trip.dump(document, buffer)
    after = buffer.getvalue()
    if after != before:
        write_text(path, after)
    return "".join(
        difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True), str(path), str(path))
    )


# "auto" settings: dataset-aware defaults that suit 200 images as well as 60,000. mnist_5k's 4,000
# train images resolve to batch 64, 40 epochs, patience 6 (chosen on its validation split, benchmarks/RESULTS.md).
TARGET_STEPS = 2500  # optimizer steps an auto schedule aims at
EPOCH_RANGE = (20, 300)
BATCH_RANGE = (16, 128)


def resolve_train_schedule(params: TrainParams, train_count: int) -> TrainParams:
    """TrainParams with batch_size, epochs and early_stopping_patience resolved for a train split of train_count
    images."""
    import dataclasses
    import math

    batch_size = params.batch_size
    if batch_size == "auto":
        batch_size = int(
            min(max(2 ** round(math.log2(math.sqrt(max(1, train_count)))), BATCH_RANGE[0]), BATCH_RANGE[1])
        )
    epochs = params.epochs
    if epochs == "auto":
        steps_per_epoch = max(1, math.ceil(train_count / batch_size))
        epochs = int(min(max(round(TARGET_STEPS / steps_per_epoch), EPOCH_RANGE[0]), EPOCH_RANGE[1]))
    patience = params.early_stopping_patience
    if patience == "auto":
        patience = max(6, round(0.15 * epochs))
    return dataclasses.replace(params, batch_size=batch_size, epochs=epochs, early_stopping_patience=patience)


def resolve_image_size(
    params: PreprocessParams, data_height: int, data_width: int, model_min_size: int, model_max_size: int | None = None
) -> tuple[int, int]:
    """preprocess.image_height/width: an auto side is the data's, scaled (both sides alike) until the shorter side
    lies within the model's designed range: up to model_min_size, down to model_max_size (a CPU-sized model never
    works on a photo's full size); a number is taken as it is."""
    shorter = max(1, min(data_height, data_width))
    target = shorter
    if shorter < model_min_size:
        target = model_min_size
    elif model_max_size is not None and shorter > model_max_size:
        target = model_max_size

    def scaled(side: int) -> int:  # integer arithmetic: 25 x 28/25 is exactly 28
        return side if target == shorter else max(1, -(-side * target // shorter))

    height = scaled(data_height) if params.image_height == "auto" else params.image_height
    width = scaled(data_width) if params.image_width == "auto" else params.image_width
    return int(height), int(width)
