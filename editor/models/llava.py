"""LLaVA v1 (haotian-liu/LLaVA @7ace501) composed from transformers classes, plus greedy decoding that keeps states.

LLaVA v1 = a LLaMA causal LM + a CLIP ViT whose penultimate-layer patch features (CLS dropped) go through one
Linear projector and replace the `<im_patch>` slots that follow `<im_start>` in the prompt embeddings.
No LLaVA code is vendored: the LM is `LlamaForCausalLM`, the tower is `CLIPVisionModel`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, DynamicCache, LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor


@dataclass(frozen=True)
class LlavaV1Config:
    text: LlamaConfig
    vision: CLIPVisionConfig
    vision_select_layer: int = -2  # LLaVA config key `mm_vision_select_layer`

    @property
    def num_patches(self) -> int:
        return (self.vision.image_size // self.vision.patch_size) ** 2


class LlavaV1(nn.Module):
    def __init__(self, config: LlavaV1Config) -> None:
        super().__init__()
        self.config = config
        self.llm = LlamaForCausalLM(config.text)
        self.vision = CLIPVisionModel(config.vision)
        self.projector = nn.Linear(config.vision.hidden_size, config.text.hidden_size)  # `model.mm_projector`

    def patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S -> B x N x vision_hidden: the selected (penultimate) CLIP layer, CLS dropped."""
        out = self.vision(pixel_values=pixel_values, output_hidden_states=True)
        return out.hidden_states[self.config.vision_select_layer][:, 1:]

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S -> B x N x hidden: `patch_features`, projected into the LLM's space."""
        return self.projector(self.patch_features(pixel_values))

    def embed_with_image(self, input_ids: torch.Tensor, image_features: torch.Tensor, im_start_id: int) -> torch.Tensor:
        """Token embeddings with the N positions after `<im_start>` replaced by image features (length unchanged)."""
        embeds = self.llm.get_input_embeddings()(input_ids)  # B x L x hidden
        n = image_features.shape[1]
        for b in range(input_ids.shape[0]):
            starts = (input_ids[b] == im_start_id).nonzero().flatten().tolist()
            if len(starts) != 1 or starts[0] + n >= input_ids.shape[1]:
                raise ValueError(f"prompt must hold one {im_start_id=} followed by {n} patch slots, found {starts}")
            s = starts[0]
            embeds[b, s + 1 : s + 1 + n] = image_features[b].to(embeds.dtype)
        return embeds

    def final_states(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Teacher-forced forward: the final-norm states (what lm_head sees) at every position, B x L x hidden."""
        return self.llm.model(inputs_embeds=inputs_embeds, use_cache=False).last_hidden_state


@dataclass
class Decoded:
    ids: list[int]  # prompt ids followed by the generated ids
    num_prompt: int
    states: torch.Tensor  # (len(ids) - 1) x hidden: final-norm state at every input position


@torch.inference_mode()
def greedy_decode(
    llm: LlamaForCausalLM,
    input_ids: torch.Tensor,
    inputs_embeds: torch.Tensor,
    max_new_tokens: int,
    no_repeat_ngram_size: int,
    should_stop: Callable[[list[int]], bool],
    pick: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Decoded:
    """Greedy decoding equal to `generate(do_sample=False, no_repeat_ngram_size=n)` called with both the prompt
    ids and the spliced embeddings, so the n-gram ban sees the prompt ids (docs/mgie.md G8).

    Unlike `generate(output_hidden_states=True)` it keeps only the last-layer state per position, and it stops
    as soon as `should_stop(ids)` holds (checked after each new token) or after `max_new_tokens`. `pick` maps the
    1 x V float logits (after the n-gram ban) to a 1 x 1 next id; None = argmax (e.g. SmartEdit's temperature
    sampling passes a sampler here).
    """
    ban = NoRepeatNGramLogitsProcessor(no_repeat_ngram_size) if no_repeat_ngram_size > 0 else (lambda _ids, x: x)
    cache = DynamicCache(config=llm.config)
    out = llm.model(inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=True)
    states = [out.last_hidden_state[0]]  # L x hidden
    ids = input_ids[:1]
    for step in range(max_new_tokens):
        logits = llm.lm_head(out.last_hidden_state[:, -1]).float()  # generate() also upcasts the last logits
        logits = ban(ids, logits)
        next_id = logits.argmax(-1, keepdim=True) if pick is None else pick(logits)  # 1 x 1
        ids = torch.cat([ids, next_id], dim=1)
        id_list = ids[0].tolist()
        if step == max_new_tokens - 1 or should_stop(id_list):
            break
        out = llm.model(input_ids=next_id, past_key_values=cache, use_cache=True)
        states.append(out.last_hidden_state[0])
    return Decoded(ids=id_list, num_prompt=input_ids.shape[1], states=torch.cat(states))
