"""`python -m editor.finetune --model mgie-7b|mgie-demo --data DIR --out runs/ft/NAME [...]`; see editor.finetune."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from editor.eval.data import KINDS
from editor.finetune.config import EMBED_ROWS, MODELS, OPTIMIZERS, SAVE_DTYPES, FinetuneConfig
from editor.finetune.data import DataError
from editor.loading import CheckpointError, MissingWeightsError


def build_parser() -> argparse.ArgumentParser:
    d = FinetuneConfig(data=Path("."), out=Path("."))
    p = argparse.ArgumentParser(
        prog="python -m editor.finetune",
        description="Fine-tune MGIE on your own edits (L_ins + 0.5 L_edit; LoRA or full; accelerate).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", choices=MODELS, default=d.model, help="the base model (official layout)")
    p.add_argument("--data", type=Path, required=True, help="edits.jsonl folder, MagicBrush folder, or demo[:N]")
    p.add_argument("--dataset", dest="dataset_kind", choices=KINDS, help="the data's layout (default: detected)")
    p.add_argument("--weights-dir", type=Path, help="base weights (default: the app's weights folder)")
    p.add_argument("--out", type=Path, required=True, help="run folder; the model is written there (official layout)")
    p.add_argument("--limit", type=int, help="only the first N samples")
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per process and micro-step")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-steps per optimizer step")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="adamw8bit: bitsandbytes' 8-bit moments"
    )
    p.add_argument("--warmup", type=float, default=d.warmup, help="share of the steps (cosine decay after)")
    p.add_argument("--lora-unet", type=int, default=0, metavar="R", help="LoRA rank on the UNet attention (0: full)")
    p.add_argument("--lora-llm", type=int, default=0, metavar="R", help="LoRA rank on the LLaMA attention (0: frozen)")
    p.add_argument("--lora-alpha", type=float, help="LoRA alpha (default: the rank)")
    p.add_argument("--embed-rows", choices=EMBED_ROWS, default=d.embed_rows, help="which embedding rows train")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="default: accelerate's setting")
    p.add_argument("--cpu", action="store_true", help="train on the CPU (launched processes join over gloo)")
    p.add_argument(
        "--resolution", type=int, help="side of the VAE's square input (default: the model's, mgie-7b 256, demo 64)"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--save-every", type=int, default=d.save_every, help="resumable state every N steps (0: at end)")
    p.add_argument("--stop-after", type=int, help="stop after this step; rerun the command to resume")
    p.add_argument("--save-dtype", choices=SAVE_DTYPES, default=d.save_dtype, help="dtype of the written weights")
    p.add_argument("--held-out", type=int, default=0, help="the last N triplets are edited as samples, not trained")
    p.add_argument("--sample-every", type=int, default=0, help="sample edits every N steps (0: at the end)")
    p.add_argument("--eval-data", help="after training: python -m editor.eval on this dataset (folder or demo[:N])")
    p.add_argument("--eval-steps", type=int, default=d.eval_steps, help="diffusion steps of that evaluation")
    p.add_argument("--sample-steps", type=int, default=d.sample_steps, help="diffusion steps of the sample edits")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    threads = args.pop("threads")
    from editor.finetune.loop import run
    from editor.runtime.threads import set_threads

    try:
        if threads is not None:  # else torch's own count: accelerate may start several processes on one machine
            set_threads(threads)
        config = FinetuneConfig(**args)
    except ValueError as err:  # settings only; a ValueError from inside training keeps its traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        run(config)
    except (DataError, MissingWeightsError, CheckpointError, MemoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
