"""The README's screenshot (docs/app.png): `python app.py` on the offline demo model in headless Chromium at
1400 x 900, the first example edited at the model's own settings.

    python tools/screenshot.py [--out docs/app.png] [--chromium /usr/bin/chromium]

Needs Playwright and a Chromium (requirements-dev.txt, `.ci/browser-deps`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from editor.ui.examples import load_examples  # noqa: E402
from tests.fakes import free_port  # noqa: E402
from tests.test_browser import CHROMIUM_ARGS  # noqa: E402


def wait_for(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"app.py exited with {process.returncode} before serving")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    sys.exit(f"app.py did not serve {url} within {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "app.png")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    port = free_port()
    app = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url, app)
        first = load_examples()[0]["instruction"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#example-list tr", has_text=first).click()
            expect(page.get_by_role("textbox", name="Instruction", exact=True)).to_have_value(first)
            page.get_by_role("button", name="Edit", exact=True).click()
            expect(page.locator("#status")).to_contain_text("Turn 1 of 1", timeout=120_000)
            page.wait_for_function("[...document.querySelectorAll('#history img')].every(i => i.complete)")
            page.screenshot(path=args.out)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        app.terminate()
        app.wait(timeout=30)


if __name__ == "__main__":
    main()
