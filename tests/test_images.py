"""The one decoder of user images (tfpipe/images.py): every rule on tiny in-memory files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tfpipe.images import (
    DecodeRules,
    NotAnImage,
    decode_image,
    fit_image,
    is_image_name,
    perceptual_hash,
)

RGB, GREY = DecodeRules(channels=3), DecodeRules(channels=1)


def encode(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def colour(height=4, width=5, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_channels_follow_the_rules_grey_becomes_rgb_and_colour_becomes_grey():
    rgb = Image.fromarray(colour())
    assert decode_image(encode(rgb), GREY).pixels.shape == (4, 5, 1)
    np.testing.assert_array_equal(decode_image(encode(rgb), GREY).pixels[..., 0], np.asarray(rgb.convert("L")))
    gray = Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5))
    widened = decode_image(encode(gray), RGB)
    assert widened.pixels.shape == (4, 5, 3) and widened.conversions == ["grayscale_to_rgb"]
    assert widened.source_grayscale and widened.source_mode == "L"
    np.testing.assert_array_equal(widened.pixels, np.repeat(np.asarray(gray)[..., None], 3, axis=2))
    grey_palette = decode_image(encode(gray.convert("P"), "GIF"), GREY)
    np.testing.assert_array_equal(grey_palette.pixels[..., 0], np.asarray(gray))
    assert grey_palette.conversions == []
    assert decode_image(encode(rgb.convert("P"), "GIF"), RGB).pixels.shape == (4, 5, 3)
    assert decode_image(encode(gray.convert("1"), "BMP"), GREY).pixels.shape == (4, 5, 1)


def test_transparency_is_composited_on_the_stated_background():
    pixels = np.zeros((2, 2, 4), np.uint8)
    pixels[..., 0] = 200  # red where opaque
    pixels[0, 0, 3] = 255  # one opaque pixel, the others fully transparent
    rgba = Image.fromarray(pixels, "RGBA")
    on_white = decode_image(encode(rgba), RGB)
    assert on_white.conversions == ["alpha_composited"]
    assert on_white.pixels[0, 0].tolist() == [200, 0, 0] and on_white.pixels[1, 1].tolist() == [255, 255, 255]
    on_black = decode_image(encode(rgba), DecodeRules(channels=3, alpha_background=0))
    assert on_black.pixels[1, 1].tolist() == [0, 0, 0]
    half = Image.fromarray(np.array([[[100, 128]]], np.uint8), "LA")  # grey 100 at half opacity on white
    decoded = decode_image(encode(half), GREY)
    assert decoded.pixels.shape == (1, 1, 1) and abs(int(decoded.pixels[0, 0, 0]) - 178) <= 1
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([10, 20, 30, 40, 50, 60])
    transparent = decode_image(encode(palette, transparency=0), RGB)
    assert transparent.pixels[0, 0].tolist() == [255, 255, 255] and transparent.pixels[0, 1].tolist() == [40, 50, 60]


def test_cmyk_16_bit_float_webp_and_tiff_are_read_not_refused():
    cmyk = Image.new("CMYK", (3, 2), (10, 20, 30, 40))
    decoded = decode_image(encode(cmyk, "JPEG", quality=100), RGB)
    assert (
        decoded.source_mode == "CMYK" and decoded.conversions == ["cmyk_to_rgb"] and decoded.pixels.shape == (2, 3, 3)
    )
    deep = np.array([[0, 257, 65535, 32896]], np.uint16)
    for format in ("PNG", "TIFF"):
        scaled = decode_image(encode(Image.fromarray(deep), format), GREY)
        assert scaled.source_mode.startswith("I") and "high_bit_depth_to_8bit" in scaled.conversions
        assert scaled.pixels[..., 0].tolist() == [[0, 1, 255, 128]]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    assert decode_image(encode(unit, "TIFF"), GREY).pixels[..., 0].tolist() == [[0, 128, 255]]
    original = colour(8, 8)
    for format, options in (("WEBP", {"lossless": True}), ("TIFF", {})):
        np.testing.assert_array_equal(
            decode_image(encode(Image.fromarray(original), format, **options), RGB).pixels, original
        )


def test_exif_orientation_is_applied_as_phones_mean_it():
    upright = colour(4, 6, seed=1)  # 4 high, 6 wide
    stored = Image.fromarray(np.rot90(upright, k=1))  # stored turned a quarter left: 6 high, 4 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    decoded = decode_image(encode(stored, "PNG", exif=exif), RGB)
    assert decoded.orientation == 6 and decoded.conversions == ["exif_rotated"]
    np.testing.assert_array_equal(decoded.pixels, upright)
    assert (decoded.source_height, decoded.source_width) == (4, 6)


def test_the_orientation_is_read_wherever_pillow_finds_one_and_files_without_one_are_upright():
    """decode_image asks Pillow's getexif only where it can find an orientation (ORIENTATION_SOURCES, a TIFF's tags):
    every way a file stores one gives the same orientation as getexif does, and the pixels come upright."""
    import io

    from PIL import PngImagePlugin

    stored = Image.fromarray(np.rot90(colour(4, 6, seed=1), k=1))
    exif = Image.Exif()
    exif[0x0112] = 6
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    text = PngImagePlugin.PngInfo()
    text.add_itxt("XML:com.adobe.xmp", xmp.decode())
    files = {
        "jpeg exif": encode(stored, "JPEG", exif=exif),
        "webp exif": encode(stored, "WEBP", exif=exif, lossless=True),
        "tiff tags": encode(stored, "TIFF", tiffinfo={0x0112: 6}),
        "png exif": encode(stored, "PNG", exif=exif),
        "png xmp": encode(stored, "PNG", pnginfo=text),
        "jpeg xmp": encode(stored, "JPEG", xmp=xmp),
        "png plain": encode(stored, "PNG"),
        "jpeg plain": encode(stored, "JPEG"),
    }
    for name, data in files.items():
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # a TIFF's orientation is applied here, by Pillow
            expected = image.getexif().get(0x0112, 1)
        decoded = decode_image(data, RGB)
        assert decoded.orientation == expected == (1 if "plain" in name or "tiff" in name else 6), name
        assert decoded.pixels.shape[:2] == ((6, 4) if "plain" in name else (4, 6)), name  # upright, or as stored


def test_extensions_in_any_case_and_what_is_not_an_image():
    assert is_image_name("a/B.JPG") and is_image_name("x.Tiff") and is_image_name("y.webp")
    assert not is_image_name("notes.txt") and not is_image_name("Thumbs.db") and not is_image_name("README")
    with pytest.raises(NotAnImage):
        decode_image(b"just some text", RGB)
    with pytest.raises(ValueError, match="0 bytes"):
        decode_image(b"", RGB)
    with pytest.raises(NotAnImage):  # a PNG signature and garbage: named like an image, ingest's problem
        decode_image(b"\x89PNG\r\n\x1a\n broken", GREY)
    whole = encode(Image.fromarray(colour(32, 32)), "JPEG")
    with pytest.raises(ValueError, match="cannot decode"):
        decode_image(whole[: len(whole) // 2], RGB)


def test_the_decompression_bomb_guard_reads_only_the_header():
    large = encode(Image.new("L", (300, 200)))
    with pytest.raises(ValueError, match=r"300x200 = 60,000 pixels.*decompression-bomb"):
        decode_image(large, DecodeRules(channels=1, max_pixels=50_000))
    assert decode_image(large, DecodeRules(channels=1, max_pixels=60_000)).pixels.shape == (200, 300, 1)


def test_a_size_centre_crops_and_resizes_and_says_so():
    wide = colour(20, 40)
    decoded = decode_image(encode(Image.fromarray(wide)), RGB, size=(10, 10))
    assert decoded.pixels.shape == (10, 10, 3) and decoded.conversions == ["resized"]
    np.testing.assert_array_equal(decoded.pixels, fit_image(wide, 10, 10))
    same = decode_image(encode(Image.fromarray(wide)), RGB, size=(20, 40))
    assert same.conversions == [] and (same.source_height, same.source_width) == (20, 40)
    with pytest.raises(ValueError, match="channels"):
        DecodeRules(channels=2)


def test_perceptual_hash_matches_imagehash_and_survives_small_changes():
    import imagehash

    image = np.random.default_rng(0).integers(0, 256, size=(28, 28, 1), dtype=np.uint8)
    assert perceptual_hash(image) == str(imagehash.phash(Image.fromarray(image[..., 0]), hash_size=16))
    brighter = np.clip(image.astype(np.int16) + 4, 0, 255).astype(np.uint8)
    assert (int(perceptual_hash(image), 16) ^ int(perceptual_hash(brighter), 16)).bit_count() <= 8


def test_ingest_and_predict_decode_every_kind_of_file_identically(tmp_path):
    """The train/serve promise: the pixels ingest stores are the pixels predict feeds, file by file, for EXIF-rotated,
    grayscale-in-colour, RGBA, LA, palette, CMYK, 16-bit, WebP, TIFF and uppercase-extension files."""
    from components.ingest.decode import read_example
    from components.ingest.layout import read_layout
    from pipelines import predict
    from tests.photos import write_messy_folder

    traits = write_messy_folder(tmp_path / "raw")
    rules = DecodeRules(channels=3, alpha_background=255)
    decoding = {**rules.to_dict(), "resize": True}
    checked = set()
    for example in read_layout(tmp_path / "raw").examples:
        row, stored = read_example(example, rules, (40, 48))
        if stored is None:
            continue
        served = predict.load_image(example.path, (40, 48, 3), decoding=decoding)
        np.testing.assert_array_equal(served, stored, err_msg=example.file)
        checked.add(example.file)
    for trait in ("exif_rotated", "grayscale_jpeg", "rgba_png", "la_png", "palette_png", "cmyk_jpeg", "gray16_png"):
        assert set(traits[trait]) <= checked, trait
    for trait in ("webp_lossy", "webp_lossless", "tiff", "gray16_tiff", "uppercase_extension"):
        assert set(traits[trait]) <= checked, trait
