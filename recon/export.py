"""Writing textured meshes: GLB (glTF 2.0 binary) and OBJ + MTL + PNG.

Input is in the Blender world (Z up, metres). glTF is Y-up, so vertices and normals are
written as (x, y, z)_blender ↦ (x, z, −y)_gltf; Blender's glTF importer maps them back
(docs/architecture.md, "Conventions"). OBJ files get the same Y-up axes, which Blender's OBJ importer
(forward −Z, up Y) also maps back. The material is PBR with ``metallicFactor = 0`` (glTF's
default is 1, which renders black in Blender) and ``roughnessFactor = 0.6``.

Files are written under a temporary name in the target folder and renamed into place, so
a crash never leaves a half-written mesh that looks complete.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

METALLIC = 0.0
ROUGHNESS = 0.6

#: Blender world (Z up) → glTF / OBJ (Y up).
BLENDER_TO_YUP = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check(vertices, faces, uvs, texture, vertex_normals):
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or not np.all(np.isfinite(v)):
        raise ValueError(f"vertices must be finite [V, 3], got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= len(v))):
        raise ValueError("faces must be [F, 3] indices into vertices")
    if uvs is not None:
        uvs = np.asarray(uvs, dtype=np.float64)
        if uvs.shape != (len(v), 2):
            raise ValueError(f"uvs must be [V, 2] (one per vertex), got {uvs.shape}")
    if texture is not None:
        texture = np.asarray(texture)
        if texture.dtype != np.uint8 or texture.ndim != 3 or texture.shape[2] not in (3, 4):
            raise ValueError(f"texture must be uint8 [H, W, 3|4], got {texture.dtype} {texture.shape}")
        if uvs is None:
            raise ValueError("a texture needs uvs")
    if vertex_normals is not None:
        vertex_normals = np.asarray(vertex_normals, dtype=np.float64)
        if vertex_normals.shape != v.shape:
            raise ValueError(f"vertex_normals must be [V, 3], got {vertex_normals.shape}")
    return v, f, uvs, texture, vertex_normals


def _trimesh(vertices, faces, uvs, texture, vertex_normals):
    """A trimesh.Trimesh in Y-up axes with a PBR material (no processing: order kept)."""
    import trimesh
    from PIL import Image
    from trimesh.visual.material import PBRMaterial

    v, f, uvs, texture, normals = _check(vertices, faces, uvs, texture, vertex_normals)
    kwargs = {}
    if normals is not None:
        kwargs["vertex_normals"] = normals @ BLENDER_TO_YUP.T
    mesh = trimesh.Trimesh(v @ BLENDER_TO_YUP.T, f, process=False, **kwargs)
    material = PBRMaterial(
        name="head",
        baseColorFactor=[255, 255, 255, 255],
        metallicFactor=METALLIC,
        roughnessFactor=ROUGHNESS,
        baseColorTexture=None if texture is None else Image.fromarray(texture),
        doubleSided=False,
    )
    if uvs is not None:
        mesh.visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    else:
        mesh.visual = trimesh.visual.TextureVisuals(material=material)
    return mesh


def write_glb(
    path: str | Path,
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    vertex_normals: np.ndarray | None = None,
) -> Path:
    """Write a GLB.

    vertices: [V, 3] Blender world; faces: [F, 3] int (counter-clockwise seen from outside);
    uvs: [V, 2] (``recon.uv`` convention, v up); texture: uint8 [H, W, 3|4] base colour;
    vertex_normals: [V, 3] Blender world (None: viewers compute them).
    Returns the path written.
    """
    mesh = _trimesh(vertices, faces, uvs, texture, vertex_normals)
    data = mesh.export(file_type="glb", include_normals=vertex_normals is not None)
    _atomic_write(Path(path), data)
    log.info("wrote %s (%d vertices, %d faces)", path, len(mesh.vertices), len(mesh.faces))
    return Path(path)


def write_obj(
    path: str | Path,
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    vertex_normals: np.ndarray | None = None,
) -> Path:
    """Write ``name.obj`` + ``name.mtl`` + ``name.png`` (texture) beside each other.

    Same arguments as ``write_glb``. The OBJ is Y-up. The MTL and PNG are written before
    the OBJ, so an OBJ on disk always has its material. Returns the OBJ path.
    """
    from PIL import Image
    import io

    v, f, uvs, texture, normals = _check(vertices, faces, uvs, texture, vertex_normals)
    path = Path(path)
    stem = path.stem
    lines = ["# Gen3D Face head (Y up, metres)", f"mtllib {stem}.mtl", f"o {stem}"]
    vy = v @ BLENDER_TO_YUP.T
    # full precision (17 significant digits round-trip a float64): fixed decimals collapse
    # vertices lying within 1e-6 of each other, which leaves zero-area faces and
    # non-manifold edges once a reader merges the UV-seam copies (issue 13)
    lines += [f"v {x!r} {y!r} {z!r}" for x, y, z in vy.tolist()]
    if uvs is not None:
        lines += [f"vt {a!r} {b!r}" for a, b in np.asarray(uvs, np.float64).tolist()]
    if normals is not None:
        lines += [f"vn {x!r} {y!r} {z!r}" for x, y, z in (normals @ BLENDER_TO_YUP.T).tolist()]
    lines.append("usemtl head")
    one = f + 1
    if uvs is not None and normals is not None:
        lines += [f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}" for a, b, c in one]
    elif uvs is not None:
        lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in one]
    elif normals is not None:
        lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in one]
    else:
        lines += [f"f {a} {b} {c}" for a, b, c in one]
    mtl = ["newmtl head", "Ka 1 1 1", "Kd 1 1 1", "Ks 0 0 0", "d 1", "illum 1",
           f"Pr {ROUGHNESS}", f"Pm {METALLIC}"]
    if texture is not None:
        buf = io.BytesIO()
        Image.fromarray(texture).save(buf, format="PNG")
        _atomic_write(path.with_suffix(".png"), buf.getvalue())
        mtl.append(f"map_Kd {stem}.png")
    _atomic_write(path.with_suffix(".mtl"), ("\n".join(mtl) + "\n").encode())
    _atomic_write(path, ("\n".join(lines) + "\n").encode())
    log.info("wrote %s (%d vertices, %d faces)", path, len(v), len(f))
    return path


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of an image: uint8 [H, W] / [H, W, 3|4] (8-bit) or uint16 [H, W, 3|4] (16-bit, which
    PIL cannot write for colour images; encoded here: one zlib stream, filter 0 per row)."""
    import io
    import struct
    import zlib

    from PIL import Image

    a = np.asarray(image)
    if a.dtype == np.uint8:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()
    if a.dtype != np.uint16 or a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"png: uint8 or uint16 [H, W, 3|4] expected, got {a.dtype} {a.shape}")
    h, w, c = a.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), np.ascontiguousarray(a.astype(">u2")).view(np.uint8).reshape(h, w * c * 2)], 1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``png_bytes(image)`` atomically (temporary name, then renamed)."""
    _atomic_write(Path(path), png_bytes(image))
    return Path(path)


def to_srgb_pixels(texture: np.ndarray, bits: int = 8) -> np.ndarray:
    """float [H, W, C] in [0, 1] (already sRGB-encoded, as the views) → uint8 or uint16 pixels."""
    if bits not in (8, 16):
        raise ValueError(f"texture bits must be 8 or 16, got {bits}")
    top = 255 if bits == 8 else 65535
    return (np.clip(texture, 0, 1) * top + 0.5).astype(np.uint8 if bits == 8 else np.uint16)
