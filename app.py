"""Web app: `python app.py [--model mgie] [--weights-dir weights] [--port 7860] ...`.

Without the weights (or with --tiny-random) it serves a tiny random-weight MGIE built in a temporary folder: the
whole pipeline runs, but the edits are noise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from editor.loading import CheckpointError, MissingWeightsError
from editor.pipelines import mgie
from editor.pipelines.mgie import MGIEPaths, load_mgie
from editor.registry import DEFAULT_WEIGHTS_DIR, EDITORS, load_editor
from editor.tiny import build_tiny_mgie_tree
from editor.ui import build_demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Instruction-based image editing web app.")
    parser.add_argument("--model", choices=sorted(EDITORS), default="mgie")
    parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--server-name", default="127.0.0.1", help="0.0.0.0 serves the local network")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public *.gradio.live link")
    parser.add_argument("--tiny-random", action="store_true", help="tiny random-weight MGIE: a pipeline check")
    return parser


def weights_help(weights_dir: Path) -> str:
    hints = (mgie.GET_LLAVA, mgie.GET_MGIE, mgie.GET_IP2P, mgie.GET_CLIP)
    return "To get the real weights: " + "; ".join(h.replace("<weights>", str(weights_dir)) for h in hints) + "."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    notice = None
    if not args.tiny_random:
        try:
            editor = load_editor(args.model, args.weights_dir, args.device)
        except MissingWeightsError as err:
            print(f"error: {err}", file=sys.stderr)
            notice = (
                f"No MGIE weights found in `{args.weights_dir}`: running a tiny random-weight MGIE "
                f"(pipeline check, the edits are noise). {weights_help(args.weights_dir)}"
            )
        except CheckpointError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="tiny-mgie-") as tiny_root:
        if args.tiny_random or notice:
            notice = notice or "Running a tiny random-weight MGIE (--tiny-random): a pipeline check, edits are noise."
            print(f"warning: {notice}", file=sys.stderr)
            editor = load_mgie(MGIEPaths.from_weights_dir(build_tiny_mgie_tree(Path(tiny_root))), device=args.device)
        if args.share:
            print("warning: --share makes this app reachable by anyone who has the public link", file=sys.stderr)
        demo = build_demo({editor.name: editor}, notice=notice)
        demo.queue(default_concurrency_limit=1).launch(
            server_name=args.server_name, server_port=args.port, share=args.share
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
