"""The offline demo model: MGIE's architecture at a size a 2-core CPU trains in about an hour, and its ablation.

`ModelSizes` holds every size. `build_*` make the modules trained by `editor.demo.train`; `export_*` write them in the
official layouts, so the real loaders read them like the downloads:

    <out>/mgie/LLaVA-7B-v1/            LLaMA + projector shards (safetensors), the LLaMA-style tokenizer, config.json
    <out>/mgie/mgie_7b/                mllm.safetensors (embed_tokens, lm_head, edit_head.*, emb), unet.safetensors
    <out>/mgie/instruct-pix2pix/       the diffusers shell: scheduler, UNet config, the small VAE
    <out>/mgie/clip-vit-large-patch14/ the ViT (vision_model.* keys) and its preprocessor config
    <out>/ip2p/                        the ablation as a diffusers InstructPix2Pix folder (small CLIP text encoder)

The VAE downsamples by 4 (64 x 64 images -> 4 x 16 x 16 latents); the UNet has 8 input channels as IP2P's.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from editor.demo import world
from editor.layouts.configs import (
    clip_config,
    clip_preprocessor_config,
    ip2p_model_index,
    ip2p_scheduler_config,
    llava_config,
    mllm_config,
)
from editor.layouts.files import write_json, write_sharded
from editor.layouts.folders import CLIP_L14, DEFAULTS_FILE, IP2P_SHELL, LLAVA_7B, MGIE_7B
from editor.layouts.sizes import ModelSizes
from editor.layouts.tokenizers import (
    CLIP_BOS,
    CLIP_EOS,
    build_clip_tokenizer,
    build_llama_tokenizer,
    clip_vocab_and_merges,
)
from editor.models.edit_head import EditHead
from editor.models.llava import LlavaV1
from editor.models.patches import PatchAutoencoder
from editor.models.source_skip import SourceSkipUNet
from editor.prompts import IMG_TOKENS

SIZES = ModelSizes.from_name("demo")  # the demo model's sizes (editor/layouts/sizes.py)
SHIPPED_SIZES = ModelSizes.from_name("demo-skip")  # both shipped models' recipe: patch codec, source skip


# What the app starts from for the demo models (written next to their weights as editor_defaults.json): the
# sampler steps and guidance measured best for the shipped weights (weights/demo/README.md, "Settings"). Lower text
# and higher image guidance than InstructPix2Pix's 7.5 / 1.5: these small UNets' text direction also moves the
# background, and 7.5 amplifies that (9 % edit accuracy, 20.3 dB at 7.5 / 1.5; 15 %, 22.4 dB at 3 / 2).
APP_DEFAULTS = {"steps": 20, "text_guidance": 3.0, "image_guidance": 2.0}
# With the source skip (editor/models/source_skip.py) αV above 1 scales the source itself up against the image-free
# estimate (docs/demo-recipe.md, "The source as a skip": 22.3 dB at αV 2, 24.8 dB at αV 1), so those models start
# at αV 1; and at αX 1, guidance off (one UNet pass a step, not three): both shipped skip models edit most and keep
# most without guidance (500 held-out: MGIE 23.6 %, 26.8 dB against 22.4 %, 25.1 dB at αX 2 and 17.2 %, 23.9 dB at
# 3; the ablation 25.8 %, 28.3 dB against 22.8 %, 26.5 dB and 18.4 %, 25.5 dB; docs/demo-recipe.md, "Guidance
# off"). Raising αX turns guidance on, and with it the αV slider.
SKIP_APP_DEFAULTS = APP_DEFAULTS | {"image_guidance": 1.0, "text_guidance": 1.0}


def unet_sizes(channels: list[int] | None, heads: int | None, base: ModelSizes = SIZES) -> ModelSizes:
    """The `base` preset, with another UNet width for an experiment (weights/demo/README.md, "What limits it"). The
    exported folders carry their UNet's config, so the app and the loaders read any width; the same flags must be
    given to every command of that run folder (a checkpoint of another width does not load)."""
    if channels is None:
        if heads is not None:
            raise SystemExit("--unet-heads goes with --unet-channels")
        return base
    heads = heads or base.unet_heads
    if any(c <= 0 or c % heads or c % 8 for c in channels):  # GroupNorm's 8 groups; heads must divide the width
        raise SystemExit(
            f"--unet-channels {channels}: each must be a positive multiple of 8 and of --unet-heads {heads}"
        )
    return replace(base, unet_channels=tuple(channels), unet_heads=heads)


def app_defaults(sizes: ModelSizes) -> dict[str, float]:
    """The app settings written beside a demo model built with `sizes`."""
    return SKIP_APP_DEFAULTS if sizes.unet_source_skip else APP_DEFAULTS


# 1 / the standard deviation of the world's pixels in [-1, 1] (1024 training scenes, sources and targets: 0.437),
# the patch latents' scaling factor as SD's VAE config carries one (tests/test_patch_codec.py measures it again).
PATCH_SCALING = 2.29


def scheduler_config(codec: str) -> dict[str, Any]:
    """IP2P's scheduler config with the prediction the latent codec suits. Deviations from MGIE/IP2P (epsilon, Euler
    ancestral; docs/demo-recipe.md):

    - "patches": x0 ("sample") prediction, stepped by the deterministic Euler sampler (Euler ancestral cannot step
      x0). With an exact, local codec the goal's latents outside the edit *are* the source's, so the right answer
      there is one function at every noise level, a copy of the image input; v and epsilon must also cancel the
      noise of the noisy input through the UNet's normalised layers (measured: docs/demo-recipe.md). With zero
      terminal SNR (Lin et al., 2024): 48 channels of one 4 x 4 patch are so alike that SD's schedule leaves the
      scene readable at t = 999 (signal 0.07 of each value), so a UNet trained on it failed from the sampler's pure
      noise (measured: outside error 0.71 from pure noise against 0.14 from the noised goal, at t = 999).
    - "vae" (the learnt VAE of the earlier recipes): v-prediction with Euler ancestral; that VAE changes the latents
      everywhere, so x0 had to redraw the whole scene, while v keeps a path from the noisy input to the estimate.
    """
    if codec == "patches":
        return ip2p_scheduler_config() | {
            "_class_name": "EulerDiscreteScheduler", "prediction_type": "sample", "rescale_betas_zero_snr": True,
        }  # fmt: skip
    return ip2p_scheduler_config() | {"prediction_type": "v_prediction"}


def world_words() -> list[str]:
    return sorted({w for line in world.corpus() for w in line.split()} | {"it", "a", "of"})


# --- modules -----------------------------------------------------------------------------------------------------


def build_mllm(sizes: ModelSizes) -> LlavaV1:
    return LlavaV1(mllm_config(sizes))


def build_head(sizes: ModelSizes) -> EditHead:
    return EditHead(sizes.edit_head())


def unet_config(sizes: ModelSizes) -> dict[str, Any]:
    """Cross-attention at every level, the 16 x 16 latent grid included: an object is 3-5 latent pixels wide, so the
    instruction has to meet the image where the object is still resolved (2 heads: `attention_head_dim` is the head
    count in diffusers' UNet config)."""
    levels = len(sizes.unet_channels)
    return {
        "sample_size": sizes.vision_image_size // 4,
        "in_channels": 2 * sizes.latent_channels,
        "out_channels": sizes.latent_channels,
        "layers_per_block": 1,
        "block_out_channels": sizes.unet_channels,
        "down_block_types": ("CrossAttnDownBlock2D",) * levels,
        "up_block_types": ("CrossAttnUpBlock2D",) * levels,
        "cross_attention_dim": sizes.cross_attention_dim,
        "attention_head_dim": sizes.unet_heads,
        "norm_num_groups": 8,
    }


def build_unet(sizes: ModelSizes) -> UNet2DConditionModel:
    """The stock UNet, or with `sizes.unet_source_skip` the one that predicts source + change, starting from "no
    change" (editor/models/source_skip.py); its skip scales the image latents as the codec's scaling factor does."""
    if not sizes.unet_source_skip:
        return UNet2DConditionModel(**unet_config(sizes))
    if sizes.latent_codec != "patches":
        raise ValueError("the source skip needs the patch codec: a learnt VAE's goal latents are not the source's")
    return SourceSkipUNet(source_skip_scale=PATCH_SCALING, **unet_config(sizes)).zero_change()


def vae_config(sizes: ModelSizes, scaling_factor: float = 1.0) -> dict[str, Any]:
    levels = len(sizes.vae_channels)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": sizes.vae_channels,
        "layers_per_block": 1,
        "norm_num_groups": sizes.vae_groups,
        "latent_channels": sizes.latent_channels,
        "sample_size": sizes.vision_image_size,
        "scaling_factor": scaling_factor,
    }


def build_vae(sizes: ModelSizes, scaling_factor: float | None = None) -> AutoencoderKL | PatchAutoencoder:
    """The latent codec `sizes.latent_codec` names: a fresh AutoencoderKL (trained by the `vae` stage), or the
    4 x 4 patch codec, which has no weights (`scaling_factor` None: PATCH_SCALING)."""
    if sizes.latent_codec == "patches":
        patch = 4
        return PatchAutoencoder(
            patch_size=patch, latent_channels=3 * patch * patch, sample_size=sizes.vision_image_size,
            scaling_factor=PATCH_SCALING if scaling_factor is None else scaling_factor,
        )  # fmt: skip
    return AutoencoderKL(**vae_config(sizes, 1.0 if scaling_factor is None else scaling_factor))


def text_config(sizes: ModelSizes) -> CLIPTextConfig:
    vocab = clip_vocab_and_merges(world_words())[0]
    ids = {token: i for i, token in enumerate(vocab)}
    return CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=sizes.text_hidden, intermediate_size=4 * sizes.text_hidden,
        num_hidden_layers=sizes.text_layers, num_attention_heads=sizes.head_heads, max_position_embeddings=77,
        hidden_act="quick_gelu", projection_dim=sizes.text_hidden, bos_token_id=ids[CLIP_BOS],
        eos_token_id=ids[CLIP_EOS], pad_token_id=ids[CLIP_EOS],
    )  # fmt: skip


def build_text_encoder(sizes: ModelSizes) -> CLIPTextModel:
    if sizes.text_hidden != sizes.cross_attention_dim:
        raise ValueError("the ablation's text encoder width must equal the UNet's cross-attention width")
    return CLIPTextModel(text_config(sizes))


def write_llama_tokenizer(folder: Path, sizes: ModelSizes) -> None:
    """LLaVA's tokenizer files, its SentencePiece model trained on the world's sentences (same bytes every time)."""
    build_llama_tokenizer(folder, vocab_size=sizes.sp_vocab, corpus=world.corpus())


def write_clip_tokenizer(folder: Path) -> None:
    build_clip_tokenizer(folder, words=world_words())


# --- export to the official layouts ------------------------------------------------------------------------------


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}


def export_mgie(out: Path, sizes: ModelSizes, mllm: LlavaV1, head: EditHead, unet, vae: AutoencoderKL) -> Path:
    """Write the four MGIE folders under `out` (fp16 safetensors) and return `out`."""
    out = Path(out)
    state = mllm.state_dict()
    llava_rows = sizes.llava_vocab
    llava: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("llm."):
            name = key.removeprefix("llm.")
            llava[name] = value[:llava_rows] if name in ("model.embed_tokens.weight", "lm_head.weight") else value
        elif key.startswith("projector."):
            llava["model.mm_projector." + key.removeprefix("projector.")] = value
    folder = out / LLAVA_7B.name
    write_llama_tokenizer(folder, sizes)
    write_json(folder / "config.json", llava_config(sizes) | {"torch_dtype": "float16"})
    write_json(folder / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})
    write_sharded(folder, [_half(llava)], "safetensors")
    # mgie_7b: the grown embeddings/lm_head, the edit head and emb (= rows [IMG0..7], as MGIE trains it)
    embed = state["llm.model.embed_tokens.weight"]
    mllm_state = {
        "model.embed_tokens.weight": embed,
        "lm_head.weight": state["llm.lm_head.weight"],
        **{f"edit_head.{k}": v for k, v in head.state_dict().items()},
        "emb": embed[-len(IMG_TOKENS) :],
    }
    (out / MGIE_7B.name).mkdir(parents=True, exist_ok=True)
    save_file(_half(mllm_state), str(out / MGIE_7B.name / "mllm.safetensors"), metadata={"format": "pt"})
    save_file(_half(unet.state_dict()), str(out / MGIE_7B.name / "unet.safetensors"), metadata={"format": "pt"})
    # instruct-pix2pix shell: scheduler, UNet config (weights come from mgie_7b), VAE
    shell = out / IP2P_SHELL.name
    scheduler = scheduler_config(sizes.latent_codec)
    index = ip2p_model_index() | {"text_encoder": [None, None], "tokenizer": [None, None]}
    write_json(shell / "model_index.json", index | {"scheduler": ["diffusers", scheduler["_class_name"]]})
    write_json(shell / "scheduler" / "scheduler_config.json", scheduler)
    write_json(shell / "unet" / "config.json", dict(unet.config) | {"_class_name": type(unet).__name__})
    vae.to(torch.float16).save_pretrained(shell / "vae")
    vae.to(torch.float32)
    write_json(out / DEFAULTS_FILE, app_defaults(sizes))
    # CLIP: the vision tower only (MGIE never uses CLIP's text tower)
    clip = out / CLIP_L14.name
    clip.mkdir(parents=True, exist_ok=True)
    write_json(clip / "config.json", clip_config(sizes) | {"model_type": "clip", "architectures": ["CLIPModel"]})
    write_json(clip / "preprocessor_config.json", clip_preprocessor_config(sizes))
    vision = {
        "vision_model." + k.removeprefix("vision.").removeprefix("vision_model."): v
        for k, v in state.items()
        if k.startswith("vision.")
    }
    save_file(_half(vision), str(clip / "model.safetensors"), metadata={"format": "pt"})
    return out


def export_ip2p(out: Path, sizes: ModelSizes, unet, vae: AutoencoderKL, text_encoder: CLIPTextModel) -> Path:
    """The ablation as a diffusers InstructPix2Pix folder (fp16 safetensors)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    scheduler = scheduler_config(sizes.latent_codec)
    write_json(out / "model_index.json", ip2p_model_index() | {"scheduler": ["diffusers", scheduler["_class_name"]]})
    write_json(out / "scheduler" / "scheduler_config.json", scheduler)
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        module.to(torch.float16).save_pretrained(out / name)
        module.to(torch.float32)
    write_clip_tokenizer(out / "tokenizer")
    write_json(out / DEFAULTS_FILE, app_defaults(sizes))
    return out
