"""Gen3D Face engine: one portrait photo → textured 3D head with its cameras.

Kept light on purpose: importing ``engine`` (or ``engine.protocol``) loads no torch, so
the Blender add-on can use the protocol. Stages import their heavy dependencies lazily.
"""
__version__ = "0.1.0"
