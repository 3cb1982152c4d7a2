"""What the schema command proposes, read off the images as ingest will see them: two passes with ingest's own decoder
and plan (pipelines/schema.py's docstring states the rules), then the proposal checked with ingest's own suites.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tfpipe.config import IngestParams, Params

NEAR_DUPLICATE_DISTANCE = 8  # the default distance (bits of 256) below which two images are near duplicates


MAX_SIDE = 256  # a proposed size never stores more: phone photos are 4000 px, a CPU model takes 32-64


LARGEST_GROUP = 4  # near-duplicate groups up to max(this, 1% of the images) keep a stratified split possible


LARGEST_GROUP_SHARE = 0.01


@dataclass
class DataProfile:
    """What the inference reads off the images: ingest's rows, as stored and then as ingest will see them."""

    raw_dir: Path
    layout: str = ""
    class_names: list[str] = field(default_factory=list)
    stored: list[dict] = field(default_factory=list)  # first pass: as stored (RGB, no resize)
    rows: list[dict] = field(default_factory=list)  # second pass: by the proposed rules
    channels: int = 3
    size: tuple[int, int] = (0, 0)
    resize: bool = False

    @property
    def decoded(self) -> list[dict]:
        return [row for row in self.stored if not row["problem"] and not row["skipped"]]

    @property
    def num_images(self) -> int:
        return len(self.decoded)

    @property
    def sizes(self) -> Counter:
        return Counter((row["height"], row["width"]) for row in self.decoded)

    @property
    def grayscale(self) -> int:
        return sum(bool(row["grayscale"]) for row in self.decoded)


def profile_images(raw_dir: Path, ingest_params: IngestParams | None = None) -> DataProfile:
    """Two passes over raw_dir with ingest's decoder (module docstring)."""
    from components.ingest.layout import read_layout
    from components.ingest.passes import read_rows

    ingest_params = ingest_params or IngestParams()
    layout = read_layout(raw_dir)
    profile = DataProfile(raw_dir, layout=layout.kind, class_names=layout.class_names)
    as_stored = replace(ingest_params, resize=False, expectations=replace(ingest_params.expectations, channels=3))
    profile.stored = read_rows(layout, as_stored)
    if not profile.num_images:
        return profile
    sizes = profile.sizes
    profile.resize = len(sizes) > 1
    if profile.resize:
        heights = np.repeat([size[0] for size in sizes], list(sizes.values()))
        widths = np.repeat([size[1] for size in sizes], list(sizes.values()))
        profile.size = int(np.median(heights)), int(np.median(widths))
    else:
        profile.size = next(iter(sizes))
    if max(profile.size) > MAX_SIDE:  # scaled down, the aspect ratio kept
        scale = MAX_SIDE / max(profile.size)
        profile.size = tuple(max(1, round(side * scale)) for side in profile.size)
        profile.resize = True
    profile.channels = 1 if profile.grayscale == profile.num_images else 3
    expectations = replace(
        ingest_params.expectations, image_height=profile.size[0], image_width=profile.size[1], channels=profile.channels
    )
    if profile.resize or profile.channels == 1:
        profile.rows = read_rows(layout, replace(ingest_params, resize=profile.resize, expectations=expectations))
    else:  # the first pass already decoded them as ingest will (RGB, no resize)
        profile.rows = profile.stored
    return profile


def near_duplicate_distance(rows: list[dict]) -> tuple[int, int, int]:
    """(distance to use, images in groups at the default distance, the largest group at the chosen distance), by
    the module docstring's rule: the largest distance <= 8 whose groups stay small enough to split, else 0."""
    from components.ingest.split import connected_groups, near_duplicate_pairs

    hashes = [row["phash"] for row in rows]
    if len(hashes) < 2:
        return NEAR_DUPLICATE_DISTANCE, 0, 1
    pairs = near_duplicate_pairs(hashes, NEAR_DUPLICATE_DISTANCE)
    words = np.frombuffer(bytes.fromhex("".join(hashes)), np.uint8).reshape(len(hashes), -1).view(">u8")
    distances = np.bitwise_count(words[pairs[:, 0]] ^ words[pairs[:, 1]]).sum(axis=1) if len(pairs) else np.zeros(0)
    limit = max(LARGEST_GROUP, int(np.ceil(LARGEST_GROUP_SHARE * len(hashes))))
    grouped_at_default = 0
    for distance in range(NEAR_DUPLICATE_DISTANCE, -1, -1):
        sizes = np.bincount(connected_groups(len(hashes), pairs[distances <= distance]))
        if distance == NEAR_DUPLICATE_DISTANCE:
            grouped_at_default = int(sizes[sizes > 1].sum())
        if sizes.max() <= limit or distance == 0:
            return distance, grouped_at_default, int(sizes.max())
    raise AssertionError("unreachable")


def propose(profile: DataProfile, ingest_params: IngestParams | None = None) -> tuple[dict, list[str]]:
    """The params for this data ({"ingest": {"resize", "expectations"}, ...}) and notes for the user."""
    from components.ingest.split import plan_examples
    from tfpipe.images import CONVERSIONS

    ingest_params = ingest_params or IngestParams()
    if profile.num_images == 0:
        raise ValueError(f"{profile.raw_dir}: no readable images to infer expectations from")
    notes = []
    height, width = profile.size
    if profile.resize:
        (common, count) = profile.sizes.most_common(1)[0]
        notes.append(
            f"{len(profile.sizes)} image size(s) (most common {common[0]}x{common[1]}, {count} images): "
            f"ingest.resize: true centre-crops and resizes every image to {height}x{width} (the median, "
            f"at most {MAX_SIDE} px a side)"
        )
    decoded = [row for row in profile.rows if not row["problem"] and not row["skipped"]]
    distance, grouped, largest = near_duplicate_distance(decoded)
    plan = plan_examples(
        profile.rows,
        max_distance=distance,
        val_fraction=ingest_params.val_fraction,
        test_fraction=ingest_params.test_fraction,
        seed=ingest_params.seed,
    )
    kept = plan.examples[plan.examples["problem"].isna()]
    means = kept["mean"].to_numpy(dtype=float)
    margin = max(2.0, 0.2 * float(means.max() - means.min()))
    counts = np.array([int((kept["class_name"] == name).sum()) for name in profile.class_names])
    shares = counts / max(1, counts.sum())
    if distance < NEAR_DUPLICATE_DISTANCE:
        notes.append(
            f"{grouped} of {profile.num_images} images have a perceptual-hash partner within "
            f"{NEAR_DUPLICATE_DISTANCE} bits, in groups too large to keep whole in one split: "
            f"near_duplicate_max_distance is {distance} (the largest group then holds {largest} images)"
        )
    if len(plan.group_sizes):
        notes.append(
            f"{len(plan.group_sizes)} group(s) of near-identical images ({int(plan.group_sizes.sum())} images) "
            "will each be kept in one split (listed in reports/ingest/near_duplicates.csv after ingest)"
        )
    copies = plan.duplicates[plan.duplicates["same_label"]]
    if len(copies):
        notes.append(
            f"{len(copies)} file(s) identical to another after decoding will be kept once, e.g. "
            f"{copies['file'].iloc[0]} = {copies['duplicate_of'].iloc[0]}"
        )
    conversions = Counter(name for row in decoded for name in row["conversions"].split(";") if name)
    for name, count in sorted(conversions.items()):
        notes.append(f"{count} image(s) will be {CONVERSIONS.get(name, name)}")
    if skipped := [row["file"] for row in profile.stored if row["skipped"]]:
        notes.append(f"{len(skipped)} file(s) that are not images will be skipped, e.g. {', '.join(skipped[:3])}")
    if (counts == 0).any():
        notes.append(f"empty classes: {[name for name, n in zip(profile.class_names, counts, strict=True) if n == 0]}")
    expectations = {
        "image_height": int(height),
        "image_width": int(width),
        "channels": profile.channels,
        "pixel_min": 0 if kept["min"].min() <= 25 else int(kept["min"].min()) - 25,
        "pixel_max": 255 if kept["max"].max() >= 230 else int(kept["max"].max()) + 25,
        "num_classes": len(profile.class_names),
        "min_per_class": max(1, int(counts.min()) // 2),
        "min_class_share": round(float(shares.min()) / 2, 4),
        "max_class_share": round(min(1.0, float(shares.max()) * 1.5), 4),
        # Never more than halfway to 0 or 255: a blank (mean ~0) or inverted image still fails.
        "image_mean_min": round(max(float(means.min()) - margin, float(means.min()) / 2), 2),
        "image_mean_max": round(min(float(means.max()) + margin, (float(means.max()) + 255) / 2), 2),
        "near_duplicate_max_distance": distance,
    }
    return {"ingest": {"resize": profile.resize, "expectations": expectations}}, notes


def check_proposal(profile: DataProfile, proposal: dict, params: Params) -> list[str]:
    """Validates the proposal against the folder with ingest's own tables and suites; returns the failures as
    sentences (empty: ingest will pass). Only problems of the data itself can remain."""
    import tempfile

    from components.ingest import failures as ingest_failures
    from components.ingest import split as ingest_split
    from components.ingest import validation as ingest_validation
    from components.ingest.kinds import image as ingest
    from tfpipe.params_file import parse_params

    merged = parse_params({"ingest": {**json.loads(json.dumps(_asdict(params.ingest))), **proposal["ingest"]}}).ingest
    plan = ingest_split.plan_examples(
        profile.rows,
        max_distance=merged.expectations.near_duplicate_max_distance,
        val_fraction=merged.val_fraction,
        test_fraction=merged.test_fraction,
        seed=merged.seed,
    )
    tables = ingest_validation.build_tables(profile.rows, plan, profile.class_names)
    suites = ingest_validation.build_suites(
        merged.expectations,
        len(profile.class_names),
        has_val=bool((tables["examples"]["split"] == "val").any()),
        changes=ingest.describe_data_changes(profile.rows, plan),
    )
    with tempfile.TemporaryDirectory() as docs:
        results = ingest_validation.run_validation(tables, suites, docs_dir=Path(docs))
    return ingest_failures.describe_failures(results, tables, merged)


def _asdict(value) -> dict:
    from dataclasses import asdict

    return asdict(value)
