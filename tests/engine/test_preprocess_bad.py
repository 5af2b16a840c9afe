"""Bad photos are refused with BadInput (exit 2): one line naming the file, nothing written."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFile

from engine.context import RunContext
from engine.errors import EXIT_BAD_INPUT, BadInput
from engine.preprocess import PreprocessConfig, load_photo, run

from .images import write_bomb_png, write_truncated_jpeg


def assert_refused(path, out_dir, code: str) -> BadInput:
    ctx = RunContext()
    with pytest.raises(BadInput) as info:
        run(path, out_dir, PreprocessConfig(), ctx)
    error = info.value
    assert error.code == code, error.message
    assert error.exit_code == EXIT_BAD_INPUT == 2
    assert "\n" not in error.message and str(path) in error.message
    leftovers = list((out_dir / "input").iterdir()) if (out_dir / "input").exists() else []
    assert not leftovers, leftovers  # nothing that looks complete (nor any temp file)
    return error


def test_missing_file(tmp_path):
    assert_refused(tmp_path / "nope.jpg", tmp_path / "out", "not_found")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert "empty file" in assert_refused(path, tmp_path / "out", "empty_file").message


def test_truncated_jpeg(portrait_array, tmp_path):
    path = write_truncated_jpeg(tmp_path / "cut.jpg", portrait_array, keep=0.4)
    assert Image.open(path).size == (512, 512)  # the header is intact: only decoding fails
    assert "truncated" in assert_refused(path, tmp_path / "out", "corrupt").message


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n" * 20)
    assert_refused(path, tmp_path / "out", "not_an_image")


@pytest.mark.parametrize("size", [(20000, 20000), (8000, 6000)])  # Pillow's own bomb error / our 40 MP limit
def test_huge_header_refused_before_decoding(size, tmp_path, monkeypatch):
    path = write_bomb_png(tmp_path / "bomb.png", *size)
    assert path.stat().st_size < 200
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self, *a: decoded.append(self) or None)
    assert_refused(path, tmp_path / "out", "too_large")
    assert not decoded  # refused from the header alone


def test_tiny_image(tmp_path):
    path = tmp_path / "tiny.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(path)
    assert "32x32" in assert_refused(path, tmp_path / "out", "too_small").message


@pytest.mark.parametrize("kind", ["noise", "flat"])
def test_no_face(kind, tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (256, 320, 3), dtype=np.uint8) if kind == "noise" else \
        np.full((256, 320, 3), (90, 140, 200), np.uint8)
    path = tmp_path / f"{kind}.png"
    Image.fromarray(pixels).save(path)
    assert "no face found" in assert_refused(path, tmp_path / "out", "no_face").message


def test_load_photo_guards_without_run(tmp_path):
    path = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((40, 200, 3), np.uint8)).save(path)
    with pytest.raises(BadInput, match="smaller than 64"):
        load_photo(path, PreprocessConfig())


def test_cancel_stops_before_writing(portrait_path, tmp_path):
    from engine.errors import Cancelled

    ctx = RunContext()
    ctx.cancel()
    with pytest.raises(Cancelled):
        run(portrait_path, tmp_path / "out", PreprocessConfig(), ctx)
    assert not (tmp_path / "out" / "input").exists()
