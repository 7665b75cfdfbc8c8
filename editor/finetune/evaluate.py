"""The evaluation at the end of a run: `python -m editor.eval` on the written model (official layout), in a fresh
process of its own, so it loads the weights exactly as the app would and never joins the training's process group.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# what torchrun / accelerate set for the training processes; the evaluation must start as a plain single process
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_PREFIXES = ("ACCELERATE_", "TORCHELASTIC_", "TORCH_NCCL_", "ROLE_")


def eval_command(model: str, out: Path, data: str, steps: int, size: int, cpu: bool) -> list[str]:
    command = [sys.executable, "-m", "editor.eval", "--model", model, "--data", data, "--weights", str(out)]
    command += ["--steps", str(steps), "--size", str(size), "--out", str(out / "eval"), "--no-progress"]
    return command + (["--device", "cpu"] if cpu else [])


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and not k.startswith(LAUNCH_PREFIXES)}


def run_eval(command: list[str], cwd: Path) -> str:
    """Run the evaluation; its report (stdout) on success, a RuntimeError with its error output otherwise."""
    done = subprocess.run(command, cwd=cwd, env=clean_environment(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the evaluation failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
    return done.stdout
