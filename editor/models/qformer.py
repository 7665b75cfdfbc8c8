"""SmartEdit's SD-QFormer: LLM hidden states at the 32 image tokens -> a 77 x 768 condition for the SD-1.5 UNet.

Follows docs/smartedit.md §2.5 (architecture) and §3.3 B (keys and shapes of
`embeddings_qformer/checkpoint-15000_embeddings_qformer.bin`). The original is a LAVIS-style BERT
(TencentARC/SmartEdit model/LLMSD_QFormerv01.py); here it is transformers' `Blip2QFormerModel`, which computes the same
thing for query-only input:

    x = LayerNorm(query_tokens)                                   # B x Q x hidden; no word/position embeddings
    for each post-LN BERT layer i:
        x = LN(x + SelfAttn(x))
        x = LN(x + CrossAttn(q=x, kv=llm_states))  if i % cross_attention_frequency == 0
        x = LN(x + output_query(GELU(intermediate_query(x))))
    return x                                                      # last hidden state, no output projection

Only the key names differ from the released file; `released_to_module` / `module_to_released` translate them:

    sd_query_tokens                                <-> query_tokens
    sd_qformer.embeddings.LayerNorm.*              <-> qformer.layernorm.*
    sd_qformer.encoder.layer.{i}.attention.self.*  <-> qformer.encoder.layer.{i}.attention.attention.*
    ... .crossattention.self.*                     <-> ... .crossattention.attention.*
    sd_qformer.embeddings.position_ids             dropped on load (unused int buffer), written back as arange(512)

Deviation: dropout (0.1 in bert-base-uncased, active only in training) is set to 0, so the module computes the
inference function in train mode too. The number of heads and the LayerNorm eps are not stored in the tensors; they
default to bert-base-uncased's (12 heads of 64, eps 1e-12).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

QUERY_TOKENS_KEY = "sd_query_tokens"
QFORMER_PREFIX = "sd_qformer."
POSITION_IDS_KEY = "sd_qformer.embeddings.position_ids"
BERT_MAX_POSITIONS = 512  # bert-base-uncased max_position_embeddings: length of the saved position_ids buffer

# (released fragment, module fragment); matched with a leading "." so "attention" never hits "crossattention".
_RENAMES = (
    (".embeddings.LayerNorm.", ".layernorm."),
    (".attention.self.", ".attention.attention."),
    (".crossattention.self.", ".crossattention.attention."),
)
_LAYER_KEY = re.compile(r"^sd_qformer\.encoder\.layer\.(\d+)\.")


@dataclass(frozen=True)
class SDQFormerConfig:
    hidden: int = 768
    layers: int = 6
    heads: int = 12  # not recoverable from tensor shapes; bert-base uses hidden / 64
    intermediate: int = 3072
    encoder_width: int = 4096  # LLM hidden size: 4096 (7B) or 5120 (13B)
    num_queries: int = 77
    cross_attention_frequency: int = 2  # cross-attention in layers 0, 2, 4
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_state_dict(cls, released_sd: dict[str, torch.Tensor], heads: int = 12) -> SDQFormerConfig:
        """Read every size from the tensors of the released file (released key names; other keys are ignored)."""
        layer_ids = {int(m.group(1)) for key in released_sd if (m := _LAYER_KEY.match(key))}
        if not layer_ids or layer_ids != set(range(len(layer_ids))):
            raise ValueError(f"expected `sd_qformer.encoder.layer.0..N-1` keys, got layer indices {sorted(layer_ids)}")
        layers = len(layer_ids)
        cross = sorted(
            i for i in layer_ids if f"sd_qformer.encoder.layer.{i}.crossattention.self.key.weight" in released_sd
        )
        if not cross or cross[0] != 0:
            raise ValueError(f"expected cross-attention in layer 0, found it in layers {cross}")
        frequency = cross[1] - cross[0] if len(cross) > 1 else layers
        if cross != list(range(0, layers, frequency)):
            raise ValueError(f"cross-attention layers {cross} are not every n-th layer starting at 0")
        first = "sd_qformer.encoder.layer.0."
        _, num_queries, hidden = released_sd[QUERY_TOKENS_KEY].shape
        return cls(
            hidden=hidden,
            layers=layers,
            heads=heads,
            intermediate=released_sd[first + "intermediate_query.dense.weight"].shape[0],
            encoder_width=released_sd[first + "crossattention.self.key.weight"].shape[1],
            num_queries=num_queries,
            cross_attention_frequency=frequency,
        )

    def to_blip2(self) -> Blip2QFormerConfig:
        return Blip2QFormerConfig(
            hidden_size=self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            intermediate_size=self.intermediate,
            hidden_act="gelu",  # exact (erf) GELU, as BERT
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            layer_norm_eps=self.layer_norm_eps,
            cross_attention_frequency=self.cross_attention_frequency,
            encoder_hidden_size=self.encoder_width,
            max_position_embeddings=BERT_MAX_POSITIONS,
            use_qformer_text_input=False,  # the text-branch FFN (`intermediate`/`output`) was deleted in SmartEdit
        )


class SDQFormer(nn.Module):
    """Learned queries cross-attending to LLM states; `forward(llm_states [B, N, H]) -> [B, Q, hidden]`."""

    def __init__(self, config: SDQFormerConfig) -> None:
        super().__init__()
        self.config = config
        self.query_tokens = nn.Parameter(torch.randn(1, config.num_queries, config.hidden) * 0.02)
        self.qformer = Blip2QFormerModel(config.to_blip2())

    def forward(self, llm_states: torch.Tensor) -> torch.Tensor:
        # llm_states: B x N x encoder_width (N = 32 image-token states); no attention mask, as in the reference
        if llm_states.shape[-1] != self.config.encoder_width:
            raise ValueError(
                f"`llm_states` must have width {self.config.encoder_width} (encoder_width), got {llm_states.shape[-1]}"
            )
        queries = self.query_tokens.expand(llm_states.shape[0], -1, -1)  # B x Q x hidden
        return self.qformer(query_embeds=queries, encoder_hidden_states=llm_states).last_hidden_state


def _rename(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    key = "." + key
    for old, new in renames:
        key = key.replace(old, new)
    return key[1:]


def released_to_module(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released `sd_qformer.*` / `sd_query_tokens` keys -> `SDQFormer` state-dict keys.

    Other keys of the file (`mm_projector.*`, `lm_head.weight`) are left out for their own loaders; the unused
    `position_ids` buffer is dropped. Load the result with `strict=True` to catch anything else.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == QUERY_TOKENS_KEY:
            out["query_tokens"] = value
        elif key.startswith(QFORMER_PREFIX) and key != POSITION_IDS_KEY:
            out["qformer." + _rename(key[len(QFORMER_PREFIX) :], _RENAMES)] = value
    return out


def module_to_released(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`SDQFormer` state-dict keys -> the released names, including the `position_ids` buffer the original saves."""
    inverse = tuple((new, old) for old, new in _RENAMES)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "query_tokens":
            out[QUERY_TOKENS_KEY] = value
        elif key.startswith("qformer."):
            out[QFORMER_PREFIX + _rename(key[len("qformer.") :], inverse)] = value
        else:
            raise ValueError(f"unexpected SDQFormer key {key!r}")
    out[POSITION_IDS_KEY] = torch.arange(BERT_MAX_POSITIONS)[None]  # [1, 512] int64, as BertEmbeddings saves it
    return out
