"""The diffusion side of the tiny tree: the UNet (shared by IP2P and MGIE), the VAE, and the IP2P folder.

`build_ip2p_folder` writes the diffusers layout of timbrooks/instruct-pix2pix; `build_unet` is also
used for MGIE's fine-tuned `mgie_7b/unet.pt`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from editor.layouts.configs import clip_text_config, ip2p_model_index, ip2p_scheduler_config
from editor.layouts.files import write_json
from editor.layouts.sizes import ModelSizes
from editor.layouts.tokenizers import build_clip_tokenizer
from editor.tiny._common import SEED_IP2P_UNET, SEED_TEXT, SEED_VAE, seeded, sub_seed

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel


def unet_config(sizes: ModelSizes) -> dict[str, Any]:
    """Constructor arguments of the tiny InstructPix2Pix UNet (8 input channels: noisy + image latents)."""
    return {
        "sample_size": 8,
        "in_channels": 8,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": sizes.unet_channels,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": sizes.cross_attention_dim,
        "attention_head_dim": sizes.unet_heads,
    }


def build_unet(sizes: ModelSizes, seed: int) -> UNet2DConditionModel:
    from diffusers import UNet2DConditionModel

    with seeded(seed):
        return UNet2DConditionModel(**unet_config(sizes)).eval()


def vae_config(sizes: ModelSizes) -> dict[str, Any]:
    """Tiny AutoencoderKL with four blocks, so the VAE scale factor is 8 as in Stable Diffusion."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": sizes.vae_channels,
        "layers_per_block": 1,
        "norm_num_groups": sizes.vae_groups,
        "latent_channels": sizes.latent_channels,
        "sample_size": 64,
        "scaling_factor": 0.18215,
    }


def build_ip2p_folder(folder: Path, sizes: ModelSizes, seed: int) -> None:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "model_index.json", ip2p_model_index())
    write_json(folder / "scheduler" / "scheduler_config.json", ip2p_scheduler_config())
    build_unet(sizes, sub_seed(seed, SEED_IP2P_UNET)).save_pretrained(folder / "unet")
    with seeded(sub_seed(seed, SEED_VAE)):
        AutoencoderKL(**vae_config(sizes)).save_pretrained(folder / "vae")
    with seeded(sub_seed(seed, SEED_TEXT)):
        text_config = CLIPTextConfig(**clip_text_config(sizes.cross_attention_dim))
        CLIPTextModel(text_config).save_pretrained(folder / "text_encoder")
    build_clip_tokenizer(folder / "tokenizer")
