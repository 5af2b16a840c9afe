"""SyncDreamer ``.ckpt`` → model folder.  ``python -m weights.convert_syncdreamer CKPT OUT``

Key mapping (checkpoint → folder): ``model.diffusion_model.*`` → ``unet/`` (ldm → diffusers
table in ldm_keys.py) except its ``middle_conditions`` / ``output_conditions`` →
``conditioner/``; ``time_embed.*``, ``cc_projection.*``, ``spatial_volume.*`` →
``conditioner/`` unchanged; ``first_stage_model.*`` → ``vae/``; CLIP and schedule/camera
buffers are dropped (CLIP: add a transformers ``openai/clip-vit-large-patch14`` vision model
as ``image_encoder/`` or pass embeddings). Writes ``conventions.json`` (``conventions.syncdreamer``): the
engine then renders SyncDreamer's own 16 views in its frame and writes them in the engine's world.
"""
from __future__ import annotations

from . import conventions
from .architectures import syncdreamer_conditioner
from .convert import command


def main(argv=None) -> int:
    return command(__doc__, syncdreamer_conditioner(), conventions.syncdreamer(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
