"""The demo model's latent codec: each 4 x 4 pixel patch stacked as 48 channels (space-to-depth), exact and local.

Deviation from MGIE / Stable Diffusion, whose UNet works in a learnt VAE's latents (docs/demo-recipe.md, "A codec
that keeps the scene"). The demo's own small VAE mixed globally: an edit of a few pixels changed 56 % of the 16 x 16
latent positions, and the target's latents inside the edit with the source's outside passed the judge on 67 %
against 86 % for the target's own. With patches a pixel outside the edit is a latent value outside the edit, the
round trip is exact (no ceiling below 100 %), and nothing is trained. The grid stays 16 x 16 for 64 px scenes, so
the UNet costs what it did; only its first and last convolutions see 48 channels instead of 8.

`PatchAutoencoder` answers as diffusers' `AutoencoderKL` does (`encode(x).latent_dist.mode()`,
`decode(z).sample`, `config.latent_channels` / `scaling_factor`), so InstructPix2Pix's stock pipeline and every
caller of the VAE take it unchanged (editor.loading.load_vae reads the class a `vae/config.json` names).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_utils import ModelMixin

CLASS_NAME = "PatchAutoencoder"


class PatchAutoencoder(ModelMixin, ConfigMixin):
    """Images in [-1, 1] (B x C x H x W) <-> latents B x C*p*p x H/p x W/p; `scaling_factor` as in SD's VAE config
    (the pipeline scales by it; 1 / the latents' standard deviation on the world's scenes)."""

    @register_to_config
    def __init__(self, patch_size: int = 4, in_channels: int = 3, latent_channels: int = 48,
                 scaling_factor: float = 1.0, sample_size: int = 64,
                 block_out_channels: tuple[int, ...] | None = None) -> None:  # fmt: skip
        """`block_out_channels`: the channels after each 2 x 2 step of the space-to-depth (3, 12, 48 for 4 x 4
        patches); derived, and written to the config because diffusers' pipelines read the image-to-latent scale
        from its length, as for an AutoencoderKL."""
        super().__init__()
        if patch_size < 1 or patch_size & (patch_size - 1):
            raise ValueError(f"patch_size must be a power of two, not {patch_size}")
        if latent_channels != in_channels * patch_size**2:
            raise ValueError(
                f"latent_channels must be in_channels * patch_size**2 = {in_channels * patch_size**2}, "
                f"not {latent_channels}"
            )
        steps = tuple(in_channels * 4**k for k in range(patch_size.bit_length()))
        if block_out_channels is not None and tuple(block_out_channels) != steps:
            raise ValueError(f"block_out_channels of {patch_size} x {patch_size} patches are {steps}")
        self.register_to_config(block_out_channels=steps)
        # No weights; this buffer gives the module a dtype and device as diffusers' models have.
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        p = self.config.patch_size
        if x.shape[-1] % p or x.shape[-2] % p:
            raise ValueError(f"image sides must be multiples of the patch size {p}, got {tuple(x.shape[-2:])}")
        z = F.pixel_unshuffle(x, p)
        posterior = DiagonalGaussianDistribution(torch.cat([z, torch.zeros_like(z)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        image = F.pixel_shuffle(z, self.config.patch_size)
        return DecoderOutput(sample=image) if return_dict else (image,)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        return self.decode(self.encode(sample).latent_dist.mode(), return_dict=return_dict)
