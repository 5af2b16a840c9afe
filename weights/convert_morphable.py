"""Morphable Diffusion ``.ckpt`` → model folder.  ``python -m weights.convert_morphable CKPT OUT``

Same key mapping as SyncDreamer's plus ``spatial_volume.xyzc_net.*`` (the spconv
SparseConvNet: weights ``[out, 3, 3, 3, in]`` are kept in spconv 2.x layout, which our CPU
sparse conv reads directly) and ``spatial_volume.smpl_feature_extractor.*``; there is no
``cc_projection`` (the facescape model feeds CLIP directly). Writes ``conventions.json``
(``conventions.morphable``: its 16 views, Y-up frame, FLAME placement, voxelisation, sampler defaults).
"""
from __future__ import annotations

from . import conventions
from .architectures import morphable_conditioner
from .convert import command


def main(argv=None) -> int:
    return command(__doc__, morphable_conditioner(), conventions.morphable(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
