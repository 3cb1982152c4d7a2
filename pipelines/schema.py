"""Proposes ingest.expectations from the images in data/raw (TFX SchemaGen's idea) and writes them into params.yaml.

    python -m pipelines.schema             # profile data/raw, write the proposal into params.yaml, print the diff
    python -m pipelines.schema --dry-run   # print the diff only
    python -m pipelines.schema --force     # also replace expectations that were edited by hand

The proposal is a one-time starting point that the user reviews and commits: ingest validates every
later run of the data against it, exactly as against hand-written expectations. It is written with
its fingerprint in a comment on `expectations:`; a later run replaces expectations only while they
still match that fingerprint (nobody edited them), unless --force. Comments and layout of params.yaml
are kept (ruamel.yaml round trip).

Every figure is computed on the images as ingest will see them: two passes with ingest's own code. The
first decodes each file as stored (pipelines/images.py: EXIF orientation applied) to settle the size and
the channels; the second decodes them again by the rules just chosen (converted, cropped and resized), and
dedupes, groups and splits them with components/ingest_split.py. The proposal is then validated against
those tables with ingest's own suites, so it never fails its own folder: what still fails is a problem of
the data (an unreadable file, a class too small to split, identical files with two labels), printed as a
sentence with its fix. Rules (each leaves room for more data of the same kind):
- size: the images' one size; mixed sizes: the median, and ingest.resize: true (centre crop + resize); never
  more than 256 px a side (larger photos are stored scaled down: the models that suit a CPU take 32-64 px);
- channels: 1 when every image is grayscale (Pillow modes 1/L/LA/16-bit, or colour with R = G = B), else 3:
  the grayscale files of a colour folder are converted to RGB (the notes count them, and every other conversion);
- pixel range: 0..255 unless the images use a narrower range (then the observed range +- 25);
- per-image mean: the observed range widened by 20% of its span (at least 2) on each side, but never
  more than halfway to 0 or 255 (a blank or an inverted image still fails);
- classes (identical copies counted once): their number (a class folder that disappears fails), each share
  within half its observed value below and above, min_per_class half the smallest count;
- near duplicates: 8 bits of 256, lowered (never turned off) while near-duplicate groups would hold more than
  max(4, 1% of the images): groups are kept whole in one split, and groups that large could not be split;
- a dataset of the user's own gets dataset-fitting defaults where params.yaml still has the demo's
  (DATASET_DEFAULTS): the gate's floor from the classical baseline (evaluate.min_accuracy: auto), and the model
  and augmentation chosen on the validation split (train.model: auto, train.augmentation: auto).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pipelines import paths
from pipelines.config import PARAMS_FILE, IngestParams, Params, ParamsError, load_params, update_params_file

NEAR_DUPLICATE_DISTANCE = 8  # the default distance (bits of 256) below which two images are near duplicates
MAX_SIDE = 256  # a proposed size never stores more: phone photos are 4000 px, a CPU model takes 32-64
LARGEST_GROUP = 4  # near-duplicate groups up to max(this, 1% of the images) keep a stratified split possible
LARGEST_GROUP_SHARE = 0.01
MARKER = "inferred by python -m pipelines.schema"
# A dataset of the user's own replaces the demo's (mnist_5k's) value of these keys, and only that value: a value
# the user chose is kept.
DEMO_AUGMENTATION = {  # mnist_5k's, for digits: no mirror images
    "flip": "none",
    "rotation": 0.03,
    "zoom": 0.1,
    "translation": 0.1,
    "contrast": 0.0,
    "crop_padding": 0.0,
    "erasing": 0.0,
}
DATASET_DEFAULTS = {
    ("evaluate", "min_accuracy"): (0.97, "auto"),
    ("train", "model"): ("lenet5_s2d", "auto"),
    ("train", "augmentation"): (DEMO_AUGMENTATION, "auto"),
}


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
    from components.ingest import read_rows
    from components.ingest_layout import read_layout

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
    from components.ingest_split import connected_groups, near_duplicate_pairs

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
    from components.ingest_split import plan_examples
    from pipelines.images import CONVERSIONS

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

    from components import ingest, ingest_split, ingest_validation
    from pipelines.config import parse_params

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
    return ingest_validation.describe_failures(results, tables, merged)


def _asdict(value) -> dict:
    from dataclasses import asdict

    return asdict(value)


def dataset_defaults(params_file: Path) -> dict:
    """DATASET_DEFAULTS whose key still holds the demo's value in params_file: {section: {key: new value}}."""
    from pipelines.config import yaml_load

    document = yaml_load(params_file.read_text()) or {}
    changes: dict = {}
    for (section, key), (demo, value) in DATASET_DEFAULTS.items():
        if (document.get(section) or {}).get(key, demo) == demo:
            changes.setdefault(section, {})[key] = value
    return changes


def fingerprint(expectations: dict) -> str:
    """A short hash of the expectation values (types included), written beside them as a comment."""
    return hashlib.sha256(json.dumps(expectations, sort_keys=True).encode()).hexdigest()[:12]


def current_expectations(params_file: Path) -> tuple[dict, str | None]:
    """The expectations params.yaml holds (all keys, defaults filled in) and the fingerprint its marker comment
    names."""
    from dataclasses import asdict

    from ruamel.yaml import YAML

    params = load_params(params_file)
    document = YAML().load(params_file.read_text())
    token = (
        (document.get("ingest") or {}).ca.items.get("expectations", [None, None, None, None])[2]
        if "ingest" in document
        else None
    )
    comment = token.value if token is not None else ""
    recorded = (
        comment.split("fingerprint ", 1)[1].split(")", 1)[0]
        if MARKER in comment and "fingerprint " in comment
        else None
    )
    return asdict(params.ingest.expectations), recorded


def edited_keys(current: dict, recorded: str | None, proposal: dict) -> list[str]:
    """The expectation keys edited by hand since the last inference (none if the values still match its fingerprint)."""
    if recorded is not None and fingerprint(current) == recorded:
        return []
    return sorted(key for key in current if current[key] != proposal.get(key))


def write_proposal(
    proposal: dict,
    params_file: Path,
    source: str,
    force: bool = False,
    dry_run: bool = False,
    defaults: dict | None = None,
) -> str:
    """Writes the proposal (and `defaults`, other sections' dataset defaults) into params.yaml; returns the diff.
    Refuses to replace hand-edited expectations unless force."""
    current, recorded = current_expectations(params_file)
    expectations = {**current, **proposal["ingest"]["expectations"]}
    edited = edited_keys(current, recorded, expectations)
    if edited and not force:
        raise ValueError(
            f"{params_file}: ingest.expectations were edited by hand since they were inferred (they no longer "
            f"match the fingerprint in their comment); nothing was written. The proposal would change "
            f"{', '.join(f'{key}: {current[key]} -> {expectations[key]}' for key in edited)}. "
            "Rerun with --force to replace them, or edit them yourself"
        )
    comment = f"# {MARKER} from {source} (fingerprint {fingerprint(expectations)}); review, commit, edit freely"
    overrides = {**(defaults or {}), "ingest": {**proposal["ingest"], "expectations": expectations}}
    if dry_run:
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / params_file.name
            shutil.copy(params_file, copy)
            return update_params_file(overrides, copy, {"ingest.expectations": comment}).replace(
                str(copy), str(params_file)
            )
    return update_params_file(overrides, params_file, {"ingest.expectations": comment})


def describe(profile: DataProfile) -> str:
    """One line: what the folder holds, as stored."""
    counts = Counter(row["class_name"] for row in profile.decoded)
    sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in profile.sizes.most_common(3))
    means = [row["mean"] for row in profile.decoded]
    grey = profile.grayscale
    colour = "grayscale" if grey == profile.num_images else ("colour" + (f", {grey} grayscale" if grey else ""))
    return (
        f"{profile.raw_dir}: {profile.num_images} images ({profile.layout}), {len(profile.class_names)} classes "
        f"({', '.join(f'{name} {counts[name]}' for name in profile.class_names[:10])}"
        f"{', ...' if len(profile.class_names) > 10 else ''}); sizes {sizes}"
        f"{f' and {len(profile.sizes) - 3} more' if len(profile.sizes) > 3 else ''}; {colour}; "
        f"per-image mean {min(means):.1f}..{max(means):.1f} as stored"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--raw-dir", type=Path, default=paths.RAW, help=f"default: {paths.RAW}")
    parser.add_argument(
        "--force", action="store_true", help="replace expectations edited by hand since the last inference"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        raw_dir = args.raw_dir
        profile = profile_images(raw_dir, params.ingest)
        if profile.num_images:
            print(describe(profile))
        proposal, notes = propose(profile, params.ingest)
        failures = check_proposal(profile, proposal, params)
        defaults = dataset_defaults(args.params) if params.data.source != "mnist_5k" else {}
        diff = write_proposal(
            proposal, args.params, source=str(raw_dir), force=args.force, dry_run=args.dry_run, defaults=defaults
        )
    except (ParamsError, ValueError) as error:
        raise SystemExit(f"schema inference failed: {error}") from None
    for note in notes:
        print(f"note: {note}")
    for (section, key), (demo, value) in DATASET_DEFAULTS.items():
        if key in defaults.get(section, {}):
            print(f"note: {section}.{key}: {value} for a dataset of your own (the demo's is {demo})")
    print(diff or f"{args.params}: already holds these expectations")
    if failures:
        print(
            "ingest will still fail on this folder, for reasons no expectation can fix:\n" + "\n".join(failures),
            file=sys.stderr,
        )
    if diff and not args.dry_run:
        print(f"{args.params}: review the change, then `dvc repro` (and commit params.yaml)")


if __name__ == "__main__":
    sys.exit(main())
