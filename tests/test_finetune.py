"""editor.finetune on the tiny official-layout tree: the loss falls, 4 triplets overfit, frozen weights stay
bit-identical, LoRA merges to base + adapter, the output opens in the app's loader and edits, a resumed run equals
an uninterrupted one, bad data stops with one error naming the sample. Every run is in-process, on the CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from PIL import Image
from safetensors.torch import load_file

from editor.finetune.config import FinetuneConfig
from editor.finetune.data import DataError, check_triplet, read_triplets
from editor.finetune.loop import Trainer, keep_trainable
from editor.finetune.memory import MemoryEstimate, check_fits, estimate, smaller_modes
from editor.params import EditParams, Resolution
from editor.pipelines.mgie import MGIEPaths, load_mgie, prompt_token_ids
from editor.pipelines.spec import LoadOptions

ROOT = Path(__file__).resolve().parents[1]


def write_pairs(folder: Path, expressive: bool, n: int = 4, broken: dict | None = None) -> Path:
    """n (input, instruction, goal) triplets of 64 x 64 noise images, the goal with a coloured square painted in."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        source = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        goal = source.copy()
        goal[16:48, 16:48] = [255 * (i % 2), 40 * i, 255]
        Image.fromarray(source).save(folder / f"in{i}.png")
        Image.fromarray(goal).save(folder / f"out{i}.png")
        entry = {"id": f"s{i}", "input": f"in{i}.png", "goal": f"out{i}.png", "instruction": f"paint square {i}"}
        if expressive:
            entry["expressive"] = f"a square of colour {i} fills the middle"
        lines.append({**entry, **(broken or {}).get(i, {})})
    (folder / "edits.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


@pytest.fixture(autouse=True)
def _fresh_accelerate():
    """Each run builds its own Accelerator; accelerate keeps process-wide singletons, reset between runs."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def expressive_data(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("expressive"), expressive=True)


@pytest.fixture(scope="module")
def plain_data(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("plain"), expressive=False)


def config(data: Path, out: Path, weights: Path, **kw) -> FinetuneConfig:
    base = dict(steps=4, batch_size=2, lr=1e-3, warmup=0.0, resolution=64, save_dtype="float32", eval_samples=4)
    return FinetuneConfig(data=data, out=out, weights_dir=weights, **(base | kw))


def train(cfg: FinetuneConfig) -> tuple[Trainer, dict]:
    trainer = Trainer(cfg)
    trainer.run()
    record = json.loads((cfg.out / "training.json").read_text()) if (cfg.out / "training.json").exists() else {}
    return trainer, record


def test_a_few_steps_lower_the_loss_and_frozen_weights_stay_bit_identical(tiny_tree, expressive_data, tmp_path):
    trainer, record = train(config(expressive_data, tmp_path / "run", tiny_tree, steps=6))
    assert record["objective"] == "L_ins + L_edit"
    before, after = record["loss_before"], record["loss_after"]
    assert after["ins"] < before["ins"] and after["edit"] < before["edit"] and after["loss"] < before["loss"]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5, 6]
    # what MGIE freezes is bit-identical to a fresh load; what trains has moved
    fresh = load_mgie(MGIEPaths.from_weights_dir(tiny_tree), options=LoadOptions("cpu", torch.float32))
    model = trainer.model
    for name in ("llm.model.layers", "llm.model.norm", "vision", "projector"):
        trained = {k: v for k, v in model.mllm.state_dict().items() if k.startswith(name)}
        assert trained and all(torch.equal(v, fresh.mllm.state_dict()[k]) for k, v in trained.items()), name
    assert all(torch.equal(v, fresh.pipe.vae.state_dict()[k]) for k, v in model.vae.state_dict().items())
    embed, embed0 = model.mllm.llm.get_input_embeddings().weight, fresh.mllm.llm.get_input_embeddings().weight
    assert torch.equal(embed[:-8], embed0[:-8]) and not torch.equal(embed[-8:], embed0[-8:])  # only [IMG0..7]
    assert not torch.equal(model.mllm.llm.lm_head.weight, fresh.mllm.llm.lm_head.weight)
    assert not torch.equal(model.unet.conv_in.weight, fresh.pipe.unet.conv_in.weight)
    assert not torch.equal(model.head.query, fresh.head.query)


def test_overfitting_four_triplets_drives_l_edit_down(tiny_tree, plain_data, tmp_path, capsys):
    cfg = config(plain_data, tmp_path / "run", tiny_tree, steps=30, batch_size=4, lr=5e-3)
    trainer, record = train(cfg)
    assert "L_edit only" in capsys.readouterr().out  # the data has no expressive texts: said so
    assert record["objective"].startswith("L_edit")
    before, after = record["loss_before"]["edit"], record["loss_after"]["edit"]
    assert after < before / 3, (before, after)
    fresh = load_mgie(MGIEPaths.from_weights_dir(tiny_tree), options=LoadOptions("cpu", torch.float32))
    # without L_ins the whole MLLM is frozen, embeddings and LM head included
    assert all(torch.equal(v, fresh.mllm.state_dict()[k]) for k, v in trainer.model.mllm.state_dict().items())


@pytest.fixture(scope="module")
def lora_run(tiny_tree, expressive_data, tmp_path_factory):
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    out = tmp_path_factory.mktemp("lora") / "run"
    cfg = config(expressive_data, out, tiny_tree, steps=3, lora_unet=4, lora_llm=4, lora_alpha=8)
    cfg = replace(cfg, batch_size=1, grad_accum=2, gradient_checkpointing=True, held_out=1, sample_steps=2)
    trainer, _ = train(cfg)
    return trainer, out


def _lora_pairs(adapters: dict[str, torch.Tensor], prefix: str = "") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (A, B)} from peft's key names (<module>.lora_A.default.weight)."""
    names = {k.split(".lora_A.")[0] for k in adapters if ".lora_A." in k}
    return {prefix + n: (adapters[f"{n}.lora_A.default.weight"], adapters[f"{n}.lora_B.default.weight"]) for n in names}


def test_lora_merged_weights_equal_base_plus_adapter(tiny_tree, lora_run):
    _, out = lora_run
    base_unet = load_mgie(MGIEPaths.from_weights_dir(tiny_tree), options=LoadOptions("cpu", torch.float32)).pipe.unet
    base = base_unet.state_dict()
    merged = load_file(out / "mgie_7b" / "unet.safetensors")
    pairs = _lora_pairs(load_file(out / "mgie_7b" / "adapters" / "unet_lora.safetensors"))
    assert len(pairs) >= 8 and all(b.abs().sum() > 0 for _, b in pairs.values())  # the adapters trained
    for name, (a, b) in pairs.items():
        expected = base[f"{name}.weight"] + (8 / 4) * b @ a  # scaling = alpha / r
        torch.testing.assert_close(merged[f"{name}.weight"], expected, rtol=0, atol=1e-6)
    lora_keys = {f"{n}.weight" for n in pairs}
    assert all(torch.equal(merged[k], v) for k, v in base.items() if k not in lora_keys)  # the rest stayed frozen
    # the LLaMA attention: a new LLaVA folder with merged weights, beside links to the base's other files
    llava = load_file(out / "LLaVA-7B-v1" / "model.safetensors")
    fresh = load_mgie(
        MGIEPaths.from_weights_dir(tiny_tree), options=LoadOptions("cpu", torch.float32)
    ).mllm.llm.state_dict()
    llm_pairs = _lora_pairs(load_file(out / "mgie_7b" / "adapters" / "llm_lora.safetensors"))
    assert len(llm_pairs) == 2 * 4  # 2 layers x q, k, v, o
    for name, (a, b) in llm_pairs.items():
        torch.testing.assert_close(llava[f"{name}.weight"], fresh[f"{name}.weight"] + 2 * b @ a, rtol=0, atol=1e-6)
    assert (out / "LLaVA-7B-v1" / "tokenizer.model").is_symlink()


def test_the_output_opens_in_the_apps_loader_and_edits(lora_run):
    trainer, out = lora_run
    editor = load_mgie(MGIEPaths.from_weights_dir(out), options=LoadOptions("cpu", torch.float32))
    assert torch.equal(editor.head.query, trainer.model.head.query)
    assert torch.equal(editor.mllm.llm.lm_head.weight, trainer.model.mllm.llm.lm_head.weight)
    assert torch.equal(editor.img_embeddings, trainer.model.mllm.llm.get_input_embeddings().weight[-8:])
    # the held-out triplet was edited at the end of training: input | edit | goal
    assert [t.id for t in trainer.held_out] == ["s3"] and "s3" not in [t.id for t in trainer.triplets]
    assert Image.open(out / "samples" / "step-000003" / "s3.png").size == (3 * 64, 64)
    image = Image.open(trainer.triplets[0].source)
    result = editor.render(
        image, editor.think(image, "paint the square"), EditParams(steps=2, resolution=Resolution(size=64))
    )
    assert result.image.size == (64, 64)


def test_a_resumed_run_equals_an_uninterrupted_one(tiny_tree, expressive_data, tmp_path):
    whole = config(expressive_data, tmp_path / "whole", tiny_tree, steps=4)
    train(whole)
    parts = config(expressive_data, tmp_path / "parts", tiny_tree, steps=4, stop_after=3)  # stops mid-epoch
    _, record = train(parts)
    assert not record and (tmp_path / "parts" / "checkpoints" / "step-000003").is_dir()
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    train(config(expressive_data, tmp_path / "parts", tiny_tree, steps=4))
    for name in ("mllm.safetensors", "unet.safetensors"):
        a, b = load_file(tmp_path / "whole" / "mgie_7b" / name), load_file(tmp_path / "parts" / "mgie_7b" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    logs = [[json.loads(r) for r in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("whole", "parts")]
    assert [(r["step"], r["loss"]) for r in logs[0]] == [(r["step"], r["loss"]) for r in logs[1]]


def tensors_in(value):
    """Every tensor in a nest of dicts, lists and tuples (bitsandbytes packs its state in one)."""
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict | list | tuple):
        for item in value.values() if isinstance(value, dict) else value:
            yield from tensors_in(item)


def test_8bit_adamw_trains_keeps_8bit_moments_and_resumes_exactly(tiny_tree, expressive_data, tmp_path):
    """--optimizer adamw8bit (bitsandbytes): the loss falls, the saved optimizer state holds uint8 moments, and a
    resumed run equals an uninterrupted one (the quantized state survives accelerate's save and load)."""
    whole = config(expressive_data, tmp_path / "whole", tiny_tree, steps=4, optimizer="adamw8bit", save_every=4)
    _, record = train(whole)
    assert record["loss_after"]["loss"] < record["loss_before"]["loss"]
    state = torch.load(tmp_path / "whole" / "checkpoints" / "step-000004" / "optimizer.bin", weights_only=False)
    assert torch.uint8 in {t.dtype for t in tensors_in(state["state"])}  # the large tensors' moments are 8 bit
    parts = config(expressive_data, tmp_path / "parts", tiny_tree, steps=4, optimizer="adamw8bit", stop_after=3)
    train(parts)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    train(config(expressive_data, tmp_path / "parts", tiny_tree, steps=4, optimizer="adamw8bit"))
    for name in ("mllm.safetensors", "unet.safetensors"):
        a, b = load_file(tmp_path / "whole" / "mgie_7b" / name), load_file(tmp_path / "parts" / "mgie_7b" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_8bit_adamw_without_bitsandbytes_stops_before_any_weights_load(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if it were not installed
    cfg = FinetuneConfig(data=tmp_path / "absent", out=tmp_path / "run", optimizer="adamw8bit")
    with pytest.raises(SystemExit, match=r"--optimizer adamw8bit needs bitsandbytes \(pip install bitsandbytes\)"):
        Trainer(cfg)  # the data folder does not even exist: the optimizer is checked first
    assert not (tmp_path / "run").exists()


def test_8bit_adamw_is_named_as_the_smaller_mode_and_counted_at_a_quarter():
    cfg = FinetuneConfig(data=Path("."), out=Path("."))
    assert "--optimizer adamw8bit" in smaller_modes(cfg)
    eight = replace(cfg, optimizer="adamw8bit")
    assert "--optimizer adamw8bit" not in smaller_modes(eight) and "8-bit AdamW" in eight.mode
    model = torch.nn.Linear(256, 256)
    model.mllm = SimpleNamespace(llm=SimpleNamespace(config=SimpleNamespace(
        hidden_size=8, num_attention_heads=1, num_hidden_layers=1)))  # fmt: skip
    full, small = (estimate(model, c.sized(64), seq_len=4, instruct=False) for c in (cfg, eight))
    assert full.optimizer == 8 * full.trainable and small.optimizer < full.optimizer / 3.8
    with pytest.raises(ValueError, match="--optimizer must be one of adamw, adamw8bit"):
        replace(cfg, optimizer="sgd")


def test_checkpoints_keep_the_trainable_weights_whether_or_not_a_ddp_wrapper_names_them():
    """accelerate hands the save hook DDP states with or without the wrapper's "module." prefix; both keep exactly
    the trainable tensors (before, a DDP run wrote checkpoints with none, and resumed from the base weights)."""
    trainable = {"unet.a", "head.b"}
    plain = {"unet.a": 1, "head.b": 2, "mllm.frozen": 3}
    wrapped = {"module." + k: v for k, v in plain.items()}
    keep_trainable([plain, wrapped], trainable)
    assert plain.keys() == trainable and wrapped.keys() == {"module.unet.a", "module.head.b"}


def test_a_checkpoint_without_the_trainable_weights_is_refused_on_resume(tiny_tree, expressive_data, tmp_path):
    from safetensors.torch import save_file

    cfg = config(expressive_data, tmp_path / "run", tiny_tree, steps=2, stop_after=1)
    train(cfg)
    model_file = tmp_path / "run" / "checkpoints" / "step-000001" / "model.safetensors"
    held = load_file(model_file)
    save_file({k: v for k, v in held.items() if not k.startswith("unet.")}, model_file)  # the UNet's rows lost
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    with pytest.raises(RuntimeError, match=r"step-000001 lacks \d+ of the \d+ trainable tensors \(e.g. unet\."):
        train(replace(cfg, stop_after=None))


def test_bf16_mixed_precision_keeps_frozen_weights_low_and_trainable_ones_fp32(tiny_tree, expressive_data, tmp_path):
    cfg = config(expressive_data, tmp_path / "run", tiny_tree, steps=1, mixed_precision="bf16", cpu=True)
    trainer, record = train(replace(cfg, lora_unet=4, save_dtype="float16", eval_samples=1))
    model = trainer.model
    assert model.mllm.llm.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.vae.encoder.conv_in.weight.dtype == torch.bfloat16 and model.mllm.vision.dtype == torch.bfloat16
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert all(math.isfinite(v) for v in record["loss_after"].values())
    editor = load_mgie(
        MGIEPaths.from_weights_dir(tmp_path / "run"), options=LoadOptions("cpu")
    )  # fp16 files, the app's loader
    assert editor.pipe.unet.conv_in.weight.shape[1] == 8


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({2: {"instruction": "   "}}, "sample s2: instruction is empty"),
        ({1: {"goal": "missing.png"}}, "edits.jsonl:2: image"),
        ({3: {"goal": "small.png"}}, "sample s3: the input is 64x64 but the goal is 32x48"),
        ({0: {"expressive": None}}, "sample s0: no expressive text, but 3 of 4 samples have one"),
    ],
)
def test_bad_data_ends_in_one_error_naming_the_sample(tmp_path, broken, message):
    data = write_pairs(tmp_path / "data", expressive=True, broken=broken)
    Image.new("RGB", (32, 48)).save(data / "small.png")
    with pytest.raises(DataError) as err:
        for triplet in read_triplets(data):
            check_triplet(triplet)
    assert message in str(err.value)


def test_cli_reports_bad_data_in_one_line(tmp_path, capsys):
    from editor.finetune.__main__ import main

    data = write_pairs(tmp_path / "data", expressive=False, broken={1: {"instruction": "[IMG0] go"}})
    assert main(["--data", str(data), "--out", str(tmp_path / "out"), "--weights-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sample s1" in err and "reserved token" in err


def test_memory_check_refuses_a_mode_that_cannot_fit_and_names_smaller_ones(monkeypatch):
    class Props:
        total_memory = 24 * 1024**3

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _device: Props())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _device: "a 24 GB GPU")
    cfg = FinetuneConfig(data=Path("."), out=Path("."))
    big = MemoryEstimate(weights=16 * 1024**3, gradients=4 * 1024**3, optimizer=8 * 1024**3, activations=0, trainable=1)
    with pytest.raises(MemoryError, match="--lora-unet 64.*--gradient-checkpointing|--gradient-checkpointing.*--lora"):
        check_fits(big, cfg, torch.device("cuda"))
    small = MemoryEstimate(weights=4 * 1024**3, gradients=0, optimizer=0, activations=0, trainable=0)
    check_fits(small, cfg, torch.device("cuda"))  # fits: no error
    check_fits(big, cfg, torch.device("cpu"))  # CPU: printed, never refused


def train_on_one_thread(cfg: FinetuneConfig) -> None:
    """An in-process run on one thread, as each launched process runs (the reference for launched runs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)


def assert_same_run(reference: Path, other: Path, steps: int) -> None:
    """`other` followed `reference`: the same losses at every step (to 1e-5), and written weights within 1e-3 (AdamW
    magnifies the float-sum differences of tiny gradients: DDP's all-reduce, DeepSpeed's flattened buffers)."""
    logs = [[json.loads(r) for r in (run / "log.jsonl").read_text().splitlines()] for run in (reference, other)]
    assert [r["step"] for r in logs[1]] == list(range(1, steps + 1))
    for one, two in zip(*logs, strict=True):
        for key in ("ins", "edit", "loss"):
            assert two[key] == pytest.approx(one[key], rel=1e-5), (one, two)
    for name in ("mllm.safetensors", "unet.safetensors"):
        a, b = load_file(reference / "mgie_7b" / name), load_file(other / "mgie_7b" / name)
        assert a.keys() == b.keys(), name
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3, name


@pytest.mark.slow  # two launched processes start in ~40-70 s on the 2-core machine
def test_two_cpu_processes_follow_one_process_with_the_same_global_batch(tiny_tree, expressive_data, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` starts torchrun; with --cpu the processes join over gloo.
    Batch 1 on each of 2 processes = batch 2 on one: the same samples per step, the same draws per sample."""
    from tests.fakes import free_port

    common = ["--data", str(expressive_data), "--weights-dir", str(tiny_tree), "--steps", "3", "--resolution", "64",
              "--lr", "1e-3", "--warmup", "0", "--save-dtype", "float32", "--cpu", "--threads", "1"]  # fmt: skip
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              str(free_port()), "-m", "editor.finetune", *common, "--batch-size", "1",
              "--out", str(tmp_path / "two")]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "global batch 2" in done.stdout and done.stdout.count("wrote ") == 1  # only the main process writes
    train_on_one_thread(config(expressive_data, tmp_path / "one", tiny_tree, steps=3, batch_size=2, lr=1e-3))
    assert_same_run(tmp_path / "one", tmp_path / "two", steps=3)
    checkpoints = [tmp_path / d / "checkpoints" / "step-000003" / "model.safetensors" for d in ("one", "two")]
    assert load_file(checkpoints[1]).keys() == load_file(checkpoints[0]).keys() != set()  # DDP's too


@pytest.mark.slow  # the evaluation starts a fresh process (~30-60 s on the 2-core machine)
def test_the_run_ends_with_an_evaluation_of_the_written_model(tiny_tree, expressive_data, tmp_path, capsys):
    train(config(expressive_data, tmp_path / "run", tiny_tree, steps=1, eval_data=str(expressive_data), eval_steps=2))
    printed = capsys.readouterr().out
    assert "| mgie-7b | 1.5 | all turns | 4 |" in printed  # the harness's table, all 4 samples edited
    assert (tmp_path / "run" / "eval" / "pairs" / "report" / "report.md").is_file()


@pytest.fixture(scope="module")
def fresh_model(tiny_tree, expressive_data):
    from editor.finetune.data import TripletDataset, collate
    from editor.finetune.model import FinetuneModel

    editor = load_mgie(MGIEPaths.from_weights_dir(tiny_tree), options=LoadOptions("cpu", torch.float32))
    triplets = read_triplets(expressive_data)
    dataset = TripletDataset(triplets, editor.tokenizer, editor.image_processor, editor.num_patches, 64)
    return editor, FinetuneModel(editor, instruct=True), collate([dataset[0], dataset[1]]), triplets


def test_training_conditions_on_what_the_app_computes_from_the_same_texts(fresh_model):
    """Labels cover exactly "<expressive> [IMG0..7]</s>"; the states L_edit conditions on are those the app's
    `guidance_from_text` reads for the same image, instruction and expressive text."""
    editor, model, batch, triplets = fresh_model
    for row, length in enumerate(batch["lengths"].tolist()):
        labels, ids = batch["labels"][row, :length], batch["ids"][row, :length]
        n_prompt = len(prompt_token_ids(editor.tokenizer, triplets[row].instruction, editor.num_patches))
        assert (labels != -100).tolist() == [False] * n_prompt + [True] * (length - n_prompt)
        assert torch.equal(labels[n_prompt:], ids[n_prompt:]) and (batch["labels"][row, length:] == -100).all()
        assert labels[-9:].tolist() == [*editor.img_ids, 2]  # [IMG0..7] then </s>
    with torch.no_grad():
        _, states = model.instruction_loss(batch)
        cond = model.head(states, model.img_embeddings())
    for row, triplet in enumerate(triplets[:2]):
        app = editor.guidance_from_text(Image.open(triplet.source), triplet.instruction, triplet.expressive)
        torch.testing.assert_close(cond[row : row + 1], app.prompt_embeds, rtol=1e-5, atol=1e-5)


BANDS = [(0.02, True, False), (0.07, True, True), (0.12, False, True), (0.5, False, False)]  # u, no text, no image


@pytest.mark.parametrize(("u", "text_dropped", "image_dropped"), BANDS)
def test_condition_dropout_bands(fresh_model, monkeypatch, u, text_dropped, image_dropped):
    import editor.finetune.model as finetune_model

    editor, model, batch, _ = fresh_model
    draws = finetune_model._draws

    def fixed_u(seed, shape, timesteps):
        return (torch.tensor(u), *draws(seed, shape, timesteps)[1:])

    monkeypatch.setattr(finetune_model, "_draws", fixed_u)
    seen = []
    hook = model.unet.register_forward_pre_hook(lambda _m, args: seen.append(args), with_kwargs=False)
    cond = torch.randn(2, 77, 32)
    null = torch.randn(1, 77, 32)
    try:
        with torch.no_grad():
            model.edit_loss(batch, cond, null, [1, 2])
    finally:
        hook.remove()
    sample, _t, given = seen[0]
    assert torch.equal(given, null.expand_as(cond) if text_dropped else cond)
    assert (not sample[:, 4:].any()) == image_dropped


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        ({}, "epsilon"),
        ({"prediction_type": "v_prediction"}, "v_prediction"),  # recipe v2's demo MGIE
        (ROOT / "weights/demo/mgie/instruct-pix2pix/scheduler/scheduler_config.json", "sample"),  # the shipped one
    ],
)
def test_l_edit_target_follows_the_scheduler_configs_prediction_type(config, kind):
    """MGIE-7B's scheduler (SD's epsilon default) trains on the noise, v-prediction on the velocity, the shipped
    demo's skip recipe on the clean latents (x0)."""
    from diffusers import DDPMScheduler

    from editor.finetune.model import prediction_target

    scheduler = DDPMScheduler.from_config(json.loads(config.read_text()) if isinstance(config, Path) else config)
    assert scheduler.config.prediction_type == kind
    latents, noise, t = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4), torch.tensor([10, 900])
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = {"epsilon": noise, "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * latents, "sample": latents}[kind]
    torch.testing.assert_close(prediction_target(scheduler, latents, noise, t), expected)


def test_resolution_defaults_to_the_models_own_and_the_flag_wins():
    def sized(model: str, native: int, **kw) -> int | None:
        return FinetuneConfig(data=Path("."), out=Path("."), model=model, **kw).sized(native).resolution

    assert (sized("mgie-7b", 512), sized("mgie-demo", 64), sized("mgie-demo", 64, resolution=128)) == (256, 64, 128)


def test_the_demo_model_fine_tunes_and_its_output_opens_in_the_app(tmp_path):
    """`--model mgie-demo --data demo:8` on the shipped weights: the skip recipe (x0 prediction through the skip UNet,
    the patch codec), 64 px without --resolution; 2 steps
    on the same 2 triplets lower their loss; the output sits where the registry's demo spec looks (OUT/demo/mgie,
    with the demo's app settings) and edits."""
    from editor.pipelines.registry import DEMO_EDITORS, EDITORS, default_editors, load_editor
    from editor.pipelines.spec import folder_defaults

    out, shipped = tmp_path / "demo", ROOT / "weights" / "demo" / "mgie"
    cfg = FinetuneConfig(data=Path("demo:8"), out=out, model="mgie-demo", weights_dir=ROOT / "weights", limit=1,
                         held_out=1, steps=2, batch_size=2, warmup=0.0, eval_samples=2, sample_steps=2,
                         save_dtype="float32")  # fmt: skip
    trainer, record = train(cfg)
    assert trainer.model.noise.config.prediction_type == "sample" and trainer.base.mgie == shipped / "mgie_7b"
    assert type(trainer.model.unet).__name__ == "SourceSkipUNet"
    assert record["config"]["resolution"] == 64 and trainer.dataset[0]["goal"].shape == (3, 64, 64)
    before, after = record["loss_before"], record["loss_after"]
    assert after["ins"] < before["ins"] and after["loss"] < before["loss"], (before, after)
    assert EDITORS["mgie-demo"].paths(out)[1] == out / "demo" / "mgie" / "mgie_7b"
    assert default_editors(out) == DEMO_EDITORS  # `python app.py --weights-dir OUT` opens it
    editor = load_editor("mgie-demo", out, "cpu", torch.float32)
    assert torch.equal(editor.head.query, trainer.model.head.query)
    assert editor.defaults == folder_defaults(shipped) and editor.defaults.text_guidance == 1.0
    image = trainer.held_out[0].source
    guidance = editor.think(image, trainer.held_out[0].instruction)
    assert editor.render(image, guidance, EditParams(steps=2, resolution=Resolution(size=64))).image.size == (64, 64)


def test_an_out_folder_over_the_base_weights_is_refused_before_anything_is_written(
    tiny_tree, plain_data, tmp_path, capsys
):
    import shutil

    from editor.finetune.__main__ import main
    from editor.layouts.folders import DEMO_DIR

    shutil.copytree(DEMO_DIR / "mgie", tmp_path / "demo" / "mgie")  # a copy the registry prefers to the shipped one
    before = {p: p.stat().st_mtime_ns for root in (tiny_tree, tmp_path) for p in Path(root).rglob("*") if p.is_file()}
    for model, weights in (("mgie-7b", tiny_tree), ("mgie-demo", tmp_path)):
        args = ["--model", model, "--data", str(plain_data), "--weights-dir", str(weights), "--out", str(weights)]
        assert main([*args, "--steps", "1", "--batch-size", "1", "--cpu"]) == 2
        assert "would write the model over its base weights" in capsys.readouterr().err
    after = {p: p.stat().st_mtime_ns for root in (tiny_tree, tmp_path) for p in Path(root).rglob("*") if p.is_file()}
    assert after == before
