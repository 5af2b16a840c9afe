"""Operators: Generate (scriptable, or a UI job) and Cancel. Thin: the work is in ``jobs``."""
from __future__ import annotations

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from . import bake, jobs, photos, prefs, props


class GEN3DFACE_OT_generate(bpy.types.Operator):
    """Generate a textured 3D head with its cameras from the portrait photo"""

    bl_idname = "gen3dface.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    # Properties given to the call override the panel's settings (scene.gen3dface).
    photo: StringProperty(name="Photo", subtype="FILE_PATH", options={"SKIP_SAVE"})
    output_dir: StringProperty(name="Output", subtype="DIR_PATH", options={"SKIP_SAVE"})
    backend: EnumProperty(name="Backend", items=props.BACKENDS, options={"SKIP_SAVE"})
    views: IntProperty(name="Views", min=1, max=64, options={"SKIP_SAVE"})
    resolution: IntProperty(name="Resolution", min=64, max=2048, options={"SKIP_SAVE"})
    steps: IntProperty(name="Steps", min=1, max=500, options={"SKIP_SAVE"})
    guidance: FloatProperty(name="Guidance", min=0.0, max=20.0, options={"SKIP_SAVE"})
    seed: IntProperty(name="Seed", min=0, options={"SKIP_SAVE"})
    recon: EnumProperty(name="Reconstruction", items=props.RECON, options={"SKIP_SAVE"})
    # The file browser of invoke() fills this when no photo is set.
    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE", "HIDDEN"})
    filter_image: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        if jobs.current() is not None:
            cls.poll_message_set("A generation is running: wait for it or press Cancel")
            return False
        if not prefs.engine_python(context):
            cls.poll_message_set("No engine Python: press Set up engine in the add-on preferences "
                                 "or set Engine Python there")
            return False
        return True

    def _values(self, context) -> dict:
        """The panel's settings, overridden by every property given to this call."""
        panel = context.scene.gen3dface
        values = {key: getattr(panel, key) for key in props.GENERATE_KEYS}
        for key in props.GENERATE_KEYS:
            if self.properties.is_property_set(key):
                values[key] = getattr(self, key)
        if self.filepath:
            values["photo"] = self.filepath
        values["extra_photos"] = photos.extra_photos(context)
        return values

    def execute(self, context):
        """Scripts and background mode: run to the end, then import (raises via report on failure)."""
        if self.filepath and not bpy.app.background:  # back from the file browser
            return self._start(context)
        try:
            settings, name = jobs.make_settings(self._values(context), prefs.models_dir(context))
            imported = jobs.run_sync(context, prefs.engine_python(context), settings, name)
        except (jobs.GenerateError, ValueError, OSError) as exc:
            context.scene.gen3dface.last_error = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        context.scene.gen3dface.last_error = ""
        context.scene.gen3dface.last_run = settings.output_dir
        self.report({"INFO"}, f"Imported {imported.collection.name}")
        return {"FINISHED"}

    def invoke(self, context, event):
        """The UI: start the engine and return at once; a timer drains its events."""
        if bpy.app.background:
            return self.execute(context)
        if not self._values(context)["photo"]:
            context.window_manager.fileselect_add(self)
            return {"RUNNING_MODAL"}
        return self._start(context)

    def _start(self, context):
        try:
            settings, name = jobs.make_settings(self._values(context), prefs.models_dir(context))
            jobs.start(context, prefs.engine_python(context), settings, name)
        except (jobs.GenerateError, ValueError, OSError) as exc:
            context.scene.gen3dface.last_error = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if self.filepath:
            context.scene.gen3dface.photo = self.filepath
        return {"FINISHED"}


class GEN3DFACE_OT_cancel(bpy.types.Operator):
    """Stop the running generation (the scene is left unchanged)"""

    bl_idname = "gen3dface.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        job = jobs.current()
        if job is None:
            cls.poll_message_set("No generation is running")
            return False
        if job.cancelling:
            cls.poll_message_set("Cancelling: the engine stops at its next step")
            return False
        return True

    def execute(self, context):
        jobs.cancel()
        return {"FINISHED"}


class GEN3DFACE_OT_bake_selected(bpy.types.Operator):
    """Bake the run's views onto the selected mesh's own UVs (texture wired to Base Color)"""

    bl_idname = "gen3dface.bake_selected"
    bl_label = "Bake onto selected"
    bl_options = {"REGISTER"}

    run_dir: StringProperty(name="Run", subtype="DIR_PATH", options={"SKIP_SAVE"},
                            description="Run directory (empty: the last generated run)")
    align: EnumProperty(name="Align", options={"SKIP_SAVE"}, items=(
        ("none", "As placed", "The mesh sits on the imported run's head"),
        ("auto", "Auto", "Fit the mesh onto the run's head (similarity + ICP)")))
    size: IntProperty(name="Size", default=2048, min=1024, max=8192, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if jobs.current() is not None:
            cls.poll_message_set("A job is running: wait for it or press Cancel")
            return False
        if obj is None or obj.type != "MESH":
            cls.poll_message_set("Select a mesh")
            return False
        return True

    def _run_dir(self, context) -> str:
        return bpy.path.abspath(self.run_dir or context.scene.gen3dface.last_run)

    def execute(self, context):
        """Scripts and background mode: bake to the end, then wire the texture."""
        obj = context.active_object
        try:
            image = bake.run_sync(prefs.engine_python(context), obj, self._run_dir(context), self.align, self.size)
        except (bake.BakeError, OSError, ValueError, KeyError) as exc:
            context.scene.gen3dface.last_error = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        context.scene.gen3dface.last_error = ""
        self.report({"INFO"}, f"Baked {image.name} onto {obj.name}")
        return {"FINISHED"}

    def invoke(self, context, event):
        """The UI: a job with progress and Cancel; the texture is wired when the engine is done."""
        if bpy.app.background:
            return self.execute(context)
        obj_name = context.active_object.name
        try:
            proc, out = bake.start(prefs.engine_python(context), context.active_object, self._run_dir(context),
                                   self.align, self.size)
        except (bake.BakeError, OSError) as exc:
            context.scene.gen3dface.last_error = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}

        def finish(scene, job, outcome):
            obj = bpy.data.objects.get(obj_name)
            if not outcome.ok or obj is None:
                scene.gen3dface.last_error = "Cancelled" if outcome.cancelled else (outcome.message or "object gone")
                return
            try:
                bake.apply_result(obj, out)
            except Exception as exc:  # noqa: BLE001 - shown in the panel, additions rolled back
                scene.gen3dface.last_error = f"bake import failed: {exc}"

        jobs.start_process(context, proc, obj_name, finish)
        return {"FINISHED"}


CLASSES = (GEN3DFACE_OT_generate, GEN3DFACE_OT_cancel, GEN3DFACE_OT_bake_selected)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
