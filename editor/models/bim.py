"""SmartEdit's Bidirectional Interaction Module (BIM): QFormer output <-> CLIP patch features, two ways.

Follows docs/smartedit.md §2.6 (algorithm), §2.7 (where the outputs go) and §3.3 C (keys and shapes of
`modulate-15000/adapter_model.bin`); the original is SAM's two-way transformer (TencentARC/SmartEdit
model/two_way_transformer.py, from Meta's Segment-Anything):

    f0 = modulate_head(c_q)                                    # B x 77 x E, also the text PE in every attention
    f, v = modulate_transformer(f0, v_clip, pe(16 x 16 grid))  # 2 two-way blocks + final text -> image attention
    r_txt = dimension_reduction_head_qformer_out(f)            # B x 77 x 768 -> c = c_q + 0.5 * r_txt
    r_img = dimension_reduction_head_zeroconv(bilinear(v as B x E x 16 x 16, res/8))  # B x 320 x res/8 x res/8,
                                                               # added after the UNet's conv_in

Composition: `modulate_transformer` is transformers' `SamTwoWayTransformer` (transformers.models.sam.modeling_sam),
which computes the same maths as SAM's original: block 0 self-attention without residual or PE, post-norm residuals,
cross-attention at half width, full-width self-attention, final text -> image attention + LayerNorm. It works on
4-D "point batches" (B x 1 x tokens x E), so a singleton axis is added and removed around it. Its LayerNorm eps is
set to 1e-5 (torch's default, which SAM uses; SamMaskDecoderConfig defaults to 1e-6). Its blocks fix the
cross-attention downsample rate at 2, which is what SmartEdit uses. Key names differ only in the norms
(`layer_norm1..4`, `layer_norm_final_attn` here vs `norm1..4`, `norm_final_attn` released); `released_to_module` /
`module_to_released` translate them.

The random-Fourier positional encoding is a small module of its own (not `SamPositionalEmbedding`): SmartEdit keeps
the Gaussian matrix as a buffer named `positional_encoding_gaussian_matrix`, while transformers' class holds a
trainable parameter under another name whose initial scale is tied to an unrelated vision config.

Both heads are zero-initialised, as at SmartEdit's training start (ControlNet-style), so an untrained BIM leaves
c = c_q and adds nothing to the UNet.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.sam.configuration_sam import SamMaskDecoderConfig
from transformers.models.sam.modeling_sam import SamTwoWayTransformer

TEXT_RESIDUAL_SCALE = 0.5  # c = c_q + 0.5 * r_txt, in training and inference (docs/smartedit.md §2.6 step 8)
ATTENTION_DOWNSAMPLE_RATE = 2  # cross-attention internal width = embed_dim / 2; fixed in SamTwoWayAttentionBlock

_LAYER_KEY = re.compile(r"^modulate_transformer\.layers\.(\d+)\.")
# Norm names: module `layer_norm1` / `layer_norm_final_attn` <-> released `norm1` / `norm_final_attn`.
_MODULE_NORM = re.compile(r"\.layer_norm(\d|_final_attn)\.")
_RELEASED_NORM = re.compile(r"\.norm(\d|_final_attn)\.")


@dataclass(frozen=True)
class BIMConfig:
    embed_dim: int = 1024  # transformer width; must equal the CLIP feature width (no input projection)
    heads: int = 8  # not recoverable from tensor shapes
    mlp_dim: int = 2048
    depth: int = 2
    query_dim: int = 768  # width of c_q and r_txt (the QFormer hidden / UNet cross-attention dim)
    unet_channels: int = 320  # UNet conv_in output channels
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.embed_dim % 2:
            raise ValueError(f"`embed_dim` must be even (sin + cos positional encoding), got {self.embed_dim}")

    @property
    def pe_frequencies(self) -> int:
        return self.embed_dim // 2  # sin and cos of each frequency fill the embedding

    @classmethod
    def from_state_dict(cls, released_sd: dict[str, torch.Tensor], heads: int = 8) -> BIMConfig:
        """Read every size from the tensors of the released BIM file (released key names)."""
        layer_ids = {int(m.group(1)) for key in released_sd if (m := _LAYER_KEY.match(key))}
        if not layer_ids or layer_ids != set(range(len(layer_ids))):
            raise ValueError(f"expected `modulate_transformer.layers.0..N-1` keys, got indices {sorted(layer_ids)}")
        embed_dim, query_dim = released_sd["modulate_head.weight"].shape
        config = cls(
            embed_dim=embed_dim,
            heads=heads,
            mlp_dim=released_sd["modulate_transformer.layers.0.mlp.lin1.weight"].shape[0],
            depth=len(layer_ids),
            query_dim=query_dim,
            unet_channels=released_sd["dimension_reduction_head_zeroconv.weight"].shape[0],
        )
        cross_width = embed_dim // ATTENTION_DOWNSAMPLE_RATE
        expected = {
            "pe_layer.positional_encoding_gaussian_matrix": (2, config.pe_frequencies),
            "dimension_reduction_head_qformer_out.weight": (query_dim, embed_dim),
            "modulate_transformer.layers.0.cross_attn_token_to_image.q_proj.weight": (cross_width, embed_dim),
        }
        for key, shape in expected.items():
            if tuple(released_sd[key].shape) != shape:
                raise ValueError(f"`{key}` should have shape {shape}, got {tuple(released_sd[key].shape)}")
        return config

    def to_sam(self) -> SamMaskDecoderConfig:
        return SamMaskDecoderConfig(
            hidden_size=self.embed_dim,
            hidden_act="relu",
            mlp_dim=self.mlp_dim,
            num_hidden_layers=self.depth,
            num_attention_heads=self.heads,
            attention_downsample_rate=ATTENTION_DOWNSAMPLE_RATE,
            layer_norm_eps=self.layer_norm_eps,
            attn_implementation="sdpa",
        )


class RandomFourierPositionalEncoding(nn.Module):
    """SAM's random-Fourier encoding of a grid: cell centres in [-1, 1]^2, times a Gaussian matrix, sin and cos."""

    def __init__(self, num_frequencies: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_frequencies))

    def forward(self, height: int, width: int) -> torch.Tensor:
        matrix = self.positional_encoding_gaussian_matrix  # 2 x F
        ys = (torch.arange(height, device=matrix.device, dtype=matrix.dtype) + 0.5) / height
        xs = (torch.arange(width, device=matrix.device, dtype=matrix.dtype) + 0.5) / width
        coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # H x W x 2, (x, y) per cell
        angles = 2 * math.pi * ((2 * coords - 1) @ matrix)  # H x W x F
        return torch.cat([angles.sin(), angles.cos()], dim=-1).permute(2, 0, 1)  # 2F x H x W


class BidirectionalInteractionModule(nn.Module):
    """`forward(v_clip [B, S*S, E], c_q [B, Q, query_dim], latent_size) -> (r_txt [B, Q, query_dim],
    r_img [B, unet_channels, h, w])`; `latent_size` is a side or (h, w)."""

    def __init__(self, config: BIMConfig) -> None:
        super().__init__()
        self.config = config
        self.modulate_head = nn.Linear(config.query_dim, config.embed_dim)
        self.modulate_transformer = SamTwoWayTransformer(config.to_sam())
        self.pe_layer = RandomFourierPositionalEncoding(config.pe_frequencies)
        self.dimension_reduction_head_qformer_out = nn.Linear(config.embed_dim, config.query_dim)
        self.dimension_reduction_head_zeroconv = nn.Conv2d(config.embed_dim, config.unet_channels, kernel_size=1)
        for head in (self.dimension_reduction_head_qformer_out, self.dimension_reduction_head_zeroconv):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(
        self, v_clip: torch.Tensor, c_q: torch.Tensor, latent_size: int | tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r_txt, image_map = self.interact(v_clip, c_q)
        return r_txt, self.image_residual(image_map, latent_size)

    def interact(self, v_clip: torch.Tensor, c_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer: (r_txt [B, Q, query_dim], the image side as a map [B, E, S, S]). The map is
        resized to the latent grid only at render time (`image_residual`), when the resolution is known."""
        batch, tokens, width = v_clip.shape  # tokens = row-major patches of a square grid (256 = 16 x 16)
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(f"`v_clip` must hold a square grid of patch tokens, got {tokens} tokens")
        if width != self.config.embed_dim:
            raise ValueError(f"`v_clip` must have width {self.config.embed_dim} (embed_dim), got {width}")
        # 1. Text tokens and their PE; image tokens as a channel-first map and the grid's PE.
        f0 = self.modulate_head(c_q)  # B x Q x E
        image = v_clip.transpose(1, 2).reshape(batch, width, side, side)  # B x E x S x S
        pe = self.pe_layer(side, side).to(image.dtype).expand(batch, -1, -1, -1)  # B x E x S x S
        # 2. Two-way transformer on a point batch of one.
        text, image_tokens = self.modulate_transformer(
            point_embeddings=f0[:, None],
            image_embeddings=image,
            image_positional_embeddings=pe,
            attention_similarity=None,
        )  # B x 1 x Q x E, B x 1 x S*S x E
        r_txt = self.dimension_reduction_head_qformer_out(text[:, 0])  # B x Q x query_dim
        return r_txt, image_tokens[:, 0].transpose(1, 2).reshape(batch, width, side, side)

    def image_residual(self, image_map: torch.Tensor, latent_size: int | tuple[int, int]) -> torch.Tensor:
        """The image map resized (bilinear, align_corners False) to the latent grid, then the 1x1 zero conv:
        [B, unet_channels, h, w], added after the UNet's conv_in."""
        size = (latent_size, latent_size) if isinstance(latent_size, int) else tuple(latent_size)
        if min(size) < 1:
            raise ValueError(f"`latent_size` must be positive, got {latent_size}")
        image_map = F.interpolate(image_map, size=size, mode="bilinear", align_corners=False)
        return self.dimension_reduction_head_zeroconv(image_map)


def text_condition(c_q: torch.Tensor, r_txt: torch.Tensor) -> torch.Tensor:
    """The UNet's cross-attention condition c = c_q + 0.5 * r_txt (B x 77 x 768)."""
    return c_q + TEXT_RESIDUAL_SCALE * r_txt


def released_to_module(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released BIM keys -> `BidirectionalInteractionModule` keys (only the norm names change)."""
    return {_RELEASED_NORM.sub(r".layer_norm\1.", key): value for key, value in sd.items()}


def module_to_released(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`BidirectionalInteractionModule` keys -> the released names."""
    return {_MODULE_NORM.sub(r".norm\1.", key): value for key, value in sd.items()}
