"""Per-stage timings of MGIE, and the render stage against diffusers' own pipeline on identical weights.

    python -m editor.bench                          # CPU, tiny official-layout tree (loaded through load_mgie)
    python -m editor.bench --size full --device cuda --dtype float16   # full-size random weights (7B LLaMA,
                                                                      # CLIP-L/14, SD-1.5 UNet/VAE): same compute
    python -m editor.bench --size full --device cuda --offload        # low-VRAM mode: peak memory per stage
Prints medians over --repeats runs. The render comparison alternates ours and the stock pipeline call so that
drift (thermal, caches) hits both equally, and checks that both give the identical image.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    EulerAncestralDiscreteScheduler,
    StableDiffusionInstructPix2PixPipeline,
    UNet2DConditionModel,
)
from PIL import Image

from editor.layouts.configs import mllm_config
from editor.layouts.sizes import ModelSizes
from editor.models.edit_head import EditHead
from editor.models.llava import LlavaV1, greedy_decode
from editor.params import EditParams, Resolution
from editor.pipelines.diffusion import build_pipeline
from editor.pipelines.mgie import MGIE, MGIEPaths, load_mgie
from editor.pipelines.mgie_checkpoint import load_tokenizer
from editor.pipelines.registry import add_load_arguments, load_options
from editor.pipelines.spec import LoadOptions
from editor.tiny import build_tiny_mgie_tree

# Full-size architecture (docs/mgie.md §1): used only to build compute-identical random models for timing. The MLLM
# and edit head are the "7b" sizes preset (editor/layouts/sizes.py); the diffusion side is SD-1.5's diffusers config.
FULL = ModelSizes.from_name("7b")
SD15_UNET = dict(
    sample_size=64,
    in_channels=8,
    out_channels=4,
    cross_attention_dim=768,
    attention_head_dim=8,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    scaling_factor=0.18215,
)
IP2P_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    prediction_type="epsilon",
)


def full_size_mgie(device: torch.device, dtype: torch.dtype, tokenizer_dir: Path) -> MGIE:
    """MGIE-7B with random weights, built directly on `device` (no files). The tokenizer is a tiny local one:
    it only supplies the special-token ids; the benchmark feeds ids itself."""
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            config = mllm_config(FULL)
            mllm, head = LlavaV1(config), EditHead(FULL.edit_head())
            unet, vae = UNet2DConditionModel(**SD15_UNET), AutoencoderKL(**SD15_VAE)
    finally:
        torch.set_default_dtype(torch.float32)
    for module in (mllm, head, unet, vae):
        module.eval()
    tokenizer = load_tokenizer(tokenizer_dir)
    pipe = build_pipeline(unet, vae, EulerAncestralDiscreteScheduler(**IP2P_SCHEDULER))
    emb = torch.randn(8, config.text.hidden_size, device=device, dtype=dtype) * 0.02
    return MGIE(mllm, head, emb, tokenizer, None, pipe)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time in seconds of `fn()` over `repeats` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.inference_mode()
def stage_times(m: MGIE, size: int, tokens: int, repeats: int) -> dict[str, float]:
    device, dtype = m.device, m.mllm.projector.weight.dtype
    vision_size = m.mllm.config.vision.image_size
    pixels = torch.randn(1, 3, vision_size, vision_size, device=device, dtype=dtype)
    ids = m.prompt_ids("make the frame red")
    features = m.mllm.encode_image(pixels)
    embeds = m.mllm.embed_with_image(ids, features, m.im_start_id)
    never = lambda _ids: False  # noqa: E731
    decode = lambda n: greedy_decode(m.mllm.llm, ids, embeds, n, 3, never)  # noqa: E731
    states = torch.randn(1, 8, m.mllm.config.text.hidden_size, device=device, dtype=dtype)
    unet, vae = m.pipe.unet, m.pipe.vae
    latent = torch.randn(3, 8, size // 8, size // 8, device=device, dtype=dtype)
    cond = torch.randn(3, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    image = torch.randn(1, 3, size, size, device=device, dtype=dtype)
    out = {
        "prompt_tokens": float(ids.shape[1]),
        "vision_ms": 1e3 * timed(lambda: m.mllm.encode_image(pixels), device, repeats),
        "prefill_ms": 1e3 * timed(lambda: decode(1), device, repeats),
    }
    t_full = timed(lambda: decode(tokens), device, max(1, repeats // 2))
    out["decode_tok_per_s"] = (tokens - 1) / max(t_full - out["prefill_ms"] / 1e3, 1e-9)
    out["edit_head_ms"] = 1e3 * timed(lambda: m.head(states, m.img_embeddings), device, repeats)
    out["unet_ms_per_step_batch3"] = 1e3 * timed(lambda: unet(latent[:, :8], 500, cond), device, repeats)
    out["vae_encode_ms"] = 1e3 * timed(lambda: vae.encode(image).latent_dist.mode(), device, repeats)
    out["vae_decode_ms"] = 1e3 * timed(lambda: vae.decode(latent[:1, :4]).sample, device, repeats)
    return out


def render_vs_diffusers(m: MGIE, size: int, steps: int, repeats: int) -> dict[str, float]:
    """Alternate `MGIE.render` and a direct call of the stock pipeline on the same components; medians."""
    source = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
    guidance = m.guidance_from_states(
        torch.zeros(8, m.mllm.config.text.hidden_size, device=m.device),
        instruction="x",
        expressive="x",
        raw_text="x",
        source="user",
    )
    params = EditParams(steps=steps, resolution=Resolution(size=size))
    stock = StableDiffusionInstructPix2PixPipeline(**m.pipe.components, requires_safety_checker=False)
    stock.set_progress_bar_config(disable=True)

    def ours() -> Image.Image:
        return m.render(source, guidance, params).image

    def theirs() -> Image.Image:
        generator = torch.Generator(device=m.device).manual_seed(params.seed)
        with torch.inference_mode():
            return stock(
                image=source,
                prompt_embeds=guidance.prompt_embeds,
                num_inference_steps=steps,
                negative_prompt_embeds=guidance.negative_prompt_embeds,
                generator=generator,
            ).images[0]

    identical = np.array_equal(np.asarray(ours()), np.asarray(theirs()))  # also the warm-up
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(ours, m.device, 1))
        b.append(timed(theirs, m.device, 1))
    ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
    return {
        "render_s": statistics.median(a),
        "diffusers_s": statistics.median(b),
        "ratio": ratio,
        "identical_image": float(identical),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m editor.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny", help="model size")
    parser.add_argument("--resolution", type=int, default=None, help="image side (default: 64 tiny, 512 full)")
    parser.add_argument("--steps", type=int, default=None, help="render steps (default: 20 tiny, 50 full)")
    parser.add_argument("--tokens", type=int, default=64, help="decoded tokens for the tokens/s figure")
    parser.add_argument("--repeats", type=int, default=5)
    add_load_arguments(parser, weights_dir=False)
    args = parser.parse_args(argv)
    placement = load_options(args).resolve()
    device, dtype = placement.run_on, placement.dtype
    full = args.size == "full"
    size, steps = args.resolution or (512 if full else 64), args.steps or (50 if full else 20)
    with tempfile.TemporaryDirectory() as tmp:
        root = build_tiny_mgie_tree(Path(tmp))
        start = time.perf_counter()
        home = placement.load_on
        if full:
            m = full_size_mgie(home, dtype, MGIEPaths.from_weights_dir(root).llava)
        else:
            m = load_mgie(MGIEPaths.from_weights_dir(root), options=LoadOptions(home, dtype))
        if placement.offload:
            m.enable_offload(device)
        load_s = time.perf_counter() - start
    mode = "offload" if args.offload else "resident"
    print(
        f"# MGIE bench: {args.size} weights ({mode}), {device} {dtype}, {size}x{size}, {steps} steps, "
        f"torch {torch.__version__}"
    )
    print(f"build/load_s                 {load_s:10.3f}")
    peaks = {}
    for stage, run in (
        ("think", lambda: stage_times(m, size, args.tokens, args.repeats)),
        ("render", lambda: render_vs_diffusers(m, size, steps, args.repeats)),
    ):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with m._on_device() if stage == "think" else contextlib.nullcontext():
            results = run()
        for name, value in results.items():
            print(f"{name:28s} {value:10.3f}")
        if device.type == "cuda":
            peaks[stage] = torch.cuda.max_memory_allocated(device) / 2**30
    for stage, peak in peaks.items():
        print(f"{'peak_gpu_memory_' + stage + '_gb':28s} {peak:10.3f}")


if __name__ == "__main__":
    main()
