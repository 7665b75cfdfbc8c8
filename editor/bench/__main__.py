"""`python -m editor.bench`: the per-stage benchmark of editor/bench/stages.py."""

from editor.bench.stages import main

main()
