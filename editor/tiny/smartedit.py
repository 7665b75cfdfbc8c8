"""SmartEdit's official folders at tiny sizes, with the released file and key names (docs/smartedit.md §3.2, §3.3):

    root/SmartEdit-7B/LLM-15000/adapter_model.bin           LLaMA with PEFT-0.4 LoRA keys (q/v, r=8), embed [V+35]
    root/SmartEdit-7B/LLM-15000/adapter_config.json         (the repo's top-level copy is missing upstream)
    root/SmartEdit-7B/embeddings_qformer/checkpoint-15000_embeddings_qformer.bin   QFormer, queries, projector, lm_head
    root/SmartEdit-7B/modulate-15000/adapter_model.bin      the BIM
    root/SmartEdit-7B/unet-15000/adapter_model.bin          the whole UNet, keys prefixed `unet.`
    root/vicuna-7b-v1-1/                                    config + tokenizer.model (no weights needed)
    root/LLaVA-7B-v1/, clip-vit-large-patch14/, instruct-pix2pix/   as in the MGIE tree

Every file is a plain `torch.save` pickle, as released; weights are random but seeded. The BIM heads are random
(not zero, as at training start), so the residual paths are exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from editor.layouts.configs import vicuna_config
from editor.layouts.files import write_json
from editor.layouts.folders import CLIP_L14, IP2P_TEXT, LLAVA_7B, SMARTEDIT_7B, SMARTEDIT_STEP, VICUNA_7B
from editor.layouts.sizes import ModelSizes
from editor.layouts.tokenizers import build_llama_tokenizer
from editor.models.bim import BidirectionalInteractionModule, BIMConfig
from editor.models.bim import module_to_released as bim_released
from editor.models.qformer import SDQFormer, SDQFormerConfig
from editor.models.qformer import module_to_released as qformer_released
from editor.tiny._common import randn, seeded, sub_seed
from editor.tiny.diffusion import build_ip2p_folder, build_unet
from editor.tiny.tree import build_clip_folder, build_llava_folder

NEW_TOKENS = 35  # <img>, <im_start>, <im_end>, <img_0> .. <img_31>
LORA_RANK, LORA_ALPHA = 8, 16
SEED_SE_LLM, SEED_SE_QFORMER, SEED_SE_BIM, SEED_SE_UNET = 7, 8, 9, 10  # after _common.SEED_* (0..6)
ADAPTER_CONFIG = {
    "base_model_name_or_path": "checkpoints/vicuna-7b-v1-1", "bias": "none", "fan_in_fan_out": False,
    "inference_mode": True, "init_lora_weights": True, "lora_alpha": LORA_ALPHA, "lora_dropout": 0.05,
    "modules_to_save": None, "peft_type": "LORA", "r": LORA_RANK, "target_modules": ["q_proj", "v_proj"],
    "task_type": "CAUSAL_LM",
}  # fmt: skip


def qformer_config(sizes: ModelSizes) -> SDQFormerConfig:
    hidden = sizes.cross_attention_dim  # c_q is the UNet's cross-attention condition
    return SDQFormerConfig(hidden, 6, 1, 2 * hidden, sizes.llm_hidden, 77)


def bim_config(sizes: ModelSizes) -> BIMConfig:
    return BIMConfig(sizes.vision_hidden, 8, 2 * sizes.vision_hidden, 2, sizes.cross_attention_dim, 32)


def llm_state(sizes: ModelSizes, seed: int) -> dict[str, torch.Tensor]:
    """LLM-15000/adapter_model.bin: `model.base_model.model.` + LLaMA keys, LoRA on q/v in PEFT 0.4's layout."""
    gen = torch.Generator().manual_seed(sub_seed(seed, SEED_SE_LLM))
    hidden, inter, vocab = sizes.llm_hidden, sizes.llm_intermediate, sizes.sp_vocab + NEW_TOKENS
    prefix = "model.base_model.model."
    state = {f"{prefix}embed_tokens.weight": randn(gen, vocab, hidden)}
    for i in range(sizes.llm_layers):
        layer = f"{prefix}layers.{i}."
        for proj in "qkvo":
            state[f"{layer}self_attn.{proj}_proj.weight"] = randn(gen, hidden, hidden)
            if proj in "qv":
                state[f"{layer}self_attn.{proj}_proj.lora_A.default.weight"] = randn(gen, LORA_RANK, hidden)
                state[f"{layer}self_attn.{proj}_proj.lora_B.default.weight"] = randn(gen, hidden, LORA_RANK)
        head_dim = hidden // sizes.llm_heads
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        state[f"{layer}self_attn.rotary_emb.inv_freq"] = inv_freq
        state[f"{layer}mlp.gate_proj.weight"] = randn(gen, inter, hidden)
        state[f"{layer}mlp.up_proj.weight"] = randn(gen, inter, hidden)
        state[f"{layer}mlp.down_proj.weight"] = randn(gen, hidden, inter)
        state[f"{layer}input_layernorm.weight"] = torch.ones(hidden)
        state[f"{layer}post_attention_layernorm.weight"] = torch.ones(hidden)
    state[f"{prefix}norm.weight"] = torch.ones(hidden)
    return state


def qformer_file_state(sizes: ModelSizes, seed: int) -> dict[str, torch.Tensor]:
    """embeddings_qformer/checkpoint-15000_embeddings_qformer.bin: QFormer + queries + mm_projector + lm_head."""
    with seeded(sub_seed(seed, SEED_SE_QFORMER)):
        qformer = SDQFormer(qformer_config(sizes))
    gen = torch.Generator().manual_seed(sub_seed(seed, SEED_SE_QFORMER))
    lm_head = randn(gen, sizes.sp_vocab + NEW_TOKENS, sizes.llm_hidden)
    lm_head[sizes.sp_vocab + 3 :] *= 100  # large <img_i> rows: the random LLM writes its image tokens straight away
    return {
        **qformer_released(qformer.state_dict()),
        "mm_projector.weight": randn(gen, sizes.llm_hidden, sizes.vision_hidden),
        "mm_projector.bias": randn(gen, sizes.llm_hidden),
        "lm_head.weight": lm_head,
    }


def bim_state(sizes: ModelSizes, seed: int) -> dict[str, torch.Tensor]:
    with seeded(sub_seed(seed, SEED_SE_BIM)):
        bim = BidirectionalInteractionModule(bim_config(sizes))
        for head in (bim.dimension_reduction_head_qformer_out, bim.dimension_reduction_head_zeroconv):
            torch.nn.init.normal_(head.weight, std=0.05)
            torch.nn.init.normal_(head.bias, std=0.05)
    return bim_released(bim.state_dict())


def build_tiny_smartedit_tree(root: Path, *, sizes: ModelSizes = ModelSizes(), seed: int = 0) -> Path:  # noqa: B008
    """Write SmartEdit-7B/, vicuna-7b-v1-1/ and the shared LLaVA, CLIP and IP2P folders under `root`."""
    root = Path(root)
    for folder, build in (
        (LLAVA_7B.name, build_llava_folder),
        (IP2P_TEXT.name, build_ip2p_folder),
        (CLIP_L14.name, build_clip_folder),
    ):
        if not (root / folder).is_dir():
            build(root / folder, sizes, seed)
    vicuna = root / VICUNA_7B.name
    build_llama_tokenizer(vicuna, vocab_size=sizes.sp_vocab, add_llava_tokens=False)
    write_json(vicuna / "config.json", vicuna_config(sizes))
    smartedit = root / SMARTEDIT_7B.name
    files = {
        f"LLM-{SMARTEDIT_STEP}/adapter_model.bin": llm_state(sizes, seed),
        f"embeddings_qformer/checkpoint-{SMARTEDIT_STEP}_embeddings_qformer.bin": qformer_file_state(sizes, seed),
        f"modulate-{SMARTEDIT_STEP}/adapter_model.bin": bim_state(sizes, seed),
        f"unet-{SMARTEDIT_STEP}/adapter_model.bin": {
            f"unet.{k}": v for k, v in build_unet(sizes, sub_seed(seed, SEED_SE_UNET)).state_dict().items()
        },
    }
    for name, state in files.items():
        (smartedit / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, smartedit / name)
    (smartedit / f"LLM-{SMARTEDIT_STEP}" / "adapter_config.json").write_text(
        json.dumps(ADAPTER_CONFIG, indent=2) + "\n"
    )
    return root
