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

Modules: `tokenizers` (LLaMA SentencePiece and CLIP tokenizers), `diffusion` (UNet, VAE, the IP2P folder),
`sizes` (`TinySizes`), `tree` (the LLaVA / mgie_7b / CLIP folders, and the whole tree); `_common` holds the
seeding helpers, and editor.layouts.files writes the files.
"""

from editor.tiny._common import WEIGHT_STD
from editor.tiny.diffusion import (
    IP2P_DIFFUSERS_VERSION,
    build_ip2p_folder,
    build_unet,
    ip2p_model_index,
    ip2p_scheduler_config,
    unet_config,
    vae_config,
)
from editor.tiny.sizes import TinySizes
from editor.tiny.tokenizers import LLAVA_TOKENS, VICUNA_SYSTEM, build_clip_tokenizer, build_llama_tokenizer
from editor.tiny.tree import (
    IMG_TOKENS,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    build_clip_folder,
    build_edit_mapper_transformer,
    build_llava_folder,
    build_mgie_folder,
    build_tiny_mgie_tree,
    clip_config,
    clip_preprocessor_config,
    llava_config,
    llava_shards,
    mllm_state,
)

__all__ = [
    "IMG_TOKENS",
    "IP2P_DIFFUSERS_VERSION",
    "LLAVA_TOKENS",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "VICUNA_SYSTEM",
    "WEIGHT_STD",
    "TinySizes",
    "build_clip_folder",
    "build_clip_tokenizer",
    "build_edit_mapper_transformer",
    "build_ip2p_folder",
    "build_llama_tokenizer",
    "build_llava_folder",
    "build_mgie_folder",
    "build_tiny_mgie_tree",
    "build_unet",
    "clip_config",
    "clip_preprocessor_config",
    "ip2p_model_index",
    "ip2p_scheduler_config",
    "llava_config",
    "llava_shards",
    "mllm_state",
    "unet_config",
    "vae_config",
]
