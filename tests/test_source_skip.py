"""The demo UNet's source skip (editor/models/source_skip.py): the change plus the scaled image input, a config
diffusers reads back, the loaders' dispatch, and the stock pipeline returning the source from an untrained model."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

from editor.demo import model as demo
from editor.demo import world
from editor.layouts.sizes import ModelSizes
from editor.loading import CheckpointError, MissingWeightsError, load_ip2p_shell, load_unet, unet_class
from editor.models.source_skip import SourceSkipUNet
from editor.params import EditParams, Resolution
from editor.pipelines.diffusion import build_pipeline
from editor.pipelines.ip2p import load_ip2p
from editor.pipelines.mgie import MGIEPaths, load_mgie

SKIP = ModelSizes.from_name(  # the demo-skip recipe at test sizes
    "demo-skip", vision_hidden=32, vision_intermediate=128, vision_layers=2, llm_hidden=32, llm_intermediate=64,
    llm_layers=2, head_dim_model=32, head_ffn=64, head_encoder_layers=1, head_decoder_layers=1,
    cross_attention_dim=32, unet_channels=(32, 32), text_hidden=32, text_layers=1,
)  # fmt: skip
PARAMS = EditParams(steps=2, resolution=Resolution(size=world.SIZE))


def _inputs(unet, batch: int = 2):
    c = unet.config.in_channels
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c, 16, 16, generator=gen)
    return x, torch.tensor([10, 900])[:batch], torch.randn(batch, 5, unet.config.cross_attention_dim, generator=gen)


def test_the_output_is_the_stock_unets_plus_the_scaled_image_half():
    skip = demo.build_unet(SKIP)
    assert isinstance(skip, SourceSkipUNet) and skip.config.source_skip_scale == demo.PATCH_SCALING
    torch.nn.init.normal_(skip.conv_out.weight, std=0.1)  # a trained model's change is not zero
    stock = UNet2DConditionModel(**demo.unet_config(SKIP))
    stock.load_state_dict(skip.state_dict())  # same layers, same keys
    x, t, cond = _inputs(skip)
    with torch.no_grad():
        change = stock(x, t, cond).sample
        out = skip(x, t, cond).sample
        as_tuple = skip(x, t, cond, return_dict=False)[0]
    assert change.abs().max() > 0.1
    torch.testing.assert_close(out, change + demo.PATCH_SCALING * x[:, 48:])
    torch.testing.assert_close(as_tuple, out)


def test_a_new_skip_unet_returns_its_source_and_the_stock_unet_is_unchanged():
    skip = demo.build_unet(SKIP)
    x, t, cond = _inputs(skip)
    with torch.no_grad():
        assert torch.equal(skip(x, t, cond).sample, demo.PATCH_SCALING * x[:, 48:])
    assert type(demo.build_unet(ModelSizes.from_name("demo-patches"))) is UNet2DConditionModel


def test_the_skip_needs_image_channels_and_the_patch_codec():
    config = demo.unet_config(SKIP) | {"in_channels": 50}
    with pytest.raises(ValueError, match="in_channels == 2 \\* out_channels"):
        SourceSkipUNet(source_skip_scale=1.0, **config)
    with pytest.raises(ValueError, match="finite number"):
        SourceSkipUNet(source_skip_scale=float("nan"), **demo.unet_config(SKIP))
    with pytest.raises(ValueError, match="needs the patch codec"):
        demo.build_unet(replace(SKIP, latent_codec="vae", latent_channels=8))


def test_the_config_round_trips_and_the_loader_reads_the_class_it_names(tmp_path):
    skip = demo.build_unet(SKIP)
    skip.save_pretrained(tmp_path / "skip")
    demo.build_unet(ModelSizes.from_name("demo-patches")).save_pretrained(tmp_path / "stock")
    loaded = load_unet(tmp_path / "skip", torch.float32, "hint")
    assert type(loaded) is SourceSkipUNet and loaded.config.source_skip_scale == demo.PATCH_SCALING
    assert tuple(loaded.config.block_out_channels) == tuple(skip.config.block_out_channels)
    assert type(load_unet(tmp_path / "stock", torch.float32, "hint")) is UNet2DConditionModel
    assert unet_class({"_class_name": "UNet2DConditionModel"}) is UNet2DConditionModel
    (tmp_path / "skip" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match="could not load the UNet from .*skip.*hint"):
        load_unet(tmp_path / "skip", torch.float32, "hint")


def test_the_stock_pipeline_gives_back_the_source_from_an_untrained_skip_unet():
    """No change predicted: with image guidance 1 the guided x0 is the scaled source at every step (the text
    direction is zero whatever its scale), and Euler's last step lands on it, so the edit returns the input."""
    pipe = build_pipeline(demo.build_unet(SKIP), demo.build_vae(SKIP), EulerDiscreteScheduler.from_config(
        demo.scheduler_config("patches")))  # fmt: skip
    image = torch.rand(1, 3, 64, 64)
    out = pipe(
        image=image, prompt_embeds=torch.randn(1, 77, 32), negative_prompt_embeds=torch.zeros(1, 77, 32),
        num_inference_steps=4, guidance_scale=3.0, image_guidance_scale=1.0, output_type="pt",
    ).images  # fmt: skip
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)


def test_both_demo_exports_load_the_skip_unet(tmp_path):
    mllm, head, unet, vae = demo.build_mllm(SKIP), demo.build_head(SKIP), demo.build_unet(SKIP), demo.build_vae(SKIP)
    torch.nn.init.normal_(unet.conv_out.weight, std=0.1)
    demo.export_mgie(tmp_path / "mgie", SKIP, mllm, head, unet, vae)
    demo.export_ip2p(tmp_path / "ip2p", SKIP, unet, vae, demo.build_text_encoder(SKIP))
    for folder in ("mgie", "ip2p"):  # αV above 1 would scale the skipped source up (editor/demo/model.py)
        assert json.loads((tmp_path / folder / "editor_defaults.json").read_text()) == demo.SKIP_APP_DEFAULTS
    mgie = load_mgie(MGIEPaths.from_weights_dir(tmp_path / "mgie"))
    ip2p = load_ip2p([tmp_path / "ip2p"], name="ip2p-demo", hint="hint")
    for loaded in (mgie.pipe.unet, ip2p.pipe.unet):
        assert type(loaded) is SourceSkipUNet and loaded.config.source_skip_scale == demo.PATCH_SCALING
        expected = {k: v.half().float() for k, v in unet.state_dict().items()}
        for key, value in loaded.state_dict().items():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    sample = world.dataset("test", 1, seed=3)[0]
    image = world.render(sample.source)
    assert mgie.render(image, mgie.think(image, sample.terse), PARAMS).image.size == (world.SIZE, world.SIZE)


def test_a_shell_whose_unet_config_is_hostile_is_one_clear_error(tmp_path):
    demo.export_mgie(tmp_path / "mgie", SKIP, demo.build_mllm(SKIP), demo.build_head(SKIP), demo.build_unet(SKIP),
                     demo.build_vae(SKIP))  # fmt: skip
    shell = tmp_path / "mgie" / "instruct-pix2pix"
    config = json.loads((shell / "unet" / "config.json").read_text())
    (shell / "unet" / "config.json").write_text(json.dumps(config | {"source_skip_scale": "NaN"}))
    state = {k: v.half() for k, v in demo.build_unet(SKIP).state_dict().items()}
    with pytest.raises(CheckpointError, match="does not describe a UNet .*finite number.*hint"):
        load_ip2p_shell(shell, state, "unet.safetensors", torch.float32, "hint")
