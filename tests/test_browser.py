"""End to end in a real browser: the tiny MGIE served in-process, driven by Playwright in headless Chromium.

Uses the system Chromium (path in $CHROMIUM, default /usr/bin/chromium), never a Playwright-downloaded browser, and
fails (does not skip) when it or Playwright is missing. $SAVE_SCREENSHOT set: the last screenshot is also copied to
tests/artifacts/browser.png.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from editor.ui import build_demo
from editor.ui.examples import EXAMPLES_DIR
from editor.ui.layout import CSS
from tests.fakes import FakeEditor, free_port

try:
    from playwright.sync_api import Locator, Page, expect, sync_playwright
except ImportError:  # reported as a failure by the `page` fixture, so the rest of the suite still runs
    sync_playwright = None

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
OUTPUT_LABEL = "Edited image"  # label of the output gr.Image
ARTIFACT = Path(__file__).parent / "artifacts" / "browser.png"
INSTALL_HINT = "run `.ci/browser-deps` (apt-get install chromium) and `pip install -r requirements-dev.txt`"
# The closed network of CI sandboxes makes Chromium's background services hang or crash; keep them off.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # CPU-only runners are slow; the tiny model's edit itself takes a few seconds


@pytest.fixture
def page() -> Iterator[Page]:
    if sync_playwright is None:
        pytest.fail(f"Playwright is not installed: {INSTALL_HINT}", pytrace=False)
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(f"no Chromium at {CHROMIUM} (set $CHROMIUM to its path, or {INSTALL_HINT})", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)  # assertions have their own default (5 s)
            yield page
        finally:
            browser.close()


def block(page: Page, label: str) -> Locator:
    """The component (`.block`) whose floating label (images, galleries) reads exactly `label`."""
    title = page.get_by_test_id("block-label").filter(has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    return title.locator("xpath=..")


def button(page: Page, text: str) -> Locator:
    """A gr.Button by its text (icon buttons elsewhere may carry the same aria-label, e.g. "Undo")."""
    return page.get_by_role("button", name=text, exact=True).filter(has_text=re.compile(rf"^\s*{re.escape(text)}\s*$"))


def settings(page: Page, **values: str) -> None:
    """Opens the folded Settings panel (if closed) and types `values` into its sliders, by label."""
    steps = page.get_by_label("number input for Steps", exact=True)
    if not steps.is_visible():
        page.locator(".label-wrap", has_text="Settings").click()
        expect(steps).to_be_visible()
    for label, value in values.items():
        number = page.get_by_label(f"number input for {label}", exact=True)
        slider = page.get_by_label(f"range slider for {label}", exact=True)
        for _ in range(3):  # typed into a panel that was still mounting, the value can be lost (seen once in CI)
            number.fill(value)
            try:
                expect(slider).to_have_value(value, timeout=5_000)
                break
            except AssertionError:
                continue
        expect(slider).to_have_value(value)


def click_and_wait(page: Page, label: str, status: str) -> None:
    """Clicks the button `label`, then waits for #status to read `status`; error toasts, if any, go in the message."""
    button(page, label).click()
    try:
        expect(page.locator("#status")).to_contain_text(status)
    except AssertionError as err:
        toasts = page.get_by_test_id("toast-body").all_inner_texts()
        shown = page.locator("#status").all_inner_texts()
        raise AssertionError(f"after {label!r}: #status {shown} never read {status!r}; toasts: {toasts}") from err


SHOWN = """img => {  // the picture's own size, and the size it is drawn at inside its box (object-fit: contain)
    const box = img.getBoundingClientRect(), w = img.naturalWidth, h = img.naturalHeight;
    const scale = Math.min(box.width / w, box.height / h);
    return {natural: [w, h], drawn: [w * scale, h * scale], rendering: getComputedStyle(img).imageRendering};
}"""


def same_size_and_pixelated(page: Page) -> None:
    """Input, output and both before/after images are drawn at one size, a small result enlarged without smoothing,
    and the output's real resolution is written under it."""
    images = [page.locator(f"{box} img") for box in ("#input-image", "#output-image")]
    images += page.locator("#compare img").all()
    for image in images:
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.first.element_handle())
    shown = [image.first.evaluate(SHOWN) for image in images]
    width, height = shown[1]["natural"]
    expect(page.locator("#output-size")).to_have_text(f"{width} × {height} px")
    for each in shown:
        assert each["drawn"] == pytest.approx(shown[1]["drawn"], abs=2), shown
        assert each["rendering"] == "pixelated", shown
    assert shown[1]["drawn"][1] >= 4 * height, shown  # a 64-px result fills the box, it is not shown tiny


def strip_is_one_row_of_squares(page: Page) -> None:
    """The history strip: square thumbnails, all in one row, none stretched; the current one outlined."""
    page.wait_for_function("[...document.querySelectorAll('#history img')].every(i => i.complete && i.naturalWidth)")
    boxes = page.locator("#history .thumb img").evaluate_all(
        "items => items.map(b => { const r = b.getBoundingClientRect();"
        " return [r.width, r.height, r.top, getComputedStyle(b).outlineStyle]; })"
    )
    assert len({round(top) for *_, top, _ in boxes}) == 1, boxes  # one row
    assert all(abs(w - h) < 2 and w < 200 for w, h, *_ in boxes), boxes  # square, not a band across the page
    assert [outline for *_, outline in boxes][-1] == "solid" and boxes[0][3] == "none", boxes


def test_upload_think_edit_twice_and_undo(app_url: str, page: Page, tmp_path: Path) -> None:
    page.goto(app_url, wait_until="domcontentloaded")
    status = page.locator("#status")
    expect(status).to_contain_text("No edits yet")

    source = block(page, "Input image")
    source.locator("input[type=file]").set_input_files(EXAMPLES_DIR / "chelsea.png")
    expect(source.locator("img")).to_have_attribute("src", re.compile(r"chelsea\.png"))  # uploaded to the server
    settings(page, **{"Steps": "2", "Size (long side)": "64"})

    expect(page.locator("#edit-size")).to_contain_text("Edits at 64 × 40 px")  # next to Edit, before it starts
    instruction = page.get_by_role("textbox", name="Instruction", exact=True)
    expressive = page.get_by_role("textbox", name=re.compile(r"^Expressive instruction"))  # name includes its info
    instruction.fill("make the cat a tiger")
    button(page, "Think").click()
    expect(expressive).not_to_have_value(re.compile(r"^\s*$"))

    assert page.evaluate("window.onbeforeunload === null || window.onbeforeunload === undefined")
    click_and_wait(page, "Edit", "Turn 1 of 1")
    first_expressive = expressive.input_value()
    page.wait_for_function("typeof window.onbeforeunload === 'function'")  # a reload now asks first
    thumbnails = page.locator("#history button.thumb")
    expect(thumbnails).to_have_count(2)  # the original, then turn 1
    expect(block(page, OUTPUT_LABEL).locator("img")).to_have_attribute("src", re.compile(r"\S"))
    same_size_and_pixelated(page)

    instruction.fill("make it snowy")
    click_and_wait(page, "Edit", "Turn 2 of 2 · edited from turn 1")
    expect(thumbnails).to_have_count(3)
    captions = [thumbnail.locator("img").get_attribute("alt") for thumbnail in thumbnails.all()]
    assert captions == ["Original", "Turn 1: make the cat a tiger", "▶ Turn 2: make it snowy"], captions
    strip_is_one_row_of_squares(page)

    click_and_wait(page, "Undo", "Turn 1 of 2")
    expect(thumbnails).to_have_count(3)  # undo moves back through the history; it does not forget the undone turn
    expect(block(page, OUTPUT_LABEL).locator("img")).to_have_attribute("src", re.compile(r"\S"))
    expect(instruction).to_have_value("make the cat a tiger")  # the boxes hold turn 1's texts again
    expect(expressive).to_have_value(first_expressive)
    click_and_wait(page, "Undo", "The original image")
    expect(instruction).to_have_value("")
    expect(expressive).to_have_value("")
    page.get_by_role("spinbutton", name="Turn (0: original)").fill("1")
    click_and_wait(page, "Go to turn", "Turn 1 of 2")
    expect(instruction).to_have_value("make the cat a tiger")
    thumbnails.nth(2).click()  # a click on the strip goes to that turn
    expect(page.locator("#status")).to_contain_text("Turn 2 of 2")
    expect(instruction).to_have_value("make it snowy")
    click_and_wait(page, "Go to turn", "Turn 1 of 2")

    button(page, "Export session").click()
    download = page.locator("#archive")
    expect(download).to_have_text(re.compile(r"^\s*Download session-\d{8}-\d{4}\.zip\s*$"))  # names its file
    with page.expect_download() as saved:
        download.click()
    assert re.fullmatch(r"session-\d{8}-\d{4}\.zip", saved.value.suggested_filename)
    click_and_wait(page, "Undo", "The original image")  # the session changed: the zip no longer matches it
    expect(download).to_be_hidden()

    shot = tmp_path / "browser.png"
    page.screenshot(path=shot, full_page=True)
    if os.environ.get("SAVE_SCREENSHOT"):
        ARTIFACT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, ARTIFACT)


def upload(page: Page, path: Path) -> Locator:
    """Uploads `path` into the input image and waits until the server has it; returns the input's block."""
    source = block(page, "Input image")
    source.locator("input[type=file]").set_input_files(path)
    expect(source.locator("img")).to_have_attribute("src", re.compile(re.escape(path.name)))
    return source


def test_a_user_error_is_one_message_and_every_pane_stays(app_url: str, page: Page, capfd, caplog) -> None:
    page.goto(app_url, wait_until="domcontentloaded")
    source = upload(page, EXAMPLES_DIR / "chelsea.png")
    capfd.readouterr()
    caplog.set_level("INFO", logger="editor")
    button(page, "Edit").click()  # no instruction
    expect(page.get_by_test_id("toast-body")).to_contain_text("instruction is empty")
    covers = page.locator("[data-testid=status-tracker]:has(span.error)")
    expect(covers.first).to_be_attached()  # Gradio marked the outputs as failed ...
    expect(page.locator("[data-testid=status-tracker]:has(span.error):visible")).to_have_count(0)  # ... unseen
    expect(source.locator("img")).to_be_visible()  # the upload is still shown
    expect(page.locator("#status")).to_contain_text("No edits yet")
    expect(page.locator("#used")).not_to_contain_text("Thinking")  # no progress line left behind
    assert "Traceback" not in capfd.readouterr().err  # the server prints no traceback for it ...
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("editor")]
    assert len(lines) == 1 and lines[0].startswith("user error: instruction is empty"), lines  # ... one line


def shows_a_picture(image: Locator) -> None:
    """`image` (an <img>) has loaded a real picture, not a broken-image icon."""
    expect(image).to_be_visible()
    image.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())


def test_an_upload_is_checked_when_it_arrives_and_the_previous_image_stays(app_url: str, page: Page, tmp_path) -> None:
    page.goto(app_url, wait_until="domcontentloaded")
    source = upload(page, EXAMPLES_DIR / "chelsea.png")
    fake, notes = tmp_path / "holiday.png", tmp_path / "notes.txt"
    fake.write_text("not a picture")  # a text file renamed .png
    notes.write_text("not a picture")
    toasts = page.get_by_test_id("toast-body")

    source.locator("input[type=file]").set_input_files(fake)
    expect(toasts.filter(has_text="could not read 'holiday.png' as an image")).to_be_visible()  # before any Edit
    expect(source.locator("img")).to_have_attribute("src", re.compile(r"\.png$"))
    expect(source.locator("img")).not_to_have_attribute("src", re.compile(r"holiday"))  # the cat is back
    shows_a_picture(source.locator("img"))

    source.locator("input[type=file]").set_input_files(notes)
    expect(toasts.filter(has_text="notes.txt")).to_be_visible()
    expect(source.locator("img")).not_to_have_attribute("src", re.compile(r"notes|holiday"))
    shows_a_picture(source.locator("img"))


def test_the_explorer_labels_its_plot_lays_out_full_rows_and_says_what_was_adopted(app_url: str, page: Page) -> None:
    page.goto(app_url, wait_until="domcontentloaded")
    upload(page, EXAMPLES_DIR / "shapes-1.png")
    settings(page, **{"Steps": "2", "Size (long side)": "64"})
    page.get_by_role("textbox", name="Instruction", exact=True).fill("make the circle green")
    page.get_by_role("tab", name="Trade-off explorer").click()
    page.get_by_label("αV to").fill("1.6")  # αV 1.0, 1.2, 1.4, 1.6 ...
    page.get_by_label("αX values (comma-separated)").fill("5, 7.5")  # ... times two αX: 8 cells
    button(page, "Explore").click()
    cells = page.locator("#sweep .thumbnail-item")
    expect(cells).to_have_count(8)
    expect(page.locator("#sweep img").nth(7)).to_have_attribute("alt", "αX 7.5 · αV 1.6")
    sweep = page.locator("#sweep").bounding_box()
    boxes = [cell.bounding_box() for cell in cells.all()]
    assert len({round(b["y"]) for b in boxes}) == 2, boxes  # two full rows of four (one per αX)
    assert all(b["y"] + b["height"] <= sweep["y"] + sweep["height"] + 1 for b in boxes), (boxes, sweep)  # none cut

    cells.nth(5).click()  # αX 7.5 · αV 1.2
    toast = page.get_by_test_id("toast-body").filter(has_text="Adopted cell 5 (αX 7.5 · αV 1.2")
    expect(toast).to_contain_text("the next Edit uses them")
    expect(page.get_by_label("number input for Image guidance αV", exact=True)).to_have_value("1.2")


class CountedSteps(FakeEditor):
    """A slow fake editor that records every step it runs."""

    def __init__(self) -> None:
        super().__init__(step_seconds=0.2)
        self.steps: list[int] = []

    def render(self, image, guidance, params=None, on_step=None):
        def counted(step):
            self.steps.append(step.index)
            on_step(step)

        return super().render(image, guidance, params, counted if on_step else None)


@pytest.fixture(scope="module")
def slow_app() -> Iterator[tuple[str, CountedSteps]]:
    editor = CountedSteps()
    demo = build_demo({"fake": editor}, examples_dir=None).queue(default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, css=CSS)
    try:
        yield demo.local_url, editor
    finally:
        demo.close()


def test_one_progress_line_and_stop_cancels_within_a_step_or_two(slow_app, page: Page) -> None:
    url, editor = slow_app
    page.goto(url, wait_until="domcontentloaded")
    upload(page, EXAMPLES_DIR / "chelsea.png")
    settings(page, **{"Steps": "150", "Size (long side)": "64"})
    page.get_by_role("textbox", name="Instruction", exact=True).fill("make it snowy")
    button(page, "Edit").click()
    used = page.locator("#used")
    expect(used).to_contain_text(re.compile(r"step \d+ of 150 · [\d.]+ s · about \d+ s left"))
    expect(page.locator("#output-image img")).to_be_visible()  # the step preview, where the result will appear
    trackers = page.locator("[data-testid=status-tracker]:not(.hide)")
    assert trackers.count() == 0, [t.evaluate("e => e.parentElement.id") for t in trackers.all()]  # no other bars

    button(page, "Stop").click()
    expect(used).to_contain_text("Stopped: nothing was added to the history")
    at_stop = len(editor.steps)
    page.wait_for_timeout(2000)  # ten more steps' time
    assert len(editor.steps) <= at_stop + 2, (at_stop, len(editor.steps))  # the render stopped within a step or two
    expect(page.locator("#status")).to_contain_text("No edits yet")  # the session is unchanged
    expect(page.locator("#output-image img")).to_have_count(0)  # the preview is gone, as the session has no result

    settings(page, Steps="2")
    click_and_wait(page, "Edit", "Turn 1 of 1")  # the next edit runs at once


def inside_the_window(page: Page, locator: Locator, width: int = 1400, height: int = 900) -> None:
    """Every element of `locator` is drawn entirely inside the window, without scrolling."""
    assert page.evaluate("window.scrollY") == 0
    for element in locator.all():
        box = element.bounding_box()
        assert box is not None and box["width"] > 0, (locator, box)
        assert box["x"] >= 0 and box["y"] >= 0, (locator, box)
        assert box["x"] + box["width"] <= width and box["y"] + box["height"] <= height, (locator, box)


def test_the_main_flow_fits_one_1400x900_window_with_the_examples(app_url: str, page: Page, tmp_path: Path) -> None:
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(app_url, wait_until="domcontentloaded")
    example = page.locator("#example-list tr", has_text="green for the large purple circle")
    expect(example).to_be_visible()
    inside_the_window(page, example)  # a first-time user sees the examples at once
    example.click()
    instruction = page.get_by_role("textbox", name="Instruction", exact=True)
    expect(instruction).to_have_value("green for the large purple circle")
    click_and_wait(page, "Edit", "Turn 1 of 1")  # at the model's own settings, the Settings panel never opened
    page.wait_for_function("[...document.querySelectorAll('#history img')].every(i => i.complete && i.naturalWidth)")
    expressive = page.get_by_role("textbox", name=re.compile(r"^Expressive instruction"))
    for part in (
        page.locator("#input-image"), instruction, button(page, "Think"), button(page, "Edit"), button(page, "Stop"),
        expressive, page.locator("#output-image"), page.locator("#compare"), page.locator("#used"),
        page.locator("#status"), page.locator("#history .thumb"), page.locator("#edit-size"),
    ):  # fmt: skip
        inside_the_window(page, part)
    shot = tmp_path / "main-screen.png"
    page.screenshot(path=shot)
    if os.environ.get("SAVE_SCREENSHOT"):
        ARTIFACT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, ARTIFACT.with_name("main-screen.png"))


def test_variations_show_seeds_side_by_side_and_a_picked_one_becomes_the_turn(app_url: str, page: Page) -> None:
    page.goto(app_url, wait_until="domcontentloaded")
    upload(page, EXAMPLES_DIR / "shapes-1.png")
    settings(page, **{"Steps": "2", "Size (long side)": "64"})
    page.get_by_role("textbox", name="Instruction", exact=True).fill("make the circle green")
    page.locator("#variations-count input").click()
    page.get_by_role("option", name="Variations: 3").click()
    expect(button(page, "Edit")).to_be_hidden()
    button(page, "Edit 3 variations").click()
    shown = page.locator("#variations .thumbnail-item")
    expect(shown).to_have_count(3)
    expect(page.locator("#used")).to_contain_text("click one to keep it")
    captions = [image.get_attribute("alt") for image in page.locator("#variations img").all()]
    assert captions == ["#1 · seed 13331", "#2 · seed 13332", "#3 · seed 13333"], captions
    boxes = [item.bounding_box() for item in shown.all()]
    assert len({round(b["y"]) for b in boxes}) == 1, boxes  # side by side
    expect(page.locator("#status")).to_contain_text("No edits yet")  # nothing is added before a pick
    shown.nth(1).click()
    expect(page.locator("#status")).to_contain_text("Turn 1 of 1")
    expect(page.locator("#used")).to_contain_text("seed 13332")
    expect(page.locator("#variations")).to_be_hidden()
    expect(page.locator("#history button.thumb")).to_have_count(2)  # the original, then the picked variation
