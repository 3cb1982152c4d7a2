"""Distinct generated colour images for benchmarks/bench_scale.py: 32x32 RGB PNGs of ten shapes (disk, ring,
triangle, square, frame, plus, star, crescent, two discs, bar), each at a random position, size, rotation and colour
on a random smooth colour field with pixel noise. The field is random per image, so every image's perceptual hash is
random and no near-duplicate check can fire. Image `index` is the same whatever the chunking or the number of cores.
Writes <folder>/<shape>/<index>.png, by default in .cache/bench_scale/shapes-<count> (git-ignored, reused).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench_scale"
SHAPES = ["disk", "ring", "triangle", "square", "frame", "plus", "star", "crescent", "two_discs", "bar"]
SIZE = 32
SCALE = 4  # shapes are drawn at 4x and downsampled: anti-aliased edges
CHUNK = 2_000  # images per generation task


def _polygon(center: np.ndarray, radius: float, angle: float, corners: int, inner: float | None = None) -> list:
    """Vertices of a regular polygon (a star when `inner` is the inner radius' share)."""
    points = []
    steps = corners * (2 if inner else 1)
    for step in range(steps):
        r = radius * (inner if inner and step % 2 else 1.0)
        theta = angle + 2 * math.pi * step / steps
        points.append((center[0] + r * math.cos(theta), center[1] + r * math.sin(theta)))
    return points


def draw_shape(shape: str, rng: np.random.Generator) -> np.ndarray:
    """One 32x32x3 uint8 image of `shape` with a random pose and colours on a random smooth field with noise."""
    from PIL import Image, ImageDraw

    big = SIZE * SCALE
    # The background: a random 4x4 colour grid, smoothly upsampled; random per image, so hashes are too.
    field = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    background = Image.fromarray(field).resize((big, big), Image.BICUBIC)
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    radius = rng.uniform(0.22, 0.38) * big
    center = rng.uniform(radius + 2, big - radius - 2, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    x, y = center
    if shape == "disk":
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
    elif shape == "ring":
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
        inner = radius * 0.55
        draw.ellipse([x - inner, y - inner, x + inner, y + inner], fill=0)
    elif shape == "triangle":
        draw.polygon(_polygon(center, radius, angle, 3), fill=255)
    elif shape == "square":
        draw.polygon(_polygon(center, radius, angle, 4), fill=255)
    elif shape == "frame":
        draw.polygon(_polygon(center, radius, angle, 4), fill=255)
        draw.polygon(_polygon(center, radius * 0.55, angle, 4), fill=0)
    elif shape == "plus":
        for turn in (0.0, math.pi / 2):
            direction = np.array([math.cos(angle + turn), math.sin(angle + turn)])
            draw.line(
                [tuple(center - radius * direction), tuple(center + radius * direction)],
                fill=255,
                width=int(radius * 0.4),
            )
    elif shape == "star":
        draw.polygon(_polygon(center, radius, angle, 5, inner=0.45), fill=255)
    elif shape == "crescent":
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
        offset = radius * 0.5 * np.array([math.cos(angle), math.sin(angle)])
        cx, cy = center + offset
        draw.ellipse([cx - radius * 0.85, cy - radius * 0.85, cx + radius * 0.85, cy + radius * 0.85], fill=0)
    elif shape == "two_discs":
        offset = radius * 0.55 * np.array([math.cos(angle), math.sin(angle)])
        small = radius * 0.42
        for cx, cy in (center + offset, center - offset):
            draw.ellipse([cx - small, cy - small, cx + small, cy + small], fill=255)
    elif shape == "bar":
        direction = np.array([math.cos(angle), math.sin(angle)])
        draw.line(
            [tuple(center - radius * direction), tuple(center + radius * direction)], fill=255, width=int(radius * 0.35)
        )
    else:
        raise ValueError(f"unknown shape {shape!r}")
    # The shape's colour stands out from the field's mean colour (a shape of the background's colour is invisible).
    mean = np.asarray(field, np.float64).mean(axis=(0, 1))
    colour = np.where(mean > 127, rng.integers(0, 80, 3), rng.integers(176, 256, 3)).astype(np.uint8)
    foreground = Image.new("RGB", (big, big), tuple(int(value) for value in colour))
    image = Image.composite(foreground, background, mask).resize((SIZE, SIZE), Image.BOX)
    pixels = np.asarray(image, np.int16) + rng.normal(0, 6, size=(SIZE, SIZE, 3)).round().astype(np.int16)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _write_chunk(directory: str, start: int, stop: int, seed: int) -> None:
    from pipelines.sources import encode_png

    for index in range(start, stop):
        rng = np.random.default_rng([seed, index])  # image `index` is the same whatever the chunking
        shape = SHAPES[index % len(SHAPES)]
        path = Path(directory) / shape / f"{index:07d}.png"
        path.write_bytes(encode_png(draw_shape(shape, rng)))


def generate_folder(count: int, seed: int = 0, directory: Path | None = None) -> Path:
    """`count` distinct shape images in <shape>/<index>.png, on every core; reused when complete."""
    directory = directory or CACHE / f"shapes-{count}"
    marker = directory / ".complete"
    if marker.is_file():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    for shape in SHAPES:
        (directory / shape).mkdir(parents=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        tasks = [
            pool.submit(_write_chunk, str(directory), first, min(first + CHUNK, count), seed)
            for first in range(0, count, CHUNK)
        ]
        for task in tasks:
            task.result()
    marker.write_text(f"{count}\n")
    print(f"  generated {count:,} images in {time.perf_counter() - start:.0f} s: {directory}", flush=True)
    return directory
