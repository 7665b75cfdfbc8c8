"""Training triplets (input, instruction, goal, optional expressive text) from any dataset the evaluation harness
reads (editor.eval.data: edits.jsonl pairs, MagicBrush sessions, the demo world), checked once before training.

Every turn with a goal image is one triplet; its id is the sample's id, or "<sample id>/turn<k>" for multi-turn
sessions. Images are prepared as MGIE's training did (README "Fine-tuning"): the input and the goal are
centre-cropped to a square and resized to `resolution` for the VAE; the CLIP tower sees the square crop, shrunk to
512 px when larger (MGIE's crop_resize(512), without enlarging smaller images), through its own image processor.
Every problem is a `DataError` naming the sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from editor.eval.data import ImageRef, load_dataset, open_image
from editor.images import prepare_image
from editor.params import Resolution
from editor.pipelines.mgie import prompt_token_ids, training_token_ids
from editor.prompts import RESERVED_TOKENS, check_text

CLIP_SIDE = 512  # the largest square the CLIP tower's processor starts from (MGIE's training; README "Fine-tuning")


class DataError(ValueError):
    """The training data is unusable; the message names the sample (or the file) and what is wrong."""


@dataclass(frozen=True)
class Triplet:
    id: str
    instruction: str
    source: ImageRef
    goal: ImageRef
    expressive: str | None = None


def read_triplets(spec: str | Path, kind: str | None = None, limit: int | None = None) -> list[Triplet]:
    """The triplets of a dataset folder (or "demo[:N]"), every turn with a goal; expressive texts all or none."""
    try:
        dataset = load_dataset(str(spec), kind, limit)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the training data {spec}: {err}") from None
    triplets = []
    for sample in dataset.samples:
        for number, turn in enumerate(sample.turns, 1):
            name = sample.id if len(sample.turns) == 1 else f"{sample.id}/turn{number}"
            if turn.target is None:
                raise DataError(
                    f"sample {name}: no goal image ({dataset.name} has none); "
                    "fine-tuning needs input, instruction and goal"
                )
            triplets.append(Triplet(name, turn.instruction, turn.source, turn.target, turn.expressive))
    with_text = [t for t in triplets if t.expressive]
    if with_text and len(with_text) != len(triplets):
        missing = next(t for t in triplets if not t.expressive)
        raise DataError(
            f"sample {missing.id}: no expressive text, but {len(with_text)} of {len(triplets)} samples have one; "
            "give every sample an expressive text (L_ins + L_edit) or none (L_edit only)"
        )
    return triplets


def open_checked(triplet: Triplet) -> tuple[Image.Image, Image.Image]:
    """(input, goal) as RGB images of one size; a `DataError` naming the sample otherwise."""
    try:
        source, goal = open_image(triplet.source), open_image(triplet.goal)
    except (OSError, ValueError) as err:
        raise DataError(f"sample {triplet.id}: {err}") from None
    if source.size != goal.size:
        raise DataError(
            f"sample {triplet.id}: the input is {source.size[0]}x{source.size[1]} but the goal is "
            f"{goal.size[0]}x{goal.size[1]}; an edit's input and goal must have the same size"
        )
    return source, goal


def check_triplet(triplet: Triplet) -> None:
    """Texts (non-empty, no reserved tokens) and images (readable, same size) of one triplet."""
    try:
        check_text(triplet.instruction, reserved=RESERVED_TOKENS)
        if triplet.expressive is not None:
            check_text(triplet.expressive, name="expressive text", reserved=RESERVED_TOKENS)
    except ValueError as err:
        raise DataError(f"sample {triplet.id}: {err}") from None
    open_checked(triplet)


def to_pixels(image: Image.Image) -> torch.Tensor:
    """RGB image -> 3 x H x W in [-1, 1] (the VAE's input range)."""
    array = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
    return array.permute(2, 0, 1) / 127.5 - 1


class TripletDataset(torch.utils.data.Dataset):
    """Item i: token ids (prompt + answer when expressive texts exist, else the prompt alone), CLIP pixels and the
    VAE-side input and goal of triplet i."""

    def __init__(self, triplets: list[Triplet], tokenizer, image_processor, num_patches: int, resolution: int):
        self.triplets, self.tokenizer, self.processor = triplets, tokenizer, image_processor
        self.num_patches = num_patches
        self.size = Resolution(mode="center_crop", size=resolution)

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> dict:
        triplet = self.triplets[index]
        source, goal = open_checked(triplet)
        if triplet.expressive:
            texts = (triplet.instruction, triplet.expressive)
            ids, n_prompt = training_token_ids(self.tokenizer, *texts, self.num_patches)
        else:
            ids = prompt_token_ids(self.tokenizer, triplet.instruction, self.num_patches)
            n_prompt = len(ids)
        square = Resolution(mode="center_crop", size=max(64, min(CLIP_SIDE, *source.size)))  # never enlarged
        clip = self.processor(images=prepare_image(source, square), return_tensors="pt").pixel_values[0]
        return {
            "index": index,
            "ids": ids,
            "n_prompt": n_prompt,
            "clip": clip,
            "source": to_pixels(prepare_image(source, self.size)),
            "goal": to_pixels(prepare_image(goal, self.size)),
        }


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Right-padded ids (causal attention never sees the padding) and labels (-100 on the prompt and padding)."""
    length = max(len(item["ids"]) for item in items)
    ids = torch.zeros(len(items), length, dtype=torch.long)
    labels = torch.full((len(items), length), -100, dtype=torch.long)
    for row, item in enumerate(items):
        seq = torch.tensor(item["ids"])
        ids[row, : len(seq)] = seq
        labels[row, item["n_prompt"] : len(seq)] = seq[item["n_prompt"] :]
    return {
        "index": torch.tensor([item["index"] for item in items]),
        "ids": ids,
        "lengths": torch.tensor([len(item["ids"]) for item in items]),
        "labels": labels,
        "clip": torch.stack([item["clip"] for item in items]),
        "source": torch.stack([item["source"] for item in items]),
        "goal": torch.stack([item["goal"] for item in items]),
    }
