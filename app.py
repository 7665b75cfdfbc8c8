"""Web app: `python app.py [--model mgie] [--weights-dir weights] [--share] [--auth user:pass] [--mcp] ...`.

Parse arguments -> load the editor -> build the UI -> launch. Without the real MGIE weights it opens on the offline
demo models (MGIE's architecture and its IP2P ablation, trained by this project on the shapes world, shipped in
weights/demo/). --tiny-random serves a tiny random-weight MGIE instead: a pipeline check whose edits are noise.
On a Hugging Face Space the same file runs (Gradio reads GRADIO_SERVER_NAME/PORT there; `share` is ignored).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from editor.loading import CheckpointError, MissingWeightsError
from editor.pipelines import mgie
from editor.pipelines.mgie import MGIEPaths, load_mgie
from editor.registry import DEFAULT_WEIGHTS_DIR, DEMO_EDITORS, EDITORS, load_editor
from editor.tiny import build_tiny_mgie_tree
from editor.ui import build_demo

AUTH_ENV = "EDITOR_AUTH"  # "user:pass" or "user1:pass1,user2:pass2"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Instruction-based image editing web app.")
    parser.add_argument("--model", choices=sorted(EDITORS), default="mgie")
    parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--server-name", default=None, help="0.0.0.0 serves the local network (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="default 7860, or the next free port")
    parser.add_argument("--share", action="store_true", help="also open a public *.gradio.live link")
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASS", help=f"or set {AUTH_ENV}")
    parser.add_argument("--mcp", action="store_true", help="also serve the endpoints as MCP tools (gradio[mcp])")
    parser.add_argument("--tiny-random", action="store_true", help="tiny random-weight MGIE: a pipeline check")
    return parser


def parse_auth(values: list[str]) -> list[tuple[str, str]] | None:
    """--auth values (and the EDITOR_AUTH variable) -> [(user, password)]; None when neither is given."""
    pairs = [p for value in [*values, os.environ.get(AUTH_ENV, "")] for p in value.split(",") if p.strip()]
    if not pairs:
        return None
    if any(":" not in p or not p.split(":", 1)[0] or not p.split(":", 1)[1] for p in pairs):
        raise ValueError(f"--auth / {AUTH_ENV} takes user:password pairs (comma-separated), e.g. alice:s3cret")
    return [tuple(p.strip().split(":", 1)) for p in pairs]


def weights_help(weights_dir: Path) -> str:
    hints = (mgie.GET_LLAVA, mgie.GET_MGIE, mgie.GET_IP2P, mgie.GET_CLIP)
    return "To get the real weights: " + "; ".join(h.replace("<weights>", str(weights_dir)) for h in hints) + "."


def load_editors(model: str, weights_dir: Path, device: str | None) -> tuple[dict, str | None]:
    """`model` if its weights are there; otherwise the offline demo models, with a notice saying so."""
    try:
        return {model: load_editor(model, weights_dir, device)}, None
    except MissingWeightsError as err:
        if model in DEMO_EDITORS:
            raise
        print(f"error: {err}", file=sys.stderr)
    notice = (
        f"No {model} weights in `{weights_dir}`: this is the **offline demo model**, MGIE's architecture trained by "
        "this project on a world of coloured shapes (64 x 64 px; try the shapes examples), beside its "
        "InstructPix2Pix-style ablation. It is an early checkpoint: it writes the expressive instruction but gets "
        f"few edits right yet (weights/demo/README.md). {weights_help(weights_dir)}"
    )
    return {name: load_editor(name, weights_dir, device) for name in DEMO_EDITORS}, notice


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        auth = parse_auth(args.auth)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.mcp and importlib.util.find_spec("mcp") is None:
        print('error: --mcp needs the MCP extra: pip install "gradio[mcp]"', file=sys.stderr)
        return 2
    share = args.share and "SPACE_ID" not in os.environ  # Spaces serve the app publicly already
    if share:
        print("warning: --share makes this app reachable by anyone who has the public link", file=sys.stderr)
        if auth is None:
            print(f"warning: no --auth / {AUTH_ENV} given: the public link has no password", file=sys.stderr)

    try:
        editors, notice = ({}, None) if args.tiny_random else load_editors(args.model, args.weights_dir, args.device)
    except (MissingWeightsError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tiny-mgie-") as tiny_root:
        if args.tiny_random:
            notice = "Running a tiny random-weight MGIE (--tiny-random): a pipeline check, edits are noise."
            tiny = load_mgie(MGIEPaths.from_weights_dir(build_tiny_mgie_tree(Path(tiny_root))), device=args.device)
            editors = {tiny.name: tiny}
        if notice:
            print(f"warning: {notice}", file=sys.stderr)
        demo = build_demo(editors, notice=notice)
        demo.queue(default_concurrency_limit=1, max_size=64).launch(
            server_name=args.server_name,
            server_port=args.port,
            share=share,
            auth=auth,
            mcp_server=args.mcp,
            max_file_size="50mb",
            run_history=False,  # user photos are not recorded beyond the session (its history and export do that)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
