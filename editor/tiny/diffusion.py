"""The diffusion side of the tiny tree: the UNet (shared by IP2P and MGIE), the VAE, and the IP2P folder.

`build_ip2p_folder` writes the diffusers layout of timbrooks/instruct-pix2pix; `build_unet` is also
used for MGIE's fine-tuned `mgie_7b/unet.pt`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from editor.layouts.files import write_json
from editor.tiny._common import SEED_IP2P_UNET, SEED_TEXT, SEED_VAE, seeded, sub_seed
from editor.tiny.sizes import TinySizes
from editor.tiny.tokenizers import CLIP_BOS, CLIP_EOS, build_clip_tokenizer, clip_vocab_and_merges

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

IP2P_DIFFUSERS_VERSION = "0.12.0.dev0"


def unet_config(sizes: TinySizes) -> dict[str, Any]:
    """Constructor arguments of the tiny InstructPix2Pix UNet (8 input channels: noisy + image latents)."""
    return {
        "sample_size": 8,
        "in_channels": 8,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": (32, 64),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": sizes.cross_attention_dim,
        "attention_head_dim": 8,
    }


def build_unet(sizes: TinySizes, seed: int) -> UNet2DConditionModel:
    from diffusers import UNet2DConditionModel

    with seeded(seed):
        return UNet2DConditionModel(**unet_config(sizes)).eval()


def vae_config() -> dict[str, Any]:
    """Tiny AutoencoderKL with four blocks, so the VAE scale factor is 8 as in Stable Diffusion."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (8, 8, 16, 16),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "latent_channels": 4,
        "sample_size": 64,
        "scaling_factor": 0.18215,
    }


def clip_text_config(hidden: int) -> dict[str, Any]:
    """CLIPTextConfig arguments matching the tiny CLIP tokenizer (IP2P's text encoder, CLIP's text tower)."""
    vocab = clip_vocab_and_merges()[0]
    ids = {token: i for i, token in enumerate(vocab)}
    return {
        "vocab_size": len(vocab),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "projection_dim": hidden,
        "bos_token_id": ids[CLIP_BOS],
        "eos_token_id": ids[CLIP_EOS],
        "pad_token_id": ids[CLIP_EOS],
    }


def ip2p_model_index() -> dict[str, Any]:
    return {
        "_class_name": "StableDiffusionInstructPix2PixPipeline",
        "_diffusers_version": IP2P_DIFFUSERS_VERSION,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def ip2p_scheduler_config() -> dict[str, Any]:
    """timbrooks/instruct-pix2pix's scheduler_config.json (predates diffusers' `timestep_spacing`)."""
    return {
        "_class_name": "EulerAncestralDiscreteScheduler",
        "_diffusers_version": IP2P_DIFFUSERS_VERSION,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "steps_offset": 1,
        "trained_betas": None,
    }


def build_ip2p_folder(folder: Path, sizes: TinySizes, seed: int) -> None:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "model_index.json", ip2p_model_index())
    write_json(folder / "scheduler" / "scheduler_config.json", ip2p_scheduler_config())
    build_unet(sizes, sub_seed(seed, SEED_IP2P_UNET)).save_pretrained(folder / "unet")
    with seeded(sub_seed(seed, SEED_VAE)):
        AutoencoderKL(**vae_config()).save_pretrained(folder / "vae")
    with seeded(sub_seed(seed, SEED_TEXT)):
        text_config = CLIPTextConfig(**clip_text_config(sizes.cross_attention_dim))
        CLIPTextModel(text_config).save_pretrained(folder / "text_encoder")
    build_clip_tokenizer(folder / "tokenizer")
