"""Helpers for scripts that run inside the bpy module (one subprocess per test).

Loads the add-on the way Blender does for a development extension: a user repository
in a temp dir holding a symlink to the repository root, then ``addon_utils.enable``.
Always call ``disable`` before exiting (bpy 4.2 segfaults, 4.5 hangs otherwise).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPO_MODULE = "gen3dface_dev"
ADDON = f"bl_ext.{REPO_MODULE}.gen3dface"


def enable(engine_python: str | None = None) -> str:
    """Register a dev repository pointing at the source tree and enable the add-on."""
    import addon_utils
    import bpy

    repo_dir = tempfile.mkdtemp(prefix="gen3dface_repo_")
    os.symlink(ROOT, os.path.join(repo_dir, "gen3dface"))
    bpy.context.preferences.extensions.repos.new(
        name=REPO_MODULE, module=REPO_MODULE, custom_directory=repo_dir, source="USER")
    errors = []
    mod = addon_utils.enable(ADDON, default_set=True, handle_error=errors.append)
    if mod is None or errors:
        raise RuntimeError(f"cannot enable {ADDON}: {errors}")
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.engine_python = engine_python or os.environ.get("GEN3DFACE_TEST_ENGINE_PYTHON") or sys.executable
    return ADDON


def disable() -> None:
    import addon_utils

    addon_utils.disable(ADDON, default_set=True)


class RecordingLayout:
    """Stand-in for ``bpy.types.UILayout`` that records what ``draw`` asks for, checked against RNA.

    Module mode has no window, so a real layout cannot be drawn; instead every call is
    checked against this Blender's own ``UILayout`` RNA: the function exists, each keyword
    is one of its parameters, enum values (icons, progress ``type``) are valid here, and a
    ``prop`` names a property of its data. An API that differs between Blender versions
    (``layout.progress`` is 4.0+, icons get renamed) fails the test on the version that lacks it.
    ``calls``: (name, [str(args)], {key: str(value)}) in order.
    """

    def __init__(self, calls: list, problems: list | None = None):
        self.__dict__.update(calls=calls, problems=[] if problems is None else problems)

    def __setattr__(self, name, value):
        import bpy

        if name not in bpy.types.UILayout.bl_rna.properties:
            self.problems.append(f"UILayout has no property {name!r}")

    def __getattr__(self, name):
        import bpy

        func = bpy.types.UILayout.bl_rna.functions.get(name)
        if func is None:
            self.problems.append(f"UILayout has no function {name!r}")

        def record(*args, **kwargs):
            if func is not None:
                self._check(name, func, args, kwargs)
            self.calls.append((name, [str(a) for a in args], {k: str(v) for k, v in kwargs.items()}))
            outputs = [p for p in func.parameters if p.is_output] if func is not None else []
            if outputs and outputs[0].identifier == "layout":
                return RecordingLayout(self.calls, self.problems)
            return type("Returned", (), {})()
        return record

    def _check(self, name, func, args, kwargs) -> None:
        params = [p for p in func.parameters if not p.is_output]
        given = dict(zip((p.identifier for p in params), args))
        if len(args) > len(params):
            self.problems.append(f"{name}: {len(args)} positional arguments, RNA has {len(params)}")
        for key, value in kwargs.items():
            if key not in func.parameters:
                self.problems.append(f"{name}: no parameter {key!r}")
            given[key] = value
        for key, value in given.items():
            param = func.parameters.get(key)
            if param is not None and param.type == "ENUM" and isinstance(value, str) \
                    and value not in param.enum_items.keys():
                self.problems.append(f"{name}: {key}={value!r} is not valid in this Blender")
        if name == "prop" and len(args) >= 2:
            rna = getattr(args[0], "bl_rna", None)
            if not (args[1] in rna.properties if rna is not None else hasattr(args[0], args[1])):
                self.problems.append(f"prop: {type(args[0]).__name__} has no property {args[1]!r}")
        missing = [p.identifier for p in params if p.is_required and p.identifier not in given]
        if missing:
            self.problems.append(f"{name}: missing required {missing}")


def emit(**values) -> None:
    """Hand results to the pytest side: one JSON line on stdout, prefixed."""
    print("RESULT " + json.dumps(values), flush=True)


def scene_counts() -> dict:
    import bpy

    return {name: len(getattr(bpy.data, name)) for name in
            ("objects", "meshes", "materials", "images", "collections", "cameras")}


def material_report(objects) -> dict:
    """Base Color wired to an image texture? Metallic value? For every material of ``objects``."""
    out = {"base_color_linked": [], "metallic": []}
    for obj in objects:
        if obj.type != "MESH":
            continue
        for mat in obj.data.materials:
            bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
            links = bsdf.inputs["Base Color"].links
            out["base_color_linked"].append(bool(links) and links[0].from_node.type == "TEX_IMAGE")
            out["metallic"].append(bsdf.inputs["Metallic"].default_value)
    return out


def alpha_hits(scene, cam_obj, mesh_objects, image_path: str) -> tuple[int, int]:
    """Project mesh vertices facing ``cam_obj`` through it; count those inside the view's alpha.

    Uses Blender's own ``world_to_camera_view`` with the render size set to the image's.
    Returns (inside alpha, visible vertices); alpha is dilated by one pixel.
    """
    import numpy as np
    from bpy_extras.object_utils import world_to_camera_view
    from PIL import Image

    alpha = np.asarray(Image.open(image_path).convert("RGBA"))[..., 3] > 127
    h, w = alpha.shape
    # One pixel of tolerance: a vertex on the limb lies within a pixel whose centre may be outside.
    pad = np.pad(alpha, 1)
    alpha = np.max([pad[1 + dy:h + 1 + dy, 1 + dx:w + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    scene.render.resolution_x, scene.render.resolution_y = w, h
    scene.render.resolution_percentage = 100
    cam_pos = cam_obj.matrix_world.translation
    inside = total = 0
    for obj in mesh_objects:
        if obj.type != "MESH":
            continue
        mw = obj.matrix_world
        normal_mat = mw.to_3x3().inverted().transposed()
        for v in obj.data.vertices:
            p = mw @ v.co
            n = (normal_mat @ v.normal).normalized()
            if n.dot((cam_pos - p).normalized()) < 0.2:  # keep clearly front-facing vertices only
                continue
            ndc = world_to_camera_view(scene, cam_obj, p)
            if ndc.z <= 0:
                continue
            x, y = ndc.x * w, (1 - ndc.y) * h  # Blender's y grows upward, image rows downward
            total += 1
            i, j = int(np.clip(x, 0, w - 1)), int(np.clip(y, 0, h - 1))
            inside += int(0 <= x < w and 0 <= y < h and alpha[j, i])
    return inside, total
