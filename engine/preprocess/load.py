"""Photo loading: guards before decoding, EXIF orientation, every Pillow mode to RGB.

Order matters: the header is read (``Image.open`` does not decode) and the size is
checked BEFORE ``load()``, so a decompression bomb is refused without allocating it.
Pillow's own ``DecompressionBombError`` (raised inside ``open`` above 2×MAX_IMAGE_PIXELS)
is mapped to the same error. Pillow's global limits are never changed.
"""
from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import BadInput

log = logging.getLogger(__name__)

_EXIF_IFD = 0x8769
_FOCAL_35MM = 0xA405  # FocalLengthIn35mmFilm
_ORIENTATION = 0x0112
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass(frozen=True)
class LoadedImage:
    """A decoded, upright photo.

    rgb: [H, W, 3] uint8 (transparent pixels composited over the neutral background).
    alpha: [H, W] uint8 when the photo had real transparency, else None.
    focal_35mm: EXIF FocalLengthIn35mmFilm in mm, None when absent or 0.
    orientation: the EXIF orientation tag that was applied (1 = none).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    focal_35mm: float | None
    orientation: int


def load_image(path: Path, max_megapixels: float = 40.0, min_size: int = 64,
               background: tuple[int, int, int] = (128, 128, 128)) -> LoadedImage:
    """Open ``path`` with guards, apply EXIF orientation, convert to RGB (+ alpha)."""
    path = Path(path)
    if not path.exists():
        raise BadInput(path, "file not found", "not_found")
    if not path.is_file():
        raise BadInput(path, "not a regular file", "not_found")
    if path.stat().st_size == 0:
        raise BadInput(path, "empty file", "empty_file")
    try:
        with warnings.catch_warnings():
            # Our own megapixel limit below is stricter; don't let Pillow's warning escape.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise BadInput(path, f"image too large to decode safely ({_short(exc)})", "too_large") from None
    except UnidentifiedImageError:
        raise BadInput(path, "not an image Pillow can read", "not_an_image") from None
    except OSError as exc:
        raise BadInput(path, f"cannot read file ({_short(exc)})", "unreadable") from None
    with image:
        _check_size(path, image.size, max_megapixels, min_size)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise BadInput(path, f"truncated or corrupt image data ({_short(exc)})", "corrupt") from None
        focal, orientation = _read_exif(image)
        upright = _exif_transpose(image, path)
        try:
            rgb, alpha = to_rgb(upright, background)
        except (ValueError, OSError) as exc:
            raise BadInput(path, f"unsupported image mode {upright.mode} ({_short(exc)})", "bad_mode") from None
    return LoadedImage(rgb=rgb, alpha=alpha, focal_35mm=focal, orientation=orientation)


def load_photo(path: Path, config) -> np.ndarray:
    """The photo as EXIF-oriented RGB uint8 [H, W, 3], refusing bad files with ``BadInput``."""
    return load_image(path, config.max_megapixels, config.min_size, config.background).rgb


def _check_size(path: Path, size: tuple[int, int], max_megapixels: float, min_size: int) -> None:
    w, h = size
    if w * h > max_megapixels * 1e6:
        raise BadInput(path, f"image is {w}x{h} ({w * h / 1e6:.1f} MP), over the {max_megapixels:g} MP limit",
                       "too_large")
    if min(w, h) < min_size:
        raise BadInput(path, f"image is {w}x{h}, smaller than {min_size} px on its shorter side", "too_small")


def _read_exif(image: Image.Image) -> tuple[float | None, int]:
    """(FocalLengthIn35mmFilm or None, orientation tag); broken EXIF counts as absent."""
    try:
        exif = image.getexif()
        orientation = int(exif.get(_ORIENTATION, 1) or 1)
        value = exif.get_ifd(_EXIF_IFD).get(_FOCAL_35MM) or exif.get(_FOCAL_35MM)
        focal = float(value) if value else None
    except Exception as exc:  # noqa: BLE001 - malformed EXIF must not fail the run
        log.warning("ignoring unreadable EXIF: %s", exc)
        return None, 1
    if focal is not None and not 1.0 <= focal <= 5000.0:
        focal = None
    return focal, orientation


def _exif_transpose(image: Image.Image, path: Path) -> Image.Image:
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - a broken orientation tag: keep the pixels as stored
        log.warning("%s: ignoring EXIF orientation (%s)", path, exc)
        return image
    return image if upright is None else upright


def to_rgb(image: Image.Image, background: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode → (RGB uint8 [H, W, 3], alpha uint8 [H, W] or None).

    16-bit and float grey are rescaled (Pillow's own ``convert("L")`` clips them), CMYK and
    ICC-tagged RGB go through the embedded profile to sRGB when lcms is available, palette
    transparency becomes alpha; real transparency is composited over ``background``.
    """
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("PA", "RGBa", "La", "LA") or (mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
    elif mode in _SIXTEEN_BIT or mode == "F":
        image = Image.fromarray(_grey_to_8bit(np.asarray(image), mode), "L")
    alpha = None
    if image.mode == "RGBA":
        alpha = np.asarray(image.getchannel("A"))
        image = image.convert("RGB")
    if image.mode in ("CMYK", "RGB") and image.info.get("icc_profile"):
        image = _to_srgb(image)
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if alpha is not None:
        if alpha.min() == 255:
            alpha = None
        else:
            rgb = _composite(rgb, alpha, background)
    return np.ascontiguousarray(rgb), alpha


def _grey_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """[H, W] 16-bit / 32-bit / float grey → uint8, keeping the full range."""
    values = values.astype(np.float64)
    if mode == "F":
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
    elif mode.startswith("I;16") or values.max(initial=0.0) > 255:
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)


def _to_srgb(image: Image.Image) -> Image.Image:
    """Convert through the embedded ICC profile; on any failure keep Pillow's plain conversion."""
    try:
        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception as exc:  # noqa: BLE001 - a broken profile is not worth failing the run
        log.warning("ignoring embedded ICC profile (%s)", exc)
        return image


def _composite(rgb: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Straight-alpha over a flat colour: [H, W, 3] uint8."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + np.asarray(background, np.float32) * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _short(exc: BaseException) -> str:
    """One line, bounded: Pillow messages sometimes span lines or quote large numbers."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]
