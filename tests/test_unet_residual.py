"""SmartEdit's residual after conv_in, composed on the stock UNet: zero residual = stock UNet; otherwise the first
down block's input changes by exactly the residual, in every CFG branch; the hook is gone afterwards."""

from __future__ import annotations

import pytest
import torch

from editor.layouts.sizes import ModelSizes
from editor.models.unet_residual import residual_after_conv_in
from editor.tiny.diffusion import build_unet


@pytest.fixture(scope="module")
def unet():
    return build_unet(ModelSizes.from_name("tiny"), seed=0).eval()


def _run(unet, residual=None):
    seen = {}

    def keep(_module, args, kwargs):
        seen.setdefault("x", args[0] if args else kwargs["hidden_states"])

    grab = unet.down_blocks[0].register_forward_pre_hook(keep, with_kwargs=True)
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(3, unet.config.in_channels, 8, 8, generator=gen)  # the 3 guidance branches
    cond = torch.randn(3, 77, unet.config.cross_attention_dim, generator=gen)
    try:
        with torch.no_grad():
            if residual is None:
                out = unet(sample, 10, encoder_hidden_states=cond).sample
            else:
                with residual_after_conv_in(unet, residual):
                    out = unet(sample, 10, encoder_hidden_states=cond).sample
    finally:
        grab.remove()
    return out, seen["x"]


def test_zero_residual_is_the_stock_unet(unet):
    stock, _ = _run(unet)
    zero = torch.zeros(1, unet.config.block_out_channels[0], 8, 8)
    hooked, _ = _run(unet, zero)
    assert torch.equal(stock, hooked)


def test_residual_shifts_the_first_block_input_exactly_in_all_branches(unet):
    stock, before = _run(unet)
    residual = torch.randn(1, unet.config.block_out_channels[0], 8, 8, generator=torch.Generator().manual_seed(1))
    out, after = _run(unet, residual)
    torch.testing.assert_close(after - before, residual.expand(3, -1, -1, -1), rtol=0, atol=1e-6)
    assert not torch.allclose(out, stock)
    again, _ = _run(unet)  # the hook was removed
    assert torch.equal(again, stock)


def test_a_residual_of_the_wrong_size_is_refused(unet):
    with pytest.raises(ValueError, match="render at the resolution"):
        _run(unet, torch.zeros(1, unet.config.block_out_channels[0], 4, 4))
