"""Proposes ingest.expectations from the images in data/raw (TFX SchemaGen's idea) and writes them into params.yaml.

    python -m pipelines.schema             # profile data/raw, write the proposal into params.yaml, print the diff
    python -m pipelines.schema --dry-run   # print the diff only
    python -m pipelines.schema --force     # also replace expectations that were edited by hand

The proposal is a one-time starting point that the user reviews and commits: ingest validates every
later run of the data against it, exactly as against hand-written expectations. It is written with
its fingerprint in a comment on `expectations:`; a later run replaces expectations only while they
still match that fingerprint (nobody edited them), unless --force. Comments and layout of params.yaml
are kept (ruamel.yaml round trip).

Rules (each leaves room for more data of the same kind, so a re-run of the same folder passes):
- size: the images' one size; mixed sizes: the median, and ingest.resize: true (centre crop + resize);
- channels: 1 when every image is grayscale (Pillow modes 1/L/LA, or colour with R = G = B), else 3;
- pixel range: 0..255 unless the images use a narrower range (then the observed range +- 25);
- per-image mean: the observed range widened by 20% of its span (at least 2) on each side, but never
  more than halfway to 0 or 255 (a blank or an inverted image still fails);
- classes: their number (a class folder that disappears fails), each share within half its observed
  value below and above (2 balanced classes: 0.25..0.75), min_per_class half the smallest count;
- near duplicates: the perceptual-hash distance stays at 8 bits unless more than 1% of the images
  have a partner that close (small images hash alike): then the largest distance with no pair, or -1 (off).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines import paths
from pipelines.config import PARAMS_FILE, ParamsError, load_params, update_params_file

NEAR_DUPLICATE_DISTANCE = 8  # the default distance (bits of 256) below which two images are near duplicates
NEAR_DUPLICATE_SHARE = 0.01  # above this share of images with a close partner, the hash cannot tell this data apart
MARKER = "inferred by python -m pipelines.schema"


@dataclass
class DataProfile:
    """What the inference reads off the images: one pass over data/raw with ingest's own decoder."""

    raw_dir: Path
    layout: str = ""
    class_counts: dict[str, int] = field(default_factory=dict)
    sizes: Counter = field(default_factory=Counter)  # (height, width)
    grayscale: int = 0
    pixel_min: int = 255
    pixel_max: int = 0
    means: list[float] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.means)


def is_grayscale(image: np.ndarray) -> bool:
    return image.shape[2] == 1 or bool((image == image[..., :1]).all())


def profile_images(raw_dir: Path, max_pixels: int = 25_000_000) -> DataProfile:
    """Decodes every image in raw_dir (any layout ingest reads) keeping only per-image figures."""
    from components.ingest import decode_image, perceptual_hash
    from components.ingest_layout import read_layout

    layout = read_layout(raw_dir)
    profile = DataProfile(raw_dir, layout=layout.kind, class_counts=dict.fromkeys(layout.class_names, 0))
    for example in layout.examples:
        if example.problem:
            profile.unreadable.append(f"{example.file}: {example.problem}")
            continue
        try:
            image = decode_image(example.path.read_bytes(), channels=3, max_pixels=max_pixels)
        except (OSError, ValueError) as error:
            profile.unreadable.append(f"{example.file}: {error}")
            continue
        profile.class_counts[example.class_name] += 1
        profile.sizes[image.shape[:2]] += 1
        gray = is_grayscale(image)
        profile.grayscale += gray
        pixels = image[..., :1] if gray else image
        profile.pixel_min, profile.pixel_max = (
            min(profile.pixel_min, int(pixels.min())),
            max(profile.pixel_max, int(pixels.max())),
        )
        profile.means.append(float(pixels.mean()))
        profile.hashes.append(perceptual_hash(pixels))
    return profile


def near_duplicate_distance(hashes: list[str]) -> tuple[int, int]:
    """(distance to use, images with a partner within the default distance), by the module docstring's rule."""
    from components.ingest_validation import find_near_duplicates

    if len(hashes) < 2:
        return NEAR_DUPLICATE_DISTANCE, 0
    alone = np.arange(len(hashes))  # every image its own "split": every pair is compared
    close = int((find_near_duplicates(hashes, alone, NEAR_DUPLICATE_DISTANCE) >= 0).sum())
    if close <= NEAR_DUPLICATE_SHARE * len(hashes):
        return NEAR_DUPLICATE_DISTANCE, close
    for distance in range(NEAR_DUPLICATE_DISTANCE - 1, -1, -1):
        if not (find_near_duplicates(hashes, alone, distance) >= 0).any():
            return distance, close
    return -1, close


def propose(profile: DataProfile) -> tuple[dict, list[str]]:
    """The ingest params for this data ({"resize": ..., "expectations": {...}}) and notes for the user."""
    if profile.num_images == 0:
        raise ValueError(f"{profile.raw_dir}: no readable images to infer expectations from")
    notes = []
    (height, width), count = profile.sizes.most_common(1)[0]
    resize = len(profile.sizes) > 1
    if resize:
        heights = np.repeat([size[0] for size in profile.sizes], list(profile.sizes.values()))
        widths = np.repeat([size[1] for size in profile.sizes], list(profile.sizes.values()))
        height, width = int(np.median(heights)), int(np.median(widths))
        notes.append(
            f"{len(profile.sizes)} image sizes (most common {profile.sizes.most_common(1)[0][0]}, {count} images): "
            f"ingest.resize: true centre-crops and resizes every image to the median, {height}x{width}"
        )
    channels = 1 if profile.grayscale == profile.num_images else 3
    means = np.asarray(profile.means)
    margin = max(2.0, 0.2 * float(means.max() - means.min()))
    counts = np.array([count for count in profile.class_counts.values()])
    shares = counts / counts.sum()
    distance, close = near_duplicate_distance(profile.hashes)
    if close and distance == NEAR_DUPLICATE_DISTANCE:
        notes.append(
            f"{close} image(s) have a near duplicate within {distance} bits: if they land in different splits, "
            "validation fails; remove the copies (reports/ingest/data_docs lists them)"
        )
    elif close:
        notes.append(
            f"{close} of {profile.num_images} images have a perceptual-hash partner "
            f"within {NEAR_DUPLICATE_DISTANCE} bits: "
            f"the hash cannot tell these images apart, so near_duplicate_max_distance is {distance}"
            + (" (off; exact duplicates are still refused)" if distance < 0 else "")
        )
    if profile.unreadable:
        notes.append(
            f"{len(profile.unreadable)} file(s) could not be read and will fail validation, "
            f"e.g. {profile.unreadable[0]}"
        )
    if (counts == 0).any():
        notes.append(f"empty classes: {[name for name, n in profile.class_counts.items() if n == 0]}")
    expectations = {
        "image_height": int(height),
        "image_width": int(width),
        "channels": channels,
        "pixel_min": 0 if profile.pixel_min <= 25 else profile.pixel_min - 25,
        "pixel_max": 255 if profile.pixel_max >= 230 else profile.pixel_max + 25,
        "num_classes": len(profile.class_counts),
        "min_per_class": max(1, int(counts.min()) // 2),
        "min_class_share": round(float(shares.min()) / 2, 4),
        "max_class_share": round(min(1.0, float(shares.max()) * 1.5), 4),
        # Never more than halfway to 0 or 255: a blank (mean ~0) or inverted image still fails.
        "image_mean_min": round(max(float(means.min()) - margin, float(means.min()) / 2), 2),
        "image_mean_max": round(min(float(means.max()) + margin, (float(means.max()) + 255) / 2), 2),
        "near_duplicate_max_distance": distance,
    }
    return {"resize": resize, "expectations": expectations}, notes


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


def write_proposal(proposal: dict, params_file: Path, source: str, force: bool = False, dry_run: bool = False) -> str:
    """Writes the proposal into params.yaml (the diff is returned); refuses to replace hand edits unless force."""
    current, recorded = current_expectations(params_file)
    expectations = {**current, **proposal["expectations"]}
    edited = edited_keys(current, recorded, expectations)
    if edited and not force:
        raise ValueError(
            f"{params_file}: ingest.expectations were edited by hand since they were inferred (they no longer "
            f"match the fingerprint in their comment); nothing was written. The proposal would change "
            f"{', '.join(f'{key}: {current[key]} -> {expectations[key]}' for key in edited)}. "
            "Rerun with --force to replace them, or edit them yourself"
        )
    comment = f"# {MARKER} from {source} (fingerprint {fingerprint(expectations)}); review, commit, edit freely"
    if dry_run:
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / params_file.name
            shutil.copy(params_file, copy)
            return update_params_file(
                {"ingest": {**proposal, "expectations": expectations}}, copy, {"ingest.expectations": comment}
            ).replace(str(copy), str(params_file))
    return update_params_file(
        {"ingest": {**proposal, "expectations": expectations}}, params_file, {"ingest.expectations": comment}
    )


def describe(profile: DataProfile) -> str:
    sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in profile.sizes.most_common(3))
    return (
        f"{profile.raw_dir}: {profile.num_images} images ({profile.layout}), {len(profile.class_counts)} classes "
        f"({', '.join(f'{name} {count}' for name, count in list(profile.class_counts.items())[:10])}"
        f"{', ...' if len(profile.class_counts) > 10 else ''}); sizes {sizes}; "
        f"{'grayscale' if profile.grayscale == profile.num_images else 'colour'}; "
        f"pixels {profile.pixel_min}..{profile.pixel_max}; "
        f"per-image mean {min(profile.means):.1f}..{max(profile.means):.1f}"
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
        profile = profile_images(raw_dir, params.ingest.max_image_pixels)
        print(describe(profile))
        proposal, notes = propose(profile)
        diff = write_proposal(proposal, args.params, source=str(raw_dir), force=args.force, dry_run=args.dry_run)
    except (ParamsError, ValueError) as error:
        raise SystemExit(f"schema inference failed: {error}") from None
    for note in notes:
        print(f"note: {note}")
    print(diff or f"{args.params}: already holds these expectations")
    if diff and not args.dry_run:
        print(f"{args.params}: review the change, then `dvc repro` (and commit params.yaml)")


if __name__ == "__main__":
    sys.exit(main())
