"""Train the offline demo models on the shapes world (editor.demo.world), on CPU or CUDA, resumably.

    python -m editor.demo.train vae  --out runs/demo            # 1. the small VAE (frozen afterwards, as SD's)
    python -m editor.demo.train mgie --out runs/demo            # 2. MGIE end to end: L_ins + 0.5 * L_edit
    python -m editor.demo.train ip2p --out runs/demo            # 3. the ablation: terse text -> CLIP text encoder
    python -m editor.demo.train export --out runs/demo --to weights/demo   # official layouts, fp16 safetensors

Each stage checkpoints to <out>/<stage>.ckpt every --ckpt-every steps and resumes from it when rerun. Batch i is
always samples [i*B, (i+1)*B) of the seeded training stream and its noise comes from a generator seeded by
(seed, i), so a resumed run sees exactly the data and noise of an uninterrupted one.

MGIE's objective (mgie.md §4): L_ins is the token cross-entropy over "<expressive> [IMG0..7]</s>" after the
prompt; L_edit is the UNet's epsilon MSE with the target latent (VAE sample x scaling factor) noised by the
DDPM schedule and the input latent (VAE mode, unscaled) concatenated; the condition is the edit head over the
final-norm states that predict [IMG0..7]. Condition dropout per sample u: u < .05 null text, .05-.10 null text and
no image, .10-.15 no image. Deviation: MGIE starts from a pretrained LLaVA and freezes its LLaMA blocks, ViT and
projector; no pretrained MLLM exists for this world, so here every MLLM weight trains too (the VAE stays frozen).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from tqdm import tqdm
from transformers import CLIPTokenizer, get_cosine_schedule_with_warmup

from editor.demo import model as demo
from editor.demo import world
from editor.pipelines.mgie import load_tokenizer
from editor.prompts import IM_START, IMG_TOKENS, mgie_prompt
from editor.tiny.tree import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

STAGES = ("vae", "mgie", "ip2p")


@dataclass(frozen=True)
class StageConfig:
    steps: int
    batch: int
    lr: float
    warmup: float = 0.03  # fraction of steps, as MGIE's recipe


RECIPES = {  # the CPU recipe; a GPU can afford more steps via --steps / --batch
    "vae": StageConfig(steps=2500, batch=16, lr=1e-3),
    "mgie": StageConfig(steps=1200, batch=32, lr=5e-4),
    "ip2p": StageConfig(steps=1200, batch=32, lr=5e-4),
}


# --- data --------------------------------------------------------------------------------------------------------


def batch_samples(seed: int, step: int, size: int) -> list[world.Sample]:
    return [world.make_sample(random.Random(f"{seed}/train/{step * size + i}"), "train") for i in range(size)]


def to_tensor(scenes: list[world.Scene], device) -> torch.Tensor:
    """Rendered scenes as B x 3 x H x W in [-1, 1] (rounded to uint8 first, as the app's PNGs are)."""
    arrays = np.stack([np.asarray(world.render(s)) for s in scenes]).astype(np.float32)
    return (torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1).to(device)


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """What CLIPImageProcessor gives for 64 x 64 inputs at a 64-pixel tower: rescale and normalise only."""
    mean = torch.tensor(OPENAI_CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


# --- checkpoints -------------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, modules: dict, optimizer, scheduler, step: int, extra: dict) -> None:
    state = {k: m.state_dict() for k, m in modules.items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"modules": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": step, **extra}, tmp)  # fmt: skip
    os.replace(tmp, path)  # never a half-written checkpoint


def load_checkpoint(path: Path, modules: dict, optimizer=None, scheduler=None) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key, module in modules.items():
        module.load_state_dict(ckpt["modules"][key])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt


def load_vae(out: Path, sizes: demo.DemoSizes, device):
    ckpt_path = out / "vae.ckpt"
    if not ckpt_path.exists():
        sys.exit(f"{ckpt_path} not found: train the VAE first (python -m editor.demo.train vae --out {out})")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if "scaling_factor" not in ckpt:  # written only by the stage's last step
        sys.exit(
            f"{ckpt_path} is an unfinished VAE (step {ckpt['step']}): rerun python -m editor.demo.train vae --out {out}"
        )
    vae = demo.build_vae(sizes, ckpt["scaling_factor"])
    vae.load_state_dict(ckpt["modules"]["vae"])
    return vae.to(device).eval().requires_grad_(False)


# --- the stages --------------------------------------------------------------------------------------------------


class VAEStage:
    def __init__(self, sizes, device):
        self.vae = demo.build_vae(sizes).to(device)
        self.modules = {"vae": self.vae}
        self.device = device

    def loss(self, samples, gen) -> dict[str, torch.Tensor]:
        x = to_tensor([s.source for s in samples] + [s.target for s in samples[: len(samples) // 4]], self.device)
        posterior = self.vae.encode(x).latent_dist
        y = self.vae.decode(posterior.sample(generator=gen)).sample
        mse = F.mse_loss(y, x)
        kl = posterior.kl().mean()
        return {"loss": (y - x).abs().mean() + mse + 1e-6 * kl, "psnr": 10 * torch.log10(4 / mse.detach())}

    @torch.no_grad()
    def extra(self, seed: int) -> dict:
        """The latent scaling factor: 1 / std of VAE samples over 256 scenes (SD's 0.18215 was found this way)."""
        x = to_tensor([s.source for s in batch_samples(seed + 1, 0, 256)], self.device)
        return {"scaling_factor": float(1.0 / self.vae.encode(x).latent_dist.sample().std())}


class DiffusionStage:
    """Shared by MGIE and the ablation: the noised target, the dropout and L_edit."""

    def __init__(self, sizes, device, out):
        self.vae = load_vae(out, sizes, device)
        self.unet = demo.build_unet(sizes).to(device)
        self.noise = DDPMScheduler.from_config(demo.scheduler_config())
        self.device = device

    def edit_loss(self, samples, cond, null, gen) -> torch.Tensor:
        b = len(samples)
        with torch.no_grad():
            src = self.vae.encode(to_tensor([s.source for s in samples], self.device)).latent_dist.mode()
            tgt = self.vae.encode(to_tensor([s.target for s in samples], self.device)).latent_dist
            tgt = tgt.sample(generator=gen) * self.vae.config.scaling_factor
        u = torch.rand(b, generator=gen, device=self.device)
        drop_text = (u < 0.10).view(b, 1, 1)
        keep_image = ~((u >= 0.05) & (u < 0.15)).view(b, 1, 1, 1)
        cond = torch.where(drop_text, null.expand_as(cond), cond)
        noise = torch.randn(tgt.shape, generator=gen, device=self.device)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (b,), generator=gen, device=self.device)
        noisy = self.noise.add_noise(tgt, noise, t)
        pred = self.unet(torch.cat([noisy, src * keep_image], dim=1), t, cond).sample
        v_prediction = self.noise.config.prediction_type == "v_prediction"
        return F.mse_loss(pred, self.noise.get_velocity(tgt, noise, t) if v_prediction else noise)


class MGIEStage(DiffusionStage):
    def __init__(self, sizes, device, out):
        super().__init__(sizes, device, out)
        demo.write_llama_tokenizer(out / "tokenizer", sizes)
        self.tokenizer = load_tokenizer(out / "tokenizer")
        self.mllm = demo.build_mllm(sizes).to(device)
        self.head = demo.build_head(sizes).to(device)
        self.modules = {"mllm": self.mllm, "head": self.head, "unet": self.unet}
        self.num_patches = self.mllm.config.num_patches
        self.im_start = self.tokenizer.convert_tokens_to_ids(IM_START)
        self.img_ids = self.tokenizer.convert_tokens_to_ids(list(IMG_TOKENS))
        self._prompts: dict[str, list[int]] = {}

    def sequence(self, sample: world.Sample) -> tuple[list[int], int]:
        """Prompt + "<expressive> [IMG0..7]</s>" ids (the answer tokenised as MGIE.answer_ids does), prompt length."""
        if sample.terse not in self._prompts:
            self._prompts[sample.terse] = self.tokenizer(mgie_prompt(sample.terse, self.num_patches)).input_ids
        prompt = self._prompts[sample.terse]
        answer = self.tokenizer(sample.expressive, add_special_tokens=False).input_ids + self.img_ids
        return prompt + answer + [self.tokenizer.eos_token_id], len(prompt)

    def loss(self, samples, gen) -> dict[str, torch.Tensor]:
        seqs = [self.sequence(s) for s in samples]
        length = max(len(ids) for ids, _ in seqs)
        ids = torch.zeros(len(seqs), length, dtype=torch.long)
        labels = torch.full((len(seqs), length), -100, dtype=torch.long)
        for row, (seq, n_prompt) in enumerate(seqs):  # right padding: causal attention never sees it
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        ids, labels = ids.to(self.device), labels.to(self.device)
        pixels = clip_pixels(to_tensor([s.source for s in samples], self.device))
        embeds = self.mllm.embed_with_image(ids, self.mllm.encode_image(pixels), self.im_start)
        hidden = self.mllm.final_states(embeds)  # B x L x H
        logits = self.mllm.llm.lm_head(hidden[:, :-1])
        l_ins = F.cross_entropy(logits.flatten(0, 1).float(), labels[:, 1:].flatten())
        k = (ids == self.img_ids[0]).int().argmax(dim=1)  # position of [IMG0]
        window = k[:, None] - 1 + torch.arange(len(IMG_TOKENS), device=self.device)  # states predicting [IMG0..7]
        states = hidden.gather(1, window[..., None].expand(-1, -1, hidden.shape[-1]))
        emb = self.mllm.llm.get_input_embeddings().weight[-len(IMG_TOKENS) :]
        cond, null = self.head(states, emb), self.head(torch.zeros_like(states[:1]), emb)
        l_edit = self.edit_loss(samples, cond, null, gen)
        return {"loss": l_ins + 0.5 * l_edit, "ins": l_ins, "edit": l_edit}


class IP2PStage(DiffusionStage):
    def __init__(self, sizes, device, out):
        super().__init__(sizes, device, out)
        demo.write_clip_tokenizer(out / "clip_tokenizer")
        self.tokenizer = CLIPTokenizer.from_pretrained(out / "clip_tokenizer")
        self.text = demo.build_text_encoder(sizes).to(device)
        self.modules = {"text": self.text, "unet": self.unet}

    def encode(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        return self.text(ids.input_ids.to(self.device))[0]  # what the IP2P pipeline feeds the UNet

    def loss(self, samples, gen) -> dict[str, torch.Tensor]:
        cond, null = self.encode([s.terse for s in samples]), self.encode([""])  # IP2P's null prompt is ""
        l_edit = self.edit_loss(samples, cond, null, gen)
        return {"loss": l_edit, "edit": l_edit}


def train(
    stage: str,
    out: Path,
    recipe: StageConfig,
    seed: int = 0,
    device: str = "cpu",
    ckpt_every: int = 100,
    sizes: demo.DemoSizes = demo.DemoSizes(),  # noqa: B008 - frozen dataclass
    until: int | None = None,
) -> None:
    """Run (or resume) one stage up to `recipe.steps` (or stop after step `until`, to resume later),
    checkpointing to <out>/<stage>.ckpt."""
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    runner = {"vae": VAEStage, "mgie": MGIEStage, "ip2p": IP2PStage}[stage]
    runner = runner(sizes, device) if stage == "vae" else runner(sizes, device, out)
    params = [p for m in runner.modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(recipe.warmup * recipe.steps), recipe.steps)
    path = out / f"{stage}.ckpt"
    start = 0
    if path.exists():
        start = load_checkpoint(path, runner.modules, optimizer, schedule)["step"]
        print(f"resuming {stage} from step {start} ({path})")
    for module in runner.modules.values():
        module.train()
    log = (out / f"{stage}.log").open("a")
    stop = min(recipe.steps, until or recipe.steps)
    bar = tqdm(range(start, stop), initial=start, total=recipe.steps, desc=stage, file=sys.stdout)
    began = time.perf_counter()
    for step in bar:
        gen = torch.Generator(device).manual_seed(seed * 1_000_003 + step)
        losses = runner.loss(batch_samples(seed, step, recipe.batch), gen)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        values = {k: round(v.item(), 4) for k, v in losses.items()}
        bar.set_postfix(values)
        if (step + 1) % 25 == 0:
            log.write(f"{step + 1} {time.perf_counter() - began:.0f}s {values}\n")
            log.flush()
        if (step + 1) % ckpt_every == 0 or step + 1 in (stop, recipe.steps):
            extra = runner.extra(seed) if stage == "vae" and step + 1 == recipe.steps else {}
            save_checkpoint(path, runner.modules, optimizer, schedule, step + 1, {"recipe": asdict(recipe), **extra})
    log.close()


def export(
    out: Path,
    to: Path,
    sizes: demo.DemoSizes = demo.DemoSizes(),  # noqa: B008 - frozen dataclass
    parts: tuple[str, ...] = ("mgie", "ip2p"),
) -> None:
    """Write the trained models in their official layouts: <to>/mgie (MGIE's four folders), <to>/ip2p (diffusers)."""
    vae = load_vae(out, sizes, "cpu")
    if "mgie" in parts:
        mllm, head, unet = demo.build_mllm(sizes), demo.build_head(sizes), demo.build_unet(sizes)
        load_checkpoint(out / "mgie.ckpt", {"mllm": mllm, "head": head, "unet": unet})
        demo.export_mgie(to / "mgie", sizes, mllm, head, unet, vae)
    if "ip2p" in parts:
        text, unet = demo.build_text_encoder(sizes), demo.build_unet(sizes)
        load_checkpoint(out / "ip2p.ckpt", {"text": text, "unet": unet})
        demo.export_ip2p(to / "ip2p", unet, vae, text)
    print(f"wrote {', '.join(str(to / part) for part in parts)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m editor.demo.train", description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=(*STAGES, "export"))
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (checkpoints, logs)")
    parser.add_argument("--to", type=Path, default=Path("weights/demo"), help="export: destination folder")
    parser.add_argument("--parts", nargs="+", choices=("mgie", "ip2p"), default=["mgie", "ip2p"], help="export: which")
    parser.add_argument("--steps", type=int, help="override the recipe's step count")
    parser.add_argument("--batch", type=int, help="override the recipe's batch size")
    parser.add_argument("--lr", type=float, help="override the recipe's learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--ckpt-every", type=int, default=100)
    parser.add_argument("--until", type=int, help="stop after this step (rerun later to resume)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stage == "export":
        export(args.out, args.to, parts=tuple(args.parts))
        return
    base = RECIPES[args.stage]
    recipe = StageConfig(args.steps or base.steps, args.batch or base.batch, args.lr or base.lr, base.warmup)
    train(args.stage, args.out, recipe, args.seed, args.device, args.ckpt_every, until=args.until)


if __name__ == "__main__":
    main()
