"""MGIE end to end on the tiny official-layout tree: think, render, guidance, the reference's decoding rules."""

import contextlib

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image

from editor.params import EditParams, Resolution

IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
FAST = EditParams(steps=3, resolution=Resolution(size=64))


@contextlib.contextmanager
def scripted(mgie, script: list[int]):
    """Make the LM emit `script` (then repeat its last id) by overriding lm_head's logits in place."""
    calls = []

    def hook(_module, _inputs, logits):
        i = min(len(calls), len(script) - 1)
        calls.append(i)
        forced = torch.full_like(logits, -1e4)
        forced[..., script[i]] = 1e4
        return forced

    handle = mgie.mllm.llm.lm_head.register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def _script(mgie, text: str, extra: int = 5) -> tuple[list[int], list[int]]:
    text_ids = mgie.tokenizer.encode(text, bos=False)
    filler = mgie.tokenizer.encode(" zebra quartz violin kiwi yacht", bos=False)[:extra]
    return text_ids, text_ids + list(mgie.img_ids) + [2] + filler


def test_loads_sizes_and_weights_from_the_files(mgie, tiny_tree):
    assert mgie.num_patches == 16  # (32 / 8)^2 from the CLIP config, not hard-coded
    assert mgie.head.config.encoder_layers == 2 and mgie.head.config.num_queries == 77
    unet_pt = torch.load(tiny_tree / "mgie_7b" / "unet.pt", weights_only=True)
    assert torch.equal(mgie.pipe.unet.conv_in.weight, unet_pt["conv_in.weight"].float())
    mllm_pt = torch.load(tiny_tree / "mgie_7b" / "mllm.pt", weights_only=True)
    assert torch.equal(mgie.mllm.llm.lm_head.weight, mllm_pt["lm_head.weight"].float())
    assert torch.equal(mgie.img_embeddings, mllm_pt["emb"].float())


def test_think_then_render_end_to_end(mgie):
    guidance = mgie.think(IMAGE, "make the frame red")
    assert isinstance(guidance.expressive, str) and guidance.expressive
    assert guidance.prompt_embeds.shape == (1, 77, 32) == guidance.negative_prompt_embeds.shape
    assert guidance.stats["new_tokens"] >= 1
    a = mgie.render(IMAGE, guidance, FAST)
    assert a.image.size == (64, 48) and a.source.size == (64, 48) and a.seed == 13331
    b = mgie.render(IMAGE, guidance, FAST)
    c = mgie.render(IMAGE, guidance, FAST.with_seed(7))
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    assert mgie.render(IMAGE, guidance, EditParams(steps=2, seed=None, resolution=Resolution(size=64))).seed >= 0


def test_think_is_deterministic(mgie):
    a, b = mgie.think(IMAGE, "make the frame red"), mgie.think(IMAGE, "make the frame red")
    assert a.raw_text == b.raw_text and torch.equal(a.prompt_embeds, b.prompt_embeds)


def test_render_equals_the_stock_diffusers_pipeline(mgie):
    guidance = mgie.think(IMAGE, "make the frame red")
    ours = mgie.render(IMAGE, guidance, FAST).image
    stock = StableDiffusionInstructPix2PixPipeline(**mgie.pipe.components)
    ref = stock(image=IMAGE, prompt_embeds=guidance.prompt_embeds, negative_prompt_embeds=mgie.null_embeds,
                num_inference_steps=3, guidance_scale=7.5, image_guidance_scale=1.5,
                generator=torch.Generator().manual_seed(13331)).images[0]  # fmt: skip
    assert np.array_equal(np.asarray(ours), np.asarray(ref))


def _record_unet(mgie, params, guidance):
    calls = []
    unet, scheduler_class = mgie.pipe.unet, type(mgie.pipe.scheduler)  # each render builds its own scheduler

    def hook(_m, args, kwargs, out):
        calls.append((args[0].clone(), kwargs["encoder_hidden_states"].clone(), out[0].clone()))

    step = scheduler_class.step
    combined = []

    def spy(self, model_output, *a, **k):
        combined.append(model_output.clone())
        return step(self, model_output, *a, **k)

    handle = unet.register_forward_hook(hook, with_kwargs=True)
    scheduler_class.step = spy
    try:
        mgie.render(IMAGE, guidance, params)
    finally:
        handle.remove()
        scheduler_class.step = step
    return calls, combined


def test_guidance_branch_order_and_arithmetic(mgie):
    guidance = mgie.think(IMAGE, "make the frame red")
    params = EditParams(steps=2, text_guidance=6.0, image_guidance=1.7, resolution=Resolution(size=64))
    calls, combined = _record_unet(mgie, params, guidance)
    assert len(calls) == 2
    for (sample, text, eps), mixed in zip(calls, combined, strict=True):
        assert sample.shape[0] == 3 and sample.shape[1] == 8
        # text side [E, NULL, NULL]; image latents [z, z, 0] on channels 4..7
        assert torch.equal(text[0], guidance.prompt_embeds[0]) and torch.equal(text[1], mgie.null_embeds[0])
        assert torch.equal(text[2], mgie.null_embeds[0])
        assert torch.equal(sample[0, 4:], sample[1, 4:]) and not sample[2, 4:].any() and sample[0, 4:].any()
        e_text, e_image, e_uncond = eps
        expected = e_uncond + 6.0 * (e_text - e_image) + 1.7 * (e_image - e_uncond)
        torch.testing.assert_close(mixed[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("text", "image", "batch"), [(7.5, 1.5, 3), (1.0, 1.5, 1), (1.01, 1.0, 3), (7.5, 0.99, 1)])
def test_guidance_on_off_rule(mgie, text, image, batch):
    guidance = mgie.think(IMAGE, "make the frame red")
    params = EditParams(steps=1, text_guidance=text, image_guidance=image, resolution=Resolution(size=64))
    assert params.guidance_enabled == (batch == 3)
    calls, _ = _record_unet(mgie, params, guidance)
    assert calls[0][0].shape[0] == batch


def test_on_step_reports_every_step(mgie):
    guidance = mgie.think(IMAGE, "make the frame red")
    seen = []
    previews = []

    def on_step(step):
        seen.append((step.index, step.total, tuple(step.latents.shape)))
        if step.index == step.total:
            previews.append(step.preview())

    result = mgie.render(IMAGE, guidance, FAST, on_step=on_step)
    assert seen == [(1, 3, (1, 4, 6, 8)), (2, 3, (1, 4, 6, 8)), (3, 3, (1, 4, 6, 8))]
    assert previews[0].size == (8, 6) and previews[0].mode == "RGB"
    assert result.image.size == (64, 48)


def test_decoding_stops_one_token_after_img7_with_the_same_condition(mgie):
    text_ids, script = _script(mgie, "A crimson border appears. Alternatively pink.")
    with scripted(mgie, script):
        early = mgie.think(IMAGE, "make the frame red")
    assert early.stats["new_tokens"] == len(text_ids) + 8 + 1
    assert early.expressive == "A crimson border appears."
    assert early.raw_text.replace(" ", "").startswith("Acrimsonborderappears.Alternativelypink.[IMG0][IMG1]")
    mgie.decode, saved = type(mgie.decode)(stop_after_img=False), mgie.decode
    try:
        with scripted(mgie, script):
            full = mgie.think(IMAGE, "make the frame red")
    finally:
        mgie.decode = saved
    assert full.stats["new_tokens"] == 96
    assert torch.equal(early.prompt_embeds, full.prompt_embeds)


def test_rewritten_text_condition_equals_the_generated_one_for_the_same_text(mgie):
    """Teacher-forcing "<text> [IMG0..7]" reads the same 8 states that decoding that text would produce."""
    _, script = _script(mgie, "A crimson border appears.")
    with scripted(mgie, script):
        generated = mgie.think(IMAGE, "make the frame red")
    rewritten = mgie.guidance_from_text(IMAGE, "make the frame red", "A crimson border appears.")
    assert rewritten.source == "user" and rewritten.expressive == "A crimson border appears."
    torch.testing.assert_close(rewritten.prompt_embeds, generated.prompt_embeds, atol=1e-4, rtol=1e-4)
    other = mgie.guidance_from_text(IMAGE, "make the frame red", "The whole photo turns into a pencil sketch.")
    assert not torch.allclose(other.prompt_embeds, generated.prompt_embeds, atol=1e-3)


def test_without_img_tokens_the_reference_fallback_window_is_used(mgie):
    _, script = _script(mgie, " zebra quartz", extra=0)
    script = [t for t in script if t not in mgie.img_ids and t != 2]
    with scripted(mgie, script):
        guidance = mgie.think(IMAGE, "make the frame red")
    assert guidance.stats["new_tokens"] == 96 and guidance.stats["found_img"] == 0.0
    # fallback: the 8 states before the last one (docs/mgie.md §2.6)
    from editor.models.llava import greedy_decode

    ids = mgie.prompt_ids("make the frame red")
    with scripted(mgie, script):
        out = greedy_decode(mgie.mllm.llm, ids, mgie._embed(IMAGE, ids), 96, 3, lambda _: False)
    with torch.inference_mode():
        expected = mgie.head(out.states[-9:-1][None], mgie.img_embeddings)
    torch.testing.assert_close(guidance.prompt_embeds, expected)


@pytest.mark.parametrize("bad", ["", "   ", "make [IMG3] red"])
def test_bad_instructions_raise_clear_errors(mgie, bad):
    with pytest.raises(ValueError, match="instruction"):
        mgie.think(IMAGE, bad)
    with pytest.raises(ValueError, match="instruction"):
        mgie.guidance_from_text(IMAGE, "make it red", bad)


def _image(mode: str) -> Image.Image:
    rgb = IMAGE.copy()
    if mode == "I;16":
        return Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257), mode="I;16")
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK", "I;16", "1"])
def test_any_image_mode_goes_through(mgie, mode):
    guidance = mgie.think(_image(mode), "make it red")
    result = mgie.render(_image(mode), guidance, FAST)
    assert result.image.mode == "RGB" and result.image.size == (64, 48)


@pytest.mark.parametrize(
    ("size", "resolution", "expected"),
    [((1, 1), Resolution(size=64), (64, 64)), ((4000, 3000), Resolution(size=128), (128, 96)),
     ((3000, 4000), Resolution(size=64), (48, 64)), ((640, 480), Resolution("center_crop", 64), (64, 64)),
     ((5, 3000), Resolution(size=64), (8, 64))],
)  # fmt: skip
def test_output_sizes_follow_the_resolution_policy(mgie, size, resolution, expected):
    image = Image.new("RGB", size, (30, 90, 200))
    guidance = mgie.guidance_from_text(image, "make it red", "The blue turns red.")
    assert mgie.render(image, guidance, EditParams(steps=1, resolution=resolution)).image.size == expected


def test_exif_rotated_photo_is_edited_upright(mgie, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 32), (200, 20, 20)).save(path, exif=exif)
    guidance = mgie.guidance_from_text(path, "make it blue", "The red turns blue.")
    assert mgie.render(path, guidance, FAST).image.size == (32, 64)
