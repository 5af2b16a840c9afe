"""Bake onto selected: the engine's ``bake`` for a mesh in the scene, and its texture wired in.

The mesh is written as it sits in the scene (world coordinates, its active UV map) to a
temporary OBJ (Y up, as the engine reads OBJ), the engine bakes the run's views onto it
(``gen3dface bake --json``, a job with progress and cancel like Generate), and the image
goes into an image-texture node linked to Base Color of the mesh's own material (created
when it has none). Nothing in the scene changes until the engine has succeeded, and a
failure while wiring removes what was added.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import bpy

from . import client

NODE_NAME = "Gen3D Face bake"


class BakeError(RuntimeError):
    """The bake failed or was cancelled; the message is the engine's one-line reason."""


def base_color_image(obj):
    """The image wired (directly) into Base Color of ``obj``'s active material, or None."""
    mat = obj.active_material
    if mat is None or not mat.use_nodes or mat.node_tree is None:
        return None
    for node in mat.node_tree.nodes:
        if node.type == "BSDF_PRINCIPLED":
            for link in node.inputs["Base Color"].links:
                if link.from_node.type == "TEX_IMAGE" and link.from_node.image is not None:
                    return link.from_node.image
    return None


def _write_texture(obj, path: str) -> str | None:
    """The mesh's base-colour image saved as PNG beside the OBJ (for ``--align auto``, which
    finds the face on renders of the mesh: a textured render finds it more surely than a
    shaded one); its file name, or None when it has none or it cannot be written."""
    image = base_color_image(obj)
    if image is None:
        return None
    target = os.path.splitext(path)[0] + "_basecolor.png"
    try:
        image.save(filepath=target)  # a copy: the image's own path and state are unchanged
    except (TypeError, RuntimeError, ReferenceError):
        return None
    return os.path.basename(target) if os.path.isfile(target) else None


def write_obj(obj, path: str, with_texture: bool = False) -> None:
    """The evaluated mesh of ``obj`` in world coordinates, triangulated, with its active UVs
    (and, ``with_texture``, its base-colour image through an MTL when it has one)."""
    mesh = obj.data
    if not mesh.uv_layers.active:
        raise BakeError(f"{obj.name}: the mesh has no UV map")
    mesh.calc_loop_triangles()
    if not mesh.loop_triangles:
        raise BakeError(f"{obj.name}: the mesh has no faces")
    m = obj.matrix_world
    uv = mesh.uv_layers.active.data
    texture = _write_texture(obj, path) if with_texture else None
    lines = [f"o {obj.name}"]
    if texture:
        stem = os.path.splitext(os.path.basename(path))[0]
        Path(path).with_suffix(".mtl").write_text(f"newmtl base\nKd 1 1 1\nmap_Kd {texture}\n")
        lines = [f"mtllib {stem}.mtl", *lines, "usemtl base"]
    lines += [f"v {w.x!r} {w.z!r} {-w.y!r}" for w in (m @ v.co for v in mesh.vertices)]  # Z up → Y up
    lines += [f"vt {d.uv[0]!r} {d.uv[1]!r}" for d in uv]
    for tri in mesh.loop_triangles:
        a, b, c = (f"{v + 1}/{l + 1}" for v, l in zip(tri.vertices, tri.loops))
        lines.append(f"f {a} {b} {c}")
    Path(path).write_text("\n".join(lines) + "\n")


def bake_args(run_dir: str, mesh_path: str, out_dir: str, align: str, size: int) -> list[str]:
    return ["bake", run_dir, "--mesh", mesh_path, "-o", out_dir, "--align", align, "--size", str(int(size)), "--json"]


def start(python: str, obj, run_dir: str, align: str = "none", size: int = 2048) -> tuple[client.EngineProcess, str]:
    """Write the mesh and start the engine; returns (process, output folder)."""
    if not python:
        raise BakeError("no engine Python: set it in the add-on preferences (or GEN3DFACE_PYTHON)")
    if not run_dir or not os.path.isfile(os.path.join(run_dir, "transforms.json")):
        raise BakeError(f"{run_dir or '(no run)'}: not a Gen3D Face run (no transforms.json)")
    work = tempfile.mkdtemp(prefix="gen3dface_bake_")
    mesh_path = os.path.join(work, f"{bpy.path.clean_name(obj.name)}.obj")
    write_obj(obj, mesh_path, with_texture=align == "auto")
    out = os.path.join(run_dir, "bakes", bpy.path.clean_name(obj.name))
    n = 1
    while os.path.exists(out):
        n += 1
        out = os.path.join(run_dir, "bakes", f"{bpy.path.clean_name(obj.name)}_{n}")
    try:
        return client.EngineProcess(python, bake_args(run_dir, mesh_path, out, align, size)), out
    except OSError as exc:
        raise BakeError(f"{python}: cannot start the engine ({exc})") from None


def apply_result(obj, out_dir: str):
    """Load the baked texture and wire it to Base Color of ``obj``'s material. Returns the image."""
    info = json.loads(Path(out_dir, "bake.json").read_text())
    texture = os.path.join(out_dir, info["textures"][0])
    added = []
    try:
        image = bpy.data.images.load(texture, check_existing=False)
        added.append(("image", image))
        mat = obj.active_material
        if mat is None:
            mat = bpy.data.materials.new(f"{obj.name}_gen3dface")
            added.append(("material", mat))
            obj.data.materials.append(mat)
            added.append(("slot", obj))
        mat.use_nodes = True
        nodes = mat.node_tree.nodes
        bsdf = next((nd for nd in nodes if nd.type == "BSDF_PRINCIPLED"), None)
        if bsdf is None:
            bsdf = nodes.new("ShaderNodeBsdfPrincipled")
            added.append(("node", (mat, bsdf)))
            out = next((nd for nd in nodes if nd.type == "OUTPUT_MATERIAL"), None) or nodes.new("ShaderNodeOutputMaterial")
            mat.node_tree.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
        node = nodes.new("ShaderNodeTexImage")
        added.append(("node", (mat, node)))
        node.name = node.label = NODE_NAME
        node.image = image
        node.location = (bsdf.location.x - 320, bsdf.location.y)
        mat.node_tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
        return image
    except Exception:
        _undo(added)
        raise


def _undo(added) -> None:
    for kind, thing in reversed(added):
        if kind == "node":
            mat, node = thing
            mat.node_tree.nodes.remove(node)
        elif kind == "slot":
            thing.data.materials.pop()
        elif kind == "material":
            bpy.data.materials.remove(thing)
        elif kind == "image":
            bpy.data.images.remove(thing)


def run_sync(python: str, obj, run_dir: str, align: str = "none", size: int = 2048,
             say=lambda line: print(line, flush=True)):
    """Bake to the end (scripts, background), then wire the texture; returns the image."""
    proc, out = start(python, obj, run_dir, align, size)
    state = client.ProgressState()
    try:
        for event in proc.events():
            line = state.apply(event)
            if line:
                say(f"gen3dface: {line}")
    except KeyboardInterrupt:
        proc.cancel()
    outcome = proc.wait()
    if not outcome.ok:
        raise BakeError(outcome.message)
    return apply_result(obj, out)
