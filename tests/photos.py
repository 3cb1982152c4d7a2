"""Writes folders of image files cut from real photographs that ship inside installed Python packages.

Test and benchmark data that looks like what users bring: colour photos, not synthetic squares. Each class is one
source photograph ("which photo is this patch from"); images are crops at random positions and scales, so the task
is learnable but not trivial. Nothing is downloaded: the photos are read with Pillow straight from the package
directories (scikit-image's skimage/data, scikit-learn's sklearn/datasets/images, matplotlib's mpl-data), never
through `skimage.data.<name>()`, whose fetchers may reach for the network through pooch.

Writers (each into a new or empty folder, byte-identical for the same arguments):
- write_tiles: `<class>/<class>_<n>.png`, all size x size RGB (a folder of tiles cut from photos),
- write_crops: variable-size JPEG crops, a few saved grayscale, one class with a nested sub-folder,
- write_messy_folder: a small folder that carries every trait a user's folder may have (EXIF rotation, duplicates,
  near duplicates, 16-bit, transparency, CMYK, WebP, TIFF, odd extensions, stray files), and says where each is,
- write_conflicting_duplicate: the error case, one image copied into another class,
- write_tagged_photos: held-out crops stored sideways with an EXIF orientation tag, as a phone writes them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps


@dataclass(frozen=True)
class Source:
    """A photograph inside an installed package: `<package directory>/<directory>/<file>`."""

    package: str
    directory: str
    file: str


# Class name -> source photograph. The order is part of the seeding (a class's random stream is keyed by its
# position here), so append new classes at the end.
SOURCES: dict[str, Source] = {
    "astronaut": Source("skimage", "data", "astronaut.png"),
    "cat": Source("skimage", "data", "chelsea.png"),
    "coffee": Source("skimage", "data", "coffee.png"),
    "rocket": Source("skimage", "data", "rocket.jpg"),
    "china": Source("sklearn", "datasets/images", "china.jpg"),
    "flower": Source("sklearn", "datasets/images", "flower.jpg"),
    "hopper": Source("matplotlib", "mpl-data/sample_data", "grace_hopper.jpg"),
    "motorcycle": Source("skimage", "data", "motorcycle_left.png"),
    "hubble": Source("skimage", "data", "hubble_deep_field.jpg"),
    "retina": Source("skimage", "data", "retina.jpg"),
    "ihc": Source("skimage", "data", "ihc.png"),
}
DEFAULT_CLASSES = tuple(list(SOURCES)[:10])  # ihc stays available through `classes=`
# All three packages, without the photos with the largest flat areas (retina's black corners, hubble's space,
# rocket's sky), whose crops would often be redrawn to keep the folder free of copies besides the listed ones.
MESSY_CLASSES = ("astronaut", "cat", "coffee", "china", "flower", "hopper")

ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that turns an upright picture into the stored (sensor) pixels, the inverse of
# what ImageOps.exif_transpose applies (3: 180 degrees, 6: shown turned 90 clockwise, 8: turned 90 anticlockwise).
STORED_TRANSPOSE = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

# Fixed encoder settings: the same pixels always give the same bytes (Pillow writes no timestamps by itself).
JPEG_SETTINGS = {"quality": 90, "subsampling": "4:2:0", "optimize": False, "progressive": False}
PNG_SETTINGS = {"compress_level": 6, "optimize": False}
WEBP_LOSSY_SETTINGS = {"lossless": False, "quality": 80, "method": 4}
WEBP_LOSSLESS_SETTINGS = {"lossless": True, "quality": 80, "method": 4}
# Separate random streams per writer, so that tiles, crops and the messy folder never reuse one another's crops
# for the same seed.
TILES_STREAM, CROPS_STREAM, MESSY_STREAM, TAGGED_STREAM = 0, 1, 2, 3
SHUFFLE_KEY = 10_000  # the tagged photos' file order: a stream no class position reaches
MAX_DRAWS = 200  # redraws of a crop that is not new or unlike enough (see the writers), before giving up
TAGGED_MIN_CONTRAST = 4.0  # grey standard deviation of a held-out photo: 0 is a flat patch


def source_path(name: str) -> Path:
    """The file of SOURCES[name]; FileNotFoundError naming the package and file when either is missing."""
    source = SOURCES[name]
    # find_spec gives the path `package.__file__` would have, without importing the package (scikit-learn's import
    # alone takes about a second).
    spec = importlib.util.find_spec(source.package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"class {name!r} needs {source.directory}/{source.file} from the Python package {source.package!r}, "
            "which is not installed"
        )
    path = Path(spec.origin).parent / source.directory / source.file
    if not path.is_file():
        raise FileNotFoundError(f"class {name!r}: {path} is missing from the installed {source.package!r} package")
    return path


@cache
def _photo(name: str) -> Image.Image:
    """The RGB photograph of one class, decoded once per process (treated as read-only)."""
    with Image.open(source_path(name)) as image:
        return image.convert("RGB")


def load_sources(classes: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Class name -> RGB uint8 photograph (height x width x 3, read-only), for `classes` or all of SOURCES."""
    return {name: np.asarray(_photo(name)) for name in _class_names(classes, tuple(SOURCES))}


def write_tiles(
    folder: str | Path, classes: Iterable[str] | None = None, per_class: int = 230, size: int = 32, seed: int = 0
) -> dict:
    """A folder of size x size RGB PNG tiles, `<folder>/<class>/<class>_<n>.png`, each a square region of size to
    5 x size pixels of its class's photo, resized down. Tiles of flat areas may decode identical within a class
    (kept: users' folders have them); never across classes. Returns {"classes", "labels": {file: class},
    "identical": [[file, earlier identical file], ...]} with files relative to `folder`."""
    root = _new_folder(folder)
    names = _class_names(classes, DEFAULT_CLASSES)
    registry = _Registry()
    labels: dict[str, str] = {}
    identical: list[list[str]] = []
    for name in names:
        photo, random = _photo(name), _stream(seed, name, TILES_STREAM)
        for index in range(per_class):
            data, picture = _draw_unique(registry, name, _tile_bytes, random, photo, size)
            relative = f"{name}/{name}_{index:04d}.png"
            earlier = registry.add(picture, name, relative)
            if earlier is not None:
                identical.append([relative, earlier])
            _write(root, relative, data)
            labels[relative] = name
    return {"classes": list(names), "labels": labels, "identical": identical}


def write_crops(folder: str | Path, classes: Iterable[str] | None = None, per_class: int = 50, seed: int = 0) -> dict:
    """Variable-size JPEG crops, sides 32..112 px at aspect ratios 0.5..2, `<folder>/<class>/<class>_<n>.jpg`; about
    4% (at least one per class) saved grayscale (mode L), and the first class keeps a fifth of its files in a nested
    `more/` sub-folder. Returns {"classes", "labels": {file: class}, "grayscale": [...], "nested": [...]}."""
    root = _new_folder(folder)
    names = _class_names(classes, DEFAULT_CLASSES)
    registry = _Registry()
    labels: dict[str, str] = {}
    grayscale: list[str] = []
    nested: list[str] = []
    for class_index, name in enumerate(names):
        photo, random = _photo(name), _stream(seed, name, CROPS_STREAM)
        grey_count = min(per_class, max(1, round(0.04 * per_class)))
        grey_indices = set(random.choice(per_class, size=grey_count, replace=False).tolist())
        for index in range(per_class):
            grey = index in grey_indices
            data, picture = _draw_unique(registry, name, _crop_bytes, random, photo, grey)
            in_sub_folder = class_index == 0 and index >= per_class - per_class // 5
            relative = f"{name}/{'more/' if in_sub_folder else ''}{name}_{index:04d}.jpg"
            registry.add(picture, name, relative)
            _write(root, relative, data)
            labels[relative] = name
            if grey:
                grayscale.append(relative)
            if in_sub_folder:
                nested.append(relative)
    return {"classes": list(names), "labels": labels, "grayscale": grayscale, "nested": nested}


# The messy folder's traits: role -> how many images carry it, spread over the classes in turn. Each is one upright
# crop written in that role's way; the pair roles also write a second file (a copy or a near copy).
MESSY_ROLES = {
    "grayscale_jpeg": 6,
    "exif_rotated": 6,
    "webp_lossy": 2,
    "webp_lossless": 2,
    "tiff": 2,
    "gray16_png": 1,
    "gray16_tiff": 1,
    "rgba_png": 1,
    "la_png": 1,
    "palette_png": 1,
    "cmyk_jpeg": 1,
    "uppercase_extension": 4,
    "jpeg_extension": 2,
    "byte_copies": 2,
    "decode_identical": 2,
    "near_jpeg_quality": 2,
    "near_shifted": 2,
    "near_brightened": 2,
}
# Roles whose files vary by occurrence, in turn: EXIF orientation; extension; the PNG's lossless twin; compression.
MESSY_VARIANTS = {
    "exif_rotated": (3, 6, 8),
    "uppercase_extension": (".JPG", ".PNG"),
    "decode_identical": (("TIFF", ".tif"), ("BMP", ".bmp")),
    "tiff": ("raw", "tiff_lzw"),
}
MESSY_NESTED = 4  # files in `<first class>/more/`
MESSY_COPY_ROLES = ("byte_copies", "decode_identical")
MESSY_NEAR_ROLES = ("near_jpeg_quality", "near_shifted", "near_brightened")
# Perceptual-hash distances (of 256 bits, the pipeline's phash): re-encoded and brightened pairs are drawn until
# within NEAR_DUPLICATE_BITS, below ingest's default near_duplicate_max_distance of 8, so that tests can count on
# them being grouped. Shifted pairs are left as they come: a 1 px shift of a 32..96 px crop moves 14..46 bits (10th
# to 90th percentile, median 24) of this 256-bit hash, and their distances are reported. Every other image
# differs from all earlier ones by more than ACCIDENTAL_NEAR_BITS: no near duplicates besides the listed ones.
NEAR_DUPLICATE_BITS = 6
ACCIDENTAL_NEAR_BITS = 32
# Stray files a user's folder picks up, by class position: they are not images and must be skipped.
MESSY_STRAY = {
    0: ("notes.txt", b"shot on the 3rd; two of these are blurry\n"),
    1: ("labels.json", b'{"label": "see folder name"}\n'),
    2: (".DS_Store", b"\x00\x00\x00\x01Bud1\x00\x00\x10\x00"),
}


def write_messy_folder(
    folder: str | Path, classes: Iterable[str] | None = None, per_class: int = 40, seed: int = 0
) -> dict:
    """One small folder with every trait of a real user's folder (see MESSY_ROLES): per class `per_class` crops
    (sides 32..96 px, aspect 0.5..2), most plain JPEG (.jpg) or PNG, the rest written as a trait, plus the second
    file of each pair trait and a few stray non-image files. No two images of different classes decode identical.

    Returns, with files relative to `folder`: "classes"; "labels" {image file: class}; a list of files per role in
    MESSY_ROLES (pairs as [original, copy]); "nested"; "stray_files"; "exif_orientation" {file: tag};
    "near_duplicates" (all near pairs) and "near_distance" {copy: perceptual-hash bits from its original};
    "crops" {file: {"box": [left, top, right, bottom] in the class photo, "size": [width, height] upright}} for
    every image, so that a test can rebuild the upright pixels of any file."""
    root = _new_folder(folder)
    names = _class_names(classes, MESSY_CLASSES)
    roles: dict[str, list[str]] = {name: [] for name in names}
    turn = 0
    for role, count in MESSY_ROLES.items():
        for _ in range(count):
            roles[names[turn % len(names)]].append(role)
            turn += 1
    roles[names[0]].extend(["nested"] * MESSY_NESTED)
    if max(len(assigned) for assigned in roles.values()) > per_class:
        raise ValueError(f"per_class={per_class} is too small for the messy folder's {turn + MESSY_NESTED} traits")

    result: dict = {"classes": list(names), "labels": {}, **{role: [] for role in MESSY_ROLES}}
    result |= {"nested": [], "stray_files": [], "exif_orientation": {}, "near_duplicates": [], "near_distance": {}}
    result["crops"] = {}
    registry = _Registry()
    hashes: list[np.ndarray] = []
    occurrences = dict.fromkeys(MESSY_VARIANTS, 0)
    for name in names:
        photo, random = _photo(name), _stream(seed, name, MESSY_STREAM)
        # Mostly JPEG, one in four PNG, as phone pictures mixed with screenshots.
        plain = ["png" if index % 4 == 3 else "jpg" for index in range(per_class - len(roles[name]))]
        for index, role in enumerate(roles[name] + plain):
            stem = f"{name}/{'more/' if role == 'nested' else ''}{name}_{index:04d}"
            variant = None
            if role in MESSY_VARIANTS:
                variant = MESSY_VARIANTS[role][occurrences[role] % len(MESSY_VARIANTS[role])]
                occurrences[role] += 1
            files, pictures, bits = _draw_messy(registry, hashes, name, role, stem, variant, random, photo)
            for position, ((relative, data, box, size), picture) in enumerate(zip(files, pictures, strict=True)):
                earlier = registry.add(picture, name, relative)
                # Only the copy roles may write an image identical to another: anything else is a bug here.
                assert earlier is None or (role in MESSY_COPY_ROLES and position == 1), (relative, earlier)
                _write(root, relative, data)
                result["labels"][relative] = name
                result["crops"][relative] = {"box": list(box), "size": list(size)}
            hashes.extend(bits)
            relatives = [file[0] for file in files]
            if role == "nested":
                result["nested"].append(relatives[0])
            elif role in MESSY_COPY_ROLES or role in MESSY_NEAR_ROLES:
                result[role].append(relatives)
            elif role in MESSY_ROLES:
                result[role].append(relatives[0])
            if role in MESSY_NEAR_ROLES:
                result["near_duplicates"].append(relatives)
                result["near_distance"][relatives[1]] = int(np.count_nonzero(bits[0] != bits[1]))
            if role == "exif_rotated":
                result["exif_orientation"][relatives[0]] = variant
    for position, (file_name, content) in MESSY_STRAY.items():
        if position < len(names):
            relative = f"{names[position]}/{file_name}"
            _write(root, relative, content)
            result["stray_files"].append(relative)
    return result


def write_conflicting_duplicate(
    folder: str | Path, source_class: str | None = None, target_class: str | None = None
) -> tuple[str, str]:
    """The error case: a byte copy of one image of `source_class` put into `target_class` (by default the first and
    second class folders in name order), as `<target>/<stem>_from_<source><suffix>`. Returns (original, copy)
    relative to `folder`."""
    root = Path(folder)
    class_folders = sorted(path.name for path in root.iterdir() if path.is_dir())
    if len(class_folders) < 2 and (source_class is None or target_class is None):
        raise ValueError(f"{root} needs two class folders for a conflicting duplicate, it has {class_folders}")
    source_class = source_class or class_folders[0]
    target_class = target_class or next(name for name in class_folders if name != source_class)
    original = min(
        (path for path in (root / source_class).iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda path: path.name,
    )
    copy = root / target_class / f"{original.stem}_from_{source_class}{original.suffix}"
    copy.write_bytes(original.read_bytes())
    return original.relative_to(root).as_posix(), copy.relative_to(root).as_posix()


def write_tagged_photos(
    folder: str | Path, classes: Iterable[str] | None = None, per_class: int = 5, seed: int = 1000
) -> dict[str, str]:
    """Held-out photos as a phone stores them: 48 x 64 (portrait) crops of regions 48..120 px wide, saved sideways
    (64 x 48 pixels) as `IMG_<n>.JPG` with EXIF orientation 6 or 8, so only a reader that applies the tag sees them
    upright. Their seed's random stream differs from any training writer's (other positions, and the files are
    shuffled so their numbers say nothing of their class). Flat crops (grey standard deviation under
    TAGGED_MIN_CONTRAST: retina's black corners, china's sky) are redrawn, since no model can tell which photo they
    come from. Returns {file: class}."""
    root = _new_folder(folder)
    names = _class_names(classes, DEFAULT_CLASSES)
    pictures: list[tuple[str, bytes]] = []
    for name in names:
        photo, random = _photo(name), _stream(seed, name, TAGGED_STREAM)
        for index in range(per_class):
            for _ in range(MAX_DRAWS):
                region_width = int(random.integers(48, 121))
                box = _random_box(random, photo, region_width, round(region_width * 4 / 3))
                upright = photo.resize((48, 64), Image.Resampling.LANCZOS, box=box)
                if np.asarray(upright.convert("L"), dtype=np.float64).std() >= TAGGED_MIN_CONTRAST:
                    break
            else:
                raise RuntimeError(f"no crop of {name} with contrast after {MAX_DRAWS} draws")
            pictures.append((name, _encode_oriented(upright, 6 if index % 2 == 0 else 8)))
    order = np.random.default_rng([seed, SHUFFLE_KEY, TAGGED_STREAM]).permutation(len(pictures))
    labels: dict[str, str] = {}
    for number, position in enumerate(order.tolist(), start=1):
        name, data = pictures[position]
        relative = f"IMG_{number:04d}.JPG"
        _write(root, relative, data)
        labels[relative] = name
    return labels


def stored_orientation(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a phone stores for an upright picture with this EXIF orientation (3, 6 or 8): the inverse of
    ImageOps.exif_transpose."""
    return upright.transpose(STORED_TRANSPOSE[orientation])


# --- private helpers ---------------------------------------------------------------------------------------------


def _class_names(classes: Iterable[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(default if classes is None else classes)
    unknown = [name for name in names if name not in SOURCES]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"classes must be distinct names from SOURCES ({', '.join(SOURCES)}); got {list(names)}")
    return names


def _new_folder(folder: str | Path) -> Path:
    """The folder, created; refuses one with files in it, which would mix old files into the new set."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; photos.py writes into a new or empty folder")
    return root


def _stream(seed: int, name: str, stream: int) -> np.random.Generator:
    """A random stream per (seed, class, writer): a class's crops do not depend on which other classes are asked
    for. Keyed by SOURCES position (stable), not by hash(name) (salted per process)."""
    return np.random.default_rng([seed, list(SOURCES).index(name), stream])


def _write(root: Path, relative: str, data: bytes) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _encode(image: Image.Image, image_format: str, **settings) -> bytes:
    """The image encoded with the module's fixed settings for its format (overridable), as bytes."""
    defaults = {"JPEG": JPEG_SETTINGS, "PNG": PNG_SETTINGS, "WEBP": WEBP_LOSSY_SETTINGS}.get(image_format, {})
    buffer = io.BytesIO()
    image.save(buffer, image_format, **(defaults | settings))
    return buffer.getvalue()


def _encode_oriented(upright: Image.Image, orientation: int, **settings) -> bytes:
    """A JPEG whose stored pixels are turned per `orientation`, with that EXIF tag and nothing else, checked to come
    back upright through ImageOps.exif_transpose (JPEG-close: mean difference under 8 of 255)."""
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    data = _encode(stored_orientation(upright, orientation), "JPEG", exif=exif.tobytes(), **settings)
    with Image.open(io.BytesIO(data)) as stored:
        shown = ImageOps.exif_transpose(stored).convert(upright.mode)
    difference = np.abs(np.asarray(shown, dtype=np.int16) - np.asarray(upright, dtype=np.int16)).mean()
    if shown.size != upright.size or difference >= 8:
        raise AssertionError(f"EXIF orientation {orientation} does not round-trip (mean difference {difference:.1f})")
    return data


def _random_box(random: np.random.Generator, photo: Image.Image, width: int, height: int, margin: int = 0) -> tuple:
    """A width x height box at a random position inside the photo, `margin` px clear of its right edge."""
    width, height = min(width, photo.width - margin), min(height, photo.height)
    left = int(random.integers(0, photo.width - width - margin + 1))
    top = int(random.integers(0, photo.height - height + 1))
    return (left, top, left + width, top + height)


def _square_box(random: np.random.Generator, photo: Image.Image, size: int) -> tuple:
    side = int(random.integers(size, 5 * size + 1))
    return _random_box(random, photo, side, side)


def _random_shape(random: np.random.Generator, low: int, high: int) -> tuple[int, int]:
    """(width, height) with sides in low..high and a log-uniform aspect ratio in 0.5..2."""
    while True:
        width = int(random.integers(low, high + 1))
        height = round(width / math.exp(random.uniform(math.log(0.5), math.log(2))))
        if low <= height <= high:
            return width, height


def _random_crop(
    random: np.random.Generator, photo: Image.Image, low: int, high: int, margin: int = 0
) -> tuple[Image.Image, tuple]:
    """A crop with sides low..high px, of a region 1..2 times larger, resized down; returns (crop, region box)."""
    width, height = _random_shape(random, low, high)
    scale = random.uniform(1, 2)
    box = _random_box(random, photo, round(width * scale), round(height * scale), margin)
    return photo.resize((width, height), Image.Resampling.LANCZOS, box=box), box


def _tile_bytes(random: np.random.Generator, photo: Image.Image, size: int) -> bytes:
    """A size x size PNG tile of a random square region of size..5 x size px."""
    return _encode(photo.resize((size, size), Image.Resampling.LANCZOS, box=_square_box(random, photo, size)), "PNG")


def _crop_bytes(random: np.random.Generator, photo: Image.Image, grey: bool) -> bytes:
    """A JPEG crop with sides 32..112 px, grayscale (mode L) when `grey`."""
    crop, _ = _random_crop(random, photo, 32, 112)
    return _encode(crop.convert("L") if grey else crop, "JPEG")


def _draw_unique(registry: _Registry, name: str, draw, *arguments) -> tuple[bytes, Image.Image]:
    """draw(*arguments) again until its image decodes different from every other class's (a flat black tile of one
    photo could equal another's: the same file under two labels, an error ingest rightly refuses); returns the
    bytes and the decoded picture."""
    for _ in range(MAX_DRAWS):
        data = draw(*arguments)
        picture = _decoded(data)
        if not registry.conflicts(picture, name):
            return data, picture
    raise RuntimeError(f"no crop of {name} unlike the other classes' after {MAX_DRAWS} draws")


def _draw_messy(registry, hashes, name, role, stem, variant, random, photo) -> tuple[list, list, list]:
    """A new crop for one messy-folder role: its files [(relative, bytes, box, upright size), ...], their decoded
    pictures and perceptual hashes. Redrawn until no file decodes identical to an earlier image (of any class),
    the first is no near duplicate of an earlier image, and a re-encoded or brightened copy is near its original."""
    for _ in range(MAX_DRAWS):
        files = _messy_files(role, stem, variant, random, photo)
        pictures = [_decoded(data) for _, data, *_ in files]
        if any(registry.conflicts(picture, name, any_class=True) for picture in pictures):
            continue
        bits = [_perceptual_bits(picture) for picture in pictures]
        if hashes and np.count_nonzero(np.stack(hashes) != bits[0], axis=1).min() <= ACCIDENTAL_NEAR_BITS:
            continue
        if (
            role in ("near_jpeg_quality", "near_brightened")
            and np.count_nonzero(bits[0] != bits[1]) > NEAR_DUPLICATE_BITS
        ):
            continue
        return files, pictures, bits
    raise RuntimeError(f"no new {role} crop of {name} after {MAX_DRAWS} draws")


def _decoded(data: bytes) -> Image.Image:
    """The pixels the pipeline sees, near enough to compare images: EXIF orientation applied, 16-bit grey scaled to
    8 bits (value / 257), as RGB."""
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened)
    if image.mode.startswith("I"):
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) // 257).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:  # straight to RGB, Pillow warns about the tRNS chunk
        image = image.convert("RGBA")
    return image.convert("RGB")


# The pipeline's perceptual hash (imagehash.phash with hash_size=16): a 64 x 64 grey thumbnail, its 16 x 16 lowest
# DCT-II frequencies, each bit = above their median.
_HASH_SIDE, _HASH_BITS_SIDE = 64, 16
_DCT = 2 * np.cos(np.pi * np.arange(_HASH_BITS_SIDE)[:, None] * (2 * np.arange(_HASH_SIDE) + 1) / (2 * _HASH_SIDE))


def _perceptual_bits(picture: Image.Image) -> np.ndarray:
    """256 booleans; near-identical pictures differ in a few."""
    thumbnail = picture.convert("L").resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.LANCZOS)
    low = _DCT @ np.asarray(thumbnail, dtype=np.float64) @ _DCT.T
    return (low > np.median(low)).ravel()


class _Registry:
    """Fingerprints of the decoded pictures written so far (as RGB and as grayscale, since ingest may convert to
    either), to keep identical images out of different classes and to find identical ones within a class."""

    def __init__(self) -> None:
        self.owners: dict[str, tuple[str, str]] = {}

    @staticmethod
    def fingerprints(picture: Image.Image) -> list[str]:
        return [
            hashlib.sha256(f"{converted.mode}{converted.size}".encode() + converted.tobytes()).hexdigest()
            for converted in (picture, picture.convert("L"))
        ]

    def conflicts(self, picture: Image.Image, name: str, any_class: bool = False) -> bool:
        """Whether the picture is identical to one of another class (or of any class, with any_class)."""
        return any(
            key in self.owners and (any_class or self.owners[key][0] != name) for key in self.fingerprints(picture)
        )

    def add(self, picture: Image.Image, name: str, file: str) -> str | None:
        """Records the picture; returns the earlier file it is identical to (in RGB), if any."""
        keys = self.fingerprints(picture)
        earlier = self.owners.get(keys[0])
        for key in keys:
            self.owners.setdefault(key, (name, file))
        return earlier[1] if earlier else None


def _ellipse_alpha(width: int, height: int) -> np.ndarray:
    """An alpha channel: opaque inside an ellipse, a soft edge, fully transparent (0) in the corners."""
    y, x = np.mgrid[0:height, 0:width]
    distance = np.hypot((x + 0.5 - width / 2) / (width / 2), (y + 0.5 - height / 2) / (height / 2))
    return (np.clip((1.1 - distance) / 0.2, 0, 1) * 255).round().astype(np.uint8)


def _gray16(crop: Image.Image) -> Image.Image:
    """16-bit grey (mode I;16) of the crop's luminance, stretched over 0..65535 so that the low byte carries data."""
    luminance = np.asarray(crop, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
    low, high = luminance.min(), luminance.max()
    stretched = (luminance - low) / max(high - low, 1e-9) * 65535
    return Image.fromarray(stretched.round().astype(np.uint16))


def _palette_with_transparency(crop: Image.Image) -> Image.Image:
    """A palette (P) image of 63 colours plus a 64th, transparent, in the corners outside an ellipse."""
    paletted = crop.quantize(colors=63, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = paletted.getpalette()[: 63 * 3]
    palette += [0, 0, 0] * (63 - len(palette) // 3) + [255, 0, 255]
    paletted.putpalette(palette)
    corners = Image.fromarray(np.where(_ellipse_alpha(crop.width, crop.height) == 0, 255, 0).astype(np.uint8))
    paletted.paste(63, mask=corners)
    paletted.info["transparency"] = 63
    return paletted


def _messy_files(role: str, stem: str, variant, random: np.random.Generator, photo: Image.Image) -> list[tuple]:
    """The file(s) one messy-folder role writes for a new crop: [(relative, bytes, box, upright size), ...]."""
    # margin=1: a 1 px right-shifted twin needs a spare column; every role draws alike, so the streams stay aligned.
    crop, box = _random_crop(random, photo, 32, 96, margin=1)
    if role == "exif_rotated":
        if variant != 3 and crop.width == crop.height:  # a square would hide a missing turn from size checks
            crop = crop.resize((crop.width, crop.height + 8), Image.Resampling.LANCZOS)
        return [(f"{stem}_exif{variant}.jpg", _encode_oriented(crop, variant), box, crop.size)]
    one_file = {
        "jpg": (".jpg", lambda: _encode(crop, "JPEG")),
        "nested": (".jpg", lambda: _encode(crop, "JPEG")),
        "png": (".png", lambda: _encode(crop, "PNG")),
        "grayscale_jpeg": ("_grey.jpg", lambda: _encode(crop.convert("L"), "JPEG")),
        "webp_lossy": ("_lossy.webp", lambda: _encode(crop, "WEBP")),
        "webp_lossless": ("_lossless.webp", lambda: _encode(crop, "WEBP", **WEBP_LOSSLESS_SETTINGS)),
        "tiff": (".tif" if variant == "raw" else ".tiff", lambda: _encode(crop, "TIFF", compression=variant)),
        "gray16_png": ("_16bit.png", lambda: _encode(_gray16(crop), "PNG")),
        "gray16_tiff": ("_16bit.tif", lambda: _encode(_gray16(crop), "TIFF")),
        "rgba_png": ("_rgba.png", lambda: _encode(_with_alpha(crop), "PNG")),
        "la_png": ("_la.png", lambda: _encode(_with_alpha(crop.convert("L")), "PNG")),
        "palette_png": ("_palette.png", lambda: _encode(_palette_with_transparency(crop), "PNG", transparency=63)),
        "cmyk_jpeg": ("_cmyk.jpg", lambda: _encode(crop.convert("CMYK"), "JPEG")),
        "jpeg_extension": (".jpeg", lambda: _encode(crop, "JPEG")),
        "uppercase_extension": (variant, lambda: _encode(crop, "JPEG" if variant == ".JPG" else "PNG")),
    }
    if role in one_file:
        suffix, encode = one_file[role]
        return [(stem + suffix, encode(), box, crop.size)]
    if role == "byte_copies":
        data = _encode(crop, "JPEG")
        return [(f"{stem}.jpg", data, box, crop.size), (f"{stem}_copy.jpg", data, box, crop.size)]
    if role == "decode_identical":
        image_format, suffix = variant
        second = (f"{stem}_same{suffix}", _encode(crop, image_format), box, crop.size)
        return [(f"{stem}.png", _encode(crop, "PNG"), box, crop.size), second]
    original = (f"{stem}.jpg", _encode(crop, "JPEG"), box, crop.size)
    if role == "near_jpeg_quality":
        return [original, (f"{stem}_q60.jpg", _encode(crop, "JPEG", quality=60), box, crop.size)]
    if role == "near_shifted":
        shifted_box = (box[0] + 1, box[1], box[2] + 1, box[3])
        shifted = photo.resize(crop.size, Image.Resampling.LANCZOS, box=shifted_box)
        return [original, (f"{stem}_shift.jpg", _encode(shifted, "JPEG"), shifted_box, crop.size)]
    if role == "near_brightened":
        brighter = ImageEnhance.Brightness(crop).enhance(1.08)
        return [original, (f"{stem}_bright.jpg", _encode(brighter, "JPEG"), box, crop.size)]
    raise ValueError(f"unknown messy-folder role {role!r}")


def _with_alpha(image: Image.Image) -> Image.Image:
    """RGB -> RGBA or L -> LA with the ellipse alpha (corners transparent)."""
    result = image.convert("RGBA" if image.mode == "RGB" else "LA")
    result.putalpha(Image.fromarray(_ellipse_alpha(image.width, image.height)))
    return result
