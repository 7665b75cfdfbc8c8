"""The edit head: sizes read from a state dict, the released key names, and its math checked from scratch."""

from dataclasses import replace

import torch
import torch.nn.functional as F

from editor.layouts.sizes import ModelSizes
from editor.models.edit_head import EditHead, EditHeadConfig

FULL = ModelSizes.from_name("7b").edit_head()

SMALL = EditHeadConfig(llm_hidden=24, d_model=16, num_heads=4, encoder_layers=2, decoder_layers=3, ffn_dim=40,
                       num_queries=7, out_dim=12)  # fmt: skip


def test_full_size_parameter_count_matches_the_release():
    with torch.device("meta"):
        head = EditHead(FULL)
    assert sum(p.numel() for p in head.parameters()) == 31_958_784  # docs/mgie.md §2.7
    assert sum(p.numel() for p in head.mapper.parameters()) == 29_427_712


def test_config_is_recovered_from_tensor_shapes():
    head = EditHead(SMALL)
    assert EditHeadConfig.from_state_dict(head.state_dict()) == SMALL


def test_key_names_are_those_of_mllm_pt():
    keys = set(EditHead(replace(FULL, encoder_layers=1, decoder_layers=1)).state_dict())
    for key in ("llm2hid.weight", "llm2hid.bias", "query", "hid2feat.weight", "hid2feat.bias",
                "mapper.encoder.layers.0.self_attn.in_proj_weight", "mapper.encoder.layers.0.linear1.weight",
                "mapper.encoder.norm.weight", "mapper.decoder.layers.0.multihead_attn.in_proj_bias",
                "mapper.decoder.layers.0.norm3.bias", "mapper.decoder.norm.bias"):  # fmt: skip
        assert key in keys


def _attention(x, memory, sd, prefix, heads):
    w, b = sd[prefix + "in_proj_weight"], sd[prefix + "in_proj_bias"]
    d = x.shape[-1]
    q = x @ w[:d].T + b[:d]
    k = memory @ w[d : 2 * d].T + b[d : 2 * d]
    v = memory @ w[2 * d :].T + b[2 * d :]
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
    att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (d // heads) ** 0.5, dim=-1) @ split(v)
    out = att.transpose(1, 2).reshape(x.shape)
    return out @ sd[prefix + "out_proj.weight"].T + sd[prefix + "out_proj.bias"]


def _ln(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], 1e-5)


def _ffn(x, sd, p):
    return (
        torch.relu(x @ sd[p + "linear1.weight"].T + sd[p + "linear1.bias"]) @ sd[p + "linear2.weight"].T
        + sd[p + "linear2.bias"]
    )


def test_forward_equals_a_from_scratch_pre_ln_encoder_decoder():
    torch.manual_seed(1)
    head = EditHead(SMALL).eval()
    sd = head.state_dict()
    states, emb = torch.randn(2, 8, 24), torch.randn(8, 24)
    x = (states + emb) @ sd["llm2hid.weight"].T + sd["llm2hid.bias"]
    for i in range(SMALL.encoder_layers):
        p = f"mapper.encoder.layers.{i}."
        h = _ln(x, sd, p + "norm1")
        x = x + _attention(h, h, sd, p + "self_attn.", 4)
        x = x + _ffn(_ln(x, sd, p + "norm2"), sd, p)
    memory = _ln(x, sd, "mapper.encoder.norm")
    q = sd["query"].expand(2, -1, -1)
    for i in range(SMALL.decoder_layers):
        p = f"mapper.decoder.layers.{i}."
        h = _ln(q, sd, p + "norm1")
        q = q + _attention(h, h, sd, p + "self_attn.", 4)
        q = q + _attention(_ln(q, sd, p + "norm2"), memory, sd, p + "multihead_attn.", 4)
        q = q + _ffn(_ln(q, sd, p + "norm3"), sd, p)
    expected = _ln(q, sd, "mapper.decoder.norm") @ sd["hid2feat.weight"].T + sd["hid2feat.bias"]
    with torch.no_grad():
        got = head(states, emb)
    assert got.shape == (2, 7, 12)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_null_condition_depends_only_on_img_embeddings(mgie):
    zeros = torch.zeros(1, 8, mgie.img_embeddings.shape[-1])
    with torch.no_grad():
        assert torch.equal(mgie.null_embeds, mgie.head(zeros, mgie.img_embeddings))
        assert not torch.allclose(mgie.null_embeds, mgie.head(zeros, mgie.img_embeddings * 0))
