"""SmartEdit's SD-QFormer and BIM: released key layout, sizes read from tensors, and the maths checked against
from-scratch implementations of docs/smartedit.md §2.5 / §2.6 that read the released key names directly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from editor.models import bim, qformer
from editor.models.bim import BidirectionalInteractionModule, BIMConfig, text_condition
from editor.models.qformer import SDQFormer, SDQFormerConfig

QF = SDQFormerConfig(hidden=32, layers=3, heads=2, intermediate=64, encoder_width=48, num_queries=5)
QF_OTHER = SDQFormerConfig(hidden=16, layers=2, heads=4, intermediate=40, encoder_width=24, num_queries=7,
                           cross_attention_frequency=1)  # fmt: skip
BIM = BIMConfig(embed_dim=64, heads=4, mlp_dim=128, depth=2, query_dim=32, unet_channels=16)
BIM_OTHER = BIMConfig(embed_dim=32, heads=2, mlp_dim=48, depth=1, query_dim=24, unet_channels=8)


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights everywhere (also LayerNorm affine and biases) without saturating the softmaxes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g)
            if name.endswith("weight"):
                t.copy_(noise / math.sqrt(t[0].numel()) if t.ndim >= 2 else 1 + 0.2 * noise)
            else:  # biases, query tokens, the Gaussian PE matrix
                t.copy_((0.2 if name.endswith("bias") else 1.0) * noise)
    return module


# ---- reference maths, written from the spec with the released key names --------------------------------------------


def lin(sd, prefix, x):
    return x @ sd[prefix + ".weight"].T + sd[prefix + ".bias"]


def layer_norm(sd, prefix, x, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * sd[prefix + ".weight"] + sd[prefix + ".bias"]


def multi_head(q, k, v, heads):
    def split(x):  # B x N x C -> B x heads x N x C/heads
        return x.reshape(x.shape[0], x.shape[1], heads, -1).permute(0, 2, 1, 3)

    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    out = weights @ v  # B x heads x N x d
    return out.permute(0, 2, 1, 3).reshape(out.shape[0], out.shape[2], -1)


def reference_qformer(sd, states, heads, cross_every=2, eps=1e-12):
    x = layer_norm(sd, "sd_qformer.embeddings.LayerNorm", sd["sd_query_tokens"].expand(states.shape[0], -1, -1), eps)
    layers = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("sd_qformer.encoder.layer."))
    for i in range(layers):
        p = f"sd_qformer.encoder.layer.{i}."
        a = p + "attention.self."
        att = multi_head(lin(sd, a + "query", x), lin(sd, a + "key", x), lin(sd, a + "value", x), heads)
        x = layer_norm(sd, p + "attention.output.LayerNorm", x + lin(sd, p + "attention.output.dense", att), eps)
        if i % cross_every == 0:
            c = p + "crossattention.self."
            att = multi_head(lin(sd, c + "query", x), lin(sd, c + "key", states), lin(sd, c + "value", states), heads)
            x = layer_norm(
                sd, p + "crossattention.output.LayerNorm", x + lin(sd, p + "crossattention.output.dense", att), eps
            )
        hidden = F.gelu(lin(sd, p + "intermediate_query.dense", x))
        x = layer_norm(sd, p + "output_query.LayerNorm", x + lin(sd, p + "output_query.dense", hidden), eps)
    return x


def reference_bim(sd, v_clip, c_q, heads, latent_size, eps=1e-5):
    def attn(prefix, q, k, v):
        q, k, v = (lin(sd, f"{prefix}.{n}_proj", x) for n, x in zip("qkv", (q, k, v), strict=True))
        return lin(sd, prefix + ".out_proj", multi_head(q, k, v, heads))

    batch, tokens, width = v_clip.shape
    side = math.isqrt(tokens)
    # Step 2: PE of token t = i * side + j at the cell centre (x, y) = ((j + 0.5) / side, (i + 0.5) / side).
    t = torch.arange(tokens)
    xy = torch.stack([(t % side + 0.5) / side, (t // side + 0.5) / side], dim=-1)  # tokens x 2
    angles = (2 * xy - 1) @ sd["pe_layer.positional_encoding_gaussian_matrix"] * 2 * math.pi
    pe = torch.cat([angles.sin(), angles.cos()], dim=-1)  # tokens x E
    f0 = lin(sd, "modulate_head", c_q)  # step 1
    f, k = f0, v_clip
    depth = 1 + max(int(key.split(".")[2]) for key in sd if key.startswith("modulate_transformer.layers."))
    for i in range(depth):  # step 3
        p = f"modulate_transformer.layers.{i}."
        f = attn(p + "self_attn", f, f, f) if i == 0 else f + attn(p + "self_attn", f + f0, f + f0, f)
        f = layer_norm(sd, p + "norm1", f, eps)
        f = layer_norm(sd, p + "norm2", f + attn(p + "cross_attn_token_to_image", f + f0, k + pe, k), eps)
        f = layer_norm(sd, p + "norm3", f + lin(sd, p + "mlp.lin2", torch.relu(lin(sd, p + "mlp.lin1", f))), eps)
        k = layer_norm(sd, p + "norm4", k + attn(p + "cross_attn_image_to_token", k + pe, f + f0, f), eps)
    final = attn("modulate_transformer.final_attn_token_to_image", f + f0, k + pe, k)  # step 4
    f = layer_norm(sd, "modulate_transformer.norm_final_attn", f + final, eps)
    r_txt = lin(sd, "dimension_reduction_head_qformer_out", f)  # step 6
    grid = k.reshape(batch, side, side, width).permute(0, 3, 1, 2)  # step 7
    grid = F.interpolate(grid, size=(latent_size, latent_size), mode="bilinear", align_corners=False)
    conv_w, conv_b = sd["dimension_reduction_head_zeroconv.weight"], sd["dimension_reduction_head_zeroconv.bias"]
    r_img = torch.einsum("oc,bchw->bohw", conv_w[:, :, 0, 0], grid) + conv_b[None, :, None, None]
    return r_txt, r_img


# ---- released layouts (docs/smartedit.md §3.3 B and C) -------------------------------------------------------------


def released_qformer_shapes(c: SDQFormerConfig) -> dict[str, tuple[int, ...]]:
    h = c.hidden
    shapes = {"sd_query_tokens": (1, c.num_queries, h), "sd_qformer.embeddings.position_ids": (1, 512)}
    shapes |= {f"sd_qformer.embeddings.LayerNorm.{n}": (h,) for n in ("weight", "bias")}
    for i in range(c.layers):
        p = f"sd_qformer.encoder.layer.{i}."
        cross = {"crossattention": c.encoder_width} if i % c.cross_attention_frequency == 0 else {}
        for block, kv_width in ({"attention": h} | cross).items():
            shapes |= {f"{p}{block}.self.query.weight": (h, h), f"{p}{block}.self.query.bias": (h,)}
            for name in ("key", "value"):
                shapes |= {f"{p}{block}.self.{name}.weight": (h, kv_width), f"{p}{block}.self.{name}.bias": (h,)}
            shapes |= {f"{p}{block}.output.dense.weight": (h, h), f"{p}{block}.output.dense.bias": (h,)}
            shapes |= {f"{p}{block}.output.LayerNorm.{n}": (h,) for n in ("weight", "bias")}
        shapes |= {f"{p}intermediate_query.dense.weight": (c.intermediate, h)}
        shapes |= {f"{p}intermediate_query.dense.bias": (c.intermediate,)}
        shapes |= {f"{p}output_query.dense.weight": (h, c.intermediate), f"{p}output_query.dense.bias": (h,)}
        shapes |= {f"{p}output_query.LayerNorm.{n}": (h,) for n in ("weight", "bias")}
    return shapes


def released_bim_shapes(c: BIMConfig) -> dict[str, tuple[int, ...]]:
    e, half = c.embed_dim, c.embed_dim // 2

    def attention(prefix, inner):
        out = {
            f"{prefix}.{n}_proj.{w}": (inner, e) if w == "weight" else (inner,)
            for n in "qkv"
            for w in ("weight", "bias")
        }
        return out | {f"{prefix}.out_proj.weight": (e, inner), f"{prefix}.out_proj.bias": (e,)}

    shapes = {"modulate_head.weight": (e, c.query_dim), "modulate_head.bias": (e,),
              "pe_layer.positional_encoding_gaussian_matrix": (2, half),
              "dimension_reduction_head_zeroconv.weight": (c.unet_channels, e, 1, 1),
              "dimension_reduction_head_zeroconv.bias": (c.unet_channels,),
              "dimension_reduction_head_qformer_out.weight": (c.query_dim, e),
              "dimension_reduction_head_qformer_out.bias": (c.query_dim,)}  # fmt: skip
    for i in range(c.depth):
        p = f"modulate_transformer.layers.{i}."
        shapes |= attention(p + "self_attn", e) | attention(p + "cross_attn_token_to_image", half)
        shapes |= attention(p + "cross_attn_image_to_token", half)
        shapes |= {p + "mlp.lin1.weight": (c.mlp_dim, e), p + "mlp.lin1.bias": (c.mlp_dim,)}
        shapes |= {p + "mlp.lin2.weight": (e, c.mlp_dim), p + "mlp.lin2.bias": (e,)}
        shapes |= {f"{p}norm{n}.{w}": (e,) for n in range(1, 5) for w in ("weight", "bias")}
    shapes |= attention("modulate_transformer.final_attn_token_to_image", half)
    return shapes | {f"modulate_transformer.norm_final_attn.{w}": (e,) for w in ("weight", "bias")}


def shapes_of(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


# ---- SD-QFormer ----------------------------------------------------------------------------------------------------


def test_qformer_full_size_parameter_count_matches_the_spec():
    with torch.device("meta"):
        n = sum(p.numel() for p in SDQFormer(SDQFormerConfig()).parameters())
    assert round(n / 1e6, 1) == 65.0  # docs/smartedit.md §2.5, 7B


def test_qformer_writes_and_strictly_loads_the_released_layout():
    config = SDQFormerConfig(hidden=32, layers=6, heads=2, intermediate=64, encoder_width=48, num_queries=5)
    module = randomize_(SDQFormer(config))
    released = qformer.module_to_released(module.state_dict())
    assert shapes_of(released) == released_qformer_shapes(config)
    assert len(released) == 130  # 133 in the file with mm_projector.{weight,bias} and lm_head.weight
    assert torch.equal(released["sd_qformer.embeddings.position_ids"], torch.arange(512)[None])
    file = released | {"mm_projector.weight": torch.zeros(48, 8), "mm_projector.bias": torch.zeros(48),
                       "lm_head.weight": torch.zeros(40, 48)}  # fmt: skip
    assert len(file) == 133

    loaded = SDQFormer(SDQFormerConfig.from_state_dict(file, heads=2))
    loaded.load_state_dict(qformer.released_to_module(file), strict=True)
    states = torch.randn(2, 4, 48)
    torch.testing.assert_close(loaded(states), module(states), rtol=0, atol=0)
    back = qformer.module_to_released(qformer.released_to_module(file))
    assert back.keys() == released.keys() and all(torch.equal(back[k], released[k]) for k in back)


def test_qformer_strict_load_reports_missing_and_unknown_keys():
    file = qformer.module_to_released(SDQFormer(QF).state_dict())
    missing = {k: v for k, v in file.items() if k != "sd_qformer.encoder.layer.2.crossattention.self.key.bias"}
    unknown = file | {"sd_qformer.pooler.dense.bias": torch.zeros(QF.hidden)}  # must not be dropped silently
    with pytest.raises(RuntimeError, match="Missing key"):
        SDQFormer(QF).load_state_dict(qformer.released_to_module(missing))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        SDQFormer(QF).load_state_dict(qformer.released_to_module(unknown))


def test_qformer_matches_the_spec_maths():
    module = randomize_(SDQFormer(QF))
    states = torch.randn(2, 4, QF.encoder_width)
    expected = reference_qformer(qformer.module_to_released(module.state_dict()), states, heads=QF.heads)
    torch.testing.assert_close(module(states), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(module.train()(states), expected, rtol=0, atol=1e-5)  # no dropout in train mode either


@pytest.mark.parametrize("config", [QF, QF_OTHER])
def test_qformer_sizes_are_read_from_the_state_dict(config):
    file = qformer.module_to_released(SDQFormer(config).state_dict())
    assert SDQFormerConfig.from_state_dict(file, heads=config.heads) == config
    SDQFormer(config).load_state_dict(qformer.released_to_module(file), strict=True)
    assert SDQFormer(config)(torch.randn(3, 2, config.encoder_width)).shape == (3, config.num_queries, config.hidden)


# ---- BIM -----------------------------------------------------------------------------------------------------------


def test_bim_full_size_parameter_count_matches_the_spec():
    with torch.device("meta"):
        n = sum(p.numel() for p in BidirectionalInteractionModule(BIMConfig()).parameters())
    assert round(n / 1e6, 1) == 29.2  # docs/smartedit.md §2.6


def test_bim_writes_and_strictly_loads_the_released_layout():
    module = randomize_(BidirectionalInteractionModule(BIM))
    released = bim.module_to_released(module.state_dict())
    assert shapes_of(released) == released_bim_shapes(BIM)
    assert len(released) == 89  # 7 head/PE tensors + 36 per block x 2 + 10 for the final attention and norm
    loaded = BidirectionalInteractionModule(BIMConfig.from_state_dict(released, heads=4))
    loaded.load_state_dict(bim.released_to_module(released), strict=True)
    v_clip, c_q = torch.randn(2, 16, 64), torch.randn(2, 5, 32)
    for got, want in zip(loaded(v_clip, c_q, 8), module(v_clip, c_q, 8), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert bim.module_to_released(bim.released_to_module(released)).keys() == released.keys()
    with pytest.raises(RuntimeError, match="Missing key"):
        loaded.load_state_dict(bim.released_to_module({k: v for k, v in released.items() if "norm3" not in k}))


@pytest.mark.parametrize("latent_size", [8, 3])
def test_bim_matches_the_spec_maths(latent_size):
    module = randomize_(BidirectionalInteractionModule(BIM))
    v_clip, c_q = torch.randn(2, 16, 64), torch.randn(2, 5, 32)
    r_txt, r_img = module(v_clip, c_q, latent_size)
    assert r_txt.shape == (2, 5, 32) and r_img.shape == (2, 16, latent_size, latent_size)
    want_txt, want_img = reference_bim(bim.module_to_released(module.state_dict()), v_clip, c_q, 4, latent_size)
    torch.testing.assert_close(r_txt, want_txt, rtol=0, atol=1e-5)
    torch.testing.assert_close(r_img, want_img, rtol=0, atol=1e-5)
    torch.testing.assert_close(text_condition(c_q, r_txt), c_q + 0.5 * want_txt, rtol=0, atol=1e-5)


def test_bim_zero_heads_leave_the_condition_unchanged():
    module = BidirectionalInteractionModule(BIM)  # heads zero-initialised, as at SmartEdit's training start
    v_clip, c_q = torch.randn(2, 16, 64), torch.randn(2, 5, 32)
    r_txt, r_img = module(v_clip, c_q, 8)
    assert torch.count_nonzero(r_txt) == 0 and torch.count_nonzero(r_img) == 0
    assert torch.equal(text_condition(c_q, r_txt), c_q)
    randomize_(module.dimension_reduction_head_qformer_out, seed=1)
    randomize_(module.dimension_reduction_head_zeroconv, seed=2)
    r_txt, r_img = module(v_clip, c_q, 8)
    assert torch.count_nonzero(r_txt) == r_txt.numel() and torch.count_nonzero(r_img) == r_img.numel()


@pytest.mark.parametrize("config", [BIM, BIM_OTHER])
def test_bim_sizes_are_read_from_the_state_dict(config):
    released = bim.module_to_released(BidirectionalInteractionModule(config).state_dict())
    assert BIMConfig.from_state_dict(released, heads=config.heads) == config
    module = BidirectionalInteractionModule(config)
    module.load_state_dict(bim.released_to_module(released), strict=True)
    r_txt, r_img = module(torch.randn(1, 9, config.embed_dim), torch.randn(1, 4, config.query_dim), 6)
    assert r_txt.shape == (1, 4, config.query_dim) and r_img.shape == (1, config.unet_channels, 6, 6)


def test_bim_rejects_inputs_it_cannot_use():
    module = BidirectionalInteractionModule(BIM)
    with pytest.raises(ValueError, match="square grid"):
        module(torch.randn(1, 15, 64), torch.randn(1, 5, 32), 8)
    with pytest.raises(ValueError, match="embed_dim"):
        module(torch.randn(1, 16, 48), torch.randn(1, 5, 32), 8)
