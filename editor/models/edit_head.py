"""MGIE's edit head ("EditMapper", apple/ml-mgie mgie_llava.py:187-203), rewritten with configurable sizes.

It maps the LLM's last-layer states at the 8 [IMG] positions to a 77 x 768 condition, the shape of SD-1.5's CLIP
text-encoder output, so it can stand in for `prompt_embeds` of an InstructPix2Pix pipeline:

    x = llm2hid(states + img_embeddings)              # B x 8 x d
    y = Transformer(src=x, tgt=query.repeat(B))       # pre-LN encoder/decoder, no masks, no positional encoding
    return hid2feat(y)                                # B x 77 x out

Submodule names (llm2hid, query, mapper, hid2feat) are those of the released `mllm.pt` under `edit_head.`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EditHeadConfig:
    """MGIE-7B's: `ModelSizes.from_name("7b").edit_head()` (editor/layouts/sizes.py, the one place sizes are named)."""

    llm_hidden: int
    d_model: int
    num_heads: int  # not recoverable from tensor shapes; MGIE uses 4
    encoder_layers: int
    decoder_layers: int
    ffn_dim: int
    num_queries: int
    out_dim: int

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], num_heads: int = 4) -> EditHeadConfig:
        """Read every size from the tensors of an edit-head state dict (keys without the `edit_head.` prefix)."""

        def count(prefix: str) -> int:
            return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})

        d_model, llm_hidden = sd["llm2hid.weight"].shape
        return cls(
            llm_hidden=llm_hidden,
            d_model=d_model,
            num_heads=num_heads,
            encoder_layers=count("mapper.encoder.layers."),
            decoder_layers=count("mapper.decoder.layers."),
            ffn_dim=sd["mapper.encoder.layers.0.linear1.weight"].shape[0],
            num_queries=sd["query"].shape[1],
            out_dim=sd["hid2feat.weight"].shape[0],
        )


class EditHead(nn.Module):
    def __init__(self, config: EditHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.llm2hid = nn.Linear(config.llm_hidden, config.d_model)
        self.query = nn.Parameter(torch.randn(1, config.num_queries, config.d_model) * 0.02)
        with warnings.catch_warnings():  # torch warns that nested tensors are off with norm_first; expected
            warnings.simplefilter("ignore", UserWarning)
            self.mapper = nn.Transformer(
                d_model=config.d_model,
                nhead=config.num_heads,
                num_encoder_layers=config.encoder_layers,
                num_decoder_layers=config.decoder_layers,
                dim_feedforward=config.ffn_dim,
                dropout=0.0,
                batch_first=True,
                norm_first=True,
            )
        self.hid2feat = nn.Linear(config.d_model, config.out_dim)

    def forward(self, states: torch.Tensor, img_embeddings: torch.Tensor) -> torch.Tensor:
        # states: B x 8 x llm_hidden; img_embeddings: 8 x llm_hidden (broadcast over B)
        x = self.llm2hid(states + img_embeddings)  # B x 8 x d
        query = self.query.expand(x.shape[0], -1, -1)  # B x Q x d
        return self.hid2feat(self.mapper(x, query))  # B x Q x out
