"""MGIE (Fu et al., ICLR 2024; apple/ml-mgie): an MLLM writes an expressive instruction + 8 [IMG] tokens; an edit
head turns their hidden states into the condition of an InstructPix2Pix UNet.

Recipe (docs/mgie.md §2.11):
  think:  image -> CLIP penultimate patches -> projector -> spliced into the vicuna_v1_1 prompt -> greedy decoding
          (<= 96 tokens, trigram ban over prompt + output) -> final-norm states H[k-1 : k+7], k = first [IMG0]
          -> edit head -> prompt_embeds; the decoded text -> `clean_expressive`.
  render: the stock diffusers IP2P pipeline with prompt_embeds = E and negative_prompt_embeds = NULL, where
          NULL = edit_head(zeros, emb) is computed once at load.
Deviation: decoding stops one token after [IMG7] instead of running to 96 tokens (the reference's legacy eos id
never fires, docs/mgie.md G7). The 8 states are identical either way because the model is causal and that extra token
keeps the reference's window clamp inactive; the text shown is cut at [IMG0] anyway.
Loading (`load_mgie`) reads the released files through editor/pipelines/mgie_checkpoint.py, one checked part at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPImageProcessorPil

from editor.core import EditResult, Guidance, StepCallback
from editor.images import ImageSource, load_image
from editor.layouts.folders import MODEL_FOLDERS
from editor.loading import CheckpointError, MissingWeightsError, load_ip2p_shell, read_state_dict, require
from editor.models.edit_head import EditHead
from editor.models.llava import LlavaV1, greedy_decode
from editor.models.slow_llama import SlowLlamaTokenizer
from editor.params import EditParams
from editor.pipelines.diffusion import build_pipeline, native_size, offload_pipeline, render_edit
from editor.pipelines.mgie_checkpoint import (
    GET_CLIP,
    GET_IP2P,
    GET_LLAVA,
    GET_MGIE,
    check_vocab,
    load_tokenizer,
    read_edit_head,
    read_llava,
    read_mllm_state,
    weights_file,
)
from editor.pipelines.spec import (
    GET_DEMO,
    LoadOptions,
    ModelSpec,
    demo_folder,
    folder_defaults,
    staged,
)
from editor.prompts import (
    EOS,
    IM_END,
    IM_PATCH,
    IM_START,
    IMG_TOKENS,
    RESERVED_TOKENS,
    check_text,
    clean_expressive,
    mgie_answer,
    mgie_prompt,
)

FOLDERS = MODEL_FOLDERS["mgie-7b"]  # the official layout: LLaVA-7B-v1, mgie_7b, instruct-pix2pix, CLIP, as MGIEPaths


@dataclass(frozen=True)
class MGIEPaths:
    llava: Path
    mgie: Path
    ip2p: Path
    clip: Path

    @classmethod
    def from_weights_dir(cls, weights_dir: str | Path) -> MGIEPaths:
        """The four folders of a tree written under one root (a tiny tree, an export); the registry's specs find
        the downloads, which may be moved by EDITOR_*_DIR (ModelSpec.paths)."""
        return cls(*(Path(weights_dir) / folder.name for folder in FOLDERS))


@dataclass(frozen=True)
class DecodeConfig:
    max_new_tokens: int = 96
    no_repeat_ngram_size: int = 3
    stop_after_img: bool = True  # False decodes all max_new_tokens, as the reference does


def img_window_start(ids: list[int], num_states: int, img0_id: int, n: int = len(IMG_TOKENS)) -> int:
    """First of the n states fed to the edit head: min(k - 1, len(H) - n - 1), k = first [IMG0] in ids; without
    [IMG0], the reference's fallback len(H) - n - 1 (the n states before the last one; docs/mgie.md §2.6, G13)."""
    fallback = num_states - n - 1
    return min(ids.index(img0_id) - 1, fallback) if img0_id in ids else fallback


def prompt_token_ids(tokenizer: SlowLlamaTokenizer, instruction: str, num_patches: int) -> list[int]:
    """The inference prompt's ids, BOS first, no EOS, as the reference's slow tokenizer gave them (slow_llama.py):
    the newline before `<im_start>` and the space after `<im_end>` are stripped, so neither is a token."""
    return tokenizer.encode(mgie_prompt(instruction, num_patches))


def training_token_ids(
    tokenizer: SlowLlamaTokenizer, instruction: str, expressive: str, num_patches: int
) -> tuple[list[int], int]:
    """(ids, prompt length) of the training sequence: prompt + "<expressive> [IMG0] ... [IMG7]</s>" tokenized in one
    call, as apple/ml-mgie mgie_train.py does. The spaces around the [IMG] tokens are stripped, so the 8 ids sit back
    to back after the text. The prompt's ids are a prefix (checked), so inference and training share them; the demo
    model trains on exactly these ids (editor.demo.stages)."""
    prompt = prompt_token_ids(tokenizer, instruction, num_patches)
    ids = tokenizer.encode(mgie_prompt(instruction, num_patches) + mgie_answer(expressive) + EOS)
    if ids[: len(prompt)] != prompt:
        raise ValueError(f"the prompt's ids are not a prefix of the training sequence for {expressive!r}")
    return ids, len(prompt)


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class MGIE:
    def __init__(
        self,
        mllm: LlavaV1,
        head: EditHead,
        img_embeddings: torch.Tensor,
        tokenizer,
        image_processor,
        pipe,
        decode: DecodeConfig = DecodeConfig(),
        name: str = "mgie",
        defaults: EditParams = EditParams(),  # noqa: B008 - frozen
    ) -> None:
        self.mllm, self.head, self.pipe = mllm, head, pipe
        self.tokenizer, self.image_processor, self.decode = tokenizer, image_processor, decode
        self.name, self.defaults = name, defaults
        self.device = next(mllm.parameters()).device
        self.img_embeddings = img_embeddings.to(self.device, next(head.parameters()).dtype)  # 8 x hidden
        ids = tokenizer.convert_tokens_to_ids([IM_PATCH, IM_START, IM_END, *IMG_TOKENS])
        self.im_start_id, self.img_ids = ids[1], ids[3:]
        self.num_patches = mllm.config.num_patches
        with torch.inference_mode():
            zeros = torch.zeros(1, len(IMG_TOKENS), self.img_embeddings.shape[-1], device=self.device)
            self.null_embeds = head(zeros.to(self.img_embeddings.dtype), self.img_embeddings)  # 1 x 77 x C

        self.offload_device: torch.device | None = None

    @property
    def native_size(self) -> int:
        """The resolution this model was trained at (the UI's default size)."""
        return native_size(self.pipe)

    def enable_offload(self, device: torch.device | str) -> None:
        """Low-VRAM mode: the MLLM and edit head wait on the CPU and move to `device` only while thinking; the UNet
        and VAE move per call through diffusers' model CPU offload (accelerate hooks). Peak GPU memory is then
        max(LLM stage, diffusion stage) instead of their sum."""
        self.offload_device = offload_pipeline(self.pipe, device)

    @contextmanager
    def _on_device(self) -> Iterator[None]:
        """The MLLM stage's weights (and the [IMG] embeddings it adds) where the stage runs (spec.staged)."""
        with staged((self.mllm, self.head), self.offload_device) as device:
            home, embeddings = self.device, self.img_embeddings
            self.device, self.img_embeddings = device, embeddings.to(device)
            try:
                yield
            finally:
                self.device, self.img_embeddings = home, embeddings

    # --- stage 1: the MLLM ------------------------------------------------------------------------------------

    def prompt_ids(self, instruction: str) -> torch.Tensor:
        """1 x L prompt ids (`prompt_token_ids`)."""
        return torch.tensor([prompt_token_ids(self.tokenizer, instruction, self.num_patches)], device=self.device)

    def teacher_forced_ids(self, instruction: str, expressive: str) -> torch.Tensor:
        """1 x L ids of prompt + "<expressive> [IMG0] ... [IMG7]": the training sequence without its closing </s>."""
        ids, _ = training_token_ids(self.tokenizer, instruction, expressive, self.num_patches)
        return torch.tensor([ids[:-1]], device=self.device)

    def _pixels(self, image: ImageSource) -> torch.Tensor:
        """`image` as the CLIP tower takes it: 1 x 3 x S x S on the model's device and dtype."""
        pixels = self.image_processor(images=load_image(image), return_tensors="pt").pixel_values
        return pixels.to(self.device, self.mllm.projector.weight.dtype)

    @torch.inference_mode()
    def _embed(self, image: ImageSource, ids: torch.Tensor) -> torch.Tensor:
        features = self.mllm.encode_image(self._pixels(image))  # 1 x N x hidden
        return self.mllm.embed_with_image(ids, features, self.im_start_id)

    @torch.inference_mode()
    def image_embedding(self, image: ImageSource) -> torch.Tensor:
        """The CLIP tower's pooled output (post-layernorm CLS) for `image`: CLIP-I style similarity in the app."""
        return self.mllm.vision(pixel_values=self._pixels(image)).pooler_output[0]

    def guidance_from_states(self, states: torch.Tensor, **fields) -> Guidance:
        """Edit head on 8 x hidden LLM states -> a Guidance with the null condition as negative."""
        embeds = self.head(states[None].to(self.img_embeddings.dtype), self.img_embeddings)  # 1 x 77 x C
        return Guidance(model=self.name, prompt_embeds=embeds, negative_prompt_embeds=self.null_embeds, **fields)

    @torch.inference_mode()
    def think(self, image: ImageSource, instruction: str) -> Guidance:
        with self._on_device():
            return self._think(image, instruction)

    def _think(self, image: ImageSource, instruction: str) -> Guidance:
        instruction = check_text(instruction, reserved=RESERVED_TOKENS)
        t0 = _clock(self.device)
        # 1. prompt with the image spliced in
        ids = self.prompt_ids(instruction)
        embeds = self._embed(image, ids)
        t1 = _clock(self.device)
        # 2. greedy decoding; stop one token after [IMG7] (the window below then equals a full 96-token decode)
        num_prompt = ids.shape[1]

        def img_done(seq: list[int]) -> bool:
            new = seq[num_prompt:]
            return self.decode.stop_after_img and self.img_ids[0] in new and len(new) > new.index(self.img_ids[0]) + 8

        out = greedy_decode(
            self.mllm.llm, ids, embeds, self.decode.max_new_tokens, self.decode.no_repeat_ngram_size, img_done
        )
        t2 = _clock(self.device)
        # 3. the states that predict [IMG0..7] -> edit head
        start = img_window_start(out.ids, out.states.shape[0], self.img_ids[0])
        text = self.tokenizer.decode(out.ids)  # as the demo decodes: special tokens kept (editor.models.slow_llama)
        guidance = self.guidance_from_states(
            out.states[start : start + len(IMG_TOKENS)],
            instruction=instruction,
            expressive=clean_expressive(text),
            raw_text=self.tokenizer.decode(out.ids[num_prompt:]),
            source="generated",
        )
        new_tokens = len(out.ids) - num_prompt
        guidance.stats = {
            "prompt_tokens": num_prompt,
            "new_tokens": new_tokens,
            "found_img": float(self.img_ids[0] in out.ids[num_prompt:]),
            "encode_s": t1 - t0,
            "decode_s": t2 - t1,
            "think_s": _clock(self.device) - t0,
        }
        return guidance

    @torch.inference_mode()
    def guidance_from_text(self, image: ImageSource, instruction: str, expressive_text: str) -> Guidance:
        """Condition from a user-written expressive instruction: teacher-force "<text> [IMG0] ... [IMG7]" after the
        same prompt (the training format, apple/ml-mgie mgie_train.py:531) and read the states that predict
        [IMG0..7]. Not in any published demo: the edit then follows the user's text instead of the model's."""
        with self._on_device():
            return self._guidance_from_text(image, instruction, expressive_text)

    def _guidance_from_text(self, image: ImageSource, instruction: str, expressive_text: str) -> Guidance:
        instruction = check_text(instruction, reserved=RESERVED_TOKENS)
        expressive = check_text(expressive_text, name="expressive instruction", reserved=RESERVED_TOKENS)
        t0 = _clock(self.device)
        ids = self.teacher_forced_ids(instruction, expressive)
        states = self.mllm.final_states(self._embed(image, ids))[0]  # L x hidden
        k = ids.shape[1] - len(IMG_TOKENS)  # position of [IMG0]
        guidance = self.guidance_from_states(
            states[k - 1 : k - 1 + len(IMG_TOKENS)],
            instruction=instruction,
            expressive=expressive,
            raw_text=mgie_answer(expressive).strip(),
            source="user",
        )
        guidance.stats = {"prompt_tokens": ids.shape[1], "think_s": _clock(self.device) - t0}
        return guidance

    # --- stage 2: diffusion -----------------------------------------------------------------------------------

    def render(
        self,
        image: ImageSource,
        guidance: Guidance,
        params: EditParams | None = None,
        on_step: StepCallback | None = None,
    ) -> EditResult:
        return render_edit(self.pipe, image, guidance, params, on_step)


# --- loading the official layout ------------------------------------------------------------------------------


def load_mgie(
    paths: MGIEPaths | Sequence[Path],
    *,
    name: str = "mgie",
    options: LoadOptions = LoadOptions(),  # noqa: B008 - frozen
    decode: DecodeConfig = DecodeConfig(),
    defaults: EditParams = EditParams(),  # noqa: B008 - frozen
) -> MGIE:
    """Load MGIE from the folders exactly as downloaded. Sizes come from configs and tensor shapes. With
    `options.offload`, weights stay on the CPU and each stage moves to the GPU while it runs (MGIE.enable_offload)."""
    paths = paths if isinstance(paths, MGIEPaths) else MGIEPaths(*paths)
    placement = options.resolve()
    device, dtype = placement.load_on, placement.dtype
    for folder, hint in (
        (paths.llava, GET_LLAVA),
        (paths.mgie, GET_MGIE),
        (paths.ip2p, GET_IP2P),
        (paths.clip, GET_CLIP),
    ):
        if not folder.is_dir():
            raise MissingWeightsError(f"folder not found: {folder}\n  How to get it: {hint}")
    # 1. mllm.pt (embeddings, lm_head, edit head, [IMG] embeddings) and the tokenizer that matches its vocabulary
    mllm_file = weights_file(paths.mgie, "mllm")
    mllm_sd = read_mllm_state(mllm_file)
    tokenizer = load_tokenizer(paths.llava)
    check_vocab(tokenizer, mllm_sd["model.embed_tokens.weight"].shape[0])
    # 2. LLaVA v1: LLaMA + CLIP vision tower + projector; embeddings from mllm.pt
    mllm = read_llava(paths.llava, paths.clip, mllm_sd, mllm_file, dtype)
    # 3. the edit head and its [IMG] embeddings
    head, emb = read_edit_head(mllm_sd, mllm_file, mllm.config.text.hidden_size, dtype)
    # 4. the diffusion side: IP2P's VAE + scheduler, its UNet architecture filled with MGIE's unet.pt
    unet_file = weights_file(paths.mgie, "unet")
    unet, vae, scheduler = load_ip2p_shell(
        paths.ip2p, read_state_dict(unet_file, GET_MGIE), str(unet_file), dtype, f"{GET_IP2P}; {GET_MGIE}"
    )
    if unet.config.cross_attention_dim != head.config.out_dim:
        raise CheckpointError(
            f"edit head outputs {head.config.out_dim}-d features but the UNet cross-attends to "
            f"{unet.config.cross_attention_dim}-d ones. {GET_MGIE}"
        )
    pipe = build_pipeline(unet, vae, scheduler).to(device)
    processor = CLIPImageProcessorPil.from_pretrained(
        require(paths.clip / "preprocessor_config.json", "CLIP preprocessor config", GET_CLIP).parent
    )
    editor = MGIE(
        mllm.to(device).eval(),
        head.to(device).eval(),
        emb.to(dtype),
        tokenizer,
        processor,
        pipe,
        decode,
        name,
        defaults,
    )
    if placement.offload:
        editor.enable_offload(placement.run_on)
    return editor


# No trigram ban for the demo: the world's expressive texts repeat the instruction's words ("... at the top left turns
# blue"), which MGIE's ban over prompt + output (docs/mgie.md G8) would forbid; MGIE's own training targets were
# written under such a ban, these were not.
DEMO_DECODE = DecodeConfig(no_repeat_ngram_size=0)
DEMO_PART = "mgie"  # the demo model's four folders sit in <weights_dir>/demo/mgie (spec.demo_root)


def load_mgie_demo(paths: Sequence[Path], *, name: str, options: LoadOptions) -> MGIE:
    """The offline demo model: MGIE's layout, decoded without the trigram ban, at the settings its root folder
    (the parent of its four folders) records (spec.folder_defaults)."""
    paths = MGIEPaths(*paths)
    defaults = folder_defaults(paths.llava.parent)
    return load_mgie(paths, name=name, options=options, decode=DEMO_DECODE, defaults=defaults)


SPECS = (
    ModelSpec.published("mgie-7b", "MGIE-7B (Apple, ICLR 2024)", load_mgie),
    ModelSpec(
        "mgie-demo", "Offline demo: MGIE architecture trained on the shapes world", FOLDERS, GET_DEMO,
        load_mgie_demo, root=lambda weights_dir: demo_folder(weights_dir, DEMO_PART), downloadable=False,
    ),
)  # fmt: skip
