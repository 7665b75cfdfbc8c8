"""The demo models' training stages, MGIE's recipe in the order MGIE itself uses its parts (docs/demo-recipe.md).

    vae    the small VAE (frozen afterwards, as SD's)
    mllm   (a) the MLLM alone on L_ins: terse instruction + image -> "<expressive> [IMG0..7]</s>"; no diffusion
    cache  the training stream, encoded once: VAE latents of source and target and, from the frozen MLLM, the
           final-norm states that predict [IMG0..7] after the ground-truth expressive text (teacher-forced, as
           `guidance_from_text` does at inference); editor.demo.cache
    mgie   (b) MGIE's edit head + UNet on those states, the MLLM frozen: L_edit
    ip2p   the ablation: the same UNet and latents, conditioned on the terse text through a small CLIP text encoder

L_edit is the v-prediction MSE (scheduler_config) over the noised target latent, the source latent concatenated,
with MGIE's condition dropout per sample u: u < .05 null text, .05-.10 null text and no image, .10-.15 no image.
Each latent position's error is weighted 1 + REGION_WEIGHT where the edit changes the latents (the source and
target latents differ), so that the few positions an edit touches are not drowned by the background it keeps.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from transformers import CLIPTokenizer

from editor.demo import model as demo
from editor.demo import variety, world
from editor.layouts.configs import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from editor.layouts.sizes import ModelSizes
from editor.pipelines.mgie import load_tokenizer, training_token_ids
from editor.prompts import IM_START, IMG_TOKENS

RESTYLE = 0.25  # share of training samples whose background is redrawn (editor.demo.variety)
REGION_WEIGHT = 4.0
REGION_THRESHOLD = 0.05  # unscaled latent units
LOGVAR_INIT = -6.0
SHAPE_WEIGHT = 4.0  # the decoder stage: a shape's pixels weigh 1 + this (DecoderStage)


# --- data --------------------------------------------------------------------------------------------------------


def train_sample(seed: int, index: int) -> world.Sample:
    """Sample `index` of the training stream: the world's, a quarter of them on another background."""
    sample = world.make_sample(random.Random(f"{seed}/train/{index}"), "train")
    rng = random.Random(f"{seed}/style/{index}")
    return variety.restyle(sample, rng) if rng.random() < RESTYLE else sample


def batch_samples(seed: int, step: int, size: int) -> list[world.Sample]:
    return [train_sample(seed, step * size + i) for i in range(size)]


def to_tensor(scenes: list[world.Scene], device) -> torch.Tensor:
    """Rendered scenes as B x 3 x H x W in [-1, 1] (rounded to uint8 first, as the app's PNGs are)."""
    return arrays_to_tensor([world.render_array(s) for s in scenes], device)


def arrays_to_tensor(arrays: list[np.ndarray], device) -> torch.Tensor:
    """H x W x 3 float arrays in [0, 255] -> B x 3 x H x W in [-1, 1], rounded to uint8 levels first."""
    pixels = np.round(np.stack(arrays)).astype(np.float32)
    return (torch.from_numpy(pixels).permute(0, 3, 1, 2) / 127.5 - 1).to(device)


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """What CLIPImageProcessor gives for 64 x 64 inputs at a 64-pixel tower: rescale and normalise only."""
    mean = torch.tensor(OPENAI_CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


def pixels_differ(pixels: np.ndarray, other: world.Scene) -> np.ndarray:
    """H x W bool: where `pixels` (H x W x 3, 0-255) differ from `other` as the world renders it."""
    return np.abs(pixels.astype(np.float32) - world.render_array(other)).sum(-1) > 12


def shape_mask(scene: world.Scene, pixels: np.ndarray) -> np.ndarray:
    """H x W bool: the pixels of `scene` (rendered as `pixels`) that its shapes cover, its tone kept on both sides."""
    return pixels_differ(pixels, dataclasses.replace(scene, shapes=()))


def region_weights(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """B x 1 x h x w: 1 + REGION_WEIGHT where the edit changes the latents (any channel), else 1."""
    changed = (target - source).abs().amax(dim=1, keepdim=True) > REGION_THRESHOLD
    return 1 + REGION_WEIGHT * changed.float()


# --- stages ------------------------------------------------------------------------------------------------------


class VAEStage:
    """The VAE sees the world's scenes (some on other backgrounds) and free drawings (editor.demo.variety), so that
    its round trip keeps the shapes' edges and the backgrounds a user draws on. Loss: L1 + L2 + L1 of the image
    gradients (edges) + 1e-6 KL."""

    def __init__(self, sizes: ModelSizes, device) -> None:
        self.vae = demo.build_vae(sizes).to(device)
        # The posterior's log-variance is held at LOGVAR_INIT (std 0.05): a learnt one drifts up under AdamW, which
        # turns the tiny KL term's steady pull into full-size steps, until sampling noise drowns the colours (seen:
        # std 0.05 -> 0.47 in 800 steps, grey reconstructions at 19.5 dB).
        out, c = self.vae.quant_conv, sizes.latent_channels  # the last layer: its rows c.. are the log-variance
        with torch.no_grad():
            out.weight[c:] = 0
            out.bias[c:] = LOGVAR_INIT
        out.weight.register_hook(lambda grad: torch.cat([grad[:c], torch.zeros_like(grad[c:])]))
        out.bias.register_hook(lambda grad: torch.cat([grad[:c], torch.zeros_like(grad[c:])]))
        self.modules = {"vae": self.vae}
        self.device = device

    shape_weight = 0.0  # the VAE stage weighs every pixel alike; DecoderStage weighs the shapes' pixels up

    def images(self, samples: list[world.Sample], seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """B x 3 x H x W in [-1, 1], and B x 1 x H x W pixel weights: 1 + `shape_weight` on the scenes' shapes."""
        rng = random.Random(f"{seed}/vae/{step}")
        quarter = len(samples) // 4
        scenes = [s.source for s in samples[: 2 * quarter]] + [s.target for s in samples[2 * quarter : 3 * quarter]]
        scenes = [variety.restyle_scene(s, rng) if rng.random() < 0.3 else s for s in scenes]
        arrays = [world.render_array(s) for s in scenes]
        drawings = [variety.drawing(rng) for _ in range(len(samples) - len(arrays))]
        x = arrays_to_tensor(arrays + drawings, self.device)
        weights = torch.ones_like(x[:, :1])  # the drawings (last) have no world shapes: weight 1 throughout
        if self.shape_weight and arrays:
            masks = np.stack([shape_mask(s, a) for s, a in zip(scenes, arrays, strict=True)])
            weights[: len(arrays)] += self.shape_weight * torch.from_numpy(masks).float().unsqueeze(1).to(self.device)
        return x, weights

    def loss(self, samples, gen, seed: int, step: int) -> dict[str, torch.Tensor]:
        x, weights = self.images(samples, seed, step)
        posterior = self.vae.encode(x).latent_dist
        y = self.vae.decode(posterior.sample(generator=gen)).sample
        mse = F.mse_loss(y, x)
        weighted = (weights * ((y - x).abs() + (y - x) ** 2)).mean() / weights.mean()
        edges = sum((torch.diff(y, dim=d) - torch.diff(x, dim=d)).abs().mean() for d in (2, 3))
        loss = weighted + edges + 1e-6 * posterior.kl().mean()
        return {"loss": loss, "psnr": 10 * torch.log10(4 / mse.detach())}

    @torch.no_grad()
    def extra(self, seed: int) -> dict:
        """The latent scaling factor: 1 / std of VAE samples over 256 scenes (SD's 0.18215 was found this way)."""
        x = to_tensor([s.source for s in batch_samples(seed + 1, 0, 256)], self.device)
        return {"scaling_factor": float(1.0 / self.vae.encode(x).latent_dist.sample().std())}


class DecoderStage(VAEStage):
    """The VAE's decoder alone trains on (the encoder frozen, so the latents the UNets learn stay the same), as
    Stable Diffusion's ft-MSE decoder was made; it can run beside the diffusion stages. The shapes' pixels weigh
    `SHAPE_WEIGHT` more: with every pixel alike, the decoder lost 42 % of the green shapes, whose latent signal is
    the weakest (docs/demo-recipe.md, "The VAE drops green shapes")."""

    shape_weight = SHAPE_WEIGHT

    def __init__(self, vae) -> None:
        self.vae = vae.train()
        self.vae.requires_grad_(False)
        self.vae.decoder.requires_grad_(True)
        self.vae.post_quant_conv.requires_grad_(True)
        self.vae.encoder.eval()
        self.modules = {"vae": self.vae}
        self.device = next(vae.parameters()).device


def write_tokenizer(folder: Path, sizes: ModelSizes) -> None:
    """The MLLM's tokenizer files, built in a private folder and then moved into place file by file (`os.replace`
    is atomic): the processes that build the cache side by side never read a half-written file."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        demo.write_llama_tokenizer(Path(tmp), sizes)
        folder.mkdir(exist_ok=True)
        for file in Path(tmp).iterdir():
            os.replace(file, folder / file.name)


class MLLMStage:
    """(a) L_ins alone: the token cross-entropy of "<expressive> [IMG0..7]</s>" after MGIE's prompt. Every MLLM
    weight trains (no pretrained LLaVA exists for this world); `states` gives stage (b) its conditions."""

    def __init__(self, sizes: ModelSizes, device, out) -> None:
        write_tokenizer(Path(out) / "tokenizer", sizes)
        self.tokenizer = load_tokenizer(Path(out) / "tokenizer")
        self.mllm = demo.build_mllm(sizes).to(device)
        self.modules = {"mllm": self.mllm}
        self.device = device
        self.num_patches = self.mllm.config.num_patches
        self.im_start = self.tokenizer.convert_tokens_to_ids(IM_START)
        self.img_ids = self.tokenizer.convert_tokens_to_ids(list(IMG_TOKENS))

    def sequence(self, sample: world.Sample) -> tuple[list[int], int]:
        """Prompt + "<expressive> [IMG0..7]</s>" ids and the prompt length, from `training_token_ids`: the function
        MGIE's inference takes its prompt ids from, so training and inference cannot tokenize differently."""
        return training_token_ids(self.tokenizer, sample.terse, sample.expressive, self.num_patches)

    def forward(self, samples: list[world.Sample], with_features: bool = False) -> tuple[torch.Tensor, ...]:
        """(L_ins, B x 8 x hidden final-norm states at the positions that predict [IMG0..7]); `with_features`: also
        the B x patches x vision_hidden features of the selected vision layer (editor.demo.refine's parse head)."""
        seqs = [self.sequence(s) for s in samples]
        length = max(len(ids) for ids, _ in seqs)
        ids = torch.zeros(len(seqs), length, dtype=torch.long)
        labels = torch.full((len(seqs), length), -100, dtype=torch.long)
        for row, (seq, n_prompt) in enumerate(seqs):  # right padding: causal attention never sees it
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        ids, labels = ids.to(self.device), labels.to(self.device)
        pixels = clip_pixels(to_tensor([s.source for s in samples], self.device))
        features = self.mllm.patch_features(pixels)
        embeds = self.mllm.embed_with_image(ids, self.mllm.projector(features), self.im_start)
        hidden = self.mllm.final_states(embeds)  # B x L x H
        logits = self.mllm.llm.lm_head(hidden[:, :-1])
        l_ins = self.instruction_loss(logits.flatten(0, 1).float(), labels[:, 1:].flatten())
        k = (ids == self.img_ids[0]).int().argmax(dim=1)  # position of [IMG0]
        window = k[:, None] - 1 + torch.arange(len(IMG_TOKENS), device=self.device)  # states predicting [IMG0..7]
        states = hidden.gather(1, window[..., None].expand(-1, -1, hidden.shape[-1]))
        return (l_ins, states, features) if with_features else (l_ins, states)

    def instruction_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """MGIE's L_ins: the mean token cross-entropy (editor.demo.refine weighs the world's fact words up)."""
        return F.cross_entropy(logits, labels)

    def img_embeddings(self) -> torch.Tensor:
        return self.mllm.llm.get_input_embeddings().weight[-len(IMG_TOKENS) :]

    def loss(self, samples, gen) -> dict[str, torch.Tensor]:
        l_ins, _ = self.forward(samples)
        return {"loss": l_ins, "ins": l_ins}


class DiffusionStage:
    """Shared by MGIE (b) and the ablation: L_edit on cached latents (editor.demo.cache.Batch)."""

    def __init__(self, sizes: ModelSizes, device, scaling_factor: float) -> None:
        self.unet = demo.build_unet(sizes).to(device)
        self.noise = DDPMScheduler.from_config(demo.scheduler_config(sizes.latent_codec))
        self.scaling_factor = scaling_factor
        self.device = device
        self.high_noise_share = 0.0

    def edit_loss(self, batch, cond: torch.Tensor, null: torch.Tensor, gen) -> torch.Tensor:
        b = batch.source.shape[0]
        src = batch.source.float()
        eps = torch.randn(batch.target_mean.shape, generator=gen, device=self.device)
        tgt = (batch.target_mean.float() + batch.target_std.float() * eps) * self.scaling_factor
        u = torch.rand(b, generator=gen, device=self.device)
        drop_text = (u < 0.10).view(b, 1, 1)
        keep_image = ~((u >= 0.05) & (u < 0.15)).view(b, 1, 1, 1)
        cond = torch.where(drop_text, null.expand_as(cond), cond)
        noise = torch.randn(tgt.shape, generator=gen, device=self.device)
        t = self.timesteps(b, gen)
        noisy = self.noise.add_noise(tgt, noise, t)
        pred = self.unet(torch.cat([noisy, src * keep_image], dim=1), t, cond).sample
        weight = region_weights(src, batch.target_mean.float())
        return (weight * (pred - self.objective(tgt, noise, t)) ** 2).mean() / weight.mean()

    def timesteps(self, b: int, gen) -> torch.Tensor:
        """Uniform over the training timesteps; a share `high_noise_share` from the top fifth instead, where the
        sampler's first steps commit to a scene (docs/demo-recipe.md)."""
        n = self.noise.config.num_train_timesteps
        t = torch.randint(0, n, (b,), generator=gen, device=self.device)
        if not self.high_noise_share:
            return t
        high = torch.randint(int(0.8 * n), n, (b,), generator=gen, device=self.device)
        return torch.where(torch.rand(b, generator=gen, device=self.device) < self.high_noise_share, high, t)

    def objective(self, target: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the UNet predicts, by the scheduler config's `prediction_type`."""
        kind = self.noise.config.prediction_type
        if kind == "sample":
            return target
        return self.noise.get_velocity(target, noise, t) if kind == "v_prediction" else noise


class Preconditioner(torch.nn.Module):
    """A fixed linear map of the edit head's input, `states + emb -> (states + emb - mu) @ A.T`, applied in training
    and folded into the head's first layer (`llm2hid`, itself linear) on export, so the shipped head is MGIE's.

    Why: a frozen MLLM trained on L_ins alone needs its [IMG] states only to predict the next [IMG] token, so they
    are nearly the same for every edit: the part that differs between samples is ~9 % of their size (measured on
    the cache), and the edit head gave the UNet a condition that barely differed between samples (docs/demo-recipe.md,
    "Does the UNet use its condition?"). `fit` makes the per-sample variation unit-variance (whitened) and shrinks
    the 8 positions' mean offsets to the same scale, so the head starts from inputs in which the edit is the signal.
    In MGIE-7B, L_edit's gradient through the MLLM puts the edit into these states instead; here the MLLM is frozen
    before stage (b)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.register_buffer("matrix", torch.eye(hidden))
        self.register_buffer("mean", torch.zeros(hidden))

    @torch.no_grad()
    def reset(self) -> None:
        self.matrix.copy_(torch.eye(len(self.mean)))
        self.mean.zero_()

    @torch.no_grad()
    def fit(self, states: torch.Tensor, emb: torch.Tensor, ridge: float = 0.01) -> Preconditioner:
        x = states.float() + emb.float()  # N x 8 x H
        hidden = x.shape[-1]
        self.mean.copy_(x.mean((0, 1)))
        offsets = x.mean(0) - self.mean  # 8 x H: what tells the positions apart
        basis = torch.linalg.svd(offsets, full_matrices=False).Vh  # <= 8 x H, orthonormal rows
        on_offsets = basis.T @ basis
        rest = torch.eye(hidden) - on_offsets
        within = (x - x.mean(0)).reshape(-1, hidden) @ rest  # per-sample variation, the offsets' span removed
        values, vectors = torch.linalg.eigh(within.T @ within / within.shape[0])
        values = values.clamp(min=0) + ridge * values.max()
        whiten = vectors @ torch.diag(values.rsqrt()) @ vectors.T
        offset_scale = (hidden**0.5) / offsets.norm(dim=1).mean()  # offsets as long as a whitened sample's spread
        self.matrix.copy_(whiten @ rest + offset_scale * on_offsets)
        return self

    def forward(self, states: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The states to give the head in place of `states` (the head adds `emb` back)."""
        return (states + emb - self.mean) @ self.matrix.T - emb

    @torch.no_grad()
    def fold_into(self, head) -> None:
        """head.llm2hid(P(states) + emb) == head'.llm2hid(states + emb) afterwards; P becomes the identity."""
        layer = head.llm2hid
        weight = layer.weight @ self.matrix
        layer.bias.sub_(weight @ self.mean)
        layer.weight.copy_(weight)
        self.reset()

    @torch.no_grad()
    def unfold_from(self, head) -> None:
        """The inverse of `fold_into`, for this (fitted) preconditioner saved beside exported weights: the head's
        first layer goes back to acting on P(states), so training resumes in the preconditioned coordinates."""
        layer = head.llm2hid
        folded = layer.weight.clone()
        layer.bias.add_(folded @ self.mean)
        layer.weight.copy_(torch.linalg.solve(self.matrix.T, folded.T).T)  # W = W' A^-1


class MGIEStage(DiffusionStage):
    """(b) The edit head and the UNet on the frozen MLLM's cached [IMG] states: L_edit only (L_ins was stage a).
    With `states` (a sample of the cache), the head's input is preconditioned (`Preconditioner`)."""

    def __init__(
        self, sizes: ModelSizes, device, scaling_factor: float, img_embeddings: torch.Tensor,
        states: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        super().__init__(sizes, device, scaling_factor)
        self.head = demo.build_head(sizes).to(device)
        self.precondition = Preconditioner(sizes.llm_hidden)
        if states is not None:
            self.precondition.fit(states, img_embeddings)
        self.precondition.to(device)
        self.modules = {"head": self.head, "unet": self.unet, "precondition": self.precondition}
        self.emb = img_embeddings.to(device)

    def loss(self, batch, gen) -> dict[str, torch.Tensor]:
        states = self.precondition(batch.states.float(), self.emb)
        null = self.precondition(torch.zeros_like(states[:1]), self.emb)
        cond, null = self.head(states, self.emb), self.head(null, self.emb)
        l_edit = self.edit_loss(batch, cond, null, gen)
        return {"loss": l_edit, "edit": l_edit}


class IP2PStage(DiffusionStage):
    def __init__(self, sizes: ModelSizes, device, scaling_factor: float, out) -> None:
        super().__init__(sizes, device, scaling_factor)
        demo.write_clip_tokenizer(out / "clip_tokenizer")
        self.tokenizer = CLIPTokenizer.from_pretrained(out / "clip_tokenizer")
        self.text = demo.build_text_encoder(sizes).to(device)
        self.modules = {"text": self.text, "unet": self.unet}
        self.ids: dict[str, torch.Tensor] = {}

    def encode(self, texts: list[str]) -> torch.Tensor:
        new = sorted(set(texts) - self.ids.keys())  # the world's instructions repeat: each is tokenized once
        if new:
            rows = self.tokenizer(new, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            self.ids |= dict(zip(new, rows.input_ids, strict=True))
        ids = torch.stack([self.ids[t] for t in texts])
        return self.text(ids.to(self.device))[0]  # what the IP2P pipeline feeds the UNet

    def loss(self, batch, gen) -> dict[str, torch.Tensor]:
        cond, null = self.encode(batch.terse), self.encode([""])  # IP2P's null prompt is ""
        l_edit = self.edit_loss(batch, cond, null, gen)
        return {"loss": l_edit, "edit": l_edit}
