"""Turn a finished run (``run_data.RunData``) into Blender objects.

Format parsing lives in ``run_data`` (no bpy); this module only creates data-blocks
(glTF-Blender-IO style). Everything lands in one new collection named after the photo:
the head from ``mesh/head.glb`` (Blender's glTF importer maps glTF's Y-up to Z-up, which
is the engine's world, docs/architecture.md "Conventions"), one camera per generated view with the
view as its background image, and the input camera with the cropped photo. If anything
fails, whatever was created is removed again so the scene is left as it was.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import bpy
from mathutils import Matrix

from .run_data import RunData, ViewCamera, blender_camera, load_run

log = logging.getLogger(__name__)


@dataclass
class ImportedRun:
    """What ``import_run`` created."""

    collection: bpy.types.Collection
    head: list = field(default_factory=list)
    """The objects the glTF importer created (meshes, maybe empties)."""
    cameras: list = field(default_factory=list)
    """One camera object per view, in transforms.json order."""
    input_camera: object | None = None


class _Created:
    """Data-blocks made so far, removed again by ``rollback`` when the import fails."""

    def __init__(self):
        self.ids: list[tuple[object, object]] = []  # (bpy.data collection, id)

    def add(self, coll, idblock):
        self.ids.append((coll, idblock))
        return idblock

    def rollback(self) -> None:
        for coll, idblock in reversed(self.ids):
            try:
                coll.remove(idblock)
            except (ReferenceError, RuntimeError):  # already gone with its owner
                pass


def _ensure_gltf_importer() -> None:
    if not hasattr(bpy.types, "IMPORT_SCENE_OT_gltf"):
        import addon_utils  # the bpy module does not enable Blender's default add-ons

        addon_utils.enable("io_scene_gltf2", default_set=True)


def _snapshot() -> dict[str, set]:
    return {name: set(getattr(bpy.data, name)) for name in ("objects", "meshes", "materials", "images", "textures",
                                                            "node_groups", "collections", "cameras", "actions")}


def _import_glb(path: str, collection, created: _Created) -> list:
    """Import the GLB and move its objects into ``collection``; returns the new objects."""
    _ensure_gltf_importer()
    before = _snapshot()
    try:
        result = bpy.ops.import_scene.gltf(filepath=path)
    finally:
        after = _snapshot()
        for name, ids in after.items():
            for idblock in ids - before[name]:
                created.add(getattr(bpy.data, name), idblock)
    if "FINISHED" not in result:
        raise RuntimeError(f"{path}: the glTF importer failed")
    new_objects = [o for o in after["objects"] - before["objects"]]
    for obj in new_objects:
        for coll in list(obj.users_collection):
            coll.objects.unlink(obj)
        collection.objects.link(obj)
    for mat in after["materials"] - before["materials"]:
        _fix_material(mat)
    return sorted(new_objects, key=lambda o: o.name)


def _fix_material(mat) -> None:
    """Metallic 0 on every Principled BSDF: glTF's default metallic 1 renders skin black."""
    if not mat.use_nodes:
        return
    for node in mat.node_tree.nodes:
        if node.type == "BSDF_PRINCIPLED":
            metallic = node.inputs["Metallic"]
            if not metallic.is_linked:
                metallic.default_value = 0.0


def _load_image(path: str, created: _Created):
    if not path or not os.path.isfile(path):
        return None
    existing = {img for img in bpy.data.images}
    image = bpy.data.images.load(path, check_existing=True)
    if image not in existing:
        created.add(bpy.data.images, image)
    return image


def _make_camera(view: ViewCamera, name: str, collection, created: _Created):
    """A camera object reproducing ``view`` (docs/architecture.md camera formula), its image as background."""
    params = blender_camera(view)
    data = created.add(bpy.data.cameras, bpy.data.cameras.new(name))
    data.sensor_fit = "HORIZONTAL"
    data.sensor_width = params.sensor_width
    data.lens = params.lens
    data.shift_x = params.shift_x
    data.shift_y = params.shift_y
    # Generated views are 0.3–5 m from a head of ~0.25 m: keep the default far clip, near 1 cm.
    data.clip_start = 0.01
    image = _load_image(view.image, created)
    if image is not None:
        data.show_background_images = True
        bg = data.background_images.new()
        bg.image = image
        bg.alpha = 1.0
        bg.frame_method = "FIT"
        bg.display_depth = "BACK"
    obj = created.add(bpy.data.objects, bpy.data.objects.new(name, data))
    obj.matrix_world = Matrix(view.c2w)
    collection.objects.link(obj)
    obj["gen3dface_resolution"] = (params.resolution_x, params.resolution_y)
    return obj


def import_run(context, run: RunData | str, name: str = "") -> ImportedRun:
    """Import a finished run into a new collection in ``context.scene``.

    run: ``RunData`` or a run directory. name: the collection's name (default: the run
    directory's name). On any error the scene is restored and the error re-raised.
    """
    if not isinstance(run, RunData):
        run = load_run(run)
    name = name or os.path.basename(run.run_dir.rstrip("/\\"))
    scene = context.scene
    created = _Created()
    try:
        collection = created.add(bpy.data.collections, bpy.data.collections.new(name))
        scene.collection.children.link(collection)
        out = ImportedRun(collection)
        out.head = _import_glb(run.mesh, collection, created)
        for view in run.views:
            out.cameras.append(_make_camera(view, f"{name}_{view.name}", collection, created))
        if run.input_camera is not None:
            out.input_camera = _make_camera(run.input_camera, f"{name}_input", collection, created)
    except BaseException:
        created.rollback()
        raise
    _set_render(scene, out.input_camera or out.cameras[0], run.input_camera or run.views[0])
    log.info("imported %s: %d objects, %d cameras", run.run_dir, len(out.head), len(out.cameras))
    return out


def _set_render(scene, camera, view: ViewCamera) -> None:
    """Look through the input camera at the photo's size (render resolution from w, h)."""
    scene.camera = camera
    scene.render.resolution_x = int(view.w)
    scene.render.resolution_y = int(view.h)
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = 1.0
    scene.render.pixel_aspect_y = 1.0
