"""The demo model's patch codec (editor/models/patches.py): exact, local, and taken by the stock IP2P pipeline."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler, UNet2DConditionModel

from editor.demo import model as demo
from editor.demo import stages
from editor.layouts.sizes import ModelSizes
from editor.loading import MissingWeightsError, load_vae
from editor.models.patches import PatchAutoencoder
from editor.pipelines.diffusion import build_pipeline, native_size

PATCHES = ModelSizes.from_name("demo-patches")


def test_the_round_trip_is_exact_and_each_pixel_lands_in_one_latent_position():
    codec = PatchAutoencoder()
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    latents = codec.encode(image).latent_dist.mode()
    assert latents.shape == (2, 48, 16, 16)
    assert torch.equal(codec.decode(latents).sample, image)
    assert torch.equal(codec.encode(image).latent_dist.sample(), latents)  # no posterior noise
    touched = image.clone()
    touched[0, 1, 21, 42] += 0.5  # one pixel: patch row 5, column 10
    changed = (codec.encode(touched).latent_dist.mode() != latents).any(dim=1)
    assert changed.sum() == 1 and changed[0, 5, 10]


def test_the_codec_refuses_sizes_it_cannot_patch():
    with pytest.raises(ValueError, match="latent_channels must be"):
        PatchAutoencoder(latent_channels=8)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        PatchAutoencoder().encode(torch.zeros(1, 3, 62, 64))


def test_the_scaling_factor_is_one_over_the_worlds_pixel_spread():
    scenes = [stages.train_sample(7, i) for i in range(256)]
    pixels = stages.to_tensor([s.source for s in scenes] + [s.target for s in scenes], "cpu")
    assert abs(demo.PATCH_SCALING * pixels.std().item() - 1) < 0.05


def test_the_loader_reads_either_codec_from_its_config(tmp_path):
    codec = demo.build_vae(PATCHES)
    codec.save_pretrained(tmp_path / "patches")
    loaded = load_vae(tmp_path / "patches", torch.float16, hint="HINT")
    assert isinstance(loaded, PatchAutoencoder) and loaded.dtype == torch.float16
    assert loaded.config.scaling_factor == demo.PATCH_SCALING
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(MissingWeightsError, match="HINT"):  # an AutoencoderKL config without its weights
        load_vae(tmp_path / "broken", torch.float32, hint="HINT")


def test_the_stock_pipeline_edits_through_the_codec_at_the_patch_scale():
    codec = demo.build_vae(PATCHES)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=96, out_channels=48, block_out_channels=(16, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=8,
    )  # fmt: skip
    pipe = build_pipeline(unet, codec, EulerAncestralDiscreteScheduler())
    assert pipe.vae_scale_factor == 4 and native_size(pipe) == 64
    image = torch.rand(1, 3, 64, 64)
    out = pipe(
        image=image, prompt_embeds=torch.randn(1, 77, 8), negative_prompt_embeds=torch.zeros(1, 77, 8),
        num_inference_steps=2, output_type="pt",
    ).images  # fmt: skip
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
