"""gen3dface dataset prune on a small set with a known Janus view and a known inconsistent identity."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.dataset.layout import load_dataset
from engine.dataset.prune import JANUS_PROMPTS, PruneConfig, contact_sheet, janus_probabilities, prune
from engine.errors import BadInput
from engine.eval.embedders import ClipEmbedder
from tests.engine.cli_helpers import run_cli
from tests.engine.eval_fixtures import astronaut, blank, grace_hopper, make_run, tiny_clip_folder

pytest.importorskip("dlib")


def back_of_head() -> np.ndarray:
    """A dark-brown head-sized blob with hair-like noise on white: no face."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    inside = ((xx - 256) / 170) ** 2 + ((yy - 270) / 210) ** 2 < 1
    img = np.full((512, 512, 3), 255, np.uint8)
    img[inside] = np.clip(np.array([70, 45, 30]) + rng.normal(0, 12, (inside.sum(), 3)), 0, 255).astype(np.uint8)
    return img


def identity(root, views, azimuths):
    make_run(root, views[0], views, azimuths=azimuths)  # the run layout is an identity folder
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    a, g, back = astronaut(), grace_hopper(), back_of_head()
    az = [0.0, 20.0, -20.0, 180.0]
    identity(root / "consistent", [a, a[:, ::-1].copy(), a, back], az)
    identity(root / "janus", [a, a, a[:, ::-1].copy(), a], az)  # a face on the back view
    identity(root / "mixed", [a, g, a[:, ::-1].copy(), back], az)  # two people under one identity
    return root


def trained_janus_clip(folder):
    """A tiny CLIP trained here (seconds) to tell our face images from our back-of-head images.

    No real CLIP can be downloaded in tests; this one knows the answer for these images by
    construction, so the test checks the filter's own code: prompts, softmax, back views,
    threshold, manifest.
    """
    from transformers import CLIPModel, CLIPProcessor

    tiny_clip_folder(folder)
    model, processor = CLIPModel.from_pretrained(folder), CLIPProcessor.from_pretrained(folder)
    faces = [astronaut(), astronaut()[:, ::-1].copy(), grace_hopper()]
    backs = [back_of_head(), blank(), back_of_head()[:, ::-1].copy()]
    pixels = processor(images=faces + backs, return_tensors="pt")["pixel_values"]
    text = processor(text=list(JANUS_PROMPTS), return_tensors="pt", padding=True)
    labels = torch.tensor([1] * len(faces) + [0] * len(backs))
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        out = model(pixel_values=pixels, **text)
        loss = torch.nn.functional.cross_entropy(out.logits_per_image, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(folder)
    return folder


def test_id_consistency_keeps_the_top_k(dataset, tmp_path):
    manifest = prune(dataset, PruneConfig(keep=2))
    assert manifest["janus"] == "skipped (no --clip)"
    assert manifest["removed"][0]["identity"] == "mixed" and len(manifest["removed"]) == 1
    assert "id_consistency: rank 3 of 3" in manifest["removed"][0]["reasons"][0]
    scores = {s["identity"]: s for s in manifest["scores"]}
    assert scores["mixed"]["id_mean_distance"] > scores["consistent"]["id_mean_distance"]
    assert scores["consistent"]["faces_found"] == 3  # the back view has no face
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))
    sheet = contact_sheet(manifest, tmp_path / "sheet.png")
    assert Image.open(sheet).size == (8 * 128, 128 + 28)
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before  # deletes nothing


@pytest.mark.slow
def test_janus_filter_finds_the_face_on_the_back(dataset, tmp_path):
    clip = trained_janus_clip(tmp_path / "clip")
    probs = janus_probabilities(ClipEmbedder(clip), [astronaut(), back_of_head()])
    assert probs[0] > 0.5 > probs[1]
    out = run_cli("dataset", "prune", dataset, "-o", tmp_path / "out", "--clip", clip)
    assert out.code == 0, out.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    removed = {r["identity"]: r["reasons"] for r in manifest["removed"]}
    assert list(removed) == ["janus"] and "view_003.png" in removed["janus"][0]
    assert manifest["kept"] == ["consistent", "mixed"]  # no --keep: the ID filter removes nothing
    assert (tmp_path / "out" / "contact_sheet.png").is_file() and "1 removed" in out.stdout


def test_bad_dataset_is_named(tmp_path):
    (tmp_path / "d" / "someone").mkdir(parents=True)
    with pytest.raises(BadInput) as err:
        load_dataset(tmp_path / "d")
    assert str(tmp_path / "d" / "someone") in err.value.message and "transforms.json" in err.value.message
    with pytest.raises(BadInput):
        PruneConfig(keep=-1)
