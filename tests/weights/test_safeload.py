"""Verified safetensors loading: missing, truncated, wrong digest, not safetensors."""
from __future__ import annotations

import pytest
import torch

from weights.safeload import WeightsError, load_safetensors, save_safetensors, sha256_file


def test_round_trip_and_digest(tmp_path):
    digest = save_safetensors({"a": torch.arange(6.0).reshape(2, 3)}, tmp_path / "w.safetensors")
    assert digest == sha256_file(tmp_path / "w.safetensors")
    out = load_safetensors(tmp_path / "w.safetensors", sha256=digest)
    assert torch.equal(out["a"], torch.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("damage,match", [("missing", "not found"), ("truncated", "truncated"),
                                          ("digest", "sha256"), ("garbage", "not a safetensors")])
def test_damage_is_reported_with_the_file(tmp_path, damage, match):
    path = tmp_path / "w.safetensors"
    digest = save_safetensors({"a": torch.ones(100)}, path)
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-50])
    elif damage == "garbage":
        path.write_bytes(b"\xff" * 64)
    with pytest.raises(WeightsError, match=match) as info:
        load_safetensors(path, sha256=digest if damage == "digest" else None) if damage != "digest" else \
            load_safetensors(path, sha256="0" * 64)
    assert str(path) in str(info.value)
