"""Tiny, random-weight stand-ins for the official MGIE checkpoint folders, for offline tests and benchmarks.

`build_tiny_mgie_tree(root)` writes the four folders MGIE's demo reads, with exactly the file layout,
file names, state-dict key names and dtypes of the real downloads, but with a few kilobytes of random
weights instead of ~30 GB:

    root/LLaVA-7B-v1/             merged LLaVA-Lightning-7B v1.1 (LLaMA keys + mm_projector, 2 fp16 shards)
    root/mgie_7b/mllm.pt          grown embeddings / lm_head, the edit head, and `emb`
    root/mgie_7b/unet.pt          MGIE's fine-tuned UNet as a flat fp16 state dict
    root/instruct-pix2pix/        diffusers layout of timbrooks/instruct-pix2pix
    root/clip-vit-large-patch14/  layout of openai/clip-vit-large-patch14

So the project's real loaders can be exercised end to end without network or GPU. Everything is
deterministic given `seed`; building takes a couple of seconds on a small CPU.

Modules: `diffusion` (UNet, VAE, the IP2P folder), `tree` (the LLaVA / mgie_7b / CLIP folders, and the whole tree),
`smartedit` (SmartEdit's folders), `backbones` (evaluation backbones); `_common` holds the seeding helpers. The
layouts themselves (folder names, config files, tokenizers, sizes) are editor.layouts'; the tiny size is its "tiny"
preset (`ModelSizes.from_name("tiny")`, the default).
"""

from editor.tiny._common import WEIGHT_STD
from editor.tiny.diffusion import build_ip2p_folder, build_unet, unet_config, vae_config
from editor.tiny.tree import (
    build_clip_folder,
    build_edit_mapper_transformer,
    build_llava_folder,
    build_mgie_folder,
    build_tiny_mgie_tree,
    llava_shards,
    mllm_state,
)

__all__ = [
    "WEIGHT_STD",
    "build_clip_folder",
    "build_edit_mapper_transformer",
    "build_ip2p_folder",
    "build_llava_folder",
    "build_mgie_folder",
    "build_tiny_mgie_tree",
    "build_unet",
    "llava_shards",
    "mllm_state",
    "unet_config",
    "vae_config",
]
