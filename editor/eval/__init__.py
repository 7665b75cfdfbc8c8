"""Evaluation: `python -m editor.eval` (cli.py) scores editors on the papers' benchmarks or the demo world.

data.py reads the benchmarks, run.py runs one model over a dataset and scores each turn with the papers' metrics
(metrics.py, lpips.py), report.py writes the tables and plots. `main` and `EVAL_SEED` are cli.py's.
"""

from editor.eval.cli import EVAL_SEED, main

__all__ = ["EVAL_SEED", "main"]
