"""Sample edits during fine-tuning: the weights being trained edit a few held-out triplets through the app's own
MGIE object (think, then render, as in the app), each written as an "input | edit | goal" strip.

The MGIE object shares its modules with the training model (LoRA layers included), so it always sees the current
weights; only what it caches at load (the [IMG] embedding rows and the null condition) is refreshed here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from editor.finetune.data import Triplet, open_checked
from editor.finetune.model import N_IMG, FinetuneModel
from editor.images import prepare_image
from editor.params import Resolution
from editor.pipelines.mgie import MGIE


@torch.no_grad()
def refresh_editor(editor: MGIE, model: FinetuneModel, device: torch.device) -> None:
    """Point the editor's cached tensors at the current weights (they were computed from the loaded ones)."""
    dtype = next(model.head.parameters()).dtype
    editor.device = device
    editor.img_embeddings = model.img_embeddings().detach().to(device, dtype)
    zeros = torch.zeros(1, N_IMG, editor.img_embeddings.shape[-1], device=device, dtype=dtype)
    editor.null_embeds = model.head(zeros, editor.img_embeddings)


def strip(images: list[Image.Image]) -> Image.Image:
    out = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), "white")
    x = 0
    for image in images:
        out.paste(image, (x, 0))
        x += image.width
    return out


def write_samples(
    editor: MGIE, model: FinetuneModel, triplets: list[Triplet], folder: Path, resolution: int, steps: int
) -> list[Path]:
    """Edit each triplet's input with its instruction (the model's own settings, e.g. the demo's guidance, with
    `steps` diffusion steps at the training resolution); write <folder>/<id>.png as input | edit | goal. The
    model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    refresh_editor(editor, model, next(model.unet.parameters()).device)
    size = Resolution(mode="center_crop", size=resolution)
    params = replace(editor.defaults, steps=steps, resolution=size)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for triplet in triplets:
            source, goal = open_checked(triplet)
            result = editor.render(source, editor.think(source, triplet.instruction), params)
            path = folder / f"{triplet.id.replace('/', '_')}.png"
            strip([result.source, result.image, prepare_image(goal, size)]).save(path)
            written.append(path)
    finally:
        model.train(was_training)
    return written
