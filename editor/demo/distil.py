"""MGIE's edit head distilled onto a trained ablation's reading of the canonical instruction (docs/demo-recipe.md,
"Distilling the edit head onto the ablation").

On this CPU the edit head and the UNet, trained together on L_edit from the frozen MLLM's [IMG] states, learn more
slowly than the ablation, whose UNet reads the terse text through a CLIP text encoder. The expressive instruction
states the edit canonically (it resolves "the shape left of the circle" to "the small red square at the top"); the
ablation's UNet executes plain training-form instructions best (`world.canonical_terse`: 25 % of 100 held-out edits
against 19 % from the user's own words). So the head is taught to give, from the states that follow the
ground-truth expressive text, the condition that the ablation's text encoder gives for the canonical instruction,
and MGIE takes the ablation's UNet as it is:

    teacher   a trained ablation checkpoint (`ip2p.ckpt` or kept `ip2p-NNNNNN.pt`: text encoder + UNet), frozen
    target    teacher_text(canonical_terse(sample)), 77 x cross_attention_dim, for every cached training sample;
              the null condition (MGIE's head on zero states) learns teacher_text(""), IP2P's null prompt
    loss      the mean squared error in units of the targets' spread across instructions (per token and channel),
              so that the few entries in which instructions differ count, not the shared rest of the 77 tokens

No diffusion runs: a step is the head on cached states. The stage's checkpoint holds a whole MGIE (head,
preconditioner, the teacher's UNet), which `export --mgie-stage distil` writes and `mgie --init` trains on with
L_edit (MGIE's own stage b).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPTokenizer

from editor.demo import model as demo
from editor.demo import stages
from editor.demo.cache import Cache, canonical_instructions
from editor.demo.checkpoints import load_checkpoint
from editor.layouts.sizes import ModelSizes

NULL_WEIGHT = 0.1  # the null condition's share of the loss (MGIE drops the text for 10 % of its samples)
SPREAD_FLOOR = 0.05  # entries whose spread is below this share of the mean spread are weighed as if at it


class DistilStage:
    def __init__(self, sizes: ModelSizes, device, out: Path, data: Cache, teacher: Path, fit_samples: int) -> None:
        text, self.unet = demo.build_text_encoder(sizes), demo.build_unet(sizes)
        held = set(torch.load(teacher, map_location="cpu", weights_only=True)["modules"])
        if not {"text", "unet"} <= held:
            raise SystemExit(f"--teacher {teacher} holds {sorted(held)}, not an ablation's text encoder and UNet")
        load_checkpoint(teacher, {"text": text, "unet": self.unet})  # refuses a UNet of the other class
        self.unet.requires_grad_(False)
        texts = canonical_instructions(out, data.size)
        unique = sorted({*texts, ""})
        tokenizer = CLIPTokenizer.from_pretrained(out / "clip_tokenizer")
        ids = tokenizer(unique, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            encoded = torch.cat([text(ids[i : i + 256])[0] for i in range(0, len(unique), 256)])
        spread = encoded.std(0)
        self.scale = spread.clamp(min=SPREAD_FLOOR * spread.mean()).to(device)
        self.targets = encoded.to(device)  # unique instructions x 77 x C
        position = {t: i for i, t in enumerate(unique)}
        self.target_of = torch.tensor([position[t] for t in texts])  # cached sample -> its row of `targets`
        self.null_target = self.targets[position[""]]
        self.head = demo.build_head(sizes).to(device)
        self.emb = data.emb.to(device)
        self.precondition = stages.Preconditioner(sizes.llm_hidden)  # fitted as stage b's
        self.precondition.fit(data.states[:fit_samples], data.emb).to(device)
        self.modules = {"head": self.head, "precondition": self.precondition, "unet": self.unet.to(device)}
        self.data, self.device = data, device

    def condition(self, states: torch.Tensor) -> torch.Tensor:
        """The head's condition from raw (cached or zero) states, as stage b and the exported MGIE compute it."""
        return self.head(self.precondition(states.float(), self.emb), self.emb)

    def distance(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (((predicted - target) / self.scale) ** 2).mean()

    def loss(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        states = self.data.states[rows].to(self.device)
        fit = self.distance(self.condition(states), self.targets[self.target_of[rows]])
        null = self.distance(self.condition(torch.zeros_like(states[:1]))[0], self.null_target)
        return {"loss": fit + NULL_WEIGHT * null, "fit": fit, "null": null}
