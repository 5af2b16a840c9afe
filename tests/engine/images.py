"""Odd and broken image files for the preprocess tests, built by hand where Pillow won't."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, raw: bytes) -> bytes:
    """A PNG with the given IHDR and ``raw`` (already filtered scanlines) as its zlib stream."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


def write_bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A tiny file whose header claims width × height RGB (the pixel data is one short row)."""
    path.write_bytes(png_bytes(width, height, 8, 2, b"\x00" + b"\x00" * 30))
    return path


def write_png16(path: Path, image: np.ndarray) -> Path:
    """A real 16-bit PNG (Pillow cannot write 16-bit RGB). image: [H, W] or [H, W, 3] uint16."""
    image = np.asarray(image, np.uint16)
    colour_type = 0 if image.ndim == 2 else 2
    rows = image.reshape(image.shape[0], -1).astype(">u2").tobytes()
    stride = image.shape[1] * (1 if image.ndim == 2 else 3) * 2
    raw = b"".join(b"\x00" + rows[i * stride:(i + 1) * stride] for i in range(image.shape[0]))
    path.write_bytes(png_bytes(image.shape[1], image.shape[0], 16, colour_type, raw))
    return path


def write_truncated_jpeg(path: Path, image: np.ndarray, keep: float = 0.5) -> Path:
    """A JPEG cut after ``keep`` of its bytes (header intact, scan data missing)."""
    full = path.with_suffix(".full.jpg")
    Image.fromarray(image).save(full, quality=90)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def with_exif_orientation(path: Path, upright: np.ndarray, orientation: int) -> Path:
    """Store ``upright`` rotated so that applying EXIF ``orientation`` (6 or 8) restores it.

    Orientation 6: the viewer rotates 90° clockwise, so the stored pixels are the upright
    ones rotated 90° counter-clockwise; orientation 8 is the opposite.
    """
    stored = np.rot90(upright, k=1 if orientation == 6 else -1)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored)).save(path, quality=95, exif=exif)
    return path


def two_faces(portrait: np.ndarray, small_scale: float = 0.5) -> np.ndarray:
    """The portrait and a scaled-down copy side by side: [H, W + w_small, 3] uint8."""
    h, w = portrait.shape[:2]
    small = np.asarray(Image.fromarray(portrait).resize((int(w * small_scale), int(h * small_scale)),
                                                      Image.LANCZOS))
    canvas = np.full((h, w + small.shape[1], 3), 200, np.uint8)
    canvas[:, :w] = portrait
    top = (h - small.shape[0]) // 2
    canvas[top:top + small.shape[0], w:] = small
    return canvas
