"""Web app: `python app.py [--model NAME] [--also NAME] [--weights-dir weights] [--share] [--auth user:pass] ...`.

Parse arguments -> load the editors -> build the UI -> launch. Without --model it opens on the best model installed
(MGIE-7B, SmartEdit-13B, SmartEdit-7B, MagicBrush, InstructPix2Pix); with none installed, on the offline demo
models (MGIE's architecture and its IP2P ablation, trained by this project on the shapes world, in weights/demo/).
--also loads more models for side-by-side comparison. --tiny-random serves a tiny random-weight MGIE instead: a
pipeline check whose edits are noise.
On a Hugging Face Space the same file runs (Gradio reads GRADIO_SERVER_NAME/PORT there; `share` is ignored). There,
or wherever EDITOR_MODEL is set (and no --model), the page comes up at once and the model is downloaded and loaded
after launch, then the --also models (editor/ui/startup.py; README, "Deploy to Hugging Face Spaces").
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import tempfile
from pathlib import Path

from editor.loading import CheckpointError, MissingWeightsError
from editor.runtime.quiet import quiet_third_party

quiet_third_party()  # first: importing the model code below prints a third-party notice (editor/runtime/quiet.py)
from editor.pipelines.mgie import MGIEPaths, load_mgie  # noqa: E402
from editor.pipelines.registry import (  # noqa: E402
    DEMO_EDITORS,
    DTYPES,
    EDITORS,
    add_load_arguments,
    default_editors,
    load_editor,
)
from editor.pipelines.spec import LoadOptions  # noqa: E402
from editor.runtime.threads import set_threads  # noqa: E402
from editor.tiny import build_tiny_mgie_tree  # noqa: E402
from editor.ui import build_demo  # noqa: E402
from editor.ui.layout import CSS  # noqa: E402
from editor.ui.login import throttled_auth  # noqa: E402
from editor.ui.startup import prepare_startup  # noqa: E402
from editor.weights.catalog import download_command  # noqa: E402

AUTH_ENV = "EDITOR_AUTH"  # "user:pass" or "user1:pass1,user2:pass2"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Instruction-based image editing web app.")
    parser.add_argument("--model", choices=list(EDITORS), help="default: the best installed, else the demo")
    parser.add_argument("--also", action="append", default=[], choices=list(EDITORS), metavar="NAME",
                        help="load another model too, for side-by-side comparison (repeatable)")  # fmt: skip
    add_load_arguments(parser)
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: free cores, editor/runtime/threads.py)"
    )
    parser.add_argument("--server-name", default=None, help="0.0.0.0 serves the local network (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="default 7860, or the next free port")
    parser.add_argument("--share", action="store_true", help="also open a public *.gradio.live link")
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASS", help=f"or set {AUTH_ENV}")
    parser.add_argument("--mcp", action="store_true", help="also serve the endpoints as MCP tools (gradio[mcp])")
    parser.add_argument("--tiny-random", action="store_true", help="tiny random-weight MGIE: a pipeline check")
    return parser


def configure_logging() -> None:
    """The app's own log lines (one per user error, editor.ui.guard.user_error) go to stderr with a time stamp."""
    logger = logging.getLogger("editor")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def launch_lines(local_url: str, share_url: str | None, share: bool) -> str:
    """Where the app is served, in this app's own words (its --share, not Gradio's launch(share=True))."""
    lines = [f"* Running on {local_url}"]
    if share_url:
        lines.append(f"* Public link (anyone who has it can use the app): {share_url}")
    elif not share and "SPACE_ID" not in os.environ:
        lines.append("* Only this machine can open it; --server-name 0.0.0.0 serves the network, --share a public link")
    return "\n".join(lines)


def plain(markdown: str) -> str:
    """The notice as terminal text: the page renders its Markdown, the terminal shows no ** or backticks."""
    return markdown.replace("**", "").replace("`", "")


def parse_auth(values: list[str]) -> list[tuple[str, str]] | None:
    """--auth values (and the EDITOR_AUTH variable) -> [(user, password)]; None when neither is given."""
    pairs = [p for value in [*values, os.environ.get(AUTH_ENV, "")] for p in value.split(",") if p.strip()]
    if not pairs:
        return None
    if any(":" not in p or not p.split(":", 1)[0] or not p.split(":", 1)[1] for p in pairs):
        raise ValueError(f"--auth / {AUTH_ENV} takes user:password pairs (comma-separated), e.g. alice:s3cret")
    return [tuple(p.strip().split(":", 1)) for p in pairs]


def load_editors(
    model: str | None, also: list[str], weights_dir: Path, device: str | None, dtype=None, offload: bool = False
) -> tuple[dict, str | None]:
    """`model` (an error naming the download command when it is missing), else the best installed model, else the
    offline demo models with a notice saying so; then each of `also`."""
    load = lambda name: load_editor(name, weights_dir, device, dtype, offload)  # noqa: E731
    notice = None
    names = (model,) if model is not None else default_editors(weights_dir)
    if model is None and names == DEMO_EDITORS:
        notice = (
            f"No downloaded model in `{weights_dir}`: this is the **offline demo model**, MGIE's architecture trained "
            "by this project on a world of coloured shapes (64 x 64 px; try the shapes examples), beside its "
            "InstructPix2Pix-style ablation. It removes and recolours shapes and sometimes resizes them, but gets "
            "only about one held-out edit in four right and almost never adds or moves a shape "
            "(weights/demo/README.md). To get the real MGIE-7B: "
            f"`{download_command('mgie-7b')}` (`python -m editor.weights list` shows every model)."
        )
    editors = {name: load(name) for name in names}
    for name in also:
        if name not in editors:
            editors[name] = load(name)
    return editors, notice


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        auth = parse_auth(args.auth)
        set_threads(args.threads)
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
        options = args.weights_dir, args.device, DTYPES.get(args.dtype), args.offload
        startup = None if args.model or args.tiny_random else prepare_startup(os.environ, *options, also=args.also)
        if startup is not None:
            editors, notice = startup.editors, startup.notice
        else:
            editors, notice = ({}, None) if args.tiny_random else load_editors(args.model, args.also, *options)
    except (MissingWeightsError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tiny-mgie-") as tiny_root:
        if args.tiny_random:
            notice = "Running a tiny random-weight MGIE (--tiny-random): a pipeline check, edits are noise."
            tiny = load_mgie(
                MGIEPaths.from_weights_dir(build_tiny_mgie_tree(Path(tiny_root))), options=LoadOptions(args.device)
            )
            editors = {tiny.name: tiny}
        if isinstance(notice, str):
            print(f"warning: {plain(notice)}", file=sys.stderr)
        configure_logging()
        demo = build_demo(editors, notice=notice)
        demo.queue(default_concurrency_limit=1, max_size=64).launch(
            server_name=args.server_name,
            server_port=args.port,
            share=share,
            auth=throttled_auth(auth) if auth else None,  # failed logins answered at most one a second
            mcp_server=args.mcp,
            max_file_size="50mb",
            css=CSS,
            run_history=False,  # user photos are not recorded beyond the session (its history and export do that)
            quiet=True,  # Gradio's own lines would suggest `share=True in launch()`; this app says --share
            prevent_thread_lock=True,
        )
        print(launch_lines(demo.local_url, demo.share_url, share), flush=True)
        if startup is not None and startup.run is not None:
            # on this (the main) thread: ZeroGPU intercepts `.to("cuda")` only on the thread that imported `spaces`
            startup.run()
        demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
