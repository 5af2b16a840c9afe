"""Gen3D Face inside Blender: panel, preferences, operators, engine client, scene import.

Imports ``bpy`` and the engine's ``protocol`` only — never torch: the engine runs as a
subprocess in its own Python (docs/architecture.md). ``client``, ``run_data`` and ``engine_setup``
are bpy-free and import anywhere.
"""
from __future__ import annotations

_MODULES = ("props", "photos", "prefs", "operators", "panel", "preview")


def _modules():
    import importlib

    return [importlib.import_module(f"{__name__}.{name}") for name in _MODULES]


def register():
    for module in _modules():
        module.register()


def unregister():
    from . import jobs

    jobs.unregister()
    for module in reversed(_modules()):
        module.unregister()
