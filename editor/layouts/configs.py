"""The official layouts' config files (config.json, preprocessor_config.json, model_index.json, scheduler_config.json)
as the released folders write them, at any `ModelSizes`: written by the tiny test trees (editor/tiny), the demo
model's export (editor/demo/model.py), and read back by the same loaders as the downloads."""

from __future__ import annotations

from typing import Any

from transformers import CLIPVisionConfig

from editor.layouts.sizes import ModelSizes
from editor.layouts.tokenizers import CLIP_BOS, CLIP_EOS, clip_vocab_and_merges
from editor.loading import llama_config_from_llava
from editor.models.llava import LlavaV1Config

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

IP2P_DIFFUSERS_VERSION = "0.12.0.dev0"


def llava_config(sizes: ModelSizes) -> dict[str, Any]:
    """config.json of the merged LLaVA-Lightning-7B v1.1 folder, at tiny sizes."""
    return {
        "architectures": ["LlavaLlamaForCausalLM"],
        "bos_token_id": 0,
        "eos_token_id": 1,
        "freeze_mm_mlp_adapter": False,
        "hidden_act": "silu",
        "hidden_size": sizes.llm_hidden,
        "initializer_range": 0.02,
        "intermediate_size": sizes.llm_intermediate,
        "max_position_embeddings": 2048,
        "max_sequence_length": 2048,
        "mm_hidden_size": sizes.vision_hidden,
        "mm_use_im_start_end": True,
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "openai/clip-vit-large-patch14",
        "model_type": "llava",
        "num_attention_heads": sizes.llm_heads,
        "num_hidden_layers": sizes.llm_layers,
        "pad_token_id": -1,
        "rms_norm_eps": 1e-06,
        "sep_image_conv_front": False,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.28.0.dev0",
        "tune_mm_mlp_adapter": False,
        "use_cache": True,
        "use_mm_proj": True,
        "vocab_size": sizes.llava_vocab,
    }


def clip_config(sizes: ModelSizes) -> dict[str, Any]:
    """Full CLIPConfig of the tiny openai/clip-vit-large-patch14 stand-in."""
    vision = {
        "hidden_size": sizes.vision_hidden,
        "intermediate_size": sizes.vision_intermediate,
        "num_hidden_layers": sizes.vision_layers,
        "num_attention_heads": sizes.vision_heads,
        "image_size": sizes.vision_image_size,
        "patch_size": sizes.vision_patch_size,
        "projection_dim": 16,
        "hidden_act": "quick_gelu",
    }
    text = clip_text_config(sizes.vision_hidden) | {"projection_dim": 16}
    return {"text_config": text, "vision_config": vision, "projection_dim": 16}


def clip_preprocessor_config(sizes: ModelSizes) -> dict[str, Any]:
    side = sizes.vision_image_size
    return {
        "crop_size": {"height": side, "width": side},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": list(OPENAI_CLIP_MEAN),
        "image_processor_type": "CLIPImageProcessor",
        "image_std": list(OPENAI_CLIP_STD),
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": side},
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


def vicuna_config(sizes: ModelSizes) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": sizes.llm_hidden, "intermediate_size": sizes.llm_intermediate, "initializer_range": 0.02,
        "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": sizes.llm_heads,
        "num_hidden_layers": sizes.llm_layers, "pad_token_id": 0, "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.28.0.dev0",
        "use_cache": True, "vocab_size": sizes.sp_vocab,
    }  # fmt: skip


def mllm_config(sizes: ModelSizes) -> LlavaV1Config:
    """The LLaVA config `load_mgie` builds from folders written at `sizes`: the same readers, applied to the same
    dicts (the demo model trains it; the benchmark builds the 7B one)."""
    text = llama_config_from_llava(llava_config(sizes), vocab_size=sizes.mgie_vocab)
    vision = CLIPVisionConfig(**{k: v for k, v in clip_config(sizes)["vision_config"].items() if k != "projection_dim"})
    return LlavaV1Config(text=text, vision=vision, vision_select_layer=llava_config(sizes)["mm_vision_select_layer"])
