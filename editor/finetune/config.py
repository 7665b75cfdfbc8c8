"""The fine-tuning run's settings: one frozen dataclass, written beside the output (training.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

MODELS = ("mgie-7b", "mgie-demo")  # base models this trainer opens (the official layout; editor.pipelines.registry)
MGIE_TRAIN_SIZE = 256  # MGIE-7B trained at 256 px (README "Fine-tuning"), below its SD-1.5 UNet's native 512
EMBED_ROWS = ("new", "all")
SAVE_DTYPES = ("float16", "bfloat16", "float32")
OPTIMIZERS = ("adamw", "adamw8bit")  # torch's AdamW; bitsandbytes' AdamW8bit (moments in 8 bit, blockwise scaled)


@dataclass(frozen=True)
class FinetuneConfig:
    data: Path  # any dataset editor.eval.data reads (edits.jsonl pairs, MagicBrush sessions, demo[:N])
    out: Path  # run folder: checkpoints/, log.jsonl, training.json, and the model in the official layout
    model: str = "mgie-7b"
    weights_dir: Path | None = None  # the base weights (default: the app's weights folder)
    dataset_kind: str | None = None  # editor.eval.data KINDS; None = detected
    limit: int | None = None  # first N samples only
    steps: int = 1000  # optimizer steps
    batch_size: int = 4  # per process and micro-step; global batch = batch_size x processes x grad_accum
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0  # MGIE: 0
    optimizer: str = "adamw"  # OPTIMIZERS
    warmup: float = 0.03  # share of the steps (MGIE: 3 %, cosine after)
    max_grad_norm: float = 1.0
    edit_weight: float = 0.5  # MGIE's total = L_ins + 0.5 * L_edit
    lora_unet: int = 0  # LoRA rank on the UNet attention; 0 = the whole UNet trains
    lora_llm: int = 0  # LoRA rank on the LLaMA attention; 0 = the LLaMA blocks stay frozen
    lora_alpha: float | None = None  # default: the rank (scaling 1)
    embed_rows: str = "new"  # "new": only the [IMG0..7] embedding rows train; "all": every row, as MGIE did
    gradient_checkpointing: bool = False
    mixed_precision: str | None = None  # no / fp16 / bf16; None = accelerate's (its config file or --mixed_precision)
    cpu: bool = False  # train on the CPU even with a GPU; several launched CPU processes then join over gloo
    resolution: int | None = None  # side of the square the VAE sees; None: the model's own (`sized`)
    seed: int = 0
    save_every: int = 0  # accelerate state every N steps (0: only at the end or at `stop_after`)
    stop_after: int | None = None  # stop (resumably) after this step
    save_dtype: str = "float16"  # dtype of the written weights (the released files are fp16)
    log_every: int = 1
    held_out: int = 0  # the last N triplets (by id) do not train; they are edited as samples
    sample_every: int = 0  # sample edits every N steps (0: at the end only), when triplets are held out
    sample_steps: int = 20  # diffusion steps of the sample edits
    eval_data: str | None = None  # after training: python -m editor.eval on this dataset with the written model
    eval_steps: int = 20  # diffusion steps of that evaluation
    eval_samples: int = 4  # losses on the first N triplets with fixed draws, before and after training

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.embed_rows not in EMBED_ROWS:
            raise ValueError(f"embed_rows must be one of {EMBED_ROWS}, got {self.embed_rows!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"save dtype must be one of {SAVE_DTYPES}, got {self.save_dtype!r}")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ValueError(f"mixed precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        for name in ("steps", "batch_size", "grad_accum", "log_every", "eval_samples", "sample_steps", "eval_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.held_out < 0 or self.sample_every < 0:
            raise ValueError("--held-out and --sample-every take a count (0 = none)")
        if self.lora_unet < 0 or self.lora_llm < 0:
            raise ValueError("LoRA ranks must be positive (0 = no adapter)")
        if self.resolution is not None and (not 64 <= self.resolution <= 1024 or self.resolution % 8):
            raise ValueError(f"resolution must be a multiple of 8 in [64, 1024], got {self.resolution}")

    def sized(self, native: int) -> FinetuneConfig:
        """With the resolution filled in when none was given: MGIE-7B's training size (256), else the base
        model's native size `native` (the demo: 64, its scenes' size). An explicit --resolution wins."""
        if self.resolution is not None:
            return self
        return replace(self, resolution=MGIE_TRAIN_SIZE if self.model == "mgie-7b" else native)

    @property
    def mode(self) -> str:
        """A short name of what trains, for logs and memory messages."""
        unet = f"UNet LoRA r{self.lora_unet}" if self.lora_unet else "full UNet"
        llm = f" + LLaMA LoRA r{self.lora_llm}" if self.lora_llm else ""
        ckpt = ", gradient checkpointing" if self.gradient_checkpointing else ""
        adam = ", 8-bit AdamW" if self.optimizer == "adamw8bit" else ""
        return f"{unet}{llm}{ckpt}{adam}"

    def describe(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
