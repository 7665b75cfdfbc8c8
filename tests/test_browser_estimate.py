"""In a real browser (tests/test_browser.py's Chromium and helpers): next to Edit, a long edit on the CPU says how
long it will take, from the model's own measured steps, and follows the settings."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from editor.ui import build_demo
from editor.ui.examples import EXAMPLES_DIR
from editor.ui.layout import CSS
from tests.fakes import free_port
from tests.test_browser import (
    click_and_wait,
    page,  # noqa: F401 - the Chromium page fixture
    settings,
    upload,
)

try:
    from playwright.sync_api import Page, expect
except ImportError:  # the `page` fixture reports it
    pass


@pytest.fixture(scope="module")
def unmeasured_app(mgie) -> Iterator[str]:
    """The tiny MGIE on the CPU in an app of its own, so that no edit has been timed yet."""
    demo = build_demo({mgie.name: mgie}, examples_dir=None).queue(default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, css=CSS)
    try:
        yield demo.local_url
    finally:
        demo.close()


def test_a_long_edit_on_the_cpu_shows_its_estimate_next_to_edit(unmeasured_app: str, page: Page) -> None:  # noqa: F811
    page.goto(unmeasured_app, wait_until="domcontentloaded")
    upload(page, EXAMPLES_DIR / "chelsea.png")
    plan = page.locator("#edit-size")
    settings(page, **{"Steps": "150", "Size (long side)": "1024"})
    expect(plan).to_contain_text("Edits at 1024 × 680 px")
    expect(plan).not_to_contain_text("on this CPU")  # the tiny model has no rough figure: nothing measured yet

    settings(page, **{"Steps": "2", "Size (long side)": "64"})
    page.get_by_role("textbox", name="Instruction", exact=True).fill("make it snowy")
    click_and_wait(page, "Edit", "Turn 1 of 1")  # its steps are timed
    expect(plan).to_contain_text("Edits at 64 × 40 px")
    expect(plan).not_to_contain_text("on this CPU")  # two steps at 64 px: too short to estimate

    settings(page, **{"Steps": "150", "Size (long side)": "1024"})
    measured = re.compile(r"About ([\d.]+ (s|min|h)) on this CPU \(estimate from the last edit, at 64 × 40 px\)")
    expect(plan).to_contain_text(measured)
    at_150 = measured.search(plan.inner_text()).group(1)
    settings(page, Steps="50")  # the estimate follows the steps: a third of them
    expect(plan).not_to_contain_text(at_150)
    expect(plan).to_contain_text("at 64 × 40 px")
