"""Expected peak GPU memory of a fine-tuning mode, from parameter counts and the optimizer, printed before training;
a mode that cannot fit the visible GPU is refused with the smaller modes named.

weights      every parameter and buffer at its dtype (frozen ones in the mixed-precision dtype, trainable fp32)
gradients    fp32, one per trainable value (a partly trained embedding matrix still has a full-size gradient)
optimizer    AdamW: two fp32 moments per trainable value; 8-bit AdamW (bitsandbytes): two uint8 moments, each with one
             fp32 scale per block of 256 values (tensors under 4096 values keep fp32 moments: a small undercount)
activations  a rough term: the LLaMA part by the transformer rule s*b*h*(34 + 5*a*s/h) bytes per layer in 16 bit
             (2*s*b*h with checkpointing; Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
             Transformer Models"), the UNet part 1.75 GB per sample at 256 px (0.4 GB checkpointed), scaled by the
             pixel count: an assumption until measured on a GPU
On CPU the estimate is printed, never enforced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editor.finetune.config import FinetuneConfig

GIB = 1024**3
UNET_ACTIVATION_256 = 1.75e9  # bytes per sample at 256 px, no checkpointing (assumed, not measured)
UNET_ACTIVATION_256_CKPT = 0.4e9
EIGHT_BIT_BLOCK = 256  # bitsandbytes' blockwise quantization of the optimizer state
HEADROOM = 0.92  # share of the GPU's memory a run may plan to use (allocator fragmentation, CUDA context)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    trainable: int  # parameters

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def describe(self, mode: str) -> str:
        parts = ", ".join(
            f"{name} {value / GIB:.2f}"
            for name, value in (
                ("weights", self.weights),
                ("gradients", self.gradients),
                ("optimizer", self.optimizer),
                ("activations (rough)", self.activations),
            )
        )
        return (
            f"expected peak memory per process for {mode}: {self.total / GIB:.2f} GiB ({parts} GiB; "
            f"{self.trainable / 1e6:.1f} M trainable parameters)"
        )


def estimate(model: torch.nn.Module, config: FinetuneConfig, seq_len: int, instruct: bool) -> MemoryEstimate:
    """`model` as it will train (frozen parts cast, adapters added); `seq_len` = tokens of one training sequence."""
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    llm = model.mllm.llm.config
    b, s, h = config.batch_size, seq_len, llm.hidden_size
    act_bytes = 2  # activations in the autocast dtype (fp32 without mixed precision: twice this)
    if config.mixed_precision in (None, "no"):
        act_bytes = 4
    full = s * b * h * (34 + 5 * llm.num_attention_heads * s / h)
    per_layer = 2 * s * b * h if config.gradient_checkpointing else full
    llm_act = per_layer * llm.num_hidden_layers * act_bytes / 2 if instruct else 0
    unet_256 = UNET_ACTIVATION_256_CKPT if config.gradient_checkpointing else UNET_ACTIVATION_256
    unet_act = unet_256 * b * (config.resolution / 256) ** 2 * act_bytes / 2
    moments = 8 * trainable if config.optimizer == "adamw" else int((2 + 2 * 4 / EIGHT_BIT_BLOCK) * trainable)
    return MemoryEstimate(weights, 4 * trainable, moments, int(llm_act + unet_act), trainable)


def smaller_modes(config: FinetuneConfig) -> list[str]:
    """What to try instead, cheapest change first."""
    modes = []
    if not config.gradient_checkpointing:
        modes.append("--gradient-checkpointing")
    if config.mixed_precision in (None, "no"):
        modes.append("--mixed-precision bf16")
    if config.optimizer == "adamw":
        modes.append("--optimizer adamw8bit")
    if not config.lora_unet:
        modes.append("--lora-unet 64 (adapters instead of the whole UNet)")
    if config.batch_size > 1:
        modes.append(f"--batch-size {max(1, config.batch_size // 2)} --grad-accum {config.grad_accum * 2}")
    modes.append("DeepSpeed ZeRO-2 over several GPUs (examples/accelerate/deepspeed_zero2.yaml)")
    return modes


def check_fits(found: MemoryEstimate, config: FinetuneConfig, device: torch.device) -> None:
    """Refuse a mode that cannot fit the GPU; on other devices do nothing (the estimate was printed)."""
    if device.type != "cuda":
        return
    total = torch.cuda.get_device_properties(device).total_memory
    if found.total > HEADROOM * total:
        raise MemoryError(
            f"{config.mode} needs about {found.total / GIB:.1f} GiB, but {torch.cuda.get_device_name(device)} has "
            f"{total / GIB:.1f} GiB. Smaller modes: {'; '.join(smaller_modes(config))}"
        )
