"""More photos of the same person: a list in the panel, passed to ``engine generate`` after the main photo.

The main photo (``scene.gen3dface.photo``) stays the input view; these (``scene.gen3dface_photos``)
add views of the person from other sides (the engine fits one head to all, at most 16 in all).
"""
from __future__ import annotations

import bpy
from bpy.props import CollectionProperty, IntProperty, StringProperty

#: The engine's limit on photos per run (the main photo included).
MAX_PHOTOS = 16


class Gen3DFacePhoto(bpy.types.PropertyGroup):
    path: StringProperty(name="Photo", description="Another photo of the same person", subtype="FILE_PATH")


class GEN3DFACE_OT_photo_add(bpy.types.Operator):
    """Add another photo of the same person"""

    bl_idname = "gen3dface.photo_add"
    bl_label = "Add Photo"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        if len(context.scene.gen3dface_photos) >= MAX_PHOTOS - 1:
            cls.poll_message_set(f"At most {MAX_PHOTOS} photos per run")
            return False
        return True

    def execute(self, context):
        item = context.scene.gen3dface_photos.add()
        item.path = self.filepath
        return {"FINISHED"}


class GEN3DFACE_OT_photo_remove(bpy.types.Operator):
    """Remove this photo from the list"""

    bl_idname = "gen3dface.photo_remove"
    bl_label = "Remove Photo"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        photos = context.scene.gen3dface_photos
        if not 0 <= self.index < len(photos):
            self.report({"ERROR"}, f"no photo {self.index} in the list")
            return {"CANCELLED"}
        photos.remove(self.index)
        return {"FINISHED"}


def extra_photos(context) -> list[str]:
    """The listed photos (absolute paths; empty entries left out)."""
    return [bpy.path.abspath(p.path) for p in getattr(context.scene, "gen3dface_photos", ()) if p.path]


def draw(layout, context) -> None:
    """The list under the main photo: one path per row with a remove button, then Add."""
    box = layout.box()
    box.label(text="More photos of the person")
    for i, item in enumerate(context.scene.gen3dface_photos):
        row = box.row(align=True)
        row.prop(item, "path", text="")
        row.operator(GEN3DFACE_OT_photo_remove.bl_idname, text="", icon="X").index = i
    box.operator(GEN3DFACE_OT_photo_add.bl_idname, icon="ADD")


CLASSES = (Gen3DFacePhoto, GEN3DFACE_OT_photo_add, GEN3DFACE_OT_photo_remove)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.gen3dface_photos = CollectionProperty(type=Gen3DFacePhoto)


def unregister():
    del bpy.types.Scene.gen3dface_photos
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
