"""Add-on preferences: the engine's Python, the models folder, the torch build, Set up / Check engine."""
from __future__ import annotations

import json
import os
import platform
import sys

import bpy
from bpy.props import EnumProperty, StringProperty

from . import client, engine_env, engine_setup

#: The extension's package (``bl_ext.<repo>.gen3dface``); "" when imported as plain ``blender_addon``.
ADDON_ID = __package__.rpartition(".")[0]

_setup_job: engine_setup.SetupJob | None = None
_setup_finished = False
_doctor_text: list[str] = []
#: doctor's ``device`` section from the last Check engine or Set up engine.
_device_info: dict = {}


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
    """The configured engine Python: preferences, else the finished environment of Set up engine,
    else $GEN3DFACE_PYTHON."""
    prefs = get_prefs(context)
    if prefs is not None and prefs.engine_python:
        return bpy.path.abspath(prefs.engine_python)
    return client.default_engine_python(user_dir())


def models_dir(context=None) -> str:
    prefs = get_prefs(context)
    return bpy.path.abspath(prefs.models_dir) if prefs is not None and prefs.models_dir else ""


def torch_override(prefs) -> str:
    """The Torch build preference as ``engine_env.choose_torch`` reads it ('' = auto)."""
    if prefs is None:
        return os.environ.get(engine_env.TORCH_ENV, "")
    if prefs.torch_build == "CUSTOM":  # a folder may be written relative to the .blend (//wheels)
        value = prefs.torch_custom.strip()
        return value if "://" in value or not value else bpy.path.abspath(value)
    if prefs.torch_build == "AUTO":  # $GEN3DFACE_TORCH, as in scripts/setup.sh, else the hardware rule
        return os.environ.get(engine_env.TORCH_ENV, "")
    return prefs.torch_build.lower()


def manual_setup_lines(prefs=None) -> list[str]:
    """The Set up engine steps as shell commands for this system, for users without online access.

    prefs: the preferences whose Torch build to follow (default the add-on's)."""
    root = user_dir() or "<extension user folder>"
    try:
        torch = engine_env.choose_torch(torch_override(prefs if prefs is not None else get_prefs()))
    except engine_env.TorchChoiceError as exc:
        return [str(exc)]
    return engine_env.manual_commands(platform.system(), os.path.join(root, engine_setup.ENV_NAME),
                                      str(client.PACKAGE_ROOT), torch)


def set_device_info(info: dict | None) -> None:
    """Remember doctor's ``device`` section (device, torch build, warning) for the panels."""
    _device_info.clear()
    _device_info.update(info or {})


def device_warning() -> str:
    """doctor's warning about the engine's device ('' when none): from the last Check engine, else
    from the stamp of the environment Set up engine made (so it survives a restart)."""
    if not _device_info and user_dir():
        _device_info.update(engine_setup.read_stamp(os.path.join(user_dir(), engine_setup.ENV_NAME)).get("device")
                            or {"checked": False})
    return _device_info.get("warning") or ""


def setup_tick() -> float | None:
    """Timer: redraw the preferences while Set up engine runs; once it finished, use what it made."""
    global _setup_finished
    job = _setup_job
    if job is not None and job.done and not _setup_finished:
        _setup_finished = True
        if not job.error:
            prefs = get_prefs()
            if prefs is not None:  # the new environment replaces whatever was configured
                prefs.engine_python = engine_setup.ready_python(job.env_dir)
            set_device_info(engine_setup.last_json(job.lines))
    if not bpy.app.background:
        for window in bpy.context.window_manager.windows:
            for area in window.screen.areas:
                if area.type in ("PREFERENCES", "VIEW_3D"):
                    area.tag_redraw()
    return 0.5 if job is not None and not job.done else None


class GEN3DFACE_OT_setup_engine(bpy.types.Operator):
    """Install uv, create a Python 3.11 environment for the engine, install torch for this machine and the engine"""

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
        global _setup_job, _setup_finished
        try:
            job = engine_setup.make_job(sys.executable, user_dir(), client.PACKAGE_ROOT,
                                        torch_override(get_prefs(context)))
        except engine_env.TorchChoiceError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        _setup_job, _setup_finished = job.start(), False
        bpy.app.timers.register(setup_tick, first_interval=0.5)
        return {"FINISHED"}


class GEN3DFACE_OT_cancel_setup(bpy.types.Operator):
    """Stop Set up engine; the environment it was building is discarded"""

    bl_idname = "gen3dface.cancel_setup"
    bl_label = "Cancel set-up"

    @classmethod
    def poll(cls, context):
        return _setup_job is not None and not _setup_job.done

    def execute(self, context):
        _setup_job.cancel()
        return {"FINISHED"}


class GEN3DFACE_OT_check_engine(bpy.types.Operator):
    """Run the engine's doctor: Python, torch, the device it will use, mediapipe and model files"""

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
        except json.JSONDecodeError:
            _doctor_text = text.splitlines()[:12]
            return {"FINISHED"}
        if not isinstance(report, dict):
            _doctor_text = [text]
            return {"FINISHED"}
        device = report.get("device") or {}
        set_device_info(device)
        _doctor_text = [f"device: {device.get('device')} (torch {device.get('torch_build')} build)"]
        _doctor_text += [f"{k}: {v}" for k, v in report.items() if k != "device"]
        if device_warning():
            self.report({"WARNING"}, device_warning())
        else:
            self.report({"INFO"}, "engine OK")
        return {"FINISHED"}


_STATE_ICONS = {"pending": "BLANK1", "running": "PLAY", "done": "CHECKMARK", "failed": "ERROR", "cancelled": "CANCEL"}


def draw_setup(layout, job: engine_setup.SetupJob) -> None:
    """Set up engine's progress: one line per step, the bar, the last output lines or the error."""
    col = layout.column(align=True)
    for title, state in zip((s.title for s in job.steps), job.states):
        col.label(text=title, icon=_STATE_ICONS.get(state, "BLANK1"))
    if not job.done:
        layout.progress(factor=job.factor, type="BAR", text=job.title)
        layout.operator(GEN3DFACE_OT_cancel_setup.bl_idname, icon="CANCEL")
        for line in job.lines[-3:]:
            layout.label(text=line)
    elif job.error:
        box = layout.box()
        box.label(text=job.error, icon="ERROR")
        if not job.offline:
            for line in engine_setup.log_tail(job.log_path, 5) if job.log_path else job.lines[-5:]:
                box.label(text=line)
    else:
        layout.label(text=f"Engine set up in {job.seconds:.0f} s", icon="CHECKMARK")
    if job.log_path:
        layout.label(text=f"Log: {job.log_path}")


class Gen3DFacePreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID or "blender_addon"

    engine_python: StringProperty(
        name="Engine Python", subtype="FILE_PATH",
        description="Python executable with the engine installed (empty: the venv made by Set up engine)")
    models_dir: StringProperty(
        name="Models folder", subtype="DIR_PATH",
        description="Folder with FLAME/ and diffusion weights (empty: $GEN3DFACE_MODELS or "
                    "~/.local/share/gen3dface/models)")
    torch_build: EnumProperty(
        name="Torch build", default="AUTO",
        items=[("AUTO", "Auto", "CUDA with an NVIDIA GPU, ROCm with an AMD ROCm device, PyPI's on macOS, else CPU"),
               ("CPU", "CPU", "The CPU build (small; no GPU)"),
               ("CUDA", "CUDA", "The CUDA build for NVIDIA GPUs (several GB)"),
               ("ROCM", "ROCm", "The ROCm build for AMD GPUs (Linux)"),
               ("CUSTOM", "Custom", "A package index URL or a folder of wheels, below")],
        description="Which torch Set up engine installs (the same rule as scripts/setup.sh and $GEN3DFACE_TORCH)")
    torch_custom: StringProperty(
        name="Index or wheels", subtype="NONE",
        description="For Torch build Custom: a package index URL (https://…, file://…) or a folder holding a torch wheel")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "engine_python")
        layout.prop(self, "models_dir")
        row = layout.row()
        row.prop(self, "torch_build")
        if self.torch_build == "CUSTOM":
            row.prop(self, "torch_custom", text="")
        row = layout.row()
        row.operator(GEN3DFACE_OT_setup_engine.bl_idname, icon="CONSOLE")
        row.operator(GEN3DFACE_OT_check_engine.bl_idname, icon="CHECKMARK")
        if _setup_job is not None:
            draw_setup(layout, _setup_job)
        if device_warning():
            layout.label(text=device_warning(), icon="ERROR")
        if not bpy.app.online_access:
            box = layout.box()
            box.label(text="Online access is off. To set up the engine by hand, run:", icon="INFO")
            for line in manual_setup_lines(self):
                box.label(text=line)
        if _doctor_text:
            box = layout.box()
            for line in _doctor_text[:12]:
                box.label(text=line)


CLASSES = (GEN3DFACE_OT_setup_engine, GEN3DFACE_OT_cancel_setup, GEN3DFACE_OT_check_engine, Gen3DFacePreferences)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    if _setup_job is not None:
        _setup_job.cancel()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
