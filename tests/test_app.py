"""app.py's options: auth parsing, the MCP extra check, and the MCP tools the app offers."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

import app
from editor.ui import build_demo
from editor.ui.guard import user_error
from tests.fakes import FakeEditor, free_port
from tests.test_ui import ENDPOINTS

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "shapes-1.png"


def test_auth_from_flags_and_environment(monkeypatch):
    monkeypatch.delenv(app.AUTH_ENV, raising=False)
    assert app.parse_auth([]) is None
    assert app.parse_auth(["alice:s3cret:x"]) == [("alice", "s3cret:x")]
    monkeypatch.setenv(app.AUTH_ENV, "bob:pw, carol:pw2")
    assert app.parse_auth(["alice:a"]) == [("alice", "a"), ("bob", "pw"), ("carol", "pw2")]
    for bad in ("alice", ":pw", "alice:"):
        with pytest.raises(ValueError, match="user:password pairs"):
            app.parse_auth([bad])


def test_bad_options_exit_before_loading_anything(monkeypatch, capsys):
    monkeypatch.delenv(app.AUTH_ENV, raising=False)
    assert app.main(["--auth", "nopassword"]) == 2
    assert "user:password" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mcp" else real(name, *a))
    assert app.main(["--mcp"]) == 2
    assert 'pip install "gradio[mcp]"' in capsys.readouterr().err


def test_mcp_server_offers_the_named_endpoints_as_tools():
    demo = build_demo({"fake": FakeEditor()}, examples_dir=None).queue()
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, mcp_server=True)
    try:
        tools = json.load(urllib.request.urlopen(demo.local_url + "gradio_api/mcp/schema", timeout=30))
    finally:
        demo.close()
    names = {tool["name"] for tool in tools}
    assert ENDPOINTS - {"keep"} <= names and "keep_cell" in names
    edit = next(tool for tool in tools if tool["name"] == "edit")
    assert "expressive" in edit["description"] and "instruction" in json.dumps(edit["inputSchema"])


def test_without_real_weights_the_app_opens_on_the_demo_models(tmp_path, capsys):
    editors, notice = app.load_editors(None, [], tmp_path, "cpu")
    assert list(editors) == ["mgie-demo", "ip2p-demo"]
    assert "offline demo model" in notice and "python -m editor.weights download mgie-7b" in notice
    assert all(editor.native_size == 64 for editor in editors.values())
    editors, notice = app.load_editors("ip2p-demo", [], tmp_path, "cpu")
    assert list(editors) == ["ip2p-demo"] and notice is None


def test_a_forced_model_that_is_missing_names_its_download_command(tmp_path, capsys):
    assert app.main(["--model", "magicbrush", "--weights-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "magicbrush" in err and "python -m editor.weights download magicbrush" in err


def test_the_best_installed_model_is_chosen_and_others_load_beside_it(tiny_tree):
    editors, notice = app.load_editors(None, ["ip2p-demo"], tiny_tree, "cpu")
    assert list(editors) == ["mgie-7b", "ip2p-demo"] and notice is None


def test_the_app_logs_a_user_error_as_one_line(capfd):
    logger = logging.getLogger("editor")
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        logger.handlers = []
        app.configure_logging()
        app.configure_logging()  # idempotent: still one line per error
        user_error("instruction is empty")
        err = capfd.readouterr().err
    finally:
        logger.handlers, logger.level, logger.propagate = saved
    assert err.count("\n") == 1 and err.rstrip().endswith("user error: instruction is empty"), err


def test_the_notice_reads_as_plain_text_in_the_terminal(tmp_path):
    _, notice = app.load_editors(None, [], tmp_path, "cpu")
    assert "**" in notice and "`" in notice  # Markdown, rendered on the page
    shown = app.plain(notice)
    assert "**" not in shown and "`" not in shown and "python -m editor.weights download mgie-7b" in shown


def test_start_up_and_think_print_only_what_concerns_the_user(tmp_path):
    """The real entry point, served: no third-party notices, no Gradio `share=True` hint, one line saying where."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # Python's default warnings, as a user's
    command = [sys.executable, "app.py", "--tiny-random", "--port", str(port)]
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    with subprocess.Popen(command, cwd=ROOT, env=env, **output) as proc:
        try:
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("* Running on"):
                    break
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False)
            client.predict(image=handle_file(EXAMPLE), instruction="make it blue", api_name="/think")
            client.predict(image=handle_file(EXAMPLE), instruction="make it red", api_name="/think")
        finally:
            proc.terminate()
        log = "".join(lines) + proc.stdout.read()
    assert f"* Running on http://127.0.0.1:{port}" in log, log
    for noise in ("torchvision", "FutureWarning", "past_key_values", "share=True", "Traceback"):
        assert noise not in log, log
