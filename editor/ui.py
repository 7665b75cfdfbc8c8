"""The Gradio UI: wiring only. Editors are loaded by the caller (app.py); nothing here loads models or launches.

Flow: "Think" runs the MLLM and shows its expressive instruction, which the user may rewrite; "Edit" renders from
the guidance of this session. Which guidance "Edit" uses (`resolve_guidance`):
  - the expressive box holds text the model did not write (the user's own) -> rebuilt from that text;
  - otherwise the session's guidance, when it was made by this model for this image and instruction;
  - otherwise the MLLM thinks first.
API endpoints: /think and /edit. Both share one concurrency slot ("gpu"): one model call at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch
from PIL import Image

from editor.core import Editor, Guidance, StepCallback
from editor.examples import EXAMPLES_DIR, load_examples
from editor.loading import CheckpointError, MissingWeightsError
from editor.params import DEFAULT_SEED, DEFAULT_SIZE, EditParams, Resolution

GPU = "gpu"  # concurrency id shared by the events that run a model
MAX_UI_STEPS = 150
MAX_UI_SIZE = 1024


@dataclass(frozen=True)
class Session:
    """What one browser session keeps between clicks (in a gr.State): the last guidance and what it was made for."""

    model: str
    image_key: str
    guidance: Guidance

    def matches(self, model: str, image_key: str, instruction: str) -> bool:
        return (self.model, self.image_key, self.guidance.instruction) == (model, image_key, instruction.strip())


def image_key(image: Image.Image) -> str:
    """Identifies an image by its pixels, so a re-upload of the same picture reuses its guidance."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()
    return f"{image.mode}:{image.width}x{image.height}:{digest}"


def resolve_guidance(
    editor: Editor, session: Session | None, image: Image.Image, instruction: str, expressive: str
) -> Session:
    """The session "Edit" renders from, with its guidance reused, rebuilt from the user's text, or thought anew (see
    the module docstring)."""
    key, text = image_key(image), (expressive or "").strip()
    previous = session.guidance if session is not None else None
    if session is not None and session.matches(editor.name, key, instruction) and text in ("", previous.expressive):
        return session
    if text and (previous is None or previous.source == "user" or text != previous.expressive):
        return Session(editor.name, key, editor.guidance_from_text(image, instruction, text))
    return Session(editor.name, key, editor.think(image, instruction))


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors caused by the input or the weights become a message in the UI; the app keeps serving."""
    try:
        yield
    except (ValueError, MissingWeightsError, CheckpointError) as err:
        raise gr.Error(str(err)) from err
    except torch.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        raise gr.Error("out of GPU memory: try a smaller size, or wait for other edits to finish") from err


def _pick(editors: Mapping[str, Editor], model: str) -> Editor:
    if model not in editors:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(editors)}")
    return editors[model]


def _check_image(image: Image.Image | None) -> Image.Image:
    if image is None:
        raise ValueError("no input image: upload one or pick an example")
    return image


def _as_int(value: float | None, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _step_reporter(progress: gr.Progress) -> StepCallback:
    def on_step(step: int, total: int, _latents) -> None:
        progress((step, total), desc="Editing", unit="steps")

    return on_step


def build_demo(
    editors: Mapping[str, Editor], notice: str | None = None, examples_dir: Path | None = EXAMPLES_DIR
) -> gr.Blocks:
    """The app's Blocks for `editors` (name -> loaded editor). `notice` is shown as a banner; `examples_dir=None`
    leaves the examples out."""
    if not editors:
        raise ValueError("build_demo needs at least one editor")
    defaults = EditParams()

    def think(
        model: str,
        image: Image.Image | None,
        instruction: str,
        session: Session | None,
        progress=gr.Progress(),  # noqa: B008 - Gradio's progress-tracking marker
    ):
        with user_errors():
            editor, image = _pick(editors, model), _check_image(image)
            progress(None, desc="Thinking")
            guidance = editor.think(image, instruction)
            return guidance.expressive, guidance.raw_text, Session(editor.name, image_key(image), guidance)

    def edit(
        model: str,
        image: Image.Image | None,
        instruction: str,
        expressive: str,
        steps: float,
        text_guidance: float,
        image_guidance: float,
        seed: float | None,
        randomize_seed: bool,
        resize: str,
        size: float,
        session: Session | None,
        progress=gr.Progress(),  # noqa: B008 - Gradio's progress-tracking marker
    ):
        with user_errors():
            editor, image = _pick(editors, model), _check_image(image)
            params = EditParams(
                steps=_as_int(steps, "steps"),
                text_guidance=text_guidance,
                image_guidance=image_guidance,
                seed=None if randomize_seed else _as_int(seed, "seed"),
                resolution=Resolution(resize, _as_int(size, "size")),
            )
            progress(None, desc="Preparing the guidance")
            session = resolve_guidance(editor, session, image, instruction, expressive)
            guidance = session.guidance
            result = editor.render(image, guidance, params, on_step=_step_reporter(progress))
            before_after = (result.source, result.image)
            return result.image, before_after, guidance.expressive, guidance.raw_text, result.seed, session

    with gr.Blocks(title="MGIE image editor", analytics_enabled=False) as demo:
        if notice:
            gr.Markdown(f"**Note:** {notice}")
        gr.Markdown(
            "## Instruction-based image editing guided by a multimodal LLM\n"
            "Type a terse instruction, press **Think** to see how the model understands it (you may rewrite it), "
            "then **Edit**."
        )
        session = gr.State(None)
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(list(editors), value=next(iter(editors)), label="Model", visible=len(editors) > 1)
                image = gr.Image(type="pil", label="Input image")
                instruction = gr.Textbox(label="Instruction", placeholder="make the sky blue", max_lines=2)
                with gr.Row():
                    think_button = gr.Button("Think")
                    edit_button = gr.Button("Edit", variant="primary")
                expressive = gr.Textbox(
                    value="",
                    label="Expressive instruction",
                    lines=3,
                    info="What the MLLM made of the instruction. Rewrite it to steer the edit.",
                )
                with gr.Accordion("Raw MLLM output", open=False):
                    raw_text = gr.Textbox(show_label=False, lines=3, interactive=False)
            with gr.Column():
                output = gr.Image(type="pil", format="png", label="Edited image", interactive=False)
                compare = gr.ImageSlider(type="pil", format="png", label="Before / after", interactive=False)
        with gr.Row():
            steps = gr.Slider(1, MAX_UI_STEPS, value=defaults.steps, step=1, precision=0, label="Steps")
            text_guidance = gr.Slider(
                1.0,
                15.0,
                value=defaults.text_guidance,
                step=0.5,
                label="Text guidance αX",
                info="αX ≤ 1 turns classifier-free guidance off",
            )
            image_guidance = gr.Slider(1.0, 5.0, value=defaults.image_guidance, step=0.1, label="Image guidance αV")
        with gr.Row():
            seed = gr.Number(value=DEFAULT_SEED, precision=0, minimum=0, label="Seed (the one used is shown here)")
            randomize_seed = gr.Checkbox(value=False, label="Randomize seed")
            resize = gr.Radio(
                [("keep aspect ratio", "keep_aspect"), ("centre crop (reference demo)", "center_crop")],
                value=defaults.resolution.mode,
                label="Resolution",
            )
            size = gr.Slider(64, MAX_UI_SIZE, value=DEFAULT_SIZE, step=64, precision=0, label="Size (long side)")
        if examples_dir is not None:
            gr.Examples(
                [[entry["image"], entry["instruction"]] for entry in load_examples(examples_dir)],
                inputs=[image, instruction],
            )

        think_button.click(
            think,
            inputs=[model, image, instruction, session],
            outputs=[expressive, raw_text, session],
            api_name="think",
            concurrency_limit=1,
            concurrency_id=GPU,
        )
        edit_button.click(
            edit,
            inputs=[model, image, instruction, expressive, steps, text_guidance, image_guidance]
            + [seed, randomize_seed, resize, size, session],
            outputs=[output, compare, expressive, raw_text, seed, session],
            api_name="edit",
            concurrency_limit=1,
            concurrency_id=GPU,
        )
    return demo
