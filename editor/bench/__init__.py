"""Benchmarks, not tests: numbers vary with the machine, and README quotes one run of each.

    python -m editor.bench         stages.py: per-stage timings of MGIE, its render against diffusers' own pipeline
    python -m editor.bench.app     app.py: what the app costs per edit beyond the model, and what step previews cost
    python -m editor.bench.load    load.py: concurrent sessions (latency percentiles, RSS) and hostile inputs
    python -m editor.bench.unet_cpu   unet_cpu.py: SD-1.5's UNet on the CPU (the app's rough time-estimate figure)

Each builds the tiny random-weight MGIE it needs (editor.tiny); stages.py also times full-size random weights, and
unet_cpu.py builds only a full-size random-weight UNet.
"""
