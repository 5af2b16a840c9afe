"""A model folder's conventions: exit 3 naming the file, and views written in the engine's world."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from engine.context import RunContext
from engine.errors import ModelMissing
from engine.multiview.diffusion import DiffusionConfig, load_pipeline, run, save_pretrained
from engine.multiview.diffusion.frames import CheckpointFrame
from engine.multiview.diffusion.presets import tiny_pipeline
from recon.cameras import from_frame
from tests.engine.diffusion_fixtures import tiny_inputs
from weights import conventions


@pytest.mark.parametrize("damage", ["missing", "family", "field"])
def test_bad_conventions_are_exit_3_naming_the_file(tiny_model_dir, tmp_path, damage):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    path = folder / "conventions.json"
    if damage == "missing":
        path.unlink()
    else:
        data = json.loads(path.read_text())
        if damage == "family":
            data["family"] = "zero123-xl"
        else:
            del data["eta"]
        path.write_text(json.dumps(data))
    with pytest.raises(ModelMissing) as info:
        load_pipeline(folder, "cpu", "fp32")
    assert info.value.exit_code == 3 and str(path) in info.value.message
    assert {"missing": "not found", "family": "unknown checkpoint family", "field": "eta"}[damage] in info.value.message


def test_conventions_disagreeing_with_the_conditioner_are_exit_3(tiny_model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    data = json.loads((folder / "conventions.json").read_text())
    data["volume_length"] = 0.5
    (folder / "conventions.json").write_text(json.dumps(data))
    with pytest.raises(ModelMissing, match="volume_length"):
        load_pipeline(folder, "cpu", "fp32")


def test_frame_round_trip_keeps_projections():
    conv = conventions.morphable()
    frame = CheckpointFrame(conv, flame_center=(0.001, -0.02, 0.01))
    pts = np.random.default_rng(0).uniform(-0.15, 0.15, (50, 3))
    ck = frame.points_to_checkpoint(pts)
    for cam_ck in frame.checkpoint_cameras():
        cam_w = frame.camera_to_world(cam_ck)
        assert np.allclose(cam_w.project(pts)[0], cam_ck.project(ck)[0], atol=1e-9)
        back = frame.camera_to_checkpoint(cam_w)
        assert np.allclose(back.c2w, cam_ck.c2w, atol=1e-9)
        assert np.allclose(cam_w.c2w[:3, :3] @ cam_w.c2w[:3, :3].T, np.eye(3), atol=1e-9)  # a rigid camera


@pytest.mark.slow
def test_converted_family_writes_world_cameras(tmp_path):
    """A Morphable-conventions model: its own 4 views, written in the engine's world (face toward −Y),
    consistent with the prior mesh, so recon needs no special case."""
    conv = conventions.morphable(n_views=4, image_size=64)
    pipe = tiny_pipeline(seed=0, n_views=4, size=64, use_cc_projection=False, volume_length=0.5, frustum_length=0.86603,
                         voxel_size=0.02, voxelisation="morphable", joint_attention=False, include_input_view=False)
    conv = dataclasses.replace(conv, voxel_size=0.02)  # a coarser grid keeps the CPU test small
    pipe.conventions = conv
    folder = save_pretrained(pipe, tmp_path / "model")
    crop, cam, verts, faces = tiny_inputs()
    path = run(crop, (verts, faces, cam), tmp_path / "run", DiffusionConfig(steps=1), RunContext(), folder)
    meta = json.loads(path.read_text())
    assert meta["family"] == "morphable" and len(meta["frames"]) == 4
    frame = CheckpointFrame(conv)
    for f, cam_ck in zip(meta["frames"], frame.checkpoint_cameras()):
        cam_w = from_frame(meta, f)
        # the same pixels as the checkpoint's own camera sees the prior in its frame
        assert np.allclose(cam_w.project(verts)[0], cam_ck.project(frame.points_to_checkpoint(verts))[0], atol=1e-6)
        assert cam_w.center[1] < 0.1  # front hemisphere: toward −Y (the face); ±90° at the sides (FLAME tilt ~6°)
    middle = from_frame(meta, meta["frames"][1])  # yaw −30°: in front, 30° to one side, ~level
    az = np.degrees(np.arctan2(middle.center[0], -middle.center[1]))
    assert abs(abs(az) - 30) < 3 and np.linalg.norm(middle.center) == pytest.approx(4.5 / 2.7175, rel=0.02)
    with pytest.raises(Exception, match="its own 4 views"):
        run(crop, (verts, faces, cam), tmp_path / "run2", DiffusionConfig(steps=1, layout="gen3dface"), RunContext(), folder)


def test_cheap_folder_check_names_missing_conventions(tiny_model_dir, tmp_path):
    """``--backend auto`` checks folders without torch: a folder without conventions is not chosen."""
    from weights.discovery import folder_problem

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    assert folder_problem(folder) is None
    (folder / "conventions.json").unlink()
    assert "conventions.json" in folder_problem(folder)
