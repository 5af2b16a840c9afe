"""Gen3D Face as a Blender extension: this folder (the repository root) is the extension.

Everything lives in ``blender_addon``; it is imported only inside ``register`` so that
importing this package outside Blender (test runners walking up from ``tests/``) never
pulls in ``bpy``.
"""


def register():
    from .blender_addon import register as _register

    _register()


def unregister():
    from .blender_addon import unregister as _unregister

    _unregister()
