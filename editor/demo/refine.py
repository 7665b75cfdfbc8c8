"""Stage `refine`: the MLLM trained further after the diffusion stages, without invalidating them
(docs/demo-recipe.md, "Refining the MLLM").

Stage (a)'s MLLM writes the right expressive instruction for only about half of the training samples: it reads the
shapes' kind and place from the image poorly (a linear probe of its vision features finds the kind of an occupied
cell 52 % of the time, the colour 94 %). LLaVA starts from a pretrained CLIP tower; this world has none, so the
refinement gives the vision tower dense supervision of its own and keeps training L_ins:

    loss = L_ins' + PARSE_WEIGHT * L_parse + ANCHOR_WEIGHT * L_anchor

- L_ins': L_ins with each token of a fact word (judge.FACT_WORDS: the kinds, colours, sizes, places and results the
  expressive text asserts) weighted 1 + FACT_WEIGHT. Most of an expressive text follows from the terse one; the
  few words read from the image carry the errors, and in the plain mean their loss is a small share.
- L_parse: a linear head on the selected vision layer's patch features names, for each of the 3 x 3 cells, the
  shape's kind, colour and size (or "none"): the scene parsing a pretrained tower would already do. The head is
  dropped at export; the tower keeps what it learnt.
- L_anchor: the final-norm states predicting [IMG0..7] after the ground-truth expressive text (what stage (b)'s
  edit head and UNet were trained on, editor.demo.cache) stay where the cached ones are, as a mean squared error
  relative to their mean square. So the shipped edit head and UNet keep their conditions and need no retraining.

Each step: the recipe's batch of fresh samples of the training stream (past the cache's range) and ANCHORED cached
samples, all of them for L_ins and L_parse, the cached ones for L_anchor too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from editor.demo import judge, stages, world
from editor.layouts.sizes import ModelSizes

FACT_WEIGHT = 4.0
PARSE_WEIGHT = 0.2
ANCHOR_WEIGHT = 1.0
ANCHORED = 8  # cached samples per step

CELLS = [(column, row) for row in range(world.GRID) for column in range(world.GRID)]
NONE = "-"
CLASSES = {  # per cell: index 0 is "no shape here"
    "kind": (NONE, *world.KINDS),
    "colour": (NONE, *world.COLOURS),
    "size": (NONE, *world.RADIUS),
}


def parse_labels(scenes: list[world.Scene]) -> torch.Tensor:
    """B x cells x 3 class indices (kind, colour, size) of each cell's shape; 0 where the cell is empty."""
    labels = torch.zeros(len(scenes), len(CELLS), len(CLASSES), dtype=torch.long)
    for row, scene in enumerate(scenes):
        for shape in scene.shapes:
            values = (shape.kind, shape.colour, shape.size)
            labels[row, CELLS.index(shape.cell)] = torch.tensor(
                [names.index(v) for names, v in zip(CLASSES.values(), values, strict=True)]
            )
    return labels


class ParseHead(torch.nn.Module):
    """Linear: all patch features of one image -> per cell, logits over each attribute's classes."""

    def __init__(self, num_patches: int, vision_hidden: int) -> None:
        super().__init__()
        self.sizes = [len(names) for names in CLASSES.values()]
        self.linear = torch.nn.Linear(num_patches * vision_hidden, len(CELLS) * sum(self.sizes))

    def reset(self) -> None:
        """Fresh weights: the head is not exported, so a refine run resumed from shipped weights starts a new one."""
        self.linear.reset_parameters()

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.linear(features.flatten(1)).view(len(features), len(CELLS), sum(self.sizes))
        parts = logits.split(self.sizes, dim=-1)
        return sum(F.cross_entropy(p.flatten(0, 1), labels[..., i].flatten()) for i, p in enumerate(parts)) / len(parts)


class RefineStage(stages.MLLMStage):
    """Stage (a)'s MLLM (loaded by the caller) with the parse head; `anchor_states`: the cached [IMG] states of the
    cache's samples, which are stages.train_sample(cache_seed, i)."""

    def __init__(self, sizes: ModelSizes, device, out, anchor_states: torch.Tensor, cache_seed: int) -> None:
        super().__init__(sizes, device, out)
        self.parse = ParseHead(self.num_patches, sizes.vision_hidden).to(device)
        self.modules = {"mllm": self.mllm, "parse": self.parse}
        self.anchor_states = anchor_states  # samples x 8 x hidden, fp16 (editor.demo.cache.load_states)
        self.anchor_scale = anchor_states[:4096].float().pow(2).mean().item()
        self.cache_seed = cache_seed
        fact_ids = [self.tokenizer.encode(word, bos=False) for word in sorted(judge.FACT_WORDS)]
        # the demo tokenizer has every fact word as one piece; a word split into pieces would keep weight 1
        self.fact_ids = torch.tensor([ids[0] for ids in fact_ids if len(ids) == 1], device=device)

    def instruction_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = 1 + FACT_WEIGHT * torch.isin(labels, self.fact_ids).float()
        weight = weight * (labels != -100)
        return (F.cross_entropy(logits, labels, reduction="none") * weight).sum() / weight.sum()

    def batch(self, seed: int, step: int, size: int) -> tuple[list[world.Sample], torch.Tensor]:
        """`size` fresh samples past the cached ones, then ANCHORED cached ones (their row indices returned)."""
        cached = len(self.anchor_states)
        fresh = [stages.train_sample(seed, cached + step * size + i) for i in range(size)]
        rows = torch.randint(cached, (ANCHORED,), generator=torch.Generator().manual_seed(seed * 7919 + step))
        return fresh + [stages.train_sample(self.cache_seed, i) for i in rows.tolist()], rows

    def step_loss(self, seed: int, step: int, size: int) -> dict[str, torch.Tensor]:
        samples, rows = self.batch(seed, step, size)
        l_ins, states, features = self.forward(samples, with_features=True)
        l_parse = self.parse.loss(features, parse_labels([s.source for s in samples]).to(self.device))
        anchor = self.anchor_states[rows].to(self.device, torch.float32)
        l_anchor = (states[-ANCHORED:].float() - anchor).pow(2).mean() / self.anchor_scale
        loss = l_ins + PARSE_WEIGHT * l_parse + ANCHOR_WEIGHT * l_anchor
        return {"loss": loss, "ins": l_ins, "parse": l_parse, "anchor": l_anchor}
