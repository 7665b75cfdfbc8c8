"""Tiny random evaluation backbones in the layouts of the real downloads, for offline tests of the metrics and the
evaluation harness: CLIP (openai/clip-vit-* layout, with its tokenizer and preprocessor) and DINO
(facebook/dino-vits16 layout). Sizes are tiny; the loaders read them from config.json as they do the real ones."""

from __future__ import annotations

from pathlib import Path

import torch

from editor.layouts.configs import clip_text_config
from editor.layouts.tokenizers import build_clip_tokenizer

TINY_VIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
TINY_IMAGE = {"image_size": 32, "patch_size": 8}


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A CLIPModel (32-wide towers, projection 16, 32 px images) with its image processor and tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    folder = Path(folder)
    torch.manual_seed(seed)
    config = CLIPConfig(text_config=clip_text_config(32), vision_config=TINY_VIT | TINY_IMAGE, projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    build_clip_tokenizer(folder)
    return folder


def build_tiny_dino(folder: Path, seed: int = 0) -> Path:
    """A ViTModel without pooler (32 wide, 32 px images), as facebook/dino-vits16 is saved."""
    from transformers import ViTConfig, ViTModel

    folder = Path(folder)
    torch.manual_seed(seed)
    ViTModel(ViTConfig(**TINY_VIT, **TINY_IMAGE), add_pooling_layer=False).save_pretrained(folder)
    return folder
