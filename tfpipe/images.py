"""Decodes a user's image file the way people see it; reads bytes, writes nothing. Ingest, the schema command and
predict all call `decode_image`, so training and serving see the same pixels.

The rules, in order:
1. Formats: PNG, JPEG (and phones' MPO), BMP, GIF and TIFF (first frame), WebP, whatever the extension or its case.
   A file Pillow cannot identify is not an image: skipped and counted when its extension is not an image
   extension (`notes.txt`), an error when it is (`cat.png` that is not a PNG). A truncated or corrupt image is an
   error. An image above `max_pixels` is refused from its header, before decoding (decompression-bomb guard).
2. EXIF orientation (tag 0x0112, as phones write it) is applied: the pixels are turned upright.
3. Modes: 16-bit (I;16) and 32-bit integer (I) pixels are scaled to 8 bits (value / 257, the 16-bit range, so
   65535 is 255), float (F) pixels are read as 0..1 when they stay within it, else as 0..255 (clipped);
   transparency (RGBA, LA, palettes with a transparent colour) is composited on a grey level of
   `alpha_background` (255: white, as a viewer shows a transparent picture on a page); CMYK, YCbCr and
   other colour modes become RGB; 1-bit and all-grey palettes are grayscale.
4. Channels: grayscale becomes RGB (the grey repeated) when `channels` is 3, colour becomes grayscale (Pillow's
   ITU-R 601-2 luma, `convert("L")`) when it is 1.
5. Size, when one is asked for: an image of another size is centre-cropped to that aspect ratio and resized
   to it (Pillow's ImageOps.fit, Lanczos).

Each applied conversion is reported by name (CONVERSIONS), so ingest and the schema command can count them.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import PurePath

import numpy as np
from PIL import Image, ImageOps

FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "TIFF", "WEBP")  # JPEG opens phones' MPO files too
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp", ".mpo"}
)
GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
ORIENTATION_TAG = 0x0112
# What decode_image may do to an image, by the names it reports (and ingest counts).
# Each description completes "N image(s) [will be] ...".
CONVERSIONS = {
    "exif_rotated": "turned upright by their EXIF orientation tag",
    "grayscale_to_rgb": "converted from grayscale to RGB",
    "rgb_to_grayscale": "converted from colour to grayscale",
    "alpha_composited": "composited on the background where transparent (ingest.alpha_background)",
    "cmyk_to_rgb": "converted from CMYK to RGB",
    "color_mode_to_rgb": "converted to RGB from another colour mode (YCbCr, LAB, HSV, ...)",
    "high_bit_depth_to_8bit": "scaled from 16-bit, 32-bit or float pixels to 8 bits",
    "resized": "centre-cropped and resized to the expected size (ingest.resize)",
}
# phash as imagehash.phash(hash_size=16) computes it (same bits), without its per-call overhead:
# a 64x64 grey thumbnail, the 16x16 lowest DCT-II frequencies, each bit = above their median.
HASH_SIDE, HASH_BITS_SIDE = 64, 16
HASH_BITS = HASH_BITS_SIDE**2
_DCT = 2 * np.cos(np.pi * np.arange(HASH_BITS_SIDE)[:, None] * (2 * np.arange(HASH_SIDE) + 1) / (2 * HASH_SIDE))


# The image.info keys Pillow's Image.getexif reads an orientation from (a TIFF's own tag Pillow applies as it loads the
# file): EXIF as JPEG, WebP and PNG (eXIf) store it, ImageMagick's PNG text chunk, and XMP.
ORIENTATION_SOURCES = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


class NotAnImage(ValueError):
    """Pillow cannot identify the bytes as an image in any supported format."""


@dataclass(frozen=True)
class DecodeRules:
    """How every user image is decoded: what ingest records in the manifest and export puts beside the model."""

    channels: int = 3
    alpha_background: int = 255  # grey level transparent pixels are composited on
    max_pixels: int = 25_000_000

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        if not 0 <= self.alpha_background <= 255:
            raise ValueError(f"alpha_background must be a grey level 0..255, got {self.alpha_background!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DecodeRules:
        return cls(**{key: values[key] for key in ("channels", "alpha_background", "max_pixels") if key in values})


@dataclass
class DecodedImage:
    pixels: np.ndarray  # HxWxC uint8, C = rules.channels
    source_mode: str  # Pillow's mode as stored ("RGB", "L", "RGBA", "CMYK", "I;16", "P", ...)
    source_height: int  # as stored, after the EXIF orientation, before any resize
    source_width: int
    source_grayscale: bool  # stored as grayscale (modes 1, L, LA, 16-bit, all-grey palettes)
    orientation: int = 1  # the EXIF orientation tag applied (1: none)
    conversions: list[str] = field(default_factory=list)  # CONVERSIONS keys, in the order applied


def is_image_name(name: str | PurePath) -> bool:
    """True when the file's extension (any case) names an image format."""
    return PurePath(name).suffix.lower() in IMAGE_EXTENSIONS


def _to_8bit(image: Image.Image) -> np.ndarray:
    """16-bit, 32-bit integer or float pixels as uint8 HxW, by the module docstring's rule 3."""
    values = np.asarray(image)
    if image.mode == "F":
        values = values.astype(np.float64)
        finite = values[np.isfinite(values)]
        scale = 255.0 if finite.size and finite.min() >= 0 and finite.max() <= 1 else 1.0
        return np.clip(np.nan_to_num(values * scale), 0, 255).round().astype(np.uint8)
    return np.clip(np.round(values.astype(np.float64) / 257), 0, 255).astype(np.uint8)


def _composite(image: Image.Image, background: int) -> Image.Image:
    """RGBA on an opaque grey background, as RGB."""
    base = Image.new("RGBA", image.size, (background, background, background, 255))
    return Image.alpha_composite(base, image.convert("RGBA")).convert("RGB")


def _normalize_mode(image: Image.Image, background: int, conversions: list[str]) -> tuple[np.ndarray, bool]:
    """(uint8 HxWx{1,3} pixels, True when grayscale) from any Pillow mode, by rule 3."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        conversions.append("high_bit_depth_to_8bit")
        return _to_8bit(image)[..., None], True
    if mode == "P" and "transparency" in image.info or mode == "PA":
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("LA", "La", "RGBA", "RGBa"):
        alpha = np.asarray(image.getchannel("A"))
        grey = mode in ("LA", "La")
        if (alpha < 255).any():
            conversions.append("alpha_composited")
        rgb = np.asarray(_composite(image, background))
        return (rgb[..., :1], True) if grey else (rgb, False)
    if mode == "P":  # a palette: grayscale when every colour used is grey
        rgb = np.asarray(image.convert("RGB"))
        return (rgb[..., :1], True) if (rgb == rgb[..., :1]).all() else (rgb, False)
    if mode in ("1", "L"):
        return np.asarray(image.convert("L"))[..., None], True
    if mode == "RGB":
        return np.asarray(image), False
    if mode == "CMYK":
        conversions.append("cmyk_to_rgb")
    elif mode != "RGBX":
        conversions.append("color_mode_to_rgb")
    try:
        return np.asarray(image.convert("RGB")), False
    except ValueError as error:
        raise ValueError(f"{mode} pixels cannot be converted to RGB ({error})") from None


def decode_image(data: bytes, rules: DecodeRules, size: tuple[int, int] | None = None) -> DecodedImage:
    """Encoded bytes -> DecodedImage by the module docstring's rules; raises NotAnImage for bytes that are not an
    image, ValueError (naming the reason) for an image that cannot be decoded."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    conversions: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        with image:
            if image.width * image.height > rules.max_pixels:  # checked on the header, before decoding
                raise ValueError(
                    f"{image.width}x{image.height} = {image.width * image.height:,} pixels, above "
                    f"ingest.max_image_pixels = {rules.max_pixels:,} (decompression-bomb guard)"
                )
            image.load()
            source_mode = image.mode
            # Where Pillow's getexif finds an orientation once a file is loaded (a TIFF's: Pillow applies it in load);
            # most files have none of them (~40 µs an image saved)
            tagged = any(key in image.info for key in ORIENTATION_SOURCES)
            orientation = image.getexif().get(ORIENTATION_TAG, 1) if tagged else 1
            orientation = orientation if isinstance(orientation, int) and 2 <= orientation <= 8 else 1
            if orientation != 1:
                image = ImageOps.exif_transpose(image)
                conversions.append("exif_rotated")
            pixels, grayscale = _normalize_mode(image, rules.alpha_background, conversions)
    except Image.DecompressionBombError as error:
        raise ValueError(f"decompression-bomb guard: {error}") from None
    except Image.UnidentifiedImageError:
        raise NotAnImage(f"not an image ({', '.join(FORMATS)})") from None
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001  Pillow raises OSError, SyntaxError, EOFError, ... for broken files
        raise ValueError(f"cannot decode image: {error}") from None
    if rules.channels == 3 and grayscale:
        pixels = np.repeat(pixels, 3, axis=2)
        conversions.append("grayscale_to_rgb")
    elif rules.channels == 1 and not grayscale:
        pixels = np.asarray(Image.fromarray(pixels).convert("L"))[..., None]
        conversions.append("rgb_to_grayscale")
    source_height, source_width = pixels.shape[:2]
    if size is not None and tuple(pixels.shape[:2]) != tuple(size):
        pixels = fit_image(pixels, *size)
        conversions.append("resized")
    return DecodedImage(
        np.ascontiguousarray(pixels), source_mode, source_height, source_width, grayscale, orientation, conversions
    )


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop to the aspect ratio of height x width, then resize to it (HxWxC uint8 in and out)."""
    picture = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    fitted = np.asarray(ImageOps.fit(picture, (width, height), Image.Resampling.LANCZOS))
    return fitted.reshape(height, width, image.shape[2])


def perceptual_hash(image: np.ndarray) -> str:
    """256-bit perceptual hash as 64 hex digits; near-identical images differ in a few bits."""
    picture = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).convert("L")
    pixels = np.asarray(picture.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = _DCT @ pixels @ _DCT.T
    # np.median's value (the mean of the two middle values), without its per-call overhead (~0.1 ms an image)
    middle = np.partition(low.ravel(), (HASH_BITS // 2 - 1, HASH_BITS // 2))[HASH_BITS // 2 - 1 : HASH_BITS // 2 + 1]
    return np.packbits(low > (middle[0] + middle[1]) / 2).tobytes().hex()


def describe_image(image: np.ndarray) -> dict:
    """The per-example columns computed from the pixels a model sees."""
    return {
        "height": image.shape[0],
        "width": image.shape[1],
        "channels": image.shape[2],
        "min": int(image.min()),
        "max": int(image.max()),
        "mean": round(float(image.mean()), 4),
        "sha256": hashlib.sha256(image.tobytes()).hexdigest(),
        "phash": perceptual_hash(image),
    }
