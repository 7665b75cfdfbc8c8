"""`TinySizes`: the size of every model in the tiny trees (editor.tiny.tree, editor.tiny.smartedit, the tiny UNet of
editor.tiny.diffusion)."""

from __future__ import annotations

from dataclasses import dataclass

from editor.prompts import IMG_TOKENS  # MGIE's visual tokens, ids V+3 .. V+10
from editor.tiny.tokenizers import LLAVA_TOKENS


@dataclass(frozen=True)
class TinySizes:
    """Sizes of every tiny model; the defaults build in about a second."""

    llm_hidden: int = 32
    llm_intermediate: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    vision_hidden: int = 32
    vision_intermediate: int = 64
    vision_layers: int = 3
    vision_heads: int = 4
    vision_image_size: int = 32
    vision_patch_size: int = 8  # -> 16 image patches
    head_dim_model: int = 32
    head_heads: int = 4
    head_encoder_layers: int = 2
    head_decoder_layers: int = 2
    head_ffn: int = 64
    head_queries: int = 77
    cross_attention_dim: int = 32  # UNet cross-attention dim == edit head output dim
    sp_vocab: int = 512  # sentencepiece vocabulary (LLaMA has 32000)

    @property
    def llava_vocab(self) -> int:
        """LLaVA's vocabulary: SentencePiece pieces + <im_patch>, <im_start>, <im_end>."""
        return self.sp_vocab + len(LLAVA_TOKENS)

    @property
    def mgie_vocab(self) -> int:
        """MGIE's vocabulary: LLaVA's + [IMG0] .. [IMG7]."""
        return self.llava_vocab + len(IMG_TOKENS)
