"""What the app costs on top of the model: `python -m editor.bench.app [--size 512] [--turns 30] [--steps 30]`.

1. Overhead per edit: the app served locally and driven by gradio_client, with an editor that takes no time (it
   inverts the picture), so the whole latency of /edit beyond Gradio's own floor is the app's: state, history
   strip, PNG outputs. Each edit is followed by an echo event (Gradio's floor at that moment) and the difference is
   reported at turn 1, per window of ten turns and as a least-squares growth per turn (flat: about 0).
2. Step previews: the tiny random-weight MGIE rendering at --size with previews every 0.5 s vs none, through the
   same server; the difference is what previews cost.
Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

import gradio as gr
import torch
from gradio_client import Client, handle_file
from PIL import Image, ImageOps

from editor.core import EditResult, Guidance
from editor.images import load_image, prepare_image
from editor.params import EditParams
from editor.pipelines.mgie import MGIEPaths, load_mgie
from editor.pipelines.spec import LoadOptions
from editor.tiny import build_tiny_mgie_tree
from editor.ui import build_demo


class InstantEditor:
    """An editor that costs nothing: thinking echoes the instruction, rendering inverts the image."""

    name = "instant"
    defaults = EditParams()
    native_size = None  # not known: the app edits at DEFAULT_SIZE unless told

    def think(self, image, instruction: str) -> Guidance:
        return self.guidance_from_text(image, instruction, instruction)

    def guidance_from_text(self, image, instruction: str, expressive_text: str) -> Guidance:
        zeros = torch.zeros(1, 77, 8)
        return Guidance(self.name, instruction, expressive_text, expressive_text, zeros, zeros, "user")

    def render(self, image, guidance, params=None, on_step=None) -> EditResult:
        start = time.perf_counter()
        params = params or EditParams()
        source = prepare_image(load_image(image), params.resolution)
        edited = ImageOps.invert(source)
        return EditResult(edited, source, guidance, params.with_seed(1), {"render_s": time.perf_counter() - start})


def _serve(editor, preview_every: float | None):
    demo = build_demo({editor.name: editor}, examples_dir=None, preview_every=preview_every)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.queue(default_concurrency_limit=1).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    return demo


def _timed_edits(client: Client, image: Path, count: int, echo: Client | None = None, **params) -> list[float]:
    """Seconds per /edit; with `echo`, each minus an echo event timed right after it (Gradio's floor at that moment,
    so a busy machine's drift cancels out)."""
    times = []
    for turn in range(count):
        start = time.perf_counter()
        client.predict(image=handle_file(image) if turn == 0 else None, instruction=f"edit {turn}", expressive="x",
                       **params, api_name="/edit")  # fmt: skip
        elapsed = time.perf_counter() - start
        if echo is not None:
            elapsed -= _timed_echo(echo, 1)[0]
        times.append(elapsed)
    return times


def _echo_server() -> gr.Blocks:
    """Gradio's own floor: a queued event that returns its input."""
    with gr.Blocks() as demo:
        box = gr.Textbox()
        box.submit(lambda text: text, box, box, api_name="echo")
    demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    return demo


def _timed_echo(echo: Client, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        echo.predict("x", api_name="/echo")
        times.append(time.perf_counter() - start)
    return times


def overhead(image: Path, size: int, turns: int) -> None:
    echo_demo, demo = _echo_server(), _serve(InstantEditor(), preview_every=None)
    try:
        echo = Client(echo_demo.local_url, verbose=False)
        floor = statistics.median(_timed_echo(echo, 30))
        client = Client(demo.local_url, verbose=False, download_files=False)  # the browser fetches, not us
        extra = _timed_edits(client, image, turns, echo, steps=1, size=size)
        print(f"gradio floor (echo event via gradio_client): median {floor * 1000:.0f} ms")
        print(f"/edit with an instant editor, {size}px: app overhead = the edit minus an echo timed right after it")
        print(f"  turn 1 (upload): {extra[0] * 1000:.0f} ms")
        for first in range(1, turns, 10):
            window = statistics.median(extra[first : first + 10])
            print(f"  turns {first + 1}-{min(first + 10, turns)}: median {window * 1000:.0f} ms per edit")
        if turns > 3:
            slope = statistics.linear_regression(range(2, turns + 1), extra[1:]).slope
            print(f"  growth: {slope * 1000:+.2f} ms per turn (least squares over turns 2-{turns})")
    finally:
        demo.close()
        echo_demo.close()


def previews(image: Path, size: int, steps: int, repeats: int, folder: Path) -> None:
    """Two servers, previews off and on, called alternately so both see the same machine load."""
    editor = load_mgie(MGIEPaths.from_weights_dir(build_tiny_mgie_tree(folder / "tiny")), options=LoadOptions("cpu"))
    settings = {"off": None, "every 0.5 s": 0.5}
    demos = {label: _serve(editor, preview_every=every) for label, every in settings.items()}
    try:
        clients = {label: Client(demo.local_url, verbose=False, download_files=False) for label, demo in demos.items()}
        times: dict[str, list[float]] = {label: [] for label in settings}
        for repeat in range(repeats + 1):
            for label, client in clients.items():
                client.reset_session()
                elapsed = _timed_edits(client, image, 1, steps=steps, size=size, seed=7)
                if repeat:  # the first round warms up
                    times[label] += elapsed
    finally:
        for demo in demos.values():
            demo.close()
    off, on = (statistics.median(times[label]) for label in settings)
    print(f"tiny MGIE /edit, {size}px, {steps} steps, median of {repeats}: previews off {off:.3f} s, "
          f"every 0.5 s {on:.3f} s -> previews cost {(on - off) / off * 100:+.1f} %")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m editor.bench.app", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image = folder / "input.png"
        Image.effect_mandelbrot((args.size, args.size * 3 // 4), (-2, -1.2, 1, 1.2), 64).convert("RGB").save(image)
        overhead(image, args.size, args.turns)
        previews(image, args.size, args.steps, args.repeats, folder)


if __name__ == "__main__":
    main()
