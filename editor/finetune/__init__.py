"""Fine-tuning MGIE on a user's own edits: MGIE's objective on any dataset the evaluation harness reads, the whole
trainable part or peft LoRA adapters, on one process or many through accelerate; the result is written in the
official layout that the app's loader opens (README "Fine-tuning").

    python -m editor.finetune --model mgie-7b --data DIR [--weights-dir W] --out runs/ft/NAME
    python -m editor.finetune --model mgie-demo --data demo:64 --out runs/ft/demo    (the shipped demo model, 64 px)
    accelerate launch -m editor.finetune ...            (several GPUs, or --config_file examples/accelerate/*.yaml)

Modules: config (the settings), data (triplets, checks, batches), model (the objective, freezing, LoRA merge),
memory (the peak-memory estimate), loop (the accelerate run, resume), export (the official layout).
"""

from editor.finetune.config import FinetuneConfig

__all__ = ["FinetuneConfig"]
