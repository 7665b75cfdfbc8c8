"""What trains: MGIE's MLLM, edit head and UNet as one module whose forward is MGIE's objective (docs: README
"Fine-tuning"), plus the freezing, peft LoRA and merging rules. Loading stays in editor.pipelines.mgie.load_mgie.

Objective (MGIE's own training recipe, summarised in README "Fine-tuning"):
  L_ins   token cross-entropy of "<expressive> [IMG0..7]</s>" after the inference prompt (ids from
          `training_token_ids`), averaged per sample, then over the batch (so a batch split across processes gives
          the same value as one process; MGIE averages over all tokens of the batch).
  L_edit  the UNet's MSE against its prediction target (the scheduler config's prediction_type: epsilon for
          MGIE-7B, v for the demo model; `prediction_target`)
          on the noised goal latent (VAE sample x scaling factor), the input latent (VAE mode, unscaled)
          concatenated on channels, conditioned on edit_head(states predicting [IMG0..7], [IMG] embedding rows).
  total   L_ins + edit_weight * L_edit (0.5); condition dropout per sample u: u < .05 null text, .05-.10 null text
          and zeroed input latent, .10-.15 zeroed input latent; null text = edit_head(zeros, [IMG] rows).
Without expressive texts there is no L_ins: the states come from the frozen MLLM's own greedy think on the
instruction (`think_states`, cached per sample) and the whole MLLM stays frozen.

Every random draw of a sample (goal-latent sample, noise, timestep, dropout) comes from a generator seeded by the
sample's own seed (`FinetuneModel.forward`), so a run does not depend on how samples are spread over processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from editor.finetune.data import DataError
from editor.models.llava import greedy_decode
from editor.pipelines.mgie import MGIE, img_window_start
from editor.prompts import IMG_TOKENS

N_IMG = len(IMG_TOKENS)
LLM_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # the LLaMA attention
UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the UNet's self- and cross-attention
DROP_TEXT, DROP_BOTH, DROP_IMAGE = 0.05, 0.10, 0.15  # MGIE's condition dropout thresholds


class FinetuneModel(nn.Module):
    def __init__(
        self, editor: MGIE, instruct: bool, edit_weight: float = 0.5, embed_rows: str = "new", lora_llm: int = 0
    ) -> None:
        super().__init__()
        self.mllm, self.head = editor.mllm, editor.head
        self.unet, self.vae = editor.pipe.unet, editor.pipe.vae
        self.noise = DDPMScheduler.from_config(editor.pipe.scheduler.config)
        self.instruct, self.edit_weight = instruct, edit_weight
        self.embed_rows, self.lora_llm = embed_rows, lora_llm
        self.img0 = editor.img_ids[0]
        self.im_start = editor.im_start_id
        self.scaling = float(self.vae.config.scaling_factor)
        self.register_buffer("frozen_emb", editor.img_embeddings.detach().float().clone(), persistent=False)

    def img_embeddings(self) -> torch.Tensor:
        """The 8 x hidden [IMG] rows the head adds to its input: trained embedding rows with L_ins (MGIE's training
        feeds the head `embed_tokens.weight[-8:]`), the loaded `emb` when the MLLM is frozen."""
        if self.instruct:
            return self.mllm.llm.get_input_embeddings().weight[-N_IMG:]
        return self.frozen_emb

    def instruction_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_ins, B x 8 x hidden final-norm states at the positions that predict [IMG0..7])."""
        ids, labels = batch["ids"], batch["labels"]
        with torch.no_grad():  # the CLIP tower and projector are frozen
            features = self.mllm.encode_image(batch["clip"].to(self.mllm.projector.weight.dtype))
        embeds = self.mllm.embed_with_image(ids, features, self.im_start)
        hidden = self.mllm.final_states(embeds)  # B x L x H
        logits = self.mllm.llm.lm_head(hidden[:, :-1]).float()
        targets = labels[:, 1:]
        per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # B x (L-1)
        counted = (targets != -100).float()
        l_ins = ((per_token * counted).sum(1) / counted.sum(1)).mean()
        k = (ids == self.img0).int().argmax(dim=1)  # position of [IMG0]
        window = k[:, None] - 1 + torch.arange(N_IMG, device=ids.device)
        states = hidden.gather(1, window[..., None].expand(-1, -1, hidden.shape[-1]))
        return l_ins, states

    def edit_loss(
        self, batch: dict, cond: torch.Tensor, null: torch.Tensor, seeds: list[int], dropout: bool = True
    ) -> torch.Tensor:
        device, dtype = cond.device, self.vae.dtype
        with torch.no_grad():
            goal = self.vae.encode(batch["goal"].to(dtype)).latent_dist
            source = self.vae.encode(batch["source"].to(dtype)).latent_dist.mode().float()
        draws = [_draws(seed, goal.mean.shape[1:], self.noise.config.num_train_timesteps) for seed in seeds]
        u, t, eps, noise = (torch.stack([d[i] for d in draws]).to(device) for i in range(4))
        target = (goal.mean.float() + goal.std.float() * eps) * self.scaling
        b = target.shape[0]
        u = u if dropout else torch.ones_like(u)  # no dropout: every sample keeps its text and image
        drop_text = (u < DROP_BOTH).view(b, 1, 1)
        keep_image = ~((u >= DROP_TEXT) & (u < DROP_IMAGE)).view(b, 1, 1, 1)
        cond = torch.where(drop_text, null.expand_as(cond), cond)
        noisy = self.noise.add_noise(target, noise, t)
        pred = self.unet(torch.cat([noisy, source * keep_image], dim=1), t, cond).sample
        return F.mse_loss(pred.float(), prediction_target(self.noise, target, noise, t))

    def forward(
        self, batch: dict, seeds: list[int], states: torch.Tensor | None = None, dropout: bool = True
    ) -> dict[str, torch.Tensor]:
        """Losses of one batch; `states` (B x 8 x hidden, from `think_states`) when training without L_ins;
        `dropout=False` keeps every condition (the fixed-draw measurement)."""
        losses = {}
        if self.instruct:
            losses["ins"], states = self.instruction_loss(batch)
        emb = self.img_embeddings()
        cond = self.head(states.to(emb.dtype), emb)
        null = self.head(torch.zeros_like(states[:1], dtype=emb.dtype), emb)
        losses["edit"] = self.edit_loss(batch, cond, null, seeds, dropout)
        losses["loss"] = losses.get("ins", 0.0) + self.edit_weight * losses["edit"]
        return losses


def prediction_target(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """What the UNet learns to predict from `scheduler.add_noise(latents, noise, t)`, by the scheduler config's
    prediction_type: the noise (epsilon: MGIE-7B), the velocity sqrt(a_t) noise - sqrt(1 - a_t) latents
    (v_prediction: the demo model; diffusers' get_velocity) or the clean latents (sample)."""
    kind = scheduler.config.prediction_type
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    if kind == "sample":
        return latents
    if kind != "epsilon":
        raise ValueError(f"unknown prediction_type {kind!r} in the scheduler config")
    return noise


def _draws(seed: int, shape: torch.Size, timesteps: int) -> tuple[torch.Tensor, ...]:
    """One sample's (u, t, eps, noise), drawn on the CPU in a fixed order from its own seed."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand((), generator=gen)
    t = torch.randint(0, timesteps, (), generator=gen)
    return u, t, torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)


@torch.inference_mode()
def think_states(editor: MGIE, clip: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The frozen MLLM's own think on one prompt (1 x L ids, 3 x S x S CLIP pixels): greedy decoding as the app
    does (editor.pipelines.mgie), then the 8 final-norm states the edit head reads (8 x hidden)."""
    mllm = editor.mllm
    features = mllm.encode_image(clip[None].to(mllm.projector.weight.dtype))
    embeds = mllm.embed_with_image(ids, features, editor.im_start_id)
    n = ids.shape[1]

    def done(seq: list[int]) -> bool:
        new = seq[n:]
        return editor.img_ids[0] in new and len(new) > new.index(editor.img_ids[0]) + N_IMG

    decode = editor.decode
    out = greedy_decode(mllm.llm, ids, embeds, decode.max_new_tokens, decode.no_repeat_ngram_size, done)
    start = img_window_start(out.ids, out.states.shape[0], editor.img_ids[0])
    return out.states[start : start + N_IMG]


# --- what trains ---------------------------------------------------------------------------------------------


def configure(model: FinetuneModel, lora_unet: int, lora_llm: int, lora_alpha: float | None, checkpointing: bool):
    """Freeze what MGIE freezes (LLaMA blocks and norm, projector, CLIP tower, VAE), then make trainable: the edit
    head; the UNet (or LoRA adapters on its attention); with L_ins the LM head and the [IMG] embedding rows (all
    rows with embed_rows="all"), and LoRA adapters on the LLaMA attention when asked. Returns the peft models
    ({"unet": ..., "llm": ...}) whose adapters are merged on export."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel

    model.requires_grad_(False)
    adapters = {}
    if lora_llm:
        if not model.instruct:
            raise DataError("--lora-llm needs expressive texts in the data: without L_ins the MLLM stays frozen")
        config = LoraConfig(r=lora_llm, lora_alpha=lora_alpha or lora_llm, target_modules=list(LLM_LORA_TARGETS))
        adapters["llm"] = LoraModel(model.mllm.llm, config, "default")
    if lora_unet:
        config = LoraConfig(r=lora_unet, lora_alpha=lora_alpha or lora_unet, target_modules=list(UNET_LORA_TARGETS))
        adapters["unet"] = LoraModel(model.unet, config, "default")
    else:
        model.unet.requires_grad_(True)
    model.head.requires_grad_(True)
    if model.instruct:
        model.mllm.llm.lm_head.weight.requires_grad_(True)
        embed = model.mllm.llm.get_input_embeddings().weight
        embed.requires_grad_(True)
        if model.embed_rows == "new":  # only [IMG0..7] learn; other rows get no gradient (no Adam state moves them)
            keep = torch.zeros(embed.shape[0], 1, dtype=embed.dtype)
            keep[-N_IMG:] = 1
            embed.register_hook(lambda grad: grad * keep.to(grad.device, grad.dtype))
    for param in model.parameters():  # LoRA adapters are made in their base layer's dtype: fp32 master weights
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    if checkpointing:
        model.unet.enable_gradient_checkpointing()
        if model.instruct:
            llm, kwargs = model.mllm.llm, {"use_reentrant": False}
            if hasattr(llm, "activation_checkpointing_enable"):  # transformers >= 5.2x names it so
                llm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return adapters


def upcast_trainable(model: FinetuneModel, lora_unet: int) -> None:
    """The parts that will train in fp32 (the master weights AdamW updates); frozen ones keep the dtype they were
    loaded in (bf16/fp16 under mixed precision: accelerate's autocast runs the matmuls in low precision). LoRA
    adapters become fp32 in `configure`. Call before `configure`."""
    trainable = [model.head] + ([] if lora_unet else [model.unet])
    if model.instruct:
        trainable += [model.mllm.llm.model.embed_tokens, model.mllm.llm.lm_head]
    for module in trainable:
        module.float()


# --- merging ------------------------------------------------------------------------------------------------


def merged_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module`'s state dict as if its LoRA adapters were merged (W + scaling * B @ A, by peft's own delta), with
    the original key names; the module itself is left as it is (training may go on)."""
    from peft.tuners.lora import LoraLayer

    state = {}
    for key, value in module.state_dict().items():
        if ".lora_" not in key:
            state[key.replace(".base_layer.", ".")] = value.detach()
    for name, layer in module.named_modules():
        if isinstance(layer, LoraLayer):
            base = layer.get_base_layer().weight
            delta = layer.get_delta_weight("default")
            state[f"{name}.weight"] = (base.float() + delta.float()).to(base.dtype).detach()
    return state


def adapter_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA tensors alone (peft's key names), kept beside the merged weights."""
    return {key: value.detach() for key, value in module.state_dict().items() if ".lora_" in key}
