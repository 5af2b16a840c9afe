"""Running a generation: synchronously (scripts, background) or as a UI job drained by a timer."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from . import client, scene_io

log = logging.getLogger(__name__)

#: Seconds between two drains of the engine's event queue in the UI.
TICK = 0.2


class GenerateError(RuntimeError):
    """The engine failed or was cancelled; the message is the engine's one-line reason."""


def make_settings(values: dict, models_dir: str = "") -> tuple[client.GenerateSettings, str]:
    """Engine settings from the merged panel/operator ``values``; returns (settings, collection name).

    The run directory is ``output_dir/<photo stem>`` (suffixed when it exists).
    """
    photo = bpy.path.abspath(values.get("photo", ""))
    if not photo:
        raise GenerateError("no photo given")
    if not os.path.isfile(photo):
        raise GenerateError(f"{photo}: no such file")
    extra = tuple(bpy.path.abspath(p) for p in values.get("extra_photos", ()) if p)
    for p in extra:
        if not os.path.isfile(p):
            raise GenerateError(f"{p}: no such file")
    parent = bpy.path.abspath(values.get("output_dir", "")) or _default_output()
    name = bpy.path.clean_name(Path(photo).stem) or "photo"
    run_dir = client.unique_run_dir(parent, name)
    backend = values.get("backend", "auto")
    settings = client.GenerateSettings(
        photo=photo, output_dir=str(run_dir), backend=backend, views=values.get("views"),
        resolution=values.get("resolution"), steps=values.get("steps"), guidance=values.get("guidance"),
        seed=values.get("seed"), recon=values.get("recon", "auto"), models_dir=models_dir, extra_photos=extra)
    return settings, run_dir.name


def _default_output() -> str:
    from .prefs import user_dir

    base = user_dir() or os.path.join(bpy.app.tempdir or "/tmp", "gen3dface")
    return os.path.join(base, "runs")


def run_sync(context, python: str, settings: client.GenerateSettings, name: str,
             say=lambda line: print(line, flush=True)) -> scene_io.ImportedRun:
    """Run the engine to the end, printing progress, then import the run (scripts, background)."""
    if not python:
        raise GenerateError("no engine Python: set it in the add-on preferences (or GEN3DFACE_PYTHON)")
    state = client.ProgressState()
    t0 = time.monotonic()

    def on_event(event):
        line = state.apply(event)
        if line:
            say(f"gen3dface: {line}")

    outcome = client.run_generate(python, settings, on_event)
    if not outcome.ok:
        raise GenerateError(outcome.message)
    t1 = time.monotonic()
    imported = scene_io.import_run(context, outcome.result.output_dir, name)
    say(f"gen3dface: engine {t1 - t0:.1f} s, import {time.monotonic() - t1:.2f} s")
    return imported


@dataclass
class Job:
    """The generation running for the UI: the engine process and what the panel shows."""

    proc: client.EngineProcess
    scene_name: str
    name: str
    state: client.ProgressState = field(default_factory=client.ProgressState)
    started: float = field(default_factory=time.monotonic)
    cancelling: bool = False
    finish: object = None
    """Called as finish(scene, job, outcome) when the engine has exited (None: import the run)."""


_job: Job | None = None


def current() -> Job | None:
    return _job


def start(context, python: str, settings: client.GenerateSettings, name: str) -> Job:
    """Start the engine for the UI; ``tick`` (a ``bpy.app.timers`` function) drains it."""
    global _job
    if not python:
        raise GenerateError("no engine Python: set it in the add-on preferences (or GEN3DFACE_PYTHON)")
    try:
        proc = client.start_generate(python, settings)
    except OSError as exc:
        raise GenerateError(f"{python}: cannot start the engine ({exc})") from None
    _job = Job(proc, context.scene.name, name)
    context.scene.gen3dface.last_error = ""
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK)
    return _job


def start_process(context, proc: client.EngineProcess, name: str, finish) -> Job:
    """Drain an already started engine (e.g. a bake) for the UI; ``finish`` handles its end."""
    global _job
    _job = Job(proc, context.scene.name, name, finish=finish)
    context.scene.gen3dface.last_error = ""
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK)
    return _job


def cancel() -> None:
    if _job is not None:
        _job.cancelling = True
        _job.proc.cancel()


def tick() -> float | None:
    """Drain events; when the engine has exited, import its run or record its error."""
    global _job
    job = _job
    if job is None:
        return None
    for event in job.proc.poll_events():
        job.state.apply(event)
    _redraw()
    if not job.proc.finished:
        return TICK
    job.proc.poll_events()
    outcome = job.proc.wait(timeout=10)
    _job = None
    scene = bpy.data.scenes.get(job.scene_name) or bpy.context.scene
    (job.finish or _finish)(scene, job, outcome)
    _redraw()
    return None


def _finish(scene, job: Job, outcome: client.Outcome) -> None:
    settings = scene.gen3dface
    if not outcome.ok:
        settings.last_error = "Cancelled" if outcome.cancelled else outcome.message
        log.error("gen3dface: %s", settings.last_error)
        return
    try:
        t0 = time.monotonic()
        scene_io.import_run(_context_for(scene), outcome.result.output_dir, job.name)
        log.info("generated in %.1f s, imported in %.2f s", t0 - job.started, time.monotonic() - t0)
    except Exception as exc:  # noqa: BLE001 - shown in the panel, scene already rolled back
        settings.last_error = f"import failed: {exc}"
        log.exception("import of %s failed", outcome.result.output_dir)
        return
    settings.last_run = outcome.result.output_dir


class _SceneContext:
    """The bits of a context ``scene_io`` uses, for a scene that may not be the active one."""

    def __init__(self, scene):
        self.scene = scene


def _context_for(scene):
    return bpy.context if bpy.context.scene == scene else _SceneContext(scene)


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def unregister() -> None:
    global _job
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    if _job is not None:
        _job.proc.cancel()
        _job = None
