"""Small run directories and models with known answers for the eval / prune tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def astronaut() -> np.ndarray:
    """skimage's astronaut (Eileen Collins, NASA, public domain) [512, 512, 3]."""
    from skimage import data

    return data.astronaut()


def grace_hopper() -> np.ndarray:
    """Grace Hopper (US Navy photo, public domain), shipped with matplotlib (a mediapipe dependency)."""
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"))


def blank(size: int = 512) -> np.ndarray:
    """A flat grey image: no face in it."""
    return np.full((size, size, 3), 128, np.uint8)


def make_run(root: Path, photo: np.ndarray, views: list[np.ndarray], azimuths: list[float] | None = None,
             ground_truth: list[np.ndarray] | None = None) -> Path:
    """A minimal complete run directory as ``generate`` writes it (README "Outputs")."""
    root = Path(root)
    (root / "input").mkdir(parents=True)
    (root / "views").mkdir()
    Image.fromarray(photo).save(root / "input" / "photo.png")
    azimuths = azimuths if azimuths is not None else [float(a) for a in np.linspace(-180, 180, len(views),
                                                                                     endpoint=False)]
    frames = []
    for i, view in enumerate(views):
        Image.fromarray(view).save(root / "views" / f"view_{i:03d}.png")
        frames.append({"file_path": f"views/view_{i:03d}.png", "transform_matrix": np.eye(4).tolist()})
    if ground_truth is not None:
        (root / "ground_truth").mkdir()
        for i, gt in enumerate(ground_truth):
            Image.fromarray(gt).save(root / "ground_truth" / f"view_{i:03d}.png")
    (root / "transforms.json").write_text(json.dumps({"frames": frames, "azimuths": azimuths,
                                                       "elevations": [0.0] * len(views)}))
    (root / "result.json").write_text(json.dumps({"engine": "gen3dface", "backend": "test",
                                                   "outputs": {"photo": "input/photo.png"}}))
    return root


def tiny_clip_folder(folder: Path) -> Path:
    """A seeded, randomly initialised CLIP in a transformers folder, with a byte-level tokenizer."""
    import torch
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer)
    folder = Path(folder)
    folder.mkdir(parents=True)
    # GPT-2 / CLIP byte-level alphabet: printable bytes map to themselves, the rest above 255.
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def tiny_inception(path: Path, dim: int = 4) -> Path:
    """A TorchScript feature extractor with the FID Inception's interface: [N, 3, 299, 299] → [N, dim]."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, dim, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    torch.jit.script(net.eval()).save(str(path))
    return Path(path)
