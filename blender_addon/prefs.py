"""Add-on preferences: the engine's Python, the models folder, Set up / Check engine."""
from __future__ import annotations

import json
import os
import sys

import bpy
from bpy.props import StringProperty

from . import client, engine_setup

#: The extension's package (``bl_ext.<repo>.gen3dface``); "" when imported as plain ``blender_addon``.
ADDON_ID = __package__.rpartition(".")[0]

_setup_job: engine_setup.SetupJob | None = None
_doctor_text: list[str] = []


def user_dir() -> str:
    """The extension's writable folder ('' outside an installed extension)."""
    if not ADDON_ID:
        return ""
    try:
        return bpy.utils.extension_path_user(ADDON_ID, create=True)
    except (ValueError, RuntimeError):  # not loaded as an extension
        return ""


def get_prefs(context=None):
    """The preferences, or None when the add-on is not enabled as an extension."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID) if ADDON_ID else None
    return addon.preferences if addon else None


def engine_python(context=None) -> str:
    """The configured engine Python: preferences, else the venv of Set up engine, else $GEN3DFACE_PYTHON."""
    prefs = get_prefs(context)
    if prefs is not None and prefs.engine_python:
        return bpy.path.abspath(prefs.engine_python)
    return client.default_engine_python(user_dir())


def models_dir(context=None) -> str:
    prefs = get_prefs(context)
    return bpy.path.abspath(prefs.models_dir) if prefs is not None and prefs.models_dir else ""


def manual_setup_lines() -> list[str]:
    """The Set up engine steps as shell commands, for users without online access."""
    venv = os.path.join(user_dir() or "<extension user folder>", "venv")
    steps = engine_setup.setup_commands(sys.executable, venv, client.PACKAGE_ROOT)
    return engine_setup.shell_text(steps)


def _tag_redraw_prefs() -> float | None:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()
    return 0.5 if _setup_job is not None and not _setup_job.done else None


class GEN3DFACE_OT_setup_engine(bpy.types.Operator):
    """Create a virtual environment for the engine and pip-install torch and the engine into it"""

    bl_idname = "gen3dface.setup_engine"
    bl_label = "Set up engine"

    @classmethod
    def poll(cls, context):
        if not bpy.app.online_access:
            cls.poll_message_set("Online access is disabled (Preferences › System › Network): "
                                 "run the commands shown below by hand")
            return False
        if _setup_job is not None and not _setup_job.done:
            cls.poll_message_set("The engine is being set up")
            return False
        if not user_dir():
            cls.poll_message_set("Only available when installed as an extension")
            return False
        return True

    def execute(self, context):
        global _setup_job
        venv = os.path.join(user_dir(), "venv")
        steps = engine_setup.setup_commands(sys.executable, venv, client.PACKAGE_ROOT,
                                            get_prefs(context).torch_index)
        _setup_job = engine_setup.SetupJob(steps).start()
        get_prefs(context).engine_python = str(engine_setup.venv_python(venv))
        if not bpy.app.background:
            bpy.app.timers.register(_tag_redraw_prefs, first_interval=0.5)
        return {"FINISHED"}


class GEN3DFACE_OT_check_engine(bpy.types.Operator):
    """Run the engine's doctor: Python, torch, devices, mediapipe and model files"""

    bl_idname = "gen3dface.check_engine"
    bl_label = "Check engine"

    @classmethod
    def poll(cls, context):
        if not engine_python(context):
            cls.poll_message_set("Set the engine's Python first (or press Set up engine)")
            return False
        return True

    def execute(self, context):
        global _doctor_text
        code, text = client.run_doctor(engine_python(context))
        if code != 0:
            _doctor_text = [f"failed (exit {code})"] + text.splitlines()[-3:]
            self.report({"ERROR"}, f"engine check failed: {_doctor_text[-1]}")
            return {"CANCELLED"}
        try:
            report = json.loads(text)
            _doctor_text = [f"{k}: {v}" for k, v in report.items()] if isinstance(report, dict) else [text]
        except json.JSONDecodeError:
            _doctor_text = text.splitlines()[:12]
        self.report({"INFO"}, "engine OK")
        return {"FINISHED"}


class Gen3DFacePreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID or "blender_addon"

    engine_python: StringProperty(
        name="Engine Python", subtype="FILE_PATH",
        description="Python executable with the engine installed (empty: the venv made by Set up engine)")
    models_dir: StringProperty(
        name="Models folder", subtype="DIR_PATH",
        description="Folder with FLAME/ and diffusion weights (empty: $GEN3DFACE_MODELS or "
                    "~/.local/share/gen3dface/models)")
    torch_index: StringProperty(
        name="Torch index", default=engine_setup.TORCH_CPU_INDEX,
        description="Package index for torch in Set up engine: the CPU index keeps it small; "
                    "empty = the default index (CUDA build on Linux)")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "engine_python")
        layout.prop(self, "models_dir")
        layout.prop(self, "torch_index")
        row = layout.row()
        row.operator(GEN3DFACE_OT_setup_engine.bl_idname, icon="CONSOLE")
        row.operator(GEN3DFACE_OT_check_engine.bl_idname, icon="CHECKMARK")
        job = _setup_job
        if job is not None:
            if job.done:
                layout.label(text=job.error or "Engine set up", icon="ERROR" if job.error else "CHECKMARK")
            else:
                layout.progress(factor=job.factor, type="BAR", text=job.title)
            for line in job.lines[-3:]:
                layout.label(text=line)
        if not bpy.app.online_access:
            box = layout.box()
            box.label(text="Online access is off. To set up the engine by hand, run:", icon="INFO")
            for line in manual_setup_lines():
                box.label(text=line)
            box.label(text="then set Engine Python to the venv's python.")
        if _doctor_text:
            box = layout.box()
            for line in _doctor_text[:12]:
                box.label(text=line)


CLASSES = (GEN3DFACE_OT_setup_engine, GEN3DFACE_OT_check_engine, Gen3DFacePreferences)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    if _setup_job is not None:
        _setup_job.cancel()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
