"""Architecture configs of the public checkpoints (diffusers names), shared by the converters
and the engine's presets. Plain dicts: ``weights`` never imports ``engine``."""
from __future__ import annotations

#: SD-1.5 / zero123 UNet with SyncDreamer's 8 input channels (noisy ⊕ input latent).
SD15_UNET = dict(
    sample_size=32, in_channels=8, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
#: SD VAE (ldm ``ddconfig``: ch 128, ch_mult 1,2,4,4, z 4, scale 0.18215).
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=256,
    block_out_channels=(128, 256, 512, 512), scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
#: ldm's scaled-linear schedule (β 0.00085 → 0.012, 1000 steps) for DDIM.
SCHEDULER = dict(
    _class_name="DDIMScheduler", num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
    beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    prediction_type="epsilon",
)

def syncdreamer_conditioner(latent: int = 32) -> dict:
    """SyncDreamer: dense SpatialTime3DNet volume, cc_projection, zero123 elevation sign,
    no mesh, per-view (not joint) attention. Lengths are its own (``conventions.syncdreamer``)."""
    return dict(latent=latent, n_views=16, use_spatial_volume=True, use_mesh_volume=False, use_cc_projection=True,
                elevation_sign=-1.0, joint_attention=False, include_input_view=False)


def morphable_conditioner(latent: int = 32) -> dict:
    """Morphable Diffusion (facescape config): mesh volume only, CLIP context without
    cc_projection, per-view attention. Lengths are its own (``conventions.morphable``)."""
    return dict(latent=latent, n_views=16, use_spatial_volume=False, use_mesh_volume=True, use_cc_projection=False,
                joint_attention=False, include_input_view=False)
