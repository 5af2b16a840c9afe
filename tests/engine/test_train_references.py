"""Several reference photos at inference (multi_reference, seed 001): used by a model trained for them,
a warning (and the first photo only) otherwise."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.engine.diffusion_fixtures import tiny_inputs, write_tiny_model


def _generate(folder: Path, out: Path, references):
    from engine.context import RunContext
    from engine.multiview import diffusion

    crop, cam, verts, faces = tiny_inputs()
    ctx = RunContext()
    path = diffusion.run(crop, (verts, faces, cam), out, diffusion.DiffusionConfig(n_views=2, steps=2), ctx, folder,
                         references=references)
    meta = json.loads(Path(path).read_text())
    views = np.stack([np.asarray(Image.open(out / f["file_path"])) for f in meta["frames"]])
    return views, meta, [w["code"] for w in ctx.warnings], ctx.warnings


def _photos(n: int):
    from recon.cameras import orbit_camera

    return [(tiny_inputs(seed=10 + k)[0], orbit_camera(-40.0 + 80 * k, 0.0, 1.0, 26.0, 64), Path(f"photo_{k}.jpg"))
            for k in range(n)]


def test_a_model_trained_with_references_takes_the_extra_photos(tmp_path):
    folder = write_tiny_model(tmp_path / "m", n_views=2, n_references=1)
    alone, _, codes, _ = _generate(folder, tmp_path / "a", [])
    both, meta, codes_b, _ = _generate(folder, tmp_path / "b", _photos(1))
    assert codes == codes_b == [] and meta["references"] == ["photo_0.jpg"]
    assert np.abs(both.astype(int) - alone.astype(int)).max() > 0  # the reference reaches the joint attention
    three, meta3, codes3, warnings = _generate(folder, tmp_path / "c", _photos(3))
    assert codes3 == ["extra_photos_unused"] and "photo_1.jpg" in warnings[0]["message"]
    assert meta3["references"] == ["photo_0.jpg"] and np.array_equal(three, both)  # only the first one


def test_a_single_reference_model_warns_and_uses_the_first_photo(tmp_path):
    folder = write_tiny_model(tmp_path / "m", n_views=2)
    alone, _, _, _ = _generate(folder, tmp_path / "a", [])
    extra, meta, codes, warnings = _generate(folder, tmp_path / "b", _photos(2))
    assert codes == ["extra_photos_unused"] and "not trained with several reference" in warnings[0]["message"]
    assert meta["references"] == [] and np.array_equal(extra, alone)


def test_training_with_multi_reference_records_the_count_in_the_model():
    from engine.train.config import TrainConfig
    from engine.train.loop import build_pipeline

    base = dict(model="tiny", image_size=64, n_targets=2, seed=3)
    assert build_pipeline(TrainConfig(**base)).conditioner.config.n_references == 0
    pipe = build_pipeline(TrainConfig(**base, conditioning=("multi_reference",), n_references=3))
    assert pipe.conditioner.config.n_references == 3 and "n_references" in pipe.conditioner.config.to_dict()


def test_generate_hands_the_further_photo_to_a_multi_reference_model(tmp_path, portrait_path, portrait_array):
    """The engine end to end: two photos, a model trained with one reference besides the input."""
    from tests.engine.cli_helpers import run_cli

    folder = write_tiny_model(tmp_path / "m", n_views=2, n_references=1)
    second = tmp_path / "second.jpg"
    Image.fromarray(portrait_array).resize((384, 384)).save(second)
    out = tmp_path / "run"
    result = run_cli("generate", portrait_path, second, "-o", out, "--json", "--backend", "diffusion", "--weights",
                     folder, "--recon", "off", "--steps", "1", "--views", "2", "--resolution", "128")
    assert result.code == 0, result.stderr[-2000:]
    manifest = json.loads((out / "result.json").read_text())
    assert not any(w["code"] == "extra_photos_unused" for w in manifest["warnings"])
    assert json.loads((out / "transforms.json").read_text())["references"] == [str(second)]
