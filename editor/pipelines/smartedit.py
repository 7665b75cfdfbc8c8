"""SmartEdit (TencentARC, CVPR 2024) behind the think/render API, loaded from the official folders.

    think:  image -> CLIP ViT-L/14 (224 px, penultimate layer, CLS dropped) = v_clip -> projector -> LLaVA-1.1 LLM
            (LoRA merged) writes a sentence and <img_0..31>; the final-norm states at the <img_i> inputs -> SD-QFormer
            -> c_q [77 x 768] -> BIM(v_clip, c_q) -> text condition c = c_q + 0.5 r_txt, and the BIM's image map
    render: the stock InstructPix2Pix pipeline on c (negative: IP2P's CLIP encoding of ""), with the BIM image map
            resized to the latent grid, through the 1x1 zero conv, added after the UNet's conv_in in every branch

Faithful to docs/smartedit.md §2 except, on purpose: decoding is greedy with the first (deterministic) template by
default, where the reference samples at T=0.7 with a random template (`SmartEditDecode(temperature=0.7)` and a
seed give that back, reproducibly); the whole model runs in one dtype (fp16 on GPU) where the reference runs the
MLLM in fp32; seeds are fixed (EditParams) where the reference draws them unseeded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image
from transformers import CLIPImageProcessorPil, CLIPTextModel, CLIPTokenizer

from editor.core import EditResult, Guidance, StepCallback
from editor.images import ImageSource, load_image, prepare_image
from editor.layouts.folders import download_command
from editor.loading import (
    CheckpointError,
    MissingWeightsError,
    assign_state,
    build_empty,
    check_keys,
    clip_vision_config,
    expected_shapes,
    llama_config_from_llava,
    load_ip2p_shell,
    open_tensors,
    read_clip_vision_state,
    read_json,
    read_state_dict,
    require,
    weight_files,
)
from editor.models.bim import BidirectionalInteractionModule, BIMConfig, text_condition
from editor.models.bim import released_to_module as bim_keys
from editor.models.llava import LlavaV1, LlavaV1Config
from editor.models.qformer import SDQFormer, SDQFormerConfig
from editor.models.qformer import released_to_module as qformer_keys
from editor.models.smartedit_llm import (
    ADDED_TOKENS,
    DEFAULT_HUMAN_TEMPLATE,
    IMG_I_TOKENS,
    added_token_id,
    assemble_llm_state,
    build_prompt_ids,
    encode_like_slow_llama,
    generate_img_states,
    load_sentencepiece,
    merge_lora,
    splice_image,
)
from editor.models.unet_residual import residual_after_conv_in
from editor.params import EditParams
from editor.pipelines.diffusion import build_pipeline, offload_pipeline, render_edit
from editor.pipelines.spec import LoadOptions, ModelSpec, staged
from editor.prompts import check_text

NATIVE_SIZE = 256  # the reference's default `--resize_resolution` (384 is its other setting)
QFORMER_HEAD_WIDTH, BIM_HEAD_WIDTH = (
    64,
    128,
)  # BERT-base: 768 / 12 heads; BIM: 1024 / 8 (head counts are not in tensors)


@dataclass(frozen=True)
class SmartEditPaths:
    smartedit: Path  # SmartEdit-7B/ (LLM-15000/, embeddings_qformer/, modulate-15000/, unet-15000/)
    llava: Path  # LLaVA-7B-v1/: rows 0..V-1 of the embeddings and lm_head
    vicuna: Path  # vicuna-7b-v1-1/: LLaMA config and tokenizer.model
    clip: Path  # clip-vit-large-patch14/
    ip2p: Path  # instruct-pix2pix/: VAE, scheduler, UNet config, text encoder for the empty prompt


@dataclass(frozen=True)
class SmartEditDecode:
    temperature: float = 0.0  # the reference samples at 0.7; greedy here unless asked
    seed: int | None = None  # sampling generator seed (temperature > 0)
    template: str = DEFAULT_HUMAN_TEMPLATE
    max_new_tokens: int = 512


@dataclass
class SmartEdit:
    mllm: LlavaV1  # LLaMA (LoRA merged, V + 35 rows) + CLIP tower + projector
    qformer: SDQFormer
    bim: BidirectionalInteractionModule
    sp: object  # SentencePiece processor of the Vicuna tokenizer
    image_processor: CLIPImageProcessorPil
    pipe: StableDiffusionInstructPix2PixPipeline
    null_embeds: torch.Tensor  # IP2P's text encoder on "", 1 x 77 x 768
    name: str = "smartedit-7b"
    decode: SmartEditDecode = field(default_factory=SmartEditDecode)
    defaults: EditParams = field(default_factory=EditParams)
    offload_device: torch.device | None = None  # low VRAM: the MLLM side waits on the CPU between thinks

    @property
    def device(self) -> torch.device:
        return next(self.mllm.parameters()).device

    def enable_offload(self, device: torch.device | str) -> None:
        """The LLM, QFormer and BIM move to `device` only while thinking; the UNet and VAE through diffusers' model
        CPU offload. Peak GPU memory: the larger stage instead of the sum (as the reference's del-and-reload)."""
        self.offload_device = offload_pipeline(self.pipe, device)

    @contextmanager
    def _staged(self) -> Iterator[None]:
        """The MLLM side's weights where the stage runs (spec.staged)."""
        with staged((self.mllm, self.qformer, self.bim), self.offload_device):
            yield

    @property
    def native_size(self) -> int:
        return NATIVE_SIZE

    def _vision(self, image: ImageSource) -> torch.Tensor:
        """v_clip [1, N, C]: the image resized to the tower's square input (aspect not kept, as the reference)."""
        side = self.mllm.config.vision.image_size
        square = load_image(image).resize((side, side), Image.Resampling.BICUBIC)
        pixels = self.image_processor(images=square, return_tensors="pt").pixel_values
        return self.mllm.patch_features(pixels.to(self.device, self.mllm.projector.weight.dtype))

    def _guidance(self, v_clip: torch.Tensor, states: torch.Tensor, **fields) -> Guidance:
        c_q = self.qformer(states[None].to(v_clip.dtype))  # 1 x 77 x 768
        r_txt, image_map = self.bim.interact(v_clip, c_q)
        return Guidance(
            model=self.name, prompt_embeds=text_condition(c_q, r_txt), negative_prompt_embeds=self.null_embeds,
            image_features=image_map, **fields,
        )  # fmt: skip

    @torch.inference_mode()
    def think(self, image: ImageSource, instruction: str) -> Guidance:
        with self._staged():
            return self._think(image, instruction)

    def _think(self, image: ImageSource, instruction: str) -> Guidance:
        instruction = check_text(instruction, reserved=ADDED_TOKENS)
        v_clip = self._vision(image)
        ids = build_prompt_ids(self.sp, instruction, self.decode.template)
        generator = None
        if self.decode.temperature > 0 and self.decode.seed is not None:
            generator = torch.Generator(self.device).manual_seed(self.decode.seed)
        out = generate_img_states(
            self.mllm.llm, self.sp, ids, self.mllm.projector(v_clip), max_new_tokens=self.decode.max_new_tokens,
            temperature=self.decode.temperature, generator=generator,
        )  # fmt: skip
        if out.states.shape[0] != len(IMG_I_TOKENS):
            raise RuntimeError(
                f"SmartEdit wrote {out.states.shape[0]} of its {len(IMG_I_TOKENS)} image tokens (text: {out.text!r}); "
                "a wrongly converted LLaVA or LLM checkpoint does this (TencentARC/SmartEdit#8)"
            )
        raw = self.sp.decode([t for t in out.ids if t < self.sp.get_piece_size()])
        return self._guidance(v_clip, out.states, instruction=instruction, expressive=out.text, raw_text=raw)

    @torch.inference_mode()
    def guidance_from_text(self, image: ImageSource, instruction: str, expressive_text: str) -> Guidance:
        """Teacher-force "<text> <img_0> ... <img_31>" after the prompt (the training answer format) and keep the
        states at the <img_i> inputs, as decoding would."""
        with self._staged():
            return self._from_text(image, instruction, expressive_text)

    def _from_text(self, image: ImageSource, instruction: str, expressive_text: str) -> Guidance:
        instruction = check_text(instruction, reserved=ADDED_TOKENS)
        text = check_text(expressive_text, name="expressive instruction", reserved=ADDED_TOKENS)
        v_clip = self._vision(image)
        prompt = build_prompt_ids(self.sp, instruction, self.decode.template)
        answer = encode_like_slow_llama(self.sp, f"{text} {' '.join(IMG_I_TOKENS)}")[1:]  # without BOS
        first_img = added_token_id(self.sp, IMG_I_TOKENS[0])
        embed = self.mllm.llm.get_input_embeddings()
        head = splice_image(self.mllm.llm, prompt, self.mllm.projector(v_clip), first_img)  # <img_0> = the image
        tail = embed(torch.tensor([answer], device=head.device))
        states = self.mllm.final_states(torch.cat([head, tail], dim=1))[0]
        where = [head.shape[1] + j for j, t in enumerate(answer) if t >= first_img]
        return self._guidance(v_clip, states[where], instruction=instruction, expressive=text, raw_text=text,
                              source="user")  # fmt: skip

    def render(
        self,
        image: ImageSource,
        guidance: Guidance,
        params: EditParams | None = None,
        on_step: StepCallback | None = None,
    ) -> EditResult:
        if guidance.image_features is None:
            raise ValueError("SmartEdit renders only guidance it made itself (it carries the BIM's image map)")
        params = params or EditParams()
        source = prepare_image(load_image(image, draft_for=params.resolution), params.resolution)
        factor = 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)
        with torch.inference_mode():
            r_img = self.bim.image_residual(guidance.image_features, (source.height // factor, source.width // factor))
        with residual_after_conv_in(self.pipe.unet, r_img):
            return render_edit(self.pipe, source, guidance, params, on_step)


def _one(folder: Path, pattern: str, hint: str) -> Path:
    """The single file matching `pattern` (safetensors preferred over a pickle of the same name)."""
    found = sorted(folder.glob(pattern), key=lambda p: p.suffix != ".safetensors")
    if not found:
        raise MissingWeightsError(f"no {pattern} in {folder}\n  How to get it: {hint}")
    return found[0]


def load_smartedit(
    paths: SmartEditPaths | Sequence[Path],
    *,
    name: str = "smartedit-7b",
    options: LoadOptions = LoadOptions(),  # noqa: B008 - frozen
) -> SmartEdit:
    """Load SmartEdit from the folders as downloaded; every size from configs and tensor shapes (7B, 13B, tiny)."""
    paths = paths if isinstance(paths, SmartEditPaths) else SmartEditPaths(*paths)
    placement = options.resolve()
    device, dtype = placement.load_on, placement.dtype
    hint = f"`{download_command(name)}`"
    for folder in (paths.smartedit, paths.llava, paths.vicuna, paths.clip, paths.ip2p):
        if not folder.is_dir():
            raise MissingWeightsError(f"folder not found: {folder}\n  How to get it: {hint}")
    # 1. the LLM: LoRA merged, new vocabulary rows from SmartEdit, the rest from LLaVA-1.1
    sp = load_sentencepiece(require(paths.vicuna / "tokenizer.model", "Vicuna tokenizer", hint))
    llm_file = _one(paths.smartedit, "LLM-*/adapter_model.*", hint)
    adapter_config = llm_file.parent / "adapter_config.json"  # not at the top level upstream (docs/smartedit.md §3.2)
    merged = merge_lora(read_state_dict(llm_file, hint), adapter_config=read_json(adapter_config, hint)
                        if adapter_config.exists() else None)  # fmt: skip
    qformer_file = read_state_dict(_one(paths.smartedit, "embeddings_qformer/*", hint), hint)
    llava_files = weight_files(paths.llava, hint)
    if not llava_files:
        raise MissingWeightsError(f"no LLaVA weights in {paths.llava}\n  How to get it: {hint}")
    llava_refs = open_tensors(llava_files, hint)  # lazy: only the two vocabulary matrices are read
    llava = {k: llava_refs[k].load() for k in ("model.embed_tokens.weight", "lm_head.weight") if k in llava_refs}
    llm_state = assemble_llm_state(merged, llava, qformer_file, base_vocab_size=sp.get_piece_size())
    rows = llm_state["lm_head.weight"].shape[0]
    config = LlavaV1Config(
        text=llama_config_from_llava(read_json(paths.vicuna / "config.json", hint), vocab_size=rows),
        vision=clip_vision_config(paths.clip, hint),
    )
    mllm = build_empty(LlavaV1, config)
    vision_keys = expected_shapes(mllm.vision)
    state = {"llm." + k: v for k, v in llm_state.items()}
    state |= {"vision." + k: v for k, v in read_clip_vision_state(paths.clip, hint, vision_keys).items()}
    state |= {"projector." + k.removeprefix("mm_projector."): v for k, v in qformer_file.items() if "mm_projector" in k}
    check_keys(expected_shapes(mllm), state, f"{paths.smartedit} + {paths.llava} + {paths.clip}", hint)
    assign_state(mllm, state, dtype)
    # 2. SD-QFormer and BIM
    q_config = SDQFormerConfig.from_state_dict(qformer_file, heads=1)
    q_config = replace(q_config, heads=max(1, q_config.hidden // QFORMER_HEAD_WIDTH))
    qformer = build_empty(SDQFormer, q_config)
    q_state = qformer_keys(qformer_file)
    check_keys(expected_shapes(qformer), q_state, "embeddings_qformer (sd_qformer.*, sd_query_tokens)", hint)
    assign_state(qformer, q_state, dtype)
    bim_file = read_state_dict(_one(paths.smartedit, "modulate-*/adapter_model.*", hint), hint)
    b_config = BIMConfig.from_state_dict(bim_file, heads=1)
    b_config = replace(b_config, heads=max(1, b_config.embed_dim // BIM_HEAD_WIDTH))
    bim = build_empty(BidirectionalInteractionModule, b_config)
    check_keys(expected_shapes(bim), bim_keys(bim_file), "modulate (BIM)", hint)
    assign_state(bim, bim_keys(bim_file), dtype)
    if b_config.embed_dim != config.vision.hidden_size or q_config.encoder_width != config.text.hidden_size:
        raise CheckpointError(f"SmartEdit's BIM/QFormer widths do not fit this CLIP/LLM; mixed sizes? {hint}")
    # 3. the diffusion side: IP2P's VAE + scheduler, the SD-1.5 UNet architecture filled with SmartEdit's UNet
    unet_file = _one(paths.smartedit, "unet-*/adapter_model.*", hint)
    unet_state = {k.removeprefix("unet."): v for k, v in read_state_dict(unet_file, hint).items()}
    unet, vae, scheduler = load_ip2p_shell(paths.ip2p, unet_state, str(unet_file), dtype, hint)
    null_embeds = _empty_prompt(paths.ip2p, dtype, hint)
    processor = CLIPImageProcessorPil.from_pretrained(require(paths.clip / "preprocessor_config.json", "CLIP "
                                                              "preprocessor config", hint).parent)  # fmt: skip
    editor = SmartEdit(
        mllm.to(device).eval(), qformer.to(device).eval(), bim.to(device).eval(), sp, processor,
        build_pipeline(unet, vae, scheduler).to(device), null_embeds.to(device), name,
    )  # fmt: skip
    if placement.offload:
        editor.enable_offload(placement.run_on)
    return editor


@torch.inference_mode()
def _empty_prompt(ip2p: Path, dtype: torch.dtype, hint: str) -> torch.Tensor:
    """IP2P's CLIP text encoder on "" (the negative condition in all of SmartEdit's guidance branches)."""
    try:
        tokenizer = CLIPTokenizer.from_pretrained(ip2p / "tokenizer")
        encoder = CLIPTextModel.from_pretrained(ip2p / "text_encoder", dtype=dtype)
    except (OSError, ValueError) as err:
        raise MissingWeightsError(
            f"no IP2P text encoder/tokenizer in {ip2p} ({err})\n  How to get it: {hint}"
        ) from None
    ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    return encoder(ids)[0]


SPECS = tuple(  # folders: MODEL_FOLDERS (editor/layouts/folders.py), in SmartEditPaths' order
    ModelSpec.published(f"smartedit-{size}", f"SmartEdit-{size.upper()} (TencentARC, CVPR 2024)", load_smartedit)
    for size in ("13b", "7b")
)
