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
first decodes each file as stored (tfpipe/images.py: EXIF orientation applied) to settle the size and
the channels; the second decodes them again by the rules just chosen (converted, cropped and resized), and
dedupes, groups and splits them with components/ingest/split.py. The proposal is then validated against
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
import sys
from collections import Counter
from pathlib import Path

from pipelines import schema_sections
from pipelines.schema_inference import DataProfile, check_proposal, profile_images, propose
from pipelines.schema_params import MARKER, current_expectations, edited_keys, fingerprint
from tfpipe import paths
from tfpipe.config import PARAMS_FILE, Params, ParamsError
from tfpipe.kinds import UnknownKind, recognize
from tfpipe.params_file import load_params, update_params_file

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


def dataset_defaults(params_file: Path) -> dict:
    """DATASET_DEFAULTS whose key still holds the demo's value in params_file: {section: {key: new value}}."""
    from tfpipe.params_file import yaml_load

    document = yaml_load(params_file.read_text()) or {}
    changes: dict = {}
    for (section, key), (demo, value) in DATASET_DEFAULTS.items():
        if (document.get(section) or {}).get(key, demo) == demo:
            changes.setdefault(section, {})[key] = value
    return changes


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


def infer_images(args, params: Params) -> tuple[str, list[str], list[str]]:
    """The image folder's proposal, written: (the diff, notes, failures that no expectation can fix)."""
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
    for (section, key), (demo, value) in DATASET_DEFAULTS.items():
        if key in defaults.get(section, {}):
            notes.append(f"{section}.{key}: {value} for a dataset of your own (the demo's is {demo})")
    return diff, notes, failures


# by the kind data/raw holds (tfpipe/kinds.py)
INFER = {"image": infer_images, "table": schema_sections.infer_table, "text": schema_sections.infer_text}


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
        diff, notes, failures = INFER[recognize(args.raw_dir, params.data.kind)](args, params)
    except (ParamsError, ValueError, UnknownKind) as error:
        raise SystemExit(f"schema inference failed: {error}") from None
    for note in notes:
        print(f"note: {note}")
    print(diff or f"{args.params}: already holds these expectations")
    if failures:
        print(
            "ingest will still fail on this data, for reasons no expectation can fix:\n" + "\n".join(failures),
            file=sys.stderr,
        )
    if diff and not args.dry_run:
        print(f"{args.params}: review the change, then `dvc repro` (and commit params.yaml)")


if __name__ == "__main__":
    sys.exit(main())
