"""DeepSpeed ZeRO-2 through `accelerate launch`, on the CPU (opt-in: `pytest -m deepspeed`; needs `pip install
deepspeed`, which builds a small C++ op on first use, several minutes here). One process: DeepSpeed's engine,
optimizer wrapper, gradient clipping and checkpoint format drive the same loop as plain accelerate, with the same
loss curve; a run stopped and resumed equals an uninterrupted one; the checkpoint's module file holds only what
trains. Several processes need GPUs (accelerate's DeepSpeed state on the CPU does not count the processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.test_finetune import (  # noqa: F401 - fixtures
    ROOT,
    _fresh_accelerate,
    assert_same_run,
    config,
    expressive_data,
    train_on_one_thread,
)

pytestmark = pytest.mark.deepspeed

ZERO2_CPU = """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  gradient_accumulation_steps: 1
  gradient_clipping: 1.0
  offload_optimizer_device: none
  offload_param_device: none
  zero3_init_flag: false
  zero_stage: 2
mixed_precision: 'no'
num_machines: 1
num_processes: 1
use_cpu: false
"""


def test_zero2_follows_plain_accelerate_and_resumes_exactly(tiny_tree, expressive_data, tmp_path):  # noqa: F811
    import deepspeed  # noqa: F401 - the test is about it: missing, it fails here, naming it

    from tests.fakes import free_port

    (tmp_path / "zero2.yaml").write_text(ZERO2_CPU)
    common = ["--data", str(expressive_data), "--weights-dir", str(tiny_tree), "--steps", "3", "--resolution", "64",
              "--lr", "1e-3", "--warmup", "0", "--save-dtype", "float32", "--threads", "1", "--batch-size", "2",
              "--save-every", "2", "--out", str(tmp_path / "zero2")]  # fmt: skip
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    env = os.environ | {"PYTHONPATH": path, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    for extra in (["--stop-after", "2"], []):  # stopped after step 2, then resumed
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "zero2.yaml"),
                  "--main_process_port", str(free_port()), "-m", "editor.finetune", *common, *extra]  # fmt: skip
        done = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stdout
    train_on_one_thread(config(expressive_data, tmp_path / "plain", tiny_tree, steps=3, batch_size=2, lr=1e-3))
    assert_same_run(tmp_path / "plain", tmp_path / "zero2", steps=3)
    module_file = tmp_path / "zero2" / "checkpoints" / "step-000002" / "pytorch_model" / "mp_rank_00_model_states.pt"
    held = torch.load(module_file, map_location="cpu", weights_only=False)["module"]
    trainable = load_file(tmp_path / "plain" / "checkpoints" / "step-000003" / "model.safetensors").keys()
    assert set(held) == set(trainable)  # exclude_frozen_parameters: not the frozen LLaMA
