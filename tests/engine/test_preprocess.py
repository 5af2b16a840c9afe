"""The preprocess stage on real photos and every colour mode / orientation, with the real mediapipe."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from engine.context import RunContext
from engine.preprocess import PreprocessConfig, load_photo, run
from engine.preprocess.camera import FRAME_DIAGONAL_MM

from .images import two_faces, with_exif_orientation, write_png16

# The astronaut's face (mediapipe detection ≈ x 174–278, y 68–172), with a margin.
FACE_BOX = (165, 55, 290, 200)
NOSE_TIP = 1
CONFIG = PreprocessConfig()


def _run(path, out_dir, config=CONFIG):
    ctx = RunContext()
    return run(path, out_dir, config, ctx), ctx


def _inside(point, box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def _mean_dist(a, b) -> float:
    return float(np.linalg.norm(a[:, :2] - b[:, :2], axis=1).mean())


@pytest.fixture(scope="module")
def upright(portrait_path, tmp_path_factory):
    """The reference result on the plain PNG portrait."""
    return _run(portrait_path, tmp_path_factory.mktemp("upright"))[0]


def test_portrait(portrait_path, portrait_array, tmp_path):
    pre, ctx = _run(portrait_path, tmp_path)
    assert pre.landmarks_image.shape == (478, 3) and pre.landmarks_crop.shape == (478, 3)
    assert _inside(pre.landmarks_image[NOSE_TIP], FACE_BOX)
    assert pre.n_faces == 1 and not ctx.warnings
    np.testing.assert_array_equal(pre.photo, portrait_array)
    assert pre.crop.shape == (512, 512, 4) and pre.crop.dtype == np.uint8
    alpha = pre.crop[..., 3]
    assert (alpha > 250).mean() > 0.2 and (alpha < 5).mean() > 0.2  # foreground and background
    nose = pre.landmarks_crop[NOSE_TIP]
    assert alpha[int(nose[1]), int(nose[0])] == 255 and alpha[5, 5] == 0 and alpha[5, -5] == 0
    assert alpha[200, 20] < 5 and alpha[200, -20] < 5  # sky beside the head (inside the photo)
    # The whole face is inside the crop with room for the hair: every landmark in the middle.
    assert pre.landmarks_crop[:, :2].min() > 80 and pre.landmarks_crop[:, :2].max() < 512 - 80
    # Photo → crop mapping is the box's affine map (z scaled like x, y).
    x0, y0, x1, y1 = pre.crop_box
    assert x1 - x0 == pytest.approx(y1 - y0)
    s = 512 / (x1 - x0)
    np.testing.assert_allclose(pre.landmarks_crop[:, 0], (pre.landmarks_image[:, 0] - x0) * s, atol=1e-9)
    np.testing.assert_allclose(pre.landmarks_crop[:, 2], pre.landmarks_image[:, 2] * s, atol=1e-9)
    # Default camera: 46.8° diagonal fov on the 512² photo, carried into the crop.
    f_photo = math.hypot(512, 512) / (2 * math.tan(math.radians(46.8) / 2))
    assert pre.focal_source == "default"
    assert pre.fx == pytest.approx(f_photo * s) and pre.fy == pre.fx
    assert (pre.cx, pre.cy) == pytest.approx(((256 - x0) * s, (256 - y0) * s))
    # Files.
    folder = tmp_path / "input"
    assert sorted(p.name for p in folder.iterdir()) == ["camera.json", "crop.png", "landmarks.json", "photo.png"]
    assert Image.open(folder / "crop.png").mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(Image.open(folder / "crop.png")), pre.crop)
    lm = json.loads((folder / "landmarks.json").read_text())
    assert lm["image_size"] == [512, 512] and lm["crop_box"] == list(pre.crop_box)
    np.testing.assert_allclose(lm["crop"], pre.landmarks_crop, atol=1e-3)
    cam = json.loads((folder / "camera.json").read_text())
    assert cam["focal_source"] == "default" and cam["fov_diagonal_deg"] == pytest.approx(46.8)
    assert cam["crop"]["fl_x"] == pytest.approx(pre.fx) and cam["photo"]["fl_x"] == pytest.approx(f_photo)


def test_exif_focal_35mm(portrait_array, tmp_path):
    path = tmp_path / "focal.jpg"
    exif = Image.Exif()
    exif[0x8769] = {0xA405: 85}  # Exif IFD: FocalLengthIn35mmFilm = 85 mm
    Image.fromarray(portrait_array).save(path, quality=95, exif=exif)
    pre, _ = _run(path, tmp_path / "out")
    assert pre.focal_source == "exif"
    f_photo = 85 * math.hypot(512, 512) / FRAME_DIAGONAL_MM
    assert pre.fx == pytest.approx(f_photo * 512 / (pre.crop_box[2] - pre.crop_box[0]))
    cam = json.loads((tmp_path / "out" / "input" / "camera.json").read_text())
    assert cam["focal_35mm"] == 85 and cam["photo"]["fl_x"] == pytest.approx(f_photo)


def test_two_faces_takes_largest_and_warns(portrait_array, upright, tmp_path):
    path = tmp_path / "two.png"
    Image.fromarray(two_faces(portrait_array, 0.5)).save(path)
    pre, ctx = _run(path, tmp_path / "out")
    assert pre.n_faces == 2
    assert [w["code"] for w in ctx.warnings] == ["multiple_faces"]
    assert _mean_dist(pre.landmarks_image, upright.landmarks_image) < 3.0  # the big (left) face


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation(portrait_array, orientation, tmp_path):
    tall = np.ascontiguousarray(portrait_array[:, 40:440])  # 512 × 400: a wrong rotation changes the shape
    plain = tmp_path / "plain.jpg"
    Image.fromarray(tall).save(plain, quality=95)
    reference, _ = _run(plain, tmp_path / "ref")
    rotated = with_exif_orientation(tmp_path / f"rot{orientation}.jpg", tall, orientation)
    assert Image.open(rotated).size == (512, 400)  # stored sideways
    pre, _ = _run(rotated, tmp_path / "out")
    assert pre.photo.shape == (512, 400, 3)
    assert _mean_dist(pre.landmarks_image, reference.landmarks_image) < 3.0
    assert _inside(pre.landmarks_image[NOSE_TIP] + [40, 0, 0], FACE_BOX)
    assert json.loads((tmp_path / "out" / "input" / "camera.json").read_text())["exif_orientation"] == orientation


def test_cmyk_jpeg(portrait_array, upright, tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(portrait_array).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    pre, _ = _run(path, tmp_path / "out")
    assert np.abs(pre.photo.astype(int) - portrait_array).mean() < 6  # colours right, not inverted
    assert _mean_dist(pre.landmarks_image, upright.landmarks_image) < 3.0


@pytest.mark.parametrize("channels", ["rgb", "grey"])
def test_16bit_png(portrait_array, upright, channels, tmp_path):
    grey = np.asarray(Image.fromarray(portrait_array).convert("L"))
    source = portrait_array if channels == "rgb" else grey
    path = write_png16(tmp_path / "deep.png", source.astype(np.uint16) * 257)
    if channels == "grey":
        assert Image.open(path).mode.startswith("I")
    pre, _ = _run(path, tmp_path / "out")
    expected = portrait_array if channels == "rgb" else np.repeat(grey[..., None], 3, -1)
    np.testing.assert_array_equal(pre.photo, expected)  # full range kept, no clipping to 255
    assert _mean_dist(pre.landmarks_image, upright.landmarks_image) < 4.0


@pytest.mark.parametrize("mode", ["L", "LA", "P", "P_transparent"])
def test_grey_and_palette(portrait_array, upright, mode, tmp_path):
    image = Image.fromarray(portrait_array)
    if mode == "L":
        image = image.convert("L")
    elif mode == "LA":
        image = image.convert("LA")
    else:
        image = image.quantize(256)
        if mode == "P_transparent":
            image.info["transparency"] = int(np.asarray(image)[0, 0])  # the top-left background colour
    path = tmp_path / f"{mode}.png"
    image.save(path, **({"transparency": image.info["transparency"]} if mode == "P_transparent" else {}))
    assert Image.open(path).mode == mode.split("_")[0]
    pre, _ = _run(path, tmp_path / "out")
    assert pre.photo.shape == (512, 512, 3) and pre.photo.dtype == np.uint8
    assert _inside(pre.landmarks_image[NOSE_TIP], FACE_BOX)
    assert _mean_dist(pre.landmarks_image, upright.landmarks_image) < 5.0


def test_rgba_transparent_background(portrait_array, upright, tmp_path):
    h, w = portrait_array.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    head = ((xx - 225) / 120.0) ** 2 + ((yy - 200) / 190.0) ** 2 <= 1.0  # head + neck ellipse
    rgba = np.dstack([portrait_array, np.where(head, 255, 0).astype(np.uint8)])
    rgba[~head, :3] = (0, 255, 0)  # garbage under full transparency must not show
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(path)
    pre, _ = _run(path, tmp_path / "out")
    assert (pre.photo[~head] == 128).all() and (pre.photo[head] == portrait_array[head]).all()
    assert _mean_dist(pre.landmarks_image, upright.landmarks_image) < 3.0
    # The photo's alpha is the matte (cropped like the photo, transparent outside it).
    alpha = pre.crop[..., 3]
    nose = pre.landmarks_crop[NOSE_TIP]
    assert alpha[int(nose[1]), int(nose[0])] == 255 and alpha[3, 3] == 0 and alpha[-3, -3] == 0
    assert set(np.unique(alpha)) <= set(range(256)) and (alpha == 0).mean() > 0.2


def test_unicode_and_spaces_in_path(portrait_array, tmp_path):
    folder = tmp_path / "fötos mit Lücken ✓ 写真"
    folder.mkdir()
    path = folder / "mein Bild 1 é.png"
    Image.fromarray(portrait_array).save(path)
    out = tmp_path / "ausgabe ø 出力"
    pre, _ = _run(path, out)
    assert _inside(pre.landmarks_image[NOSE_TIP], FACE_BOX)
    assert (out / "input" / "crop.png").is_file() and (out / "input" / "camera.json").is_file()
    np.testing.assert_array_equal(load_photo(path, CONFIG), portrait_array)


def test_config_from_dict():
    assert PreprocessConfig.from_dict({"size": 256, "background": [1, 2, 3]}) == PreprocessConfig(
        size=256, background=(1, 2, 3))
    with pytest.raises(ValueError, match="unknown preprocess config keys: sise"):
        PreprocessConfig.from_dict({"sise": 256})
    with pytest.raises(ValueError, match="pad_mode"):
        PreprocessConfig(pad_mode="mirror")


def test_small_face_in_big_photo(portrait_array, upright, tmp_path):
    canvas = np.full((2000, 3000, 3), 90, np.uint8)  # face ≈ 5 % of the shorter side: needs the tiles
    canvas[1100:1612, 2100:2612] = portrait_array
    path = tmp_path / "group.jpg"
    Image.fromarray(canvas).save(path, quality=95)
    pre, _ = _run(path, tmp_path / "out")
    assert pre.n_faces == 1
    assert _mean_dist(pre.landmarks_image - [2100, 1100, 0], upright.landmarks_image) < 3.0
    x0, y0, x1, y1 = pre.crop_box
    assert x1 - x0 == pytest.approx(upright.crop_box[2] - upright.crop_box[0], abs=4)


def test_head_cut_by_top_edge(portrait_array, upright, tmp_path):
    path = tmp_path / "tight.png"
    Image.fromarray(np.ascontiguousarray(portrait_array[100:])).save(path)  # hair cut off at the top
    pre, ctx = _run(path, tmp_path / "out")
    assert [w["code"] for w in ctx.warnings] == ["head_cut"]
    assert pre.crop_box[1] < 0  # the box leaves the photo ...
    rows_above = int(np.floor(-pre.crop_box[1] * 512 / (pre.crop_box[3] - pre.crop_box[1])))
    assert rows_above > 10 and (pre.crop[:rows_above, :, 3] == 0).all()  # ... and padding is background
    assert (pre.crop[rows_above + 2:rows_above + 20, 200:300, 3] > 200).mean() > 0.5  # hair right below it
    assert _mean_dist(pre.landmarks_image + [0, 100, 0], upright.landmarks_image) < 3.0


def test_rgba_with_only_rounded_corners_uses_segmenter(portrait_array, tmp_path):
    h, w = portrait_array.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    cx, cy = np.clip(xx, 40, w - 41), np.clip(yy, 40, h - 41)
    opaque = (xx - cx) ** 2 + (yy - cy) ** 2 <= 40 ** 2  # a card with rounded corners: not a cut-out
    path = tmp_path / "card.png"
    Image.fromarray(np.dstack([portrait_array, np.where(opaque, 255, 0).astype(np.uint8)]), "RGBA").save(path)
    pre, _ = _run(path, tmp_path / "out")
    alpha = pre.crop[..., 3]
    assert (alpha < 5).mean() > 0.2  # the background is cut away, not kept as an opaque square
    nose = pre.landmarks_crop[NOSE_TIP]
    assert alpha[int(nose[1]), int(nose[0])] == 255
