"""Architecture of the multi-view conditioner (everything that is not the SD UNet/VAE/CLIP).

Stored as ``conditioner/config.json`` in a model folder. Names and defaults follow
SyncDreamer / Morphable Diffusion so that their checkpoints map key by key
(``weights/convert_syncdreamer.py``, ``weights/convert_morphable.py``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ConditionerConfig:
    """Shapes and switches of the volume / view-conditioning networks."""

    n_views: int = 16
    """Number of target views; SpatialTime3DNet's input has ``encoder_dim * n_views`` channels."""
    time_dim: int = 256
    """Width of the time embedding used by the volume networks (SyncDreamer ``time_embed_dim``)."""
    view_dim: int = 4
    """Relative view embedding (Δelevation, sin Δazimuth, cos Δazimuth, 0)."""
    clip_dim: int = 768
    """Width of the CLIP image embedding (ViT-L/14 projection: 768)."""
    context_dim: int = 768
    """UNet cross-attention width."""
    use_cc_projection: bool = True
    """SyncDreamer: context = Linear(clip ⊕ view, context) (772→768). Morphable Diffusion: CLIP only."""
    encoder_run_dim: int = 16
    """Hidden width of NoisyTargetViewEncoder."""
    encoder_dim: int = 16
    """Per-view feature channels unprojected into the volume (SyncDreamer: 16)."""
    volume_size: int = 32
    """V: the appearance volume is V³ (SyncDreamer: 32)."""
    volume_length: float = 0.3
    """Half extent of the volume cube around the origin, world metres (covers head + hair)."""
    frustum_depth: int = 48
    """Depth planes of each view's frustum volume (SyncDreamer: 48)."""
    frustum_length: float = 0.3 * math.sqrt(3.0)
    """Frustum spans camera distance ± this, world metres (SyncDreamer: √3 × volume half extent)."""
    use_spatial_volume: bool = False
    """SyncDreamer's dense SpatialTime3DNet over all views' features (off in Morphable's face config)."""
    spatial_dims: tuple[int, int, int, int] = (64, 128, 256, 512)
    """SpatialTime3DNet widths; its output (spatial_dims[0]) is added to the mesh volume."""
    use_mesh_volume: bool = True
    """Morphable Diffusion's mesh volume: features at the prior's vertices → sparse ConvNet."""
    sparse_dims: tuple[int, int, int] = (16, 32, 64)
    """SparseConvNet widths (Morphable: 16→32→64, two stride-2 downsamples)."""
    voxel_size: float = 0.005
    """Voxel edge of the mesh voxelisation, world metres (Morphable: 0.005)."""
    voxelisation: str = "neuralbody"
    """Voxelisation rule (``sparse_conv.voxelize``): neuralbody (ours) or morphable (the reference's)."""
    frustum_dims: tuple[int, int, int, int] = (64, 128, 256, 512)
    """FrustumTV3DNet widths at latent/1, /2, /4, /8."""
    depth_heads: int = 4
    """Heads of each DepthTransformer (head width = volume channels // 2)."""
    unet_block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    """The UNet's block widths (to size the DepthTransformers)."""
    unet_layers_per_block: int = 2
    """The UNet's resnets per down block (up blocks have one more)."""
    joint_attention: bool = True
    """Gen3D-Face §3.2: self-attention across all target views (and the input) in one pass."""
    joint_attention_max_tokens: int = 0
    """Joint attention only in layers with ≤ this many tokens per view; 0 = every layer."""
    joint_gate_layers: int = 0
    """> 0: joint attention is gated per self-attention layer (this many gates, zero at start): out =
    per-view + gate·(joint − per-view), so a converted per-view model starts unchanged (``engine/train``)."""
    causal_reference: bool = False
    """Causal reference attention (seed 003): the input view's tokens attend only to themselves, the
    targets' to everything (needs ``joint_attention`` and ``include_input_view``)."""
    identity_dim: int = 0
    """> 0: the identity token (SpinMeRound, seed 000): a face descriptor of this width (dlib: 128) of the
    input photo, projected to ``context_dim`` and appended to every view's cross-attention context."""
    n_references: int = 0
    """Reference photos besides the input the model was trained with (multi_reference, seed 001); 0: one photo."""
    include_input_view: bool = True
    """Run the clean input latent as an extra UNet view so joint attention sees it (Gen3D-Face §3.2)."""
    elevation_sign: float = 1.0
    """Sign of Δelevation in the view embedding (SyncDreamer's zero123 convention: −1)."""
    azimuth_sign: float = 1.0
    """Sign of Δazimuth in the view embedding (−1 if a checkpoint's azimuth turns the other way)."""
    concat_unscaled: bool = True
    """zero123 quirk kept by SyncDreamer: the concatenated input latent is divided by the VAE scale."""

    def __post_init__(self):
        for name in ("encoder_run_dim", "encoder_dim"):
            if getattr(self, name) % 8:
                raise ValueError(f"{name} must be a multiple of 8 (GroupNorm(8))")
        for d in (*self.spatial_dims, *self.frustum_dims):
            if d % 8:
                raise ValueError("volume widths must be multiples of 8 (GroupNorm(8))")
        if self.use_spatial_volume and self.use_mesh_volume and self.spatial_dims[0] != self.sparse_dims[-1]:
            raise ValueError("spatial_dims[0] must equal sparse_dims[-1]: the two volumes are added")
        if self.voxelisation not in ("neuralbody", "morphable"):
            raise ValueError(f"voxelisation must be neuralbody|morphable, got {self.voxelisation!r}")
        if self.identity_dim < 0 or self.n_references < 0:
            raise ValueError("identity_dim and n_references must be ≥ 0")
        if not self.use_cc_projection and self.clip_dim != self.context_dim:
            raise ValueError("without cc_projection clip_dim must equal context_dim")

    @property
    def volume_channels(self) -> int:
        """Channels of the fused volume fed to FrustumTV3DNet."""
        return self.sparse_dims[-1] if self.use_mesh_volume else self.spatial_dims[0]

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "ConditionerConfig":
        """Build from JSON; unknown keys are an error (a typo must not silently fall back)."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names) - {"_class_name"})
        if unknown:
            raise ValueError(f"unknown conditioner config keys: {', '.join(unknown)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        return cls(**kwargs)
