"""Morphable Diffusion ``.ckpt`` → model folder.  ``python -m weights.convert_morphable CKPT OUT``

Same key mapping as SyncDreamer's plus ``spatial_volume.xyzc_net.*`` (the spconv
SparseConvNet: weights ``[out, 3, 3, 3, in]`` are kept in spconv 2.x layout, which our CPU
sparse conv reads directly) and ``spatial_volume.smpl_feature_extractor.*``; there is no
``cc_projection`` (the facescape model feeds CLIP directly). Use with ``layout="morphable"``.
"""
from __future__ import annotations

import argparse
import logging

from .architectures import morphable_conditioner
from .convert import convert


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    convert(args.ckpt, args.out, morphable_conditioner())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
