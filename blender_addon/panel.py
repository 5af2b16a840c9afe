"""The sidebar panel of the 3D viewport (tab "Gen3D Face")."""
from __future__ import annotations

import os

import bpy

from . import jobs, photos, prefs, preview
from .operators import GEN3DFACE_OT_bake_selected, GEN3DFACE_OT_cancel, GEN3DFACE_OT_generate


def draw_panel(layout, context) -> None:
    """Draw the panel into ``layout`` (a function so tests can pass a recording stand-in)."""
    settings = context.scene.gen3dface
    layout.prop(settings, "photo")
    photo = bpy.path.abspath(settings.photo)
    if os.path.isfile(photo):
        # icon_id is 0 in background mode (no icon system); the UI always has one.
        layout.template_icon(icon_value=preview.photo_icon(photo), scale=6.0)
    elif settings.photo:
        layout.label(text="Photo not found", icon="ERROR")
    photos.draw(layout, context)
    col = layout.column(align=True)
    col.prop(settings, "backend")
    col.prop(settings, "views")
    col.prop(settings, "resolution")
    sub = layout.column(align=True)
    sub.active = settings.backend != "projection"  # steps/guidance only matter for diffusion
    sub.prop(settings, "steps")
    sub.prop(settings, "guidance")
    sub.prop(settings, "seed")
    layout.prop(settings, "recon")
    layout.prop(settings, "output_dir")
    job = jobs.current()
    if job is None:
        layout.operator(GEN3DFACE_OT_generate.bl_idname, icon="USER")
        layout.operator(GEN3DFACE_OT_bake_selected.bl_idname, icon="TEXTURE")
    else:
        layout.progress(factor=job.state.factor, type="BAR", text=job.state.text)
        layout.operator(GEN3DFACE_OT_cancel.bl_idname, icon="CANCEL")
    if prefs.device_warning():  # from Check engine / Set up engine: e.g. a CPU torch beside an NVIDIA GPU
        layout.label(text=prefs.device_warning(), icon="ERROR")
    if settings.last_error:
        box = layout.box()
        box.label(text=settings.last_error, icon="ERROR")


class VIEW3D_PT_gen3dface(bpy.types.Panel):
    bl_idname = "VIEW3D_PT_gen3dface"
    bl_label = "Gen3D Face"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Gen3D Face"

    def draw(self, context):
        draw_panel(self.layout, context)


CLASSES = (VIEW3D_PT_gen3dface,)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
