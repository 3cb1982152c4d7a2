"""The params schema of what ingest checks and preprocess sizes: `ingest` (with its image `expectations` and its
table `table.columns`) and `preprocess`. Frozen, strict dataclasses (tfpipe/config.py composes them)."""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

import pydantic
from pydantic import Field
from pydantic.dataclasses import dataclass

from tfpipe.config_types import STRICT, Auto, Seed, Share, Side


@dataclass(frozen=True, config=STRICT)
class ExpectationParams:
    """What ingest checks in an image folder; the defaults are mnist_5k's, as `python -m pipelines.schema` inferred
    them (params.yaml)."""

    image_height: int = Field(28, ge=1, le=8192)
    image_width: int = Field(28, ge=1, le=8192)
    channels: Literal[1, 3] = 1
    pixel_min: int = Field(0, ge=0, le=255)
    pixel_max: int = Field(255, ge=0, le=255)
    # null: any number (at least 2); a class that disappears fails when set
    num_classes: int | None = Field(10, ge=2, le=100_000)
    min_per_class: int = Field(250, ge=1, le=10_000_000)
    min_class_share: float = Field(0.05, ge=0, le=1)
    max_class_share: float = Field(0.15, gt=0, le=1)
    image_mean_min: float = Field(3.78, ge=0, le=255)
    image_mean_max: float = Field(92.7, ge=0, le=255)
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


# What a table's column holds (tfpipe/tables.py reads them): numbers; a few repeated values (categorical, boolean);
# dates or times; free text; an identifier (unique or nearly, no meaning: never a feature).
ColumnType = Literal["numeric", "categorical", "boolean", "date", "text", "id"]


@dataclass(frozen=True, config=STRICT)
class ColumnParams:
    """One column of a table: what it holds and what ingest checks. `python -m pipelines.schema` proposes them."""

    type: ColumnType
    # feature: the model reads it (numeric, categorical, boolean and date columns); ignored: it does not (an id or
    # free-text column always is; a constant column is proposed so). The target is data.target, whatever its role.
    role: Literal["feature", "ignored"] = "feature"
    min: float | str | None = None  # numeric: a number; date: an ISO date (YYYY-MM-DD[THH:MM:SS])
    max: float | str | None = None
    categories: tuple[str, ...] | None = None  # categorical and boolean: every value allowed, as written in the file
    format: str | None = None  # date: ISO8601 or a strptime format such as %d/%m/%Y (the schema infers it)
    max_missing: Share = 0.0  # the share of empty cells allowed (NA, ?, null ... count as empty: tfpipe/tables.py)
    missing_values: tuple[str, ...] = ()  # this column's own tokens for an empty cell (e.g. unknown, -)

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        if self.role == "feature" and self.type in ("id", "text"):
            raise ValueError(
                f"a {self.type} column is never a feature of a table (an id has no meaning to learn; free text "
                "needs the text kind): set its role: ignored"
            )
        if self.categories is not None and self.type not in ("categorical", "boolean"):
            raise ValueError(f"categories belong to categorical and boolean columns, not {self.type}")
        if self.type in ("categorical", "boolean") and not self.categories:
            raise ValueError(f"a {self.type} column lists its categories (at least one)")
        for bound in (self.min, self.max):
            if bound is None:
                continue
            if self.type == "numeric" and not isinstance(bound, (int, float)):
                raise ValueError(f"a numeric column's min and max are numbers, got {bound!r}")
            if self.type == "date":
                try:
                    datetime.datetime.fromisoformat(str(bound))
                except ValueError:
                    raise ValueError(f"a date column's min and max are ISO dates (YYYY-MM-DD), got {bound!r}") from None
            if self.type not in ("numeric", "date"):
                raise ValueError(f"min and max belong to numeric and date columns, not {self.type}")
        if self.min is not None and self.max is not None and str(self.type) == "numeric" and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.format is not None and self.type != "date":
            raise ValueError("format belongs to date columns")
        return self


@dataclass(frozen=True, config=STRICT)
class TableParams:
    """What ingest checks in a table (a CSV, TSV, JSON lines or Parquet file in data/raw): its columns, every one
    of them (a column missing or added fails), and how many rows it has at least."""

    columns: dict[str, ColumnParams] = Field(default_factory=dict)
    min_rows: int = Field(1, ge=1, le=10**10)


@dataclass(frozen=True, config=STRICT)
class TextParams:
    """What ingest checks in documents (class folders of text files, or a table's text column: data.kind: text).
    `python -m pipelines.schema` proposes them from the documents."""

    column: str | None = None  # a table's column holding the documents; null for folders of files
    strip_markup: bool = False  # <br />, <i> ... become spaces (IMDB's reviews hold HTML line breaks)
    min_chars: int = Field(1, ge=1, le=10**6)  # shorter (after cleaning): an empty document, skipped and counted
    max_chars: int = Field(10**6, ge=1, le=10**9)  # longer: a length outlier, an error naming the files
    max_empty_share: Share = 0.0  # of the documents that may be empty (each skipped, counted, listed)
    max_oov_share: Share = 1.0  # the mean share of val/test tokens the train split never holds
    num_classes: int | None = Field(None, ge=2, le=100_000)  # null: any number (at least 2)
    min_per_class: int = Field(1, ge=1, le=10**9)
    min_class_share: Share = 0.0
    max_class_share: Share = 1.0
    # Jaccard similarity of word 5-shingles (MinHash) above which two documents are near duplicates: kept in one
    # split, and a leak when your own train/ and test/ folders part them. -1: exact copies only.
    near_duplicate_similarity: float = Field(0.9, ge=-1, le=1)

    @pydantic.model_validator(mode="after")
    def _ordered(self):
        if self.min_chars > self.max_chars or self.min_class_share > self.max_class_share:
            raise ValueError("min_chars must be at most max_chars and min_class_share at most max_class_share")
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
    table: TableParams = TableParams()
    text: TextParams = TextParams()

    @pydantic.model_validator(mode="after")
    def _fractions_leave_a_train_split(self):
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be below 1, got {self.val_fraction + self.test_fraction}"
            )
        return self


@dataclass(frozen=True, config=STRICT)
class PreprocessParams:
    """Images: the model's input size. auto: the data's size, scaled up (aspect kept) to the smallest side the model
    was designed for (models/registry.py: lenet5 28, vgg13 and resnet18 32, the backbones 32, mlp any). Documents:
    the vocabulary and the sequence length. Tables are analyzed from their columns and read no key here."""

    image_height: Side | Auto = "auto"
    image_width: Side | Auto = "auto"
    # Documents: the vocabulary's size (auto: the tokens seen twice or more in train, at most 20,000) and a sequence's
    # length in tokens (auto: the 90th percentile of the train documents', 32..256).
    vocabulary_size: Annotated[int, Field(ge=2, le=10**6)] | Auto = "auto"
    sequence_length: Annotated[int, Field(ge=1, le=100_000)] | Auto = "auto"
