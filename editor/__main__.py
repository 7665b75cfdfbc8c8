"""Command line: `python -m editor edit INPUT "instruction" -o OUTPUT [options]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from editor.loading import CheckpointError, MissingWeightsError
from editor.params import DEFAULT_SIZE, EditParams, Resolution
from editor.runtime.quiet import quiet_third_party

quiet_third_party()  # first: importing the model code below prints a third-party notice (editor/runtime/quiet.py)
from editor.pipelines.registry import (  # noqa: E402
    DEMO_EDITORS,
    EDITORS,
    add_load_arguments,
    default_editors,
    load_editor,
    load_options,
)
from editor.runtime.threads import set_threads  # noqa: E402
from editor.weights.catalog import download_command  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    defaults = EditParams()
    parser = argparse.ArgumentParser(prog="python -m editor", description="Instruction-based image editing.")
    sub = parser.add_subparsers(dest="command", required=True)
    edit = sub.add_parser("edit", help="edit one image", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    edit.add_argument("input", type=Path, help="input image (PNG, JPEG, WebP, ...)")
    edit.add_argument("instruction", help='terse edit instruction, e.g. "make the sky blue"')
    edit.add_argument("-o", "--output", type=Path, required=True, help="where to write the edited image")
    edit.add_argument(
        "--model", choices=list(EDITORS), default=None, help="default: the best installed model, else mgie-demo"
    )
    edit.add_argument("--expressive", help="use this expressive instruction instead of the MLLM's")
    own = "default: the model's own (%s for the published models)"
    edit.add_argument("--steps", type=int, default=None, help=own % defaults.steps)
    edit.add_argument("--text-guidance", type=float, help="alpha_X (<= 1: no CFG); " + own % defaults.text_guidance)
    edit.add_argument("--image-guidance", type=float, help="alpha_V (< 1: no CFG); " + own % defaults.image_guidance)
    edit.add_argument("--seed", type=int, default=defaults.seed, help="-1 draws a random seed")
    edit.add_argument("--resize", choices=["keep_aspect", "center_crop"], default="keep_aspect")
    edit.add_argument(
        "--size", type=int, default=None, help="long side (keep_aspect) or square side; default: the model's own"
    )
    add_load_arguments(edit)
    edit.add_argument("--threads", type=int, help="torch CPU threads (default: free cores, editor/runtime/threads.py)")
    return parser


def run_edit(args: argparse.Namespace) -> None:
    def params_for(size: int, defaults: EditParams = EditParams()) -> EditParams:  # noqa: B008 - frozen
        def given(value, default):
            return default if value is None else value

        return EditParams(
            steps=given(args.steps, defaults.steps),
            text_guidance=given(args.text_guidance, defaults.text_guidance),
            image_guidance=given(args.image_guidance, defaults.image_guidance),
            seed=None if args.seed == -1 else args.seed,
            resolution=Resolution(args.resize, size),
        )

    params_for(args.size or DEFAULT_SIZE)  # bad values fail before any weights load
    if not args.output.parent.is_dir():
        raise ValueError(f"output folder does not exist: {args.output.parent}")
    if args.output.suffix.lower() not in Image.registered_extensions():
        raise ValueError(f"unknown image format for {args.output}; use .png, .jpg or .webp")
    model = args.model or default_editors(args.weights_dir)[0]
    if args.model is None and model == DEMO_EDITORS[0]:
        print(f"warning: no downloaded model in {args.weights_dir}; using the offline demo model (shapes world "
              f"only). Get MGIE-7B: {download_command('mgie-7b')}", file=sys.stderr)  # fmt: skip
    options = load_options(args)
    editor = load_editor(model, args.weights_dir, options.device, options.dtype, options.offload)
    params = params_for(args.size or editor.native_size or DEFAULT_SIZE, editor.defaults)
    if args.expressive:
        guidance = editor.guidance_from_text(args.input, args.instruction, args.expressive)
    else:
        guidance = editor.think(args.input, args.instruction)
    print(f"expressive instruction: {guidance.expressive}", flush=True)
    result = editor.render(args.input, guidance, params)
    result.image.save(args.output)
    print(f"wrote {args.output} ({result.image.width}x{result.image.height}, seed {result.seed})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        set_threads(args.threads)
        run_edit(args)
    except (MissingWeightsError, CheckpointError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
