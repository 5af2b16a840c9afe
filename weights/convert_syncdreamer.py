"""SyncDreamer ``.ckpt`` → model folder.  ``python -m weights.convert_syncdreamer CKPT OUT``

Key mapping (checkpoint → folder): ``model.diffusion_model.*`` → ``unet/`` (ldm → diffusers
table in ldm_keys.py) except its ``middle_conditions`` / ``output_conditions`` →
``conditioner/``; ``time_embed.*``, ``cc_projection.*``, ``spatial_volume.*`` →
``conditioner/`` unchanged; ``first_stage_model.*`` → ``vae/``; CLIP and schedule/camera
buffers are dropped (CLIP: add a transformers ``openai/clip-vit-large-patch14`` vision model
as ``image_encoder/`` or pass embeddings). Use it with ``layout="syncdreamer"``.
"""
from __future__ import annotations

import argparse
import logging

from .architectures import syncdreamer_conditioner
from .convert import convert


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    convert(args.ckpt, args.out, syncdreamer_conditioner())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
