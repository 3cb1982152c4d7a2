"""tests/photos.py: the real-photo folders are deterministic and every trait is what it claims to be (no TensorFlow)."""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests import photos

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under folder (relative POSIX path -> bytes)."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def upright_pixels(path: Path) -> np.ndarray:
    """The decoded pixels with the EXIF orientation applied (the mode left as stored)."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image))


def rebuilt_crop(crop: dict, name: str) -> np.ndarray:
    """The upright RGB pixels of a messy-folder file, rebuilt from its class photo and recorded box."""
    photo = Image.fromarray(photos.load_sources([name])[name])
    return np.asarray(photo.resize(tuple(crop["size"]), Image.Resampling.LANCZOS, box=tuple(crop["box"])))


def mean_difference(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.abs(first.astype(np.int16) - second.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("messy")
    return folder, photos.write_messy_folder(folder)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("tiles")
    return folder, photos.write_tiles(folder)


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("crops")
    return folder, photos.write_crops(folder)


def test_sources_are_colour_photos_from_three_packages():
    sources = photos.load_sources()
    assert set(sources) == set(photos.SOURCES)
    assert {source.package for source in photos.SOURCES.values()} == {"skimage", "sklearn", "matplotlib"}
    for name, photo in sources.items():
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3, name
        assert min(photo.shape[:2]) >= 300, name
        # A colour photo: the channels differ (a grey one saved as RGB would not).
        assert np.abs(photo[..., 0].astype(int) - photo[..., 2]).mean() > 5, name
    assert set(photos.DEFAULT_CLASSES) < set(photos.SOURCES) and len(photos.DEFAULT_CLASSES) == 10
    assert all(name.isalpha() and name.islower() for name in photos.SOURCES)


def test_missing_source_file_is_named(monkeypatch):
    monkeypatch.setitem(photos.SOURCES, "ghost", photos.Source("skimage", "data", "ghost.png"))
    with pytest.raises(FileNotFoundError, match="ghost.png"):
        photos.source_path("ghost")
    monkeypatch.setitem(photos.SOURCES, "nopackage", photos.Source("no_such_package_here", "data", "x.png"))
    with pytest.raises(FileNotFoundError, match="no_such_package_here"):
        photos.source_path("nopackage")


def test_writers_are_deterministic(tmp_path, messy):
    folder, result = messy
    again = photos.write_messy_folder(tmp_path / "messy")
    assert again == result
    assert tree(tmp_path / "messy") == tree(folder)
    for writer, arguments in [
        (photos.write_tiles, {"classes": ["hubble", "retina", "cat"], "per_class": 40}),  # the default takes seconds
        (photos.write_crops, {}),
        (photos.write_tagged_photos, {}),
    ]:
        first, second = (writer(tmp_path / f"{writer.__name__}{run}", **arguments) for run in (1, 2))
        assert first == second
        assert tree(tmp_path / f"{writer.__name__}1") == tree(tmp_path / f"{writer.__name__}2") != {}


def test_writers_refuse_a_folder_with_files(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(FileExistsError):
        photos.write_messy_folder(tmp_path)


def test_messy_folder_files_and_counts(messy):
    folder, result = messy
    written = tree(folder)
    images = {file for file in written if Path(file).suffix.lower() in IMAGE_SUFFIXES}
    assert images == set(result["labels"]) == set(result["crops"])
    assert set(written) - images == set(result["stray_files"])
    assert len(result["classes"]) == 6 and 230 <= len(images) <= 280
    for file, name in result["labels"].items():
        assert file.split("/")[0] == name
    for role, count in photos.MESSY_ROLES.items():
        assert len(result[role]) == count, role
    # Variable sizes and aspect ratios, mostly 32..96 px.
    sizes = {tuple(crop["size"]) for crop in result["crops"].values()}
    assert len(sizes) > 100
    assert min(min(size) for size in sizes) >= 32 and max(max(size) for size in sizes) <= 104
    ratios = [width / height for width, height in sizes]
    assert min(ratios) < 0.6 and max(ratios) > 1.7


def test_messy_folder_extensions_nested_and_stray(messy):
    folder, result = messy
    suffixes = {Path(file).suffix for file in result["labels"]}
    assert {".jpg", ".png", ".JPG", ".PNG", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"} <= suffixes
    assert {Path(file).suffix for file in result["uppercase_extension"]} == {".JPG", ".PNG"}
    for file in result["uppercase_extension"] + result["jpeg_extension"]:
        with Image.open(folder / file) as image:
            assert image.format == {".JPG": "JPEG", ".PNG": "PNG", ".jpeg": "JPEG"}[Path(file).suffix]
    assert len(result["nested"]) == photos.MESSY_NESTED
    assert all(
        Path(file).parent.name == "more" and Path(file).parent.parent.name in result["classes"]
        for file in result["nested"]
    )
    names = {Path(file).name for file in result["stray_files"]}
    assert {"notes.txt", "labels.json"} <= names
    for file in result["stray_files"]:
        with pytest.raises(Image.UnidentifiedImageError):
            Image.open(folder / file)


def test_messy_folder_modes_and_formats(messy):
    folder, result = messy

    def opened(role: str) -> list[Image.Image]:
        images = [Image.open(folder / file) for file in result[role]]
        for image in images:
            image.load()
        return images

    for image in opened("grayscale_jpeg"):
        assert (image.format, image.mode) == ("JPEG", "L")
    for image in opened("gray16_png"):
        pixels = np.asarray(image)
        assert (image.format, image.mode) == ("PNG", "I;16")
        assert pixels.min() == 0 and pixels.max() == 65535 and len(np.unique(pixels % 257)) > 10  # not 8-bit * 257
    for image in opened("gray16_tiff"):
        assert (image.format, image.mode) == ("TIFF", "I;16") and np.asarray(image).max() > 255
    for image in opened("rgba_png"):
        alpha = np.asarray(image)[..., 3]
        assert image.mode == "RGBA" and alpha.min() == 0 and alpha.max() == 255
    for image in opened("la_png"):
        assert image.mode == "LA" and np.asarray(image)[..., 1].min() == 0
    for image in opened("palette_png"):
        assert image.mode == "P" and "transparency" in image.info
        assert np.asarray(image.convert("RGBA"))[..., 3].min() == 0
    for image in opened("cmyk_jpeg"):
        assert (image.format, image.mode) == ("JPEG", "CMYK")
    for image in opened("tiff"):
        assert (image.format, image.mode) == ("TIFF", "RGB")
    assert {image.info.get("compression") for image in opened("tiff")} == {"raw", "tiff_lzw"}
    lossy, lossless = opened("webp_lossy"), opened("webp_lossless")
    assert all((image.format, image.mode) == ("WEBP", "RGB") for image in lossy + lossless)
    # Lossless WebP gives back the crop exactly, lossy does not.
    for file in result["webp_lossless"]:
        assert np.array_equal(upright_pixels(folder / file), rebuilt_crop(result["crops"][file], file.split("/")[0]))
    for file in result["webp_lossy"]:
        assert not np.array_equal(
            upright_pixels(folder / file), rebuilt_crop(result["crops"][file], file.split("/")[0])
        )


def test_messy_folder_exif_rotation_round_trips(messy):
    folder, result = messy
    assert set(result["exif_orientation"]) == set(result["exif_rotated"])
    assert set(result["exif_orientation"].values()) == {3, 6, 8}
    for file, orientation in result["exif_orientation"].items():
        with Image.open(folder / file) as image:
            assert image.format == "JPEG" and image.getexif()[photos.ORIENTATION_TAG] == orientation
            stored = np.asarray(image.convert("RGB"))
            upright = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        expected = rebuilt_crop(result["crops"][file], file.split("/")[0])
        assert upright.shape == expected.shape
        if orientation in (6, 8):  # turned a quarter: width and height swap, and the crop is never square
            assert stored.shape[:2] == expected.shape[1::-1] != expected.shape[:2]
        # Upright after the tag: as close as a JPEG gets; the stored pixels shown as they are would be far off.
        assert mean_difference(upright, expected) < 6
        wrong = np.rot90(expected, 2) if orientation == 3 else np.rot90(expected, 1 if orientation == 6 else -1)
        assert mean_difference(stored, wrong) < 6
        if orientation == 3:
            assert mean_difference(stored, expected) > 3 * mean_difference(upright, expected)
    # The helper is the exact inverse of exif_transpose, losslessly.
    picture = Image.fromarray(photos.load_sources(["cat"])["cat"][:40, :70])
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[photos.ORIENTATION_TAG] = orientation
        buffer = io.BytesIO()
        photos.stored_orientation(picture, orientation).save(buffer, "PNG", exif=exif.tobytes())
        assert np.array_equal(np.asarray(ImageOps.exif_transpose(Image.open(buffer))), np.asarray(picture))


def test_messy_folder_duplicates(messy):
    folder, result = messy
    for original, copy in result["byte_copies"]:
        assert (folder / original).read_bytes() == (folder / copy).read_bytes() and original != copy
        assert original.split("/")[0] == copy.split("/")[0]
    partners = set()
    for original, copy in result["decode_identical"]:
        assert (folder / original).read_bytes() != (folder / copy).read_bytes()
        assert np.array_equal(upright_pixels(folder / original), upright_pixels(folder / copy))
        assert Image.open(folder / original).format == "PNG"
        partners.add(Image.open(folder / copy).format)
    assert partners == {"TIFF", "BMP"}
    assert len(result["near_duplicates"]) == 6 and set(result["near_distance"]) == {
        copy for _, copy in result["near_duplicates"]
    }
    for role in photos.MESSY_NEAR_ROLES:
        for original, copy in result[role]:
            first, second = upright_pixels(folder / original), upright_pixels(folder / copy)
            assert first.shape == second.shape and not np.array_equal(first, second)
            assert 0 < mean_difference(first, second) < 25, (role, copy)
            if role != "near_shifted":
                assert result["near_distance"][copy] <= photos.NEAR_DUPLICATE_BITS
    for original, copy in result["near_brightened"]:
        assert upright_pixels(folder / copy).mean() > upright_pixels(folder / original).mean()
    for original, copy in result["near_shifted"]:
        box, shifted = result["crops"][original]["box"], result["crops"][copy]["box"]
        assert [shifted[0] - box[0], shifted[1] - box[1], shifted[2] - box[2], shifted[3] - box[3]] == [1, 0, 1, 0]


def decoded_owners(folder: Path, files) -> dict[str, list[str]]:
    """sha256 of the upright RGB pixels -> files that decode to them."""
    owners = defaultdict(list)
    for file in files:
        with Image.open(folder / file) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I"):
                image = Image.fromarray((np.asarray(image, dtype=np.uint32) // 257).astype(np.uint8))
            pixels = image.convert("RGBA" if image.mode == "P" else image.mode).convert("RGB")
        owners[hashlib.sha256(pixels.tobytes() + str(pixels.size).encode()).hexdigest()].append(file)
    return owners


def test_messy_folder_has_only_the_listed_identical_images_and_a_conflict_helper(messy, tmp_path):
    folder, result = messy
    groups = [sorted(files) for files in decoded_owners(folder, result["labels"]).values() if len(files) > 1]
    assert sorted(groups) == sorted(sorted(pair) for pair in result["byte_copies"] + result["decode_identical"])
    # The error case, written into a copy of the folder.
    for file, data in tree(folder).items():
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_bytes(data)
    original, copy = photos.write_conflicting_duplicate(tmp_path)
    assert original.split("/")[0] != copy.split("/")[0]
    assert (tmp_path / original).read_bytes() == (tmp_path / copy).read_bytes()


def test_near_distances_match_imagehash(messy):
    imagehash = pytest.importorskip("imagehash")
    folder, result = messy
    for original, copy in result["near_duplicates"]:
        first, second = (Image.fromarray(upright_pixels(folder / file)) for file in (original, copy))
        assert (
            imagehash.phash(first, hash_size=16) - imagehash.phash(second, hash_size=16)
            == (result["near_distance"][copy])
        )


def test_tiles(tiles):
    folder, result = tiles
    written = tree(folder)
    assert set(written) == set(result["labels"]) and len(written) == 2300
    assert result["classes"] == list(photos.DEFAULT_CLASSES)
    for file, data in written.items():
        name = result["labels"][file]
        assert file.startswith(f"{name}/{name}_") and file.endswith(".png")
        with Image.open(io.BytesIO(data)) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (32, 32))
    # Identical tiles happen, within a class only; never across classes.
    owners = defaultdict(set)
    for file, data in written.items():
        owners[hashlib.sha256(np.asarray(Image.open(io.BytesIO(data))).tobytes()).hexdigest()].add(
            result["labels"][file]
        )
    assert all(len(names) == 1 for names in owners.values())
    assert result["identical"] and all(
        file.split("/")[0] == earlier.split("/")[0] for file, earlier in result["identical"]
    )


def test_crops(crops):
    folder, result = crops
    written = tree(folder)
    assert set(written) == set(result["labels"]) and len(written) == 500
    modes = defaultdict(list)
    for file, data in written.items():
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and 32 <= min(image.size) and max(image.size) <= 112, file
            assert 0.45 <= image.width / image.height <= 2.2, file
            modes[image.mode].append(file)
    assert sorted(modes["L"]) == sorted(result["grayscale"]) and len(modes["L"]) == 20
    assert {file.split("/")[0] for file in result["grayscale"]} == set(photos.DEFAULT_CLASSES)
    assert result["nested"] and all("/more/" in file for file in result["nested"])


def test_tagged_photos(tmp_path):
    labels = photos.write_tagged_photos(tmp_path)
    assert len(labels) == 50 and set(labels.values()) == set(photos.DEFAULT_CLASSES)
    assert set(tree(tmp_path)) == set(labels)
    orientations = set()
    for file in labels:
        with Image.open(tmp_path / file) as image:
            orientation = image.getexif()[photos.ORIENTATION_TAG]
            orientations.add(orientation)
            assert image.size == (64, 48) and ImageOps.exif_transpose(image).size == (48, 64)
    assert orientations == {6, 8}
