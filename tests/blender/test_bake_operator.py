"""Bake onto selected (bpy module, real engine): texture wired into the mesh's own material;
on failure the scene's data-block counts are unchanged."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_run import CENTER, RADII, make_run  # noqa: E402

SCENE = f"""
import bpy, bpy_harness as h
h.enable()
bpy.ops.mesh.primitive_uv_sphere_add(segments=32, ring_count=16, location={tuple(CENTER.tolist())!r})
head = bpy.context.active_object
head.scale = {tuple(RADII.tolist())!r}
bpy.ops.mesh.primitive_cube_add(location=(1.0, 0, 0))
other = bpy.context.active_object
mat = bpy.data.materials.new("other_material")
mat.use_nodes = True
other.data.materials.append(mat)
other_nodes = len(mat.node_tree.nodes)
bpy.context.view_layer.objects.active = head
before = h.scene_counts()
"""


def test_bake_failure_leaves_scene_unchanged(run_bpy, tmp_path):
    run = make_run(tmp_path / "run", n_views=4, size=64)
    shutil.rmtree(run / "views")  # the engine fails reading the first view (exit 2)
    out = run_bpy(SCENE + f"""
try:
    bpy.ops.gen3dface.bake_selected(run_dir={str(run)!r}, size=1024)
    error = None
except RuntimeError as exc:
    error = str(exc)
h.emit(error=error, before=before, after=h.scene_counts(), slots=len(head.data.materials),
       other_nodes=[other_nodes, len(mat.node_tree.nodes)], last_error=bpy.context.scene.gen3dface.last_error)
h.disable()
""")
    assert out["error"] is not None and "view_000.png" in out["error"]
    assert out["before"] == out["after"] and out["slots"] == 0
    assert out["other_nodes"][0] == out["other_nodes"][1]
    assert "view_000.png" in out["last_error"]
    assert not (run / "bakes").exists() or not any((run / "bakes").iterdir())


@pytest.mark.slow
def test_bake_wires_base_color_of_that_mesh_only(run_bpy, tmp_path):
    run = make_run(tmp_path / "run", n_views=8, size=64)
    out = run_bpy(SCENE + f"""
bpy.ops.gen3dface.bake_selected(run_dir={str(run)!r}, size=1024)
m = head.active_material
bsdf = next(n for n in m.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
link = bsdf.inputs["Base Color"].links[0].from_node
h.emit(before=before, after=h.scene_counts(), node=link.type, image=link.image.filepath,
       size=list(link.image.size), other_nodes=[other_nodes, len(mat.node_tree.nodes)],
       error=bpy.context.scene.gen3dface.last_error)
h.disable()
""", timeout=600)
    assert out["error"] == "" and out["node"] == "TEX_IMAGE"
    assert out["after"]["images"] == out["before"]["images"] + 1
    assert out["after"]["materials"] == out["before"]["materials"] + 1  # the sphere had none
    assert out["other_nodes"][0] == out["other_nodes"][1] and out["size"] == [1024, 1024]
    assert Path(out["image"]).is_file() and (Path(out["image"]).parent / "bake.json").is_file()


def test_auto_alignment_gets_the_mesh_with_its_texture(run_bpy, tmp_path):
    """For ``--align auto`` the mesh goes to the engine with its Base Color image (the engine
    finds the face on renders of the mesh), as a copy: the scene's image is left as it was."""
    import trimesh

    out = run_bpy(SCENE + f"""
from bl_ext.gen3dface_dev.gen3dface.blender_addon import bake
img = bpy.data.images.new("skin", 16, 8)
img.pixels.foreach_set([0.8, 0.2, 0.1, 1.0] * (16 * 8))
m = bpy.data.materials.new("skin_material")
m.use_nodes = True
tex = m.node_tree.nodes.new("ShaderNodeTexImage")
tex.image = img
bsdf = next(n for n in m.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
m.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
head.data.materials.append(m)
counts = h.scene_counts()
bake.write_obj(head, {str(tmp_path / "plain.obj")!r})
bake.write_obj(head, {str(tmp_path / "textured.obj")!r}, with_texture=True)
h.emit(same=counts == h.scene_counts(), path=img.filepath, dirty=img.is_dirty)
h.disable()
""")
    assert out["same"] and out["path"] == ""
    assert not (tmp_path / "plain.mtl").exists()
    mesh = trimesh.load(tmp_path / "textured.obj", force="mesh", process=False)
    rgb = np.asarray(mesh.visual.material.image.convert("RGB"))
    assert rgb.shape == (8, 16, 3) and np.abs(rgb.astype(int) - (204, 51, 26)).max() <= 1  # a byte image: its pixels are the bytes
