"""The diffusion stage shared by every editor: diffusers' stock `StableDiffusionInstructPix2PixPipeline`.

MGIE (apple/ml-mgie demo.ipynb cell 3-4) drives this very pipeline through `prompt_embeds` /
`negative_prompt_embeds`; we do the same, so guidance order ([cond, null, null] with image latents [z, z, 0]),
the on/off rule (text > 1 and image >= 1) and the Euler-ancestral noise draws are diffusers' own.
Each render runs on its own shallow copy of the pipeline with a fresh scheduler (`render_pipeline`): the models are
shared, the per-run state (timesteps, step index, guidance scales) is not.
"""

from __future__ import annotations

import copy
import secrets
import time
from dataclasses import replace

import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image

from editor.core import EditResult, Guidance, Step, StepCallback
from editor.images import ImageSource, load_image, prepare_image
from editor.params import EditParams
from editor.preview import LatentPreview


def build_pipeline(unet, vae, scheduler) -> StableDiffusionInstructPix2PixPipeline:
    """The IP2P pipeline without text encoder, tokenizer or safety checker: conditioning arrives as embeddings."""
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def offload_target(device: torch.device | str) -> torch.device:
    """The device `--offload` moves weights to; the CPU is refused with the fix."""
    device = torch.device(device)
    if device.type == "cpu":
        raise ValueError("--offload moves weights between the CPU and a GPU; without a GPU, leave it out")
    return device


def offload_pipeline(pipe: StableDiffusionInstructPix2PixPipeline, device: torch.device | str) -> torch.device:
    """Low-VRAM mode for the diffusion stage: diffusers' model CPU offload (accelerate hooks move each model to
    `device` while it runs)."""
    device = offload_target(device)
    pipe.enable_model_cpu_offload(device=device)
    return device


def native_size(pipe: StableDiffusionInstructPix2PixPipeline) -> int:
    """The image side the UNet was trained at: latent sample_size x the VAE's downsampling (SD-1.5: 64 x 8)."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def render_pipeline(pipe: StableDiffusionInstructPix2PixPipeline) -> StableDiffusionInstructPix2PixPipeline:
    """A shallow copy of `pipe` with a new scheduler made from the pipeline's own scheduler config. A scheduler keeps
    per-run state (timesteps, sigmas, step index) and the pipeline per-call attributes (guidance scales, number of
    timesteps); a render that owns both cannot be disturbed by another render still stepping (a cancelled render
    stops only at its next step). The models are the same objects; the scheduler costs microseconds to build."""
    own = copy.copy(pipe)
    own.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    return own


def fresh_seed() -> int:
    return secrets.randbelow(2**32)


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """Noise comes from a generator on the execution device, like the reference (a CUDA generator on GPU), so a
    seed reproduces the reference's image on the same kind of device (docs/mgie.md G16)."""
    return torch.Generator(device=device).manual_seed(seed)


@torch.inference_mode()
def run_ip2p(
    pipe: StableDiffusionInstructPix2PixPipeline,
    source: Image.Image,
    prompt_embeds: torch.Tensor,
    negative_prompt_embeds: torch.Tensor,
    params: EditParams,
    on_step: StepCallback | None = None,
) -> tuple[Image.Image, EditParams, dict[str, float]]:
    """One edit; returns (image, params with the seed used, stats)."""
    seed = params.seed if params.seed is not None else fresh_seed()
    pipe = render_pipeline(pipe)
    device = pipe._execution_device
    dtype = pipe.unet.dtype

    fitted: list[LatentPreview] = []  # the preview map, fitted on first use from the pipeline's image latents

    def step_end(_pipe, step: int, _timestep, kwargs: dict) -> dict:
        latents, image_latents = kwargs["latents"], kwargs["image_latents"]

        def preview() -> Image.Image:
            if not fitted:
                fitted.append(LatentPreview(image_latents[:1], source, pipe.vae.config.scaling_factor))
            return fitted[0](latents)

        on_step(Step(step + 1, params.steps, latents, preview))
        return {}

    start = time.perf_counter()
    image = pipe(
        image=source,
        prompt_embeds=prompt_embeds.to(device, dtype),
        negative_prompt_embeds=negative_prompt_embeds.to(device, dtype),
        num_inference_steps=params.steps,
        guidance_scale=params.text_guidance,
        image_guidance_scale=params.image_guidance,
        generator=make_generator(device, seed),
        callback_on_step_end=step_end if on_step else None,
        callback_on_step_end_tensor_inputs=["latents", "image_latents"],
    ).images[0]
    return image, replace(params, seed=seed), {"render_s": time.perf_counter() - start}


def render_edit(
    pipe: StableDiffusionInstructPix2PixPipeline,
    image: ImageSource,
    guidance: Guidance,
    params: EditParams | None = None,
    on_step: StepCallback | None = None,
) -> EditResult:
    """The diffusion stage every editor shares: size the input by `params.resolution`, run the pipeline with the
    guidance's embeddings, return the result with the seed used."""
    params = params or EditParams()
    source = prepare_image(load_image(image, draft_for=params.resolution), params.resolution)
    out, used, stats = run_ip2p(pipe, source, guidance.prompt_embeds, guidance.negative_prompt_embeds, params, on_step)
    return EditResult(image=out, source=source, guidance=guidance, params=used, stats=stats)
