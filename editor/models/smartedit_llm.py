"""SmartEdit's language-model side (TencentARC/SmartEdit @a65f126, CVPR 2024), rebuilt on transformers 5 without PEFT.

Read top to bottom, as the reference uses it (docs/smartedit.md §2.2-2.4, §3.3-3.4):
1. weights: merge the PEFT-0.4 LoRA of `LLM-15000/adapter_model.bin` into the plain LLaMA weights (W' = W + a/r·BA),
   then take the 35 new vocabulary rows from the SmartEdit files and rows 0..V-1 from LLaVA-1.1;
2. prompt: the "vicuna_v1.3" chat string with the caption "<im_start> <img_0> <im_end>instruction", tokenised the
   way transformers 4.28's slow LlamaTokenizer did (chunks around added tokens, SentencePiece per chunk);
3. decoding: splice the image features in place of `<img_0>`, decode with the KV cache, and keep the final-norm
   state at each position whose *input* is an `<img_i>` (not the state that predicted it, as MGIE does).

Vocabulary: V = the SentencePiece size (32000 for Vicuna), then `<img>` V, `<im_start>` V+1, `<im_end>` V+2 and
`<img_0>`..`<img_31>` V+3..V+34. LLaVA's own embedding has V+3 rows (`<im_patch>`, `<im_start>`, `<im_end>`).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import sentencepiece as spm
import torch
from transformers import LlamaForCausalLM

from editor.loading import CheckpointError
from editor.models.llava import greedy_decode
from editor.models.slow_llama import SlowLlamaTokenizer
from editor.prompts import EOS, IM_END, IM_START, check_text

# --- vocabulary and prompt text (docs/smartedit.md §2.2, §2.3) ---------------------------------------------------

IMG = "<img>"  # named in the system prompt, never generated
NUM_IMG_TOKENS = 32  # SmartEdit's r: the "[IMG]" tokens whose states feed the QFormer
IMG_I_TOKENS = tuple(f"<img_{i}>" for i in range(NUM_IMG_TOKENS))
ADDED_TOKENS = (IMG, IM_START, IM_END, *IMG_I_TOKENS)  # ids V, V+1, ... in this order
LLAVA_ADDED_TOKENS = 3  # rows LLaVA-1.1 appended to LLaMA's vocabulary
RESERVED = (*ADDED_TOKENS, "<s>", EOS, "<unk>")  # text the 4.28 tokenizer would have split out

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant can generate <img>. "
    "The assistant needs to conduct the image to image translation task based on given image and text information. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
# The reference draws one of the 30 Human lines of data/ConversationTemplateEditing_use.txt with an unseeded
# random.choice. The project uses line 29 by default, the one TencentARC/SmartEdit#15 shows; its "." after [cap] is
# part of the line (the file's text, whitespace-stripped). More lines can be passed to `choose_human_template` /
# `build_prompt_ids`.
DEFAULT_HUMAN_TEMPLATE = "Please generate a visual that represents the former picture and message [cap]."
HUMAN_TEMPLATES = (DEFAULT_HUMAN_TEMPLATE,)

# --- 1. weights: LoRA merge and vocabulary rows (docs/smartedit.md §3.3 A/B, §3.4) -------------------------------

DEFAULT_LORA_R, DEFAULT_LORA_ALPHA = 8, 16  # TencentARC/SmartEdit data/adapter_config.json
_PREFIXES = ("model.base_model.model.", "base_model.model.")  # released file, then a PeftModel's own state_dict
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])\.(?P<adapter>[^.]+)\.weight$")
_BASE_LAYER = re.compile(r"\.base_layer\.(weight|bias)$")  # PEFT >= 0.7 names the wrapped Linear `base_layer`


def _lora_scale(adapter_config: Mapping | None, rank: int, where: str) -> float:
    cfg = dict(adapter_config or {})
    r, alpha = cfg.get("r", DEFAULT_LORA_R), cfg.get("lora_alpha", DEFAULT_LORA_ALPHA)
    source = "adapter_config" if adapter_config else f"the default (r={DEFAULT_LORA_R}, alpha={DEFAULT_LORA_ALPHA})"
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern") or cfg.get("fan_in_fan_out"):
        raise CheckpointError("adapter_config sets rank_pattern/alpha_pattern/fan_in_fan_out; SmartEdit used none")
    if r != rank:
        raise CheckpointError(
            f"{where} has rank {rank}, but {source} says r={r}; pass the adapter's adapter_config.json or an "
            "explicit scale"
        )
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def merge_lora(
    state: Mapping[str, torch.Tensor], scale: float | None = None, adapter_config: Mapping | None = None
) -> dict[str, torch.Tensor]:
    """`LLM-15000/adapter_model.bin` (a PEFT-wrapped LlamaModel, unmerged LoRA) -> a plain `LlamaModel` state.

    Each `X.lora_A.<adapter>.weight` [r, in] / `X.lora_B.<adapter>.weight` [out, r] pair is folded into `X.weight`
    (or PEFT >= 0.7's `X.base_layer.weight`) as W + scale·B·A, computed in float32 and cast back to W's dtype;
    scale = `scale` if given, else lora_alpha / r of `adapter_config` (the Hub repo lacks that file,
    docs/smartedit.md §3.2, so r=8, alpha=16 by default), with r checked against lora_A. Rotary `inv_freq` buffers
    are dropped and the `model.base_model.model.` prefix is stripped: keys come out as `embed_tokens.weight`,
    `layers.*`, `norm.weight`.
    """
    plain: dict[str, torch.Tensor] = {}
    lora: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    adapters: set[str] = set()
    for key, tensor in state.items():
        name = next((key.removeprefix(p) for p in _PREFIXES if key.startswith(p)), key)
        if name.endswith("rotary_emb.inv_freq"):  # recomputed by current transformers
            continue
        if match := _LORA_KEY.match(name):
            lora.setdefault(match["module"], {})[match["part"]] = (key, tensor)
            adapters.add(match["adapter"])
            continue
        if "lora_" in name:
            raise CheckpointError(f"unsupported LoRA tensor {key!r}: only lora_A/lora_B weights can be merged")
        name = _BASE_LAYER.sub(r".\1", name)
        if name in plain:
            raise CheckpointError(f"{key!r} and another key both map to {name!r} (old and new PEFT layouts mixed?)")
        plain[name] = tensor
    if len(adapters) > 1:
        raise CheckpointError(f"the state holds several LoRA adapters {sorted(adapters)}; expected one")
    for module, parts in sorted(lora.items()):
        for have, need in (("A", "B"), ("B", "A")):
            if have in parts and need not in parts:
                raise CheckpointError(f"{parts[have][0]!r} has no matching lora_{need} tensor")
        (key_a, a), (key_b, b) = parts["A"], parts["B"]
        if f"{module}.weight" not in plain:
            raise CheckpointError(f"{key_a!r} has no base weight ({module}.weight or {module}.base_layer.weight)")
        w = plain[f"{module}.weight"]
        rank = a.shape[0]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != w.shape[1] or tuple(b.shape) != (w.shape[0], rank):
            raise CheckpointError(
                f"{module}: base weight {tuple(w.shape)} needs lora_A [r, {w.shape[1]}] and lora_B [{w.shape[0]}, r]; "
                f"found {key_a!r} {tuple(a.shape)} and {key_b!r} {tuple(b.shape)}"
            )
        s = scale if scale is not None else _lora_scale(adapter_config, rank, repr(key_a))
        plain[f"{module}.weight"] = (w.float() + s * (b.float() @ a.float())).to(w.dtype)
    return plain


def _pick(state: Mapping[str, torch.Tensor], keys: Sequence[str], source: str) -> torch.Tensor:
    for key in keys:
        if key in state:
            return state[key]
    raise CheckpointError(f"{source} has none of the keys {list(keys)}")


def assemble_llm_state(
    lora_merged: Mapping[str, torch.Tensor],
    llava_state: Mapping[str, torch.Tensor],
    qformer_file_state: Mapping[str, torch.Tensor],
    base_vocab_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """The `LlamaForCausalLM` state (keys `model.*`, `lm_head.weight`) SmartEdit runs with
    (docs/smartedit.md §2.2, §3.3).

    - everything but the two vocabulary matrices: `lora_merged` (from `merge_lora`);
    - `embed_tokens` rows 0..V-1 from LLaVA, rows V.. from the SmartEdit LLM file (its rows 0..V-1 are unused);
    - `lm_head` rows 0..V-1 from LLaVA, rows V.. from the `embeddings_qformer` file's lm_head.
    V = `base_vocab_size`, by default LLaVA's embedding rows minus its 3 added tokens. `llava_state` may use the
    raw shard keys (`model.embed_tokens.weight`, `lm_head.weight`) or `read_llava_v1_state`'s (`llm.` prefix).
    """
    embed = _pick(lora_merged, ["embed_tokens.weight"], "the merged SmartEdit LLM state")
    llava_embed = _pick(llava_state, ["model.embed_tokens.weight", "llm.model.embed_tokens.weight"], "LLaVA")
    llava_head = _pick(llava_state, ["lm_head.weight", "llm.lm_head.weight"], "LLaVA")
    head = _pick(qformer_file_state, ["lm_head.weight"], "the embeddings_qformer file")
    base = llava_embed.shape[0] - LLAVA_ADDED_TOKENS if base_vocab_size is None else base_vocab_size
    rows, hidden = embed.shape
    if tuple(head.shape) != (rows, hidden):
        raise CheckpointError(
            f"embeddings_qformer lm_head.weight is {tuple(head.shape)}, expected {(rows, hidden)} like the SmartEdit "
            "LLM file's embed_tokens (files of different SmartEdit sizes or versions?)"
        )
    for name, tensor in (("embed_tokens", llava_embed), ("lm_head", llava_head)):
        if tensor.shape[1] != hidden or not 0 < base <= tensor.shape[0]:
            raise CheckpointError(
                f"LLaVA {name} is {tuple(tensor.shape)}; need at least {base} rows of width {hidden} (LLaVA-1.1 of "
                "the same size as the SmartEdit checkpoint)"
            )
    if base >= rows:
        raise CheckpointError(f"the SmartEdit embedding has {rows} rows, no new tokens after the {base} base rows")
    state = {f"model.{key}": tensor for key, tensor in lora_merged.items()}
    state["model.embed_tokens.weight"] = torch.cat([llava_embed[:base].to(embed.dtype), embed[base:]])
    state["lm_head.weight"] = torch.cat([llava_head[:base].to(head.dtype), head[base:]])
    return state


# --- 2. prompt (docs/smartedit.md §2.3) ----------------------------------------------------------------------------


def load_sentencepiece(source: spm.SentencePieceProcessor | str | Path) -> spm.SentencePieceProcessor:
    """A SentencePiece processor, or a path to a `tokenizer.model` (e.g. `weights/vicuna-7b-v1-1/tokenizer.model`).

    transformers 5's LlamaTokenizer is backed by `tokenizers` and no longer holds the SentencePiece model, and its
    added-token handling differs from 4.28's, so the prompt is built from SentencePiece directly."""
    if isinstance(source, spm.SentencePieceProcessor):
        return source
    return spm.SentencePieceProcessor(model_file=str(source))


def added_token_id(sp: spm.SentencePieceProcessor, token: str) -> int:
    return sp.get_piece_size() + ADDED_TOKENS.index(token)


def choose_human_template(templates: Sequence[str] = HUMAN_TEMPLATES, rng: random.Random | None = None) -> str:
    """The first template (deterministic, the default) or, given `rng`, a random one as the reference does."""
    if not templates:
        raise ValueError("templates is empty")
    return templates[0] if rng is None else rng.choice(list(templates))


def smartedit_prompt(instruction: str, template_human_line: str = DEFAULT_HUMAN_TEMPLATE) -> str:
    """The reference prompt string: system, " USER: ", the Human line with `[cap]` -> '"' + caption + '"',
    " ASSISTANT:" (no trailing space), every newline removed. `template_human_line` is the text after "Human:"."""
    if template_human_line.count("[cap]") != 1:
        raise ValueError(f"template_human_line must contain '[cap]' once, got {template_human_line!r}")
    instruction = check_text(instruction, reserved=RESERVED)
    cap = f"{IM_START} {IMG_I_TOKENS[0]} {IM_END}{instruction}"
    human = template_human_line.strip().replace("[cap]", f'"{cap}"')
    return f"{SYSTEM} USER: {human} ASSISTANT:".replace("\n", "")


def slow_tokenizer(sp: spm.SentencePieceProcessor) -> SlowLlamaTokenizer:
    """The reference's tokenizer: Vicuna's SentencePiece model + the 35 added tokens, ids V.. in ADDED_TOKENS order."""
    return SlowLlamaTokenizer(sp, {token: added_token_id(sp, token) for token in ADDED_TOKENS})


def encode_like_slow_llama(sp: spm.SentencePieceProcessor, text: str) -> list[int]:
    """BOS + ids as transformers 4.28's slow LlamaTokenizer gave them once the 35 tokens were added: the text is cut
    around added tokens, whitespace touching an added token is dropped, and every remaining chunk is encoded on its
    own (so each starts with a fresh "▁", e.g. "<img>. The" -> <img>, "▁.", "▁The"); editor.models.slow_llama."""
    return slow_tokenizer(sp).encode(text)


def build_prompt_ids(
    sp_model: spm.SentencePieceProcessor | str | Path,
    instruction: str,
    template_human_line: str = DEFAULT_HUMAN_TEMPLATE,
) -> list[int]:
    """Token ids of the SmartEdit prompt for `instruction` (BOS first, `<img_0>` once as the image placeholder)."""
    sp = load_sentencepiece(sp_model)
    return encode_like_slow_llama(sp, smartedit_prompt(instruction, template_human_line))


def answer_text(sp: spm.SentencePieceProcessor, generated_ids: Sequence[int]) -> str:
    """The generated sentence: the ids before the first added token or EOS, decoded and stripped."""
    base, eos = sp.get_piece_size(), sp.eos_id()
    end = next((i for i, t in enumerate(generated_ids) if t >= base or t == eos), len(generated_ids))
    return sp.decode(list(generated_ids[:end])).strip()


# --- 3. decoding with the capture rule (docs/smartedit.md §2.4) ----------------------------------------------------


class LLMOutput(NamedTuple):
    ids: list[int]  # generated ids (prompt excluded), ending with EOS, the N-th <img_i>, or at max_new_tokens
    states: torch.Tensor  # N x hidden: final-norm states at the positions whose input is an <img_i>
    text: str  # the sentence before the image tokens


def splice_image(
    llm: LlamaForCausalLM, prompt_ids: Sequence[int], image_features: torch.Tensor, placeholder: int
) -> torch.Tensor:
    """Prompt embeddings with the single `placeholder` id replaced by the P image vectors: 1 x (T - 1 + P) x hidden."""
    found = [i for i, t in enumerate(prompt_ids) if t == placeholder]
    if len(found) != 1:
        raise ValueError(f"prompt_ids must hold the image placeholder id {placeholder} once, found it {len(found)}x")
    embed = llm.get_input_embeddings()
    ids = torch.tensor([list(prompt_ids)], device=embed.weight.device)
    features = image_features.reshape(1, -1, embed.embedding_dim).to(embed.weight)  # 1 x P x hidden
    p = found[0]
    return torch.cat([embed(ids[:, :p]), features, embed(ids[:, p + 1 :])], dim=1)


def temperature_sampler(
    temperature: float, generator: torch.Generator | None = None
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The reference's choice of next id: softmax(logits / T) + multinomial, no top-k/top-p; greedy when T < 1e-4
    (returns None, meaning argmax)."""
    if temperature < 1e-4:
        return None

    def pick(logits: torch.Tensor) -> torch.Tensor:  # 1 x V -> 1 x 1
        return torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)

    return pick


@torch.inference_mode()
def generate_img_states(
    llm: LlamaForCausalLM,
    sp_model: spm.SentencePieceProcessor | str | Path,
    prompt_ids: Sequence[int],
    image_features: torch.Tensor,
    *,
    num_img_tokens: int = NUM_IMG_TOKENS,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> LLMOutput:
    """Decode after the prompt (image features spliced at `<img_0>`) and capture the `<img_i>` states.

    Greedy by default (the project's deterministic choice); `temperature` > 0 samples as the reference does (it
    used 0.7, unseeded), reproducibly with `generator` (on the LM's device). Every generated token is fed back with
    the KV cache; when the token fed has an id >= that of `<img_0>`, the final-norm state at its position is kept.
    Decoding stops at EOS, after `num_img_tokens` kept states (the reference stops at 35 and asserts 32), or after
    `max_new_tokens` fed tokens.
    """
    sp = load_sentencepiece(sp_model)
    first_img, eos = added_token_id(sp, IMG_I_TOKENS[0]), sp.eos_id()
    vocab = llm.get_output_embeddings().weight.shape[0]
    if vocab < first_img + num_img_tokens:
        need = f"{first_img + num_img_tokens} (V={sp.get_piece_size()}, 3 LLaVA tokens, {num_img_tokens} <img_i>)"
        raise ValueError(f"the LM has {vocab} output rows; SmartEdit needs {need}")
    embeds = splice_image(llm, prompt_ids, image_features, first_img)
    n = len(prompt_ids)

    # greedy_decode feeds every token but the newest; stopping one token after the N-th <img_i> lets its state in
    def done(seq: list[int]) -> bool:
        return seq[-1] == eos or sum(t >= first_img for t in seq[n:-1]) >= num_img_tokens

    out = greedy_decode(
        llm,
        torch.tensor([list(prompt_ids)], device=embeds.device),
        embeds,
        max_new_tokens + 1,
        no_repeat_ngram_size=0,
        should_stop=done,
        pick=temperature_sampler(temperature, generator),
    )
    generated = out.ids[n:][:max_new_tokens]  # drop the extra token picked after the last one fed
    img_at = [j for j, t in enumerate(generated) if t >= first_img][:num_img_tokens]
    if len(img_at) == num_img_tokens:
        generated = generated[: img_at[-1] + 1]
    # out.states: one row per embedded prompt position, then one per fed token
    states = out.states[[embeds.shape[1] + j for j in img_at]]
    return LLMOutput(ids=generated, states=states, text=answer_text(sp, generated))
