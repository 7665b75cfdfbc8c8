"""The CPU figure the app's time estimate starts from (editor/ui/estimate.py CPU_STEP_S):

    OMP_NUM_THREADS=1 python -m editor.bench.unet_cpu [--sizes 256 512] [--runs 2]

Stable Diffusion 1.5's UNet (random weights, the released config: same compute) on the CPU in float32, one call
with a batch of one per run. Prints the CPU time of each call (time.process_time: on a busy machine the other
processes do not count, so one thread measures one core's speed) and the wall time, and the CPU seconds per
megapixel and image, the unit of the estimate.
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import UNet2DConditionModel

from editor.bench.stages import SD15_UNET


@torch.inference_mode()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m editor.bench.unet_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    print(f"torch threads: {torch.get_num_threads()}")
    for size in args.sizes:
        latents, cond = torch.randn(1, 8, size // 8, size // 8), torch.randn(1, 77, 768)
        for run in range(args.runs):
            cpu, wall = time.process_time(), time.perf_counter()
            unet(latents, 500, cond)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            per_mp = cpu / (size * size / 1e6)
            print(f"{size} px, run {run + 1}: cpu {cpu:.2f} s, wall {wall:.2f} s, {per_mp:.1f} cpu s per megapixel")


if __name__ == "__main__":
    main()
