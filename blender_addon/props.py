"""The panel's settings, stored per scene (``scene.gen3dface``)."""
from __future__ import annotations

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

BACKENDS = (
    ("auto", "Auto", "Diffusion when its weights are installed, else projection"),
    ("projection", "Projection", "The fitted head textured by projecting the photo (CPU, no downloads)"),
    ("diffusion", "Diffusion", "Multi-view diffusion (needs the model weights; a GPU is much faster)"),
)
RECON = (
    ("auto", "Auto", "On for diffusion, off for projection"),
    ("on", "On", "Reconstruct a neural surface (NeuS) from the views"),
    ("off", "Off", "Use the fitted head mesh as it is"),
)

#: Names of the settings that ``gen3dface.generate`` also takes as properties.
GENERATE_KEYS = ("photo", "output_dir", "backend", "views", "resolution", "steps", "guidance", "seed", "recon")


def _photo_changed(self, context):
    from . import preview

    preview.photo_icon(bpy.path.abspath(self.photo))


class Gen3DFaceSettings(bpy.types.PropertyGroup):
    photo: StringProperty(name="Photo", description="Portrait photo (JPEG, PNG, …)", subtype="FILE_PATH",
                          update=_photo_changed)
    output_dir: StringProperty(name="Output", subtype="DIR_PATH",
                               description="Folder for run directories (empty: the extension's user folder)")
    backend: EnumProperty(name="Backend", items=BACKENDS, default="auto")
    views: IntProperty(name="Views", description="Number of generated views around the head",
                       default=16, min=1, max=64)
    resolution: IntProperty(name="Resolution", description="Size of the crop and the views in pixels",
                            default=512, min=64, max=2048, step=64)
    steps: IntProperty(name="Steps", description="Diffusion (DDIM) steps", default=50, min=1, max=500)
    guidance: FloatProperty(name="Guidance", description="Classifier-free guidance scale",
                            default=2.0, min=0.0, max=20.0)
    seed: IntProperty(name="Seed", default=0, min=0)
    recon: EnumProperty(name="Reconstruction", items=RECON, default="auto")
    last_error: StringProperty(name="Last error", description="Why the last generation failed")
    last_run: StringProperty(name="Last run", subtype="DIR_PATH", description="The last finished run directory")


CLASSES = (Gen3DFaceSettings,)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.gen3dface = bpy.props.PointerProperty(type=Gen3DFaceSettings)


def unregister():
    del bpy.types.Scene.gen3dface
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
