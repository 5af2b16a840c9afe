"""Thumbnails of the chosen photo for the panel (``bpy.utils.previews``)."""
from __future__ import annotations

import os

import bpy.utils.previews

_collection = None


def photo_icon(path: str) -> int:
    """The icon id of ``path``'s thumbnail (0 when there is no such file)."""
    global _collection
    if not path or not os.path.isfile(path):
        return 0
    if _collection is None:
        _collection = bpy.utils.previews.new()
    if path not in _collection:
        _collection.load(path, path, "IMAGE")
    return _collection[path].icon_id


def register():
    pass


def unregister():
    global _collection
    if _collection is not None:
        bpy.utils.previews.remove(_collection)
        _collection = None
