"""InstructPix2Pix (Brooks et al., CVPR 2023) behind the same think/render API: no MLLM, the instruction itself is
the condition, encoded by the pipeline's CLIP text encoder exactly as `StableDiffusionInstructPix2PixPipeline`
encodes `prompt` (padded to the tokenizer's max length; the null condition is the encoding of "").

"think" returns the instruction unchanged as the expressive text, so the app's flow is the same for every model;
an edited expressive text is simply encoded instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import StableDiffusionInstructPix2PixPipeline

from editor.core import EditResult, Guidance, StepCallback
from editor.images import ImageSource
from editor.layouts.folders import IP2P_FULL, Folder, download_command
from editor.loading import CheckpointError, MissingWeightsError, load_unet, load_vae, require
from editor.params import EditParams
from editor.pipelines.diffusion import native_size, offload_pipeline, render_edit
from editor.pipelines.spec import GET_DEMO, LoadOptions, ModelSpec, demo_folder, folder_defaults
from editor.prompts import check_text


class InstructPix2Pix:
    def __init__(
        self,
        pipe: StableDiffusionInstructPix2PixPipeline,
        name: str = "ip2p",
        defaults: EditParams = EditParams(),  # noqa: B008 - frozen
    ) -> None:
        self.pipe, self.name, self.defaults = pipe, name, defaults
        self.device = pipe._execution_device
        self.null_embeds = self._encode("")

    @property
    def native_size(self) -> int:
        """The resolution this model was trained at (the UI's default size)."""
        return native_size(self.pipe)

    @torch.inference_mode()
    def _encode(self, text: str) -> torch.Tensor:
        tokenizer = self.pipe.tokenizer
        ids = tokenizer(
            text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return self.pipe.text_encoder(ids.to(self.device))[0]  # 1 x 77 x C

    def _guidance(self, instruction: str, text: str, source) -> Guidance:
        return Guidance(
            model=self.name, instruction=instruction, expressive=text, raw_text=text,
            prompt_embeds=self._encode(text), negative_prompt_embeds=self.null_embeds, source=source,
        )  # fmt: skip

    def think(self, image: ImageSource, instruction: str) -> Guidance:
        instruction = check_text(instruction)
        return self._guidance(instruction, instruction, "instruction")

    def guidance_from_text(self, image: ImageSource, instruction: str, expressive_text: str) -> Guidance:
        instruction = check_text(instruction)
        return self._guidance(instruction, check_text(expressive_text, name="expressive instruction"), "user")

    def render(
        self,
        image: ImageSource,
        guidance: Guidance,
        params: EditParams | None = None,
        on_step: StepCallback | None = None,
    ) -> EditResult:
        return render_edit(self.pipe, image, guidance, params, on_step)


def load_ip2p(
    paths: Sequence[Path],
    *,
    name: str = "ip2p",
    options: LoadOptions = LoadOptions(),  # noqa: B008 - frozen
    hint: str | None = None,
    defaults: EditParams = EditParams(),  # noqa: B008 - frozen
) -> InstructPix2Pix:
    """A diffusers InstructPix2Pix folder, `paths[0]` (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    scheduler/). `hint` (default: the download command of `name`) ends every error. With `options.offload`:
    diffusers' model CPU offload (each model moves to the GPU while it runs)."""
    (folder,) = paths
    hint = download_command(name) if hint is None else hint
    placement = options.resolve()  # refuses --offload without a GPU before anything loads
    dtype = placement.dtype
    require(folder / "model_index.json", "InstructPix2Pix pipeline folder", hint)
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (folder / part).is_dir():
            raise MissingWeightsError(f"{folder} has no {part}/ folder; the download is incomplete. {hint}")
    # The VAE and UNet by the classes their configs name (the demo's patch codec and source-skip UNet), each with
    # its own clear error, outside the pipeline's catch-all below.
    vae, unet = load_vae(folder / "vae", dtype, hint), load_unet(folder / "unet", dtype, hint)
    try:
        pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            folder, vae=vae, unet=unet, dtype=dtype,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"could not load {folder} as an InstructPix2Pix pipeline ({err}). {hint}") from None
    pipe.set_progress_bar_config(disable=True)
    if placement.offload:
        offload_pipeline(pipe, placement.run_on)
    else:
        pipe.to(placement.load_on)
    return InstructPix2Pix(pipe, name, defaults)


def load_ip2p_demo(paths: Sequence[Path], *, name: str, options: LoadOptions) -> InstructPix2Pix:
    """The demo model's InstructPix2Pix-style ablation, at the settings its folder records (spec.folder_defaults)."""
    return load_ip2p(paths, name=name, options=options, hint=GET_DEMO, defaults=folder_defaults(paths[0]))


DEMO_FOLDER = Folder("ip2p", IP2P_FULL.needs)  # weights/demo/ip2p/
SPECS = (
    ModelSpec.published("magicbrush", "MagicBrush (InstructPix2Pix fine-tuned on MagicBrush)", load_ip2p),
    ModelSpec.published("instruct-pix2pix", "InstructPix2Pix (Brooks et al., CVPR 2023)", load_ip2p),
    ModelSpec(
        "ip2p-demo", "Offline demo ablation: InstructPix2Pix-style, terse instruction only", (DEMO_FOLDER,), GET_DEMO,
        load_ip2p_demo, root=lambda weights_dir: demo_folder(weights_dir, DEMO_FOLDER.name).parent,
        downloadable=False,
    ),
)  # fmt: skip
