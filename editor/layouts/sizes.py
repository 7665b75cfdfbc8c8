"""`ModelSizes`: every size of a model in MGIE's layout, in one vocabulary, with named presets (as litgpt's
`Config.from_name`): "tiny" (the random-weight test trees, editor/tiny), "demo" (the offline demo model,
editor/demo/model.py; "demo-patches", its recipe with the patch codec; "demo-skip", that with the source skipped to
the UNet's output) and "7b" (MGIE-7B: LLaMA-7B, CLIP ViT-L/14, the released edit head; docs/mgie.md §1, §2.7).

The loaders never read these: they take every size from the files' configs and tensor shapes. The presets say what
the builders write (tiny trees, the demo export) and what the benchmark builds at full size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from editor.layouts.tokenizers import LLAVA_TOKENS
from editor.models.edit_head import EditHeadConfig
from editor.prompts import IMG_TOKENS  # MGIE's visual tokens, ids V+3 .. V+10


@dataclass(frozen=True)
class ModelSizes:
    """Defaults: the "tiny" preset, which builds in about a second."""

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
    unet_channels: tuple[int, ...] = (32, 64)  # UNet block_out_channels
    unet_heads: int = 8  # UNet `attention_head_dim` (diffusers reads it as the head count)
    vae_channels: tuple[int, ...] = (8, 8, 16, 16)  # four blocks: the VAE scale factor is 8, as in SD
    vae_groups: int = 8  # GroupNorm groups
    latent_channels: int = 4
    latent_codec: str = "vae"  # "vae": a learnt AutoencoderKL, as SD's; "patches": editor/models/patches.py
    unet_source_skip: bool = False  # the UNet predicts source + change (editor/models/source_skip.py); patches only
    text_hidden: int = 32  # CLIP text encoder (IP2P's; the demo ablation's)
    text_layers: int = 2

    @classmethod
    def from_name(cls, name: str, **changes) -> ModelSizes:
        """Preset `name` ("tiny", "demo", "demo-patches", "demo-skip", "7b"), with `changes` applied."""
        if name not in PRESETS:
            raise ValueError(f"unknown sizes preset {name!r}; choose one of {', '.join(PRESETS)}")
        return replace(PRESETS[name], **changes)

    @property
    def llava_vocab(self) -> int:
        """LLaVA's vocabulary: SentencePiece pieces + <im_patch>, <im_start>, <im_end>."""
        return self.sp_vocab + len(LLAVA_TOKENS)

    @property
    def mgie_vocab(self) -> int:
        """MGIE's vocabulary: LLaVA's + [IMG0] .. [IMG7]."""
        return self.llava_vocab + len(IMG_TOKENS)

    def edit_head(self) -> EditHeadConfig:
        return EditHeadConfig(
            llm_hidden=self.llm_hidden, d_model=self.head_dim_model, num_heads=self.head_heads,
            encoder_layers=self.head_encoder_layers, decoder_layers=self.head_decoder_layers, ffn_dim=self.head_ffn,
            num_queries=self.head_queries, out_dim=self.cross_attention_dim,
        )  # fmt: skip


PRESETS: dict[str, ModelSizes] = {
    "tiny": ModelSizes(),
    "demo": ModelSizes(
        llm_hidden=192, llm_intermediate=384, llm_layers=4, llm_heads=4,
        vision_hidden=128, vision_intermediate=512, vision_layers=4, vision_heads=4, vision_image_size=64,
        vision_patch_size=8,  # 64 px scenes (editor/demo/world.py) -> 64 image tokens
        head_dim_model=128, head_heads=4, head_encoder_layers=2, head_decoder_layers=2, head_ffn=256,
        head_queries=77, cross_attention_dim=64,
        sp_vocab=900,  # enough merges that the system prompt and world words are mostly whole pieces
        unet_channels=(32, 64, 64), unet_heads=2, vae_channels=(16, 32, 64),
        vae_groups=4,  # 16 groups of 16 channels (instance norm) lose flat backgrounds' colour
        latent_channels=8,  # 4 (SD's) cap the round trip at 89 % judge accuracy: edges around shapes blur
        text_hidden=64, text_layers=2,
    ),
    "7b": ModelSizes(
        llm_hidden=4096, llm_intermediate=11008, llm_layers=32, llm_heads=32,
        vision_hidden=1024, vision_intermediate=4096, vision_layers=24, vision_heads=16, vision_image_size=224,
        vision_patch_size=14, head_dim_model=512, head_heads=4, head_encoder_layers=4, head_decoder_layers=4,
        head_ffn=2048, head_queries=77, cross_attention_dim=768, sp_vocab=32000,
        unet_channels=(320, 640, 1280, 1280), unet_heads=8, vae_channels=(128, 256, 512, 512), vae_groups=32,
        latent_channels=4, text_hidden=768, text_layers=12,
    ),
}  # fmt: skip
# The demo recipe with the patch codec (editor/models/patches.py; docs/demo-recipe.md, "A codec that keeps the
# scene"): 4 x 4 x 3 pixels per latent position, a UNet whose top level is as wide as the latents it must copy.
PRESETS["demo-patches"] = replace(
    PRESETS["demo"], latent_codec="patches", latent_channels=48, unet_channels=(48, 64, 64)
)
# ... and the UNet's image input skipped to its output, so it learns only the change (editor/models/source_skip.py;
# docs/demo-recipe.md, "The source as a skip").
PRESETS["demo-skip"] = replace(PRESETS["demo-patches"], unet_source_skip=True)
