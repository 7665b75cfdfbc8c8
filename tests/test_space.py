"""A Space built from this repository: the model named by EDITOR_MODEL is downloaded after the page is up (progress in
the banner, model calls refused with how far it is), then loaded and served; a licence not accepted, a machine
without the hardware, or a failed download opens the demo model with the reason. Offline: the Hub is a local server
(tests/hub_server.py) that huggingface_hub reaches through HF_ENDPOINT, as behind a Hub mirror."""

from __future__ import annotations

import inspect
import math
import os
import re
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from huggingface_hub import constants

import app
from editor.loading import MissingWeightsError
from editor.params import EditParams, Resolution
from editor.pipelines.registry import DEFAULT_WEIGHTS_DIR
from editor.ui import build_demo, build_ui, gpu
from editor.ui.startup import (
    ACCEPT_ENV,
    Hardware,
    ModelStartup,
    prepare_startup,
    read_config,
    refusal,
    weights_folder,
)
from editor.weights.catalog import MODELS, download_command, installed
from tests.fakes import FakeEditor, fake_ui, free_port
from tests.hub_server import FakeHub, mgie_repos, serve
from tests.test_browser import expect, page, settings  # noqa: F401 - page: the Chromium fixture (test_browser.py)

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "shapes-1.png"
HELD = "tsujuifu/ml-mgie/LLaVA-7B-v1/pytorch_model-00001-of-00002.bin"
# the network reaches only the local Hub: Apple's archive URL fails fast (both spellings: lowercase wins in urllib)
NO_NETWORK = {
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
SPACE = {"SPACE_ID": "someone/editor", "EDITOR_MODEL": "mgie-7b", "EDITOR_DEVICE": "cpu"}


@pytest.fixture
def hub(tiny_tree):
    hub = FakeHub(mgie_repos(tiny_tree))
    server = serve(hub)
    yield hub
    hub.release.set()
    server.shutdown()


def _wait_for(client: Client, pattern: str, limit_s: float = 600) -> str:
    """The banner (the /startup_status endpoint) once it matches `pattern`; a loop guard, not a timing check."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        text = client.predict(api_name="/startup_status")[0]
        if re.search(pattern, text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"the banner never matched {pattern!r}; last: {text!r}")


def test_a_space_downloads_the_model_with_progress_then_serves_it(hub, tmp_path):
    hub.hold = {HELD}  # one LLaVA shard waits, so the download is seen in flight
    weights, port = tmp_path / "weights", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "EDITOR_"))} | SPACE | {
        ACCEPT_ENV: "mgie-7b",
        "EDITOR_WEIGHTS_DIR": str(weights),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "0",
    } | NO_NETWORK  # fmt: skip
    command = [sys.executable, "app.py", "--port", str(port)]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        rest: list[str] = []  # the output after the launch line, read on so the app never blocks on a full pipe
        try:
            for line in proc.stdout:
                if line.startswith("* Running on"):
                    break
            threading.Thread(target=lambda: rest.extend(proc.stdout), daemon=True).start()
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False)
            banner = _wait_for(client, r"is downloading: [1-9]\d* %")  # moving: every file but the held one
            done, total = re.search(r"(\d+) %, (.+) of (.+)\. Edits", banner).group(1, 3)
            assert int(done) < 100 and total.endswith(("kB", "MB")), banner  # the tiny tree's real size, not 16 GB
            with pytest.raises(AppError, match=r"MGIE-7B .* is still downloading \(\d+ %.*\): edits start once"):
                client.predict(image=handle_file(EXAMPLE), instruction="make it blue", api_name="/think")
            hub.release.set()
            assert "is loaded and ready" in _wait_for(client, r"ready|could not")
            out = client.predict(
                image=handle_file(EXAMPLE), instruction="make it blue", steps=2, size=64, api_name="/edit"
            )
            assert out[1] and Path(out[5]).is_file() and "**Used:**" in out[2], out  # raw text, output, used line
        finally:
            proc.terminate()
            proc.wait()
            log = "".join(rest)
    assert installed(MODELS["mgie-7b"], weights), log
    assert any(
        r.startswith("GET /tsujuifu/ml-mgie/resolve/") and r.endswith(HELD.split("/", 2)[2]) for r in hub.requests
    )
    assert "Traceback" not in log, log


def _offline_hub(monkeypatch, url: str) -> None:
    """What HF_ENDPOINT=url does at start-up, for this (already started) test process."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    for name, value in NO_NETWORK.items():
        monkeypatch.setenv(name, value)


def test_without_the_licence_variable_nothing_is_downloaded_and_the_variable_is_named(hub, tmp_path, monkeypatch):
    _offline_hub(monkeypatch, hub.url)
    startup = prepare_startup(SPACE, tmp_path / "weights", data_root=tmp_path / "no-data")
    assert hub.requests == []
    assert set(startup.editors) == {"mgie-demo", "ip2p-demo"} and startup.run is None
    assert f"`{ACCEPT_ENV}=mgie-7b`" in startup.notice and "CC-BY-NC" in startup.notice  # the licence is shown
    assert "offline demo model" in startup.notice
    # and a start-up that somehow runs without it still refuses before any request
    config = read_config(SPACE, tmp_path / "weights", data_root=tmp_path / "no-data")
    model = ModelStartup(config, Hardware("cpu"))
    model.run()
    assert hub.requests == [] and model.status.phase == "fallback" and ACCEPT_ENV in model.status.reason


def test_with_the_server_down_the_demo_model_serves_with_the_reason_shown(tmp_path, monkeypatch):
    _offline_hub(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    env = SPACE | {ACCEPT_ENV: "mgie-7b"}
    startup = prepare_startup(env, tmp_path / "weights", data_root=tmp_path / "no-data")
    pending = startup.editors["mgie-7b"]
    with pytest.raises(ValueError, match="MGIE-7B .* is starting"):
        pending.think(EXAMPLE, "make it blue")
    assert not hasattr(pending, "image_embedding")  # nothing to measure with yet
    startup.run()
    text, settled = startup.notice()
    assert settled and "could not be started" in text and "cannot reach the Hub" in text, text
    assert "**offline demo model** (`mgie-demo`" in text
    guidance = pending.think(EXAMPLE, "make the circle blue")
    assert guidance.model == "mgie-demo" and guidance.expressive  # edits run, on the labelled demo model
    assert pending.native_size == 64  # the demo's own size, now that it serves
    demo = startup.run.__self__.editor
    assert torch.equal(pending.image_embedding(EXAMPLE), demo.image_embedding(EXAMPLE))  # the explorer's CLIP-I


def test_after_a_fallback_the_settings_follow_the_demo_model_where_the_user_left_them(tmp_path, monkeypatch):
    _offline_hub(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nothing listens there: the download fails
    own = EditParams(steps=20, text_guidance=5.0, image_guidance=1.2)
    demo = FakeEditor(name="mgie-demo", defaults=own, native_size=64)
    env = SPACE | {ACCEPT_ENV: "mgie-7b"}
    startup = prepare_startup(env, tmp_path / "weights", data_root=tmp_path / "x", load=lambda name, *_: demo)
    ui = build_ui(startup.editors, startup.notice, examples_dir=None, preview_every=None)
    w, fns = ui.widgets, ui.demo.fns.values()
    poll = next(f for f in fns if f.api_name == "startup_status")
    follow = next(f.fn for f in fns if f.trigger_after == poll._id)  # what follows each poll of the start-up
    built = [w.steps.value, w.text_guidance.value, w.image_guidance.value, w.size.value]
    assert built == [100, 7.5, 1.5, 512]  # the stand-in's: nothing is known of the model yet
    assert follow("mgie-7b", *built) == {}  # still starting: nothing changes
    startup.run()
    assert startup.notice()[1] and "offline demo model" in startup.notice()[0]
    assert follow("mgie-7b", *built) == {w.steps: 20, w.text_guidance: 5.0, w.image_guidance: 1.2, w.size: 64}
    moved = follow("mgie-7b", 30, 7.5, 1.5, 256)  # the user chose the steps and the size meanwhile
    assert moved == {w.text_guidance: 5.0, w.image_guidance: 1.2}
    plan = ui.handlers.plan_text("mgie-7b", None, "keep_aspect", 64)
    assert "64" in plan, plan


def test_an_open_page_takes_the_demo_models_settings_where_the_user_left_them(page, tmp_path, monkeypatch):  # noqa: F811
    """In Chromium: the values arrive on a page already open, after the poll that finds the start-up settled."""
    _offline_hub(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nothing listens there: the download fails
    demo = FakeEditor(name="mgie-demo", defaults=EditParams(20, 5.0, 1.2), native_size=64)
    env = SPACE | {ACCEPT_ENV: "mgie-7b"}
    startup = prepare_startup(env, tmp_path / "weights", data_root=tmp_path / "x", load=lambda name, *_: demo)
    served = build_demo(startup.editors, startup.notice, examples_dir=None).queue(default_concurrency_limit=1)
    served.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        page.goto(served.local_url, wait_until="domcontentloaded")
        expect(page.locator("#notice")).to_contain_text("is starting")
        settings(page, Steps="30")  # the user's own, before the model is known
        startup.run()
        expect(page.locator("#notice")).to_contain_text("offline demo model")
        slider = lambda label: page.get_by_label(f"range slider for {label}", exact=True)  # noqa: E731
        expect(slider("Size (long side)")).to_have_value("64")
        expect(slider("Text guidance αX")).to_have_value("5")
        expect(slider("Image guidance αV")).to_have_value("1.2")
        expect(slider("Steps")).to_have_value("30")
    finally:
        served.close()


def _also_loader(loaded: list[str], seen: list[tuple[str, bool]], startup=lambda: None):
    """A `load` for prepare_startup: fake editors, MagicBrush missing; records each name and the banner meanwhile."""

    def load(name, *_):
        loaded.append(name)
        if (current := startup()) is not None:
            seen.append(current.notice())
        if name == "magicbrush":
            raise MissingWeightsError(f"magicbrush is missing in {ROOT}/w\n  Get it with: {download_command(name)}")
        return FakeEditor(name=name)

    return load


def test_also_models_load_after_the_served_one_and_a_failure_is_named_not_fatal(tmp_path, monkeypatch):
    _offline_hub(monkeypatch, f"http://127.0.0.1:{free_port()}")  # the download fails: the demo model serves
    loaded, seen, also = [], [], ["magicbrush", "ip2p-demo", "mgie-7b", "ip2p-demo"]
    load = _also_loader(loaded, seen, lambda: startup)
    env = SPACE | {ACCEPT_ENV: "mgie-7b"}
    startup = prepare_startup(env, tmp_path / "w", data_root=tmp_path / "x", load=load, also=also)
    assert list(startup.editors) == ["mgie-7b", "magicbrush", "ip2p-demo"]  # all in the UI from the start
    with pytest.raises(ValueError, match=r"demo ablation.* is loaded once MGIE-7B .* has started: try again"):
        startup.editors["ip2p-demo"].think(EXAMPLE, "make it blue")
    startup.run()
    assert loaded == ["mgie-demo", "magicbrush", "ip2p-demo"]  # the served model (here its fallback) first
    assert not seen[-1][1] and "is loading…" in seen[-1][0]  # the banner waits for the --also models
    text, settled = startup.notice()
    assert settled and "**offline demo model**" in text and "ablation: InstructPix2Pix-style, terse instruction " \
        "only** is loaded too" in text  # fmt: skip
    assert "**MagicBrush (InstructPix2Pix fine-tuned on MagicBrush)** (`--also`) could not be loaded" in text
    assert "download magicbrush." in text and str(ROOT) not in text, text  # the reason, without server paths
    assert startup.editors["ip2p-demo"].think(EXAMPLE, "make the circle blue").model == "ip2p-demo"
    with pytest.raises(ValueError, match=r"MagicBrush .* could not be loaded: .*download magicbrush"):
        startup.editors["magicbrush"].think(EXAMPLE, "make it blue")  # refused with its reason; the app serves on


def test_also_models_load_beside_the_demo_when_the_model_is_refused(tmp_path, monkeypatch, capsys):
    loaded = []
    refused = prepare_startup(SPACE, tmp_path / "w", data_root=tmp_path / "x", load=_also_loader(loaded, []),
                              also=["ip2p-demo", "magicbrush"])  # fmt: skip
    assert loaded == ["mgie-demo", "ip2p-demo", "magicbrush"] and list(refused.editors) == ["mgie-demo", "ip2p-demo"]
    assert ACCEPT_ENV in refused.notice and "(`--also`) could not be loaded" in refused.notice
    seen = {}

    def prepare(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("seen")  # main stops there, with status 2

    monkeypatch.setattr(app, "prepare_startup", prepare)
    assert app.main(["--also", "ip2p-demo", "--also", "magicbrush"]) == 2
    assert seen["also"] == ["ip2p-demo", "magicbrush"]  # app.py hands --also to the start-up


def test_cpu_only_hardware_downloads_nothing_and_names_the_hardware(hub, tmp_path, monkeypatch):
    _offline_hub(monkeypatch, hub.url)
    env = {"SPACE_ID": "someone/editor", ACCEPT_ENV: "mgie-7b"}  # EDITOR_MODEL defaults to mgie-7b on a Space
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    startup = prepare_startup(env, tmp_path / "weights", data_root=tmp_path / "no-data")
    assert hub.requests == [] and set(startup.editors) == {"mgie-demo", "ip2p-demo"}
    assert "needs a GPU with about 16 GB" in startup.notice and "A10G or L4" in startup.notice
    assert "EDITOR_DEVICE=cpu" in startup.notice


def test_a_small_gpu_is_refused_and_offload_is_suggested(tmp_path):
    config = read_config(SPACE | {"EDITOR_DEVICE": ""}, tmp_path, data_root=tmp_path / "no-data")
    text = refusal(config, Hardware("gpu", 15.8))  # a T4
    assert "needs about 16 GB of GPU memory" in text and "EDITOR_OFFLOAD=1" in text
    offload = read_config(SPACE | {"EDITOR_DEVICE": "", "EDITOR_OFFLOAD": "1"}, tmp_path, data_root=tmp_path / "x")
    assert "licence" in refusal(offload, Hardware("gpu", 15.8))  # 14 GB with offload fits; the licence is next


def test_a_model_with_no_published_copy_is_refused_before_any_download(tmp_path):
    config = read_config({"EDITOR_MODEL": "smartedit-13b", ACCEPT_ENV: "smartedit-13b"}, tmp_path, data_root=tmp_path)
    text = refusal(config, Hardware("gpu", 80.0))
    assert "cannot be downloaded at start-up: LLaVA-13B-v1" in text and "--llama-base" in text


def test_persistent_storage_holds_the_weights_unless_a_folder_is_chosen(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    assert weights_folder({}, DEFAULT_WEIGHTS_DIR, data) == data / "weights"
    assert weights_folder({}, DEFAULT_WEIGHTS_DIR, tmp_path / "none") == DEFAULT_WEIGHTS_DIR
    assert weights_folder({}, tmp_path / "mine", data) == tmp_path / "mine"
    assert weights_folder({"EDITOR_WEIGHTS_DIR": "x"}, DEFAULT_WEIGHTS_DIR, data) == DEFAULT_WEIGHTS_DIR


def test_no_variables_no_start_up_and_a_bad_model_name_is_refused():
    assert read_config({}) is None and read_config({"SPACE_ID": "a/b", "EDITOR_MODEL": "demo"}) is None
    with pytest.raises(ValueError, match="EDITOR_MODEL='mgie-demo' is not a downloadable model"):
        read_config({"EDITOR_MODEL": "mgie-demo"})


class FakeSpaces(types.ModuleType):
    """`spaces` as ZeroGPU runs it, reduced to what matters here: GPU(duration=fn) computes the duration from each
    call's own arguments before running the task (generators stay generators), and records it."""

    def __init__(self) -> None:
        super().__init__("spaces")
        self.asked: list[tuple[str, int]] = []

    def GPU(self, task=None, *, duration=None, size=None):  # noqa: N802 - the real decorator's name
        def decorate(fn):
            def seconds(args, kwargs) -> int:
                value = duration(*args, **kwargs) if callable(duration) else duration
                self.asked.append((fn.__name__, value))
                return value

            if inspect.isgeneratorfunction(fn):

                def gen(*args, **kwargs):
                    seconds(args, kwargs)
                    yield from fn(*args, **kwargs)

                return gen

            def call(*args, **kwargs):
                seconds(args, kwargs)
                return fn(*args, **kwargs)

            return call

        return decorate if task is None else decorate(task)


def test_zero_gpu_asks_for_a_duration_computed_from_each_request(monkeypatch):
    fake = FakeSpaces()
    monkeypatch.setitem(sys.modules, "spaces", fake)
    handlers = fake_ui(FakeEditor(name="mgie-7b")).handlers  # wraps its model calls with the fake `spaces`
    settings = dict(text_guidance=7.5, image_guidance=1.5, seed=1, randomize_seed=False, resize="keep_aspect")
    for steps, size in ((100, 512), (20, 256)):
        kwargs = dict(model="mgie-7b", image=str(EXAMPLE), instruction="make it blue", expressive="")
        list(handlers.edit(**kwargs, steps=steps, size=size, **settings, state=None))
    sweep = dict(text_values="7.5", start=1.0, stop=1.4, step=0.2, seed=1, randomize_seed=False, resize="keep_aspect")
    list(handlers.explore("mgie-7b", str(EXAMPLE), "make it blue", "", steps=10, size=512, **sweep, state=None))
    cost = gpu.COSTS["mgie-7b"]
    think = math.ceil(cost.start_s + cost.think_s)
    assert fake.asked == [
        ("think", think),
        ("render", math.ceil(cost.start_s + 100 * cost.step_s)),  # 100 steps at 512²
        ("think", think),
        ("render", math.ceil(cost.start_s + 20 * cost.step_s * (256 / 512) ** 2)),  # 20 steps at a quarter the area
        ("think", think),
        ("sweep", math.ceil(cost.start_s + 3 * 10 * cost.step_s)),  # 3 cells of 10 steps
    ]
    assert fake.asked[1][1] > fake.asked[3][1]  # the request sets the reservation, not one fixed figure


def test_a_duration_stays_within_what_zero_gpu_admits():
    long = EditParams(steps=1000, resolution=Resolution(size=1024))
    assert gpu.render_seconds("smartedit-13b", None, None, long) == gpu.MAX_SECONDS
    assert gpu.render_seconds("mgie-demo", None, None, EditParams(steps=1)) == gpu.MIN_SECONDS
