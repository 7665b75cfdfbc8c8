"""The training run, on accelerate: one process or many (`accelerate launch`, DDP or DeepSpeed from its config),
gradient accumulation, mixed precision, data sharding and the resumable state are accelerate's; this module only
chooses what trains, logs, and writes the result (editor.finetune.export).

Resume: OUT/checkpoints/step-NNNNNN holds `accelerator.save_state` (trainable weights only, optimizer, scheduler,
RNG); a rerun with the same --out continues from the newest one. Sample order is accelerate's seedable sampler
(seed + epoch), the batches already done are skipped, and every random draw of a sample comes from a seed made of
(--seed, epoch, sample index), so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedType
from safetensors import safe_open
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from editor.finetune.config import FinetuneConfig
from editor.finetune.data import DataError, TripletDataset, check_triplet, collate, read_triplets
from editor.finetune.evaluate import eval_command, run_eval
from editor.finetune.export import layout_root, write_official_layout
from editor.finetune.memory import check_fits, estimate
from editor.finetune.model import FinetuneModel, configure, think_states, upcast_trainable
from editor.finetune.samples import write_samples
from editor.pipelines.mgie import MGIE, MGIEPaths
from editor.pipelines.registry import DEFAULT_WEIGHTS_DIR, DTYPES, EDITORS
from editor.pipelines.spec import LoadOptions

CHECKPOINTS = "checkpoints"
EVAL_DRAWS = 4  # fixed draws (timestep, noise, dropout) per sample in `measure`
BEFORE_FILE = "loss_before.json"  # the fixed-draw losses of step 0, kept for training.json across resumes
STEP_DIR = re.compile(r"step-(\d+)$")


def base_paths(config: FinetuneConfig) -> MGIEPaths:
    """The base model's four folders as the registry finds them under the weights folder (a demo model's own copy
    under <weights>/demo first, else the shipped one)."""
    weights = Path(config.weights_dir or DEFAULT_WEIGHTS_DIR)
    return MGIEPaths(*EDITORS[config.model].paths(weights))


def open_base(config: FinetuneConfig, base: MGIEPaths, dtype: torch.dtype) -> MGIE:
    """The base model on the CPU through its registry spec's loader, as the app opens it (the demo: its own
    decoding and settings)."""
    paths = (base.llava, base.mgie, base.ip2p, base.clip)
    return EDITORS[config.model].load(paths, name=config.model, options=LoadOptions("cpu", dtype))


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch) * 1_000_033 + index


def latest_checkpoint(out: Path) -> tuple[Path, int] | None:
    found = [(int(m.group(1)), p) for p in (out / CHECKPOINTS).glob("step-*") if (m := STEP_DIR.search(p.name))]
    return (max(found)[1], max(found)[0]) if found else None


DDP_PREFIX = "module."  # what a DistributedDataParallel wrapper puts before its module's parameter names


def keep_trainable(weights: list[dict], trainable: set[str]) -> None:
    """accelerate's save hook: the model states it is about to write keep only the trainable tensors (not the
    frozen 7B); a state's keys are compared without a DDP wrapper's prefix, whichever form accelerate hands over."""
    for state in weights:
        for key in [k for k in state if k.removeprefix(DDP_PREFIX) not in trainable]:
            del state[key]


def save_options(deepspeed: bool) -> dict:
    """DeepSpeed writes its own module file, the frozen weights included unless told otherwise."""
    return {"exclude_frozen_parameters": True} if deepspeed else {}


def check_resume_point(folder: Path, trainable: set[str]) -> None:
    """A checkpoint must hold every trainable tensor: resuming loads non-strictly (the frozen weights are not in
    it), so a checkpoint without them would silently restart the trainable part from the base weights."""
    path = folder / "model.safetensors"
    if not path.exists():
        raise RuntimeError(f"{folder} has no model.safetensors: not a checkpoint of this trainer; use a new --out")
    with safe_open(path, "pt") as f:
        held = {k.removeprefix(DDP_PREFIX) for k in f.keys()}  # noqa: SIM118 - safe_open is no mapping
    if missing := trainable - held:
        raise RuntimeError(
            f"{folder} lacks {len(missing)} of the {len(trainable)} trainable tensors (e.g. {min(missing)}): it was "
            "written by another mode or an earlier version; use a new --out, or --out of the run that wrote it"
        )


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """torch's AdamW, or bitsandbytes' AdamW8bit (found before any weights load, so a missing package fails fast)."""
    if name == "adamw":
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError as e:
        raise SystemExit(f"--optimizer {name} needs bitsandbytes (pip install bitsandbytes): {e}") from e
    return bitsandbytes.optim.AdamW8bit


class Trainer:
    def __init__(self, config: FinetuneConfig) -> None:
        self.config = config
        self.optimizer_class = optimizer_class(config.optimizer)
        self.accelerator = Accelerator(
            gradient_accumulation_steps=config.grad_accum,
            mixed_precision=config.mixed_precision,
            cpu=config.cpu,
            step_scheduler_with_optimizer=False,  # stepped once per optimizer step, whatever the process count
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
        )
        self.print = self.accelerator.print
        triplets = read_triplets(config.data, config.dataset_kind, config.limit)
        for triplet in triplets:
            check_triplet(triplet)
        if config.held_out >= len(triplets):
            raise DataError(f"--held-out {config.held_out} leaves none of the {len(triplets)} triplets to train on")
        split = len(triplets) - config.held_out
        self.triplets, self.held_out = triplets[:split], triplets[split:]  # held out: the last by id
        self.instruct = bool(self.triplets[0].expressive)
        self.base = base_paths(config)
        # with mixed precision the weights load in its dtype (half the host memory of each process) and only the
        # trainable ones become fp32; without it everything is fp32
        low = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.accelerator.mixed_precision, torch.float32)
        self.editor = open_base(config, self.base, low)
        self.config = config = config.sized(self.editor.native_size)  # --resolution, else the model's own
        self.model = FinetuneModel(self.editor, self.instruct, config.edit_weight, config.embed_rows, config.lora_llm)
        upcast_trainable(self.model, config.lora_unet)
        self.adapters = configure(
            self.model, config.lora_unet, config.lora_llm, config.lora_alpha, config.gradient_checkpointing
        )
        self.dataset = TripletDataset(
            self.triplets,
            self.editor.tokenizer,
            self.editor.image_processor,
            self.editor.num_patches,
            config.resolution,
        )
        self.think_cache: dict[int, torch.Tensor] = {}

    def describe_start(self) -> None:
        config, n = self.config, len(self.triplets)
        if self.held_out:
            names = ", ".join(t.id for t in self.held_out)
            self.print(f"held out for sample edits (every {config.sample_every or config.steps} steps): {names}")
        global_batch = config.batch_size * config.grad_accum * self.accelerator.num_processes
        self.print(f"{n} triplets from {config.data}; base {config.model} from {self.base.mgie.parent}")
        if self.instruct:
            self.print(f"objective: L_ins + {config.edit_weight:.2f} * L_edit (the data has expressive texts)")
        else:
            self.print(
                "objective: L_edit only: the data has no expressive texts, so the condition comes from the frozen "
                "MLLM's own think on each instruction (greedy decoding as in the app) and the MLLM does not train"
            )
        self.print(f"mode: {config.mode}; global batch {global_batch}; {config.steps} steps")
        seq_len = max(len(self.dataset[i]["ids"]) for i in range(min(n, 8)))
        found = estimate(self.model, config, seq_len, self.instruct)
        self.print(found.describe(config.mode))
        check_fits(found, config, self.accelerator.device)

    def states_for(self, batch: dict) -> torch.Tensor | None:
        """Without L_ins: the frozen MLLM's think states per sample, computed once and kept (the MLLM is frozen)."""
        if self.instruct:
            return None
        rows = []
        for row, index in enumerate(batch["index"].tolist()):
            if index not in self.think_cache:
                ids = batch["ids"][row : row + 1, : batch["lengths"][row]]
                with self.accelerator.autocast():
                    self.think_cache[index] = think_states(self.editor, batch["clip"][row], ids)
            rows.append(self.think_cache[index].clone())  # a normal tensor (inference tensors cannot be saved)
        return torch.stack(rows).float()

    def losses(self, model, batch: dict, epoch: int, dropout: bool = True) -> dict[str, torch.Tensor]:
        seeds = [sample_seed(self.config.seed, epoch, i) for i in batch["index"].tolist()]
        return model(batch, seeds, self.states_for(batch), dropout)

    @torch.no_grad()
    def measure(self, model) -> dict[str, float]:
        """Losses on the first `eval_samples` triplets, averaged over EVAL_DRAWS fixed draws per sample (epochs
        -1, -2, ...) with every condition kept (no dropout): comparable before and after training."""
        items = [self.dataset[i] for i in range(min(self.config.eval_samples, len(self.dataset)))]
        batch = {k: v.to(self.accelerator.device) for k, v in collate(items).items()}
        model.eval()
        totals: dict[str, float] = {}
        with self.accelerator.autocast():
            for draw in range(1, EVAL_DRAWS + 1):
                for key, value in self.losses(model, batch, -draw, dropout=False).items():
                    totals[key] = totals.get(key, 0.0) + float(value) / EVAL_DRAWS
        model.train()
        return {k: round(v, 6) for k, v in totals.items()}

    def run(self) -> Path | None:
        config, acc = self.config, self.accelerator
        self.describe_start()
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=config.batch_size, shuffle=True, drop_last=True, collate_fn=collate
        )
        per_step = config.batch_size * acc.num_processes
        if len(self.dataset) < per_step:
            raise DataError(f"{len(self.dataset)} triplets are fewer than one batch ({per_step}); lower --batch-size")
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_class(params, lr=config.lr, weight_decay=config.weight_decay)
        schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup * config.steps), config.steps)
        model, optimizer, loader, schedule = acc.prepare(self.model, optimizer, loader, schedule)
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}  # unwrapped names
        acc.register_save_state_pre_hook(lambda _models, weights, _folder: keep_trainable(weights, trainable))
        deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
        out = Path(config.out)
        step = 0
        if found := latest_checkpoint(out):
            # the checkpoint holds the trainable weights only (DeepSpeed: its module file without the frozen ones)
            if not deepspeed:
                check_resume_point(found[0], trainable)
            acc.load_state(str(found[0]), **({"load_module_strict": False} if deepspeed else {"strict": False}))
            step = found[1]
            self.print(f"resuming from {found[0]} (step {step})")
        elif acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
        if step == 0:
            before = self.measure(model)
            if acc.is_main_process:
                (out / BEFORE_FILE).write_text(json.dumps(before))
        stop = min(config.steps, config.stop_after or config.steps)
        batches = len(loader)
        micro = step * config.grad_accum
        epoch, skip = divmod(micro, batches)
        bar = tqdm(total=stop, initial=step, desc="fine-tune", disable=not acc.is_local_main_process)
        log = (out / "log.jsonl").open("a") if acc.is_main_process else None
        began = time.perf_counter()
        model.train()
        while step < stop:
            loader.set_epoch(epoch)
            epoch_loader = acc.skip_first_batches(loader, skip) if skip else loader
            epoch_loader.set_epoch(epoch)
            for batch in epoch_loader:
                with acc.accumulate(model):
                    with acc.autocast():
                        values = self.losses(model, batch, epoch)
                    acc.backward(values["loss"])
                    if acc.sync_gradients:
                        acc.clip_grad_norm_(params, config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                if not acc.sync_gradients:
                    continue
                schedule.step()
                step += 1
                bar.update(1)
                logged = {k: float(acc.reduce(v.detach(), reduction="mean")) for k, v in values.items()}
                bar.set_postfix({k: round(v, 4) for k, v in logged.items()})
                if log and step % config.log_every == 0:
                    row = {"step": step, **logged, "lr": schedule.get_last_lr()[0]}
                    row["seconds"] = round(time.perf_counter() - began, 3)
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                if config.save_every and step % config.save_every == 0 or step == stop:
                    acc.save_state(str(out / CHECKPOINTS / f"step-{step:06d}"), **save_options(deepspeed))
                if self.held_out and (config.sample_every and step % config.sample_every == 0 or step == config.steps):
                    self.samples(step)
                if step >= stop:
                    break
            epoch, skip = epoch + 1, 0
        bar.close()
        if log:
            log.close()
        acc.wait_for_everyone()
        if step < config.steps:
            self.print(f"stopped after step {step} of {config.steps}; rerun the same command to resume")
            return None
        return self.finish(model)

    def samples(self, step: int) -> None:
        """Sample edits of the held-out triplets with the current weights (main process; the others wait)."""
        if self.accelerator.is_main_process:
            folder = Path(self.config.out) / "samples" / f"step-{step:06d}"
            with self.accelerator.autocast():
                write_samples(
                    self.editor, self.model, self.held_out, folder, self.config.resolution, self.config.sample_steps
                )
        self.accelerator.wait_for_everyone()

    def finish(self, model) -> Path:
        acc, config = self.accelerator, self.config
        after = self.measure(model)
        if acc.is_main_process:
            out = Path(config.out)
            root = layout_root(config.model, out)
            write_official_layout(self.model, self.adapters, self.base, root, DTYPES[config.save_dtype])
            before = json.loads((out / BEFORE_FILE).read_text()) if (out / BEFORE_FILE).exists() else None
            record = {
                "config": config.describe(),
                "objective": "L_ins + L_edit" if self.instruct else "L_edit (condition from the frozen MLLM's think)",
                "processes": acc.num_processes,
                "loss_before": before,
                "loss_after": after,
            }
            (out / "training.json").write_text(json.dumps(record, indent=1))
            self.print(f"wrote {out} (official layout): python app.py --weights-dir {out} --model {config.model}")
            if not config.eval_data:
                self.print(f"evaluate: python -m editor.eval --model {config.model} --weights {out} --data HELD-OUT")
        acc.wait_for_everyone()
        if config.eval_data:
            self.evaluate()
        return Path(config.out)

    def evaluate(self) -> None:
        """`python -m editor.eval` on --eval-data with the written model, on the main process once training has
        released its memory; the report goes to OUT/eval and is printed."""
        self.model.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if not self.accelerator.is_main_process:
            return
        config = self.config
        cpu = self.accelerator.device.type == "cpu"
        out = Path(config.out).resolve()
        command = eval_command(config.model, out, str(config.eval_data), config.eval_steps, config.resolution, cpu)
        self.print(f"evaluating: {' '.join(command[1:])}")
        self.print(run_eval(command, Path(__file__).resolve().parents[2]))


def check_out(config: FinetuneConfig) -> None:
    """Refuses an --out whose model folders are the base's own: writing the result would overwrite the weights it
    starts from (e.g. `--out weights`, the app's weights folder)."""
    base = base_paths(config)
    bases = {p.resolve().parent for p in (base.llava, base.mgie, base.ip2p, base.clip)}
    if layout_root(config.model, Path(config.out)).resolve() in bases:
        raise DataError(
            f"--out {config.out} would write the model over its base weights in {sorted(bases)[0]}: choose a new "
            "folder (e.g. runs/ft/NAME)"
        )


def run(config: FinetuneConfig) -> Path | None:
    """Train as configured; the output folder once every step is done, None when stopped early (resumable)."""
    check_out(config)
    return Trainer(config).run()
