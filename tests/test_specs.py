"""One spec per model (editor/pipelines/spec.py): the weights CLI lists, downloads and verifies exactly the folders
each spec loads, one path resolution serves them all, and LoadOptions resolves device, dtype and offload once."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from editor.layouts import folders
from editor.params import EditParams
from editor.pipelines import ip2p, mgie, smartedit
from editor.pipelines.registry import (
    DEMO_EDITORS,
    EDITORS,
    add_load_arguments,
    default_editors,
    load_editor,
    load_options,
)
from editor.pipelines.spec import LoadOptions, staged
from editor.weights import download
from editor.weights.__main__ import main as weights_cli
from editor.weights.catalog import MODELS, component_dir
from editor.weights.verify import check_files


def listed_folders(out: str, name: str) -> list[tuple[str, str]]:
    """(folder, status) of each component line under model `name` in `python -m editor.weights list`'s output."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split(" ", 1)[0] == name)
    block = []
    for line in lines[start + 1 :]:
        if not line.startswith("    ") or line.strip().startswith("memory:"):
            break
        folder, status = line.split(None, 1)
        block.append((folder, status.rsplit("   [", 1)[0]))
    return block


def test_the_weights_cli_lists_downloads_and_verifies_exactly_the_folders_each_spec_loads(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv(folders.CLIP_L14.env, str(tmp_path / "moved-clip"))  # moves the CLI's folder and the spec's
    fetched = []
    monkeypatch.setattr(
        download, "fetch_component", lambda c, weights_dir, base: fetched.append(component_dir(weights_dir, c))
    )
    assert weights_cli(["list", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for spec in EDITORS.values():
        if not spec.downloadable:
            assert spec.name not in MODELS
            continue
        paths = spec.paths(tmp_path)  # nothing is there yet: each folder lacks every file the spec needs in it
        needs = [[need.replace("|", " or ") for need in folder.needs] for folder in spec.folders]
        listed = [(str(path), "missing " + ", ".join(lacks)) for path, lacks in zip(paths, needs, strict=True)]
        assert listed_folders(out, spec.name) == listed
        problems = [(str(path), f"missing {need}") for path, lacks in zip(paths, needs, strict=True) for need in lacks]
        assert [(p.where, p.what) for p in check_files(MODELS[spec.name], tmp_path)] == problems
        fetched.clear()
        download.download_model(MODELS[spec.name], tmp_path, accept_licence=True, say=lambda _: None)
        assert fetched == list(paths)
        assert MODELS[spec.name].editor == spec.name
    runnable = {entry.editor for entry in MODELS.values() if entry.editor is not None}
    assert runnable == {name for name, spec in EDITORS.items() if spec.downloadable}


def test_the_weights_cli_reads_the_folders_without_importing_the_loaders():
    code = "import sys, editor.weights.__main__; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.strip() == "False"


def test_every_spec_is_offered_best_first():
    specs = {spec.name for spec in (*mgie.SPECS, *smartedit.SPECS, *ip2p.SPECS)}
    assert list(EDITORS) == [
        "mgie-7b", "smartedit-13b", "smartedit-7b", "magicbrush", "instruct-pix2pix", "mgie-demo", "ip2p-demo"
    ]  # fmt: skip
    assert set(EDITORS) == specs


def test_overrides_move_the_downloads_but_not_the_demo_models_own_copies(tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere"
    monkeypatch.setenv(folders.LLAVA_7B.env, str(moved))
    assert EDITORS["mgie-7b"].paths(tmp_path)[0] == moved
    assert EDITORS["smartedit-7b"].paths(tmp_path)[1] == moved
    demo_llava = EDITORS["mgie-demo"].paths(tmp_path)[0]
    assert demo_llava.name == folders.LLAVA_7B.name and demo_llava.parent.name == "mgie"
    assert EDITORS["ip2p-demo"].paths(tmp_path)[0].parent.name == "demo"


def test_load_options_resolve_once():
    cpu = LoadOptions("cpu").resolve()
    assert (cpu.load_on, cpu.run_on, cpu.dtype, cpu.offload) == (torch.device("cpu"),) * 2 + (torch.float32, False)
    assert LoadOptions("cpu", torch.bfloat16).resolve().dtype == torch.bfloat16
    with pytest.raises(ValueError, match="without a GPU, leave it out"):
        LoadOptions("cpu", offload=True).resolve()


def test_every_cli_declares_the_load_options_alike():
    parser = argparse.ArgumentParser()
    add_load_arguments(parser)
    args = parser.parse_args(["--device", "cpu", "--dtype", "bfloat16", "--weights-dir", "w"])
    assert load_options(args) == LoadOptions("cpu", torch.bfloat16, False) and str(args.weights_dir) == "w"
    assert load_options(parser.parse_args([])) == LoadOptions(None, None, False)


def test_the_default_model_is_the_best_installed_else_the_demo(tiny_tree, tmp_path):
    assert default_editors(tmp_path) == DEMO_EDITORS
    assert default_editors(tiny_tree) == ("mgie-7b",)


def test_name_decode_and_defaults_are_given_at_construction(tmp_path):
    own = tmp_path / "demo" / "mgie"  # a retrained copy: the shipped folders, with settings of its own
    own.mkdir(parents=True)
    for folder in (folders.DEMO_DIR / "mgie").iterdir():
        if folder.name != folders.DEFAULTS_FILE:  # a link would let the write below reach the shipped file
            (own / folder.name).symlink_to(folder)
    (own / folders.DEFAULTS_FILE).write_text(json.dumps({"steps": 7, "text_guidance": 5.0, "image_guidance": 1.25}))
    demo = load_editor("mgie-demo", tmp_path, "cpu")
    assert demo.name == "mgie-demo" and demo.decode.no_repeat_ngram_size == 0
    assert (demo.defaults.steps, demo.defaults.text_guidance, demo.defaults.image_guidance) == (7, 5.0, 1.25)


def test_staging_without_a_target_leaves_the_modules_where_they_are():
    module = torch.nn.Linear(2, 2)
    before = module.weight.detach().clone()
    with staged((module,), None) as device:
        assert device == torch.device("cpu")
    assert torch.equal(module.weight, before) and module.weight.device == torch.device("cpu")


def test_a_models_own_settings_are_known_before_it_loads(tmp_path):
    for name in DEMO_EDITORS:  # what the eval harness starts each model from, without loading it
        own, loaded = EDITORS[name].defaults(tmp_path), load_editor(name, tmp_path, "cpu").defaults
        assert (own.steps, own.text_guidance, own.image_guidance) == (
            loaded.steps, loaded.text_guidance, loaded.image_guidance
        )  # fmt: skip
    assert EDITORS["mgie-7b"].defaults(tmp_path) == EditParams()
