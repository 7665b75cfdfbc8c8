"""editor.weights: the catalog, downloads (no network: a closed port, offline mode, a local HTTP server, and the
Hub's own exception types); weights on disk: tests/test_weights_disk.py."""

from __future__ import annotations

import errno
import hashlib
import http.server
import io
import json
import shutil
import tarfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from editor.pipelines.registry import installed_editors, load_editor
from editor.weights import catalog, download
from editor.weights.__main__ import main
from editor.weights.catalog import (
    MODELS,
    ArchiveSource,
    FileSet,
    FileSource,
    HubSource,
    component_dir,
    installed,
    missing_files,
)
from editor.weights.download import DownloadError, download_model, fetch_archive, fetch_hub
from editor.weights.verify import check_files


@pytest.fixture
def tree(tiny_tree, tmp_path) -> Path:
    """A private copy of the tiny official-layout tree (the tests below rewrite files)."""
    return Path(shutil.copytree(tiny_tree, tmp_path / "weights"))


# ---- catalog and choice -------------------------------------------------------------------------------------------


def test_catalog_names_components_and_licences():
    assert {"mgie-7b", "smartedit-7b", "smartedit-13b", "instruct-pix2pix", "magicbrush"} <= set(MODELS)
    mgie = MODELS["mgie-7b"]
    assert [c.folder for c in mgie.components] == [
        "LLaVA-7B-v1",
        "mgie_7b",
        "instruct-pix2pix",
        "clip-vit-large-patch14",
    ]
    assert "CC-BY-NC" in mgie.licence and "LLaMA" in mgie.licence
    assert isinstance(catalog.MGIE_7B.sources[0], ArchiveSource)  # Apple's tarball first, the Hub copy second
    assert catalog.LLAVA_7B.env == "EDITOR_LLAVA_7B_V1_DIR" and catalog.MGIE_7B.env == "EDITOR_MGIE_7B_DIR"


def test_presence_is_judged_per_model(tree, tmp_path):
    assert installed(MODELS["mgie-7b"], tree) and installed(MODELS["instruct-pix2pix"], tree)
    assert installed_editors(tree) == ["mgie-7b", "instruct-pix2pix"]  # best first
    (tree / "mgie_7b" / "unet.pt").unlink()
    assert missing_files(tree / "mgie_7b", catalog.MGIE_7B) == ["unet.pt|unet.safetensors"]
    assert installed_editors(tree) == ["instruct-pix2pix"]
    assert not installed(MODELS["mgie-7b"], tmp_path / "empty")


def test_environment_variables_move_single_components(tree, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "clip"
    shutil.move(tree / "clip-vit-large-patch14", moved)
    assert not installed(MODELS["mgie-7b"], tree)
    monkeypatch.setenv("EDITOR_CLIP_VIT_LARGE_PATCH14_DIR", str(moved))
    assert component_dir(tree, catalog.CLIP_L14) == moved and installed(MODELS["mgie-7b"], tree)
    assert load_editor("mgie-7b", tree, "cpu").name == "mgie-7b"


def test_list_shows_what_is_missing(tree, capsys):
    (tree / "mgie_7b" / "mllm.pt").unlink()
    assert main(["list", "--weights-dir", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "mgie-7b" in out and "missing mllm.pt or mllm.safetensors" in out and "EDITOR_MGIE_7B_DIR" in out
    assert "instruct-pix2pix   installed" in out


# ---- downloads: failures -----------------------------------------------------------------------------------------


def test_unreachable_hub_fails_fast_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs offline; here, try for real
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(DownloadError, match="cannot reach the Hub") as err:
        fetch_hub(HubSource("openai/clip-vit-large-patch14"), tmp_path / "clip")
    assert time.perf_counter() - start < 10 and "copy it to" in str(err.value)


def test_offline_mode_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set"):
        fetch_hub(HubSource("timbrooks/instruct-pix2pix"), tmp_path / "ip2p")


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/x/y"))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (GatedRepoError("gated", response=_response(403)), "is gated: open https://huggingface.co/org/repo"),
        (RepositoryNotFoundError("404", response=_response(404)), "was not found on the Hub"),
        (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
        (KeyboardInterrupt(), "rerun the same command to resume"),
    ],
)
def test_hub_failures_become_specific_messages(tmp_path, monkeypatch, error, expected):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(download.HfApi, "model_info", fail)
    with pytest.raises(DownloadError, match=expected):
        fetch_hub(HubSource("org/repo"), tmp_path / "x")


def _fake_hub(monkeypatch, files: dict[str, bytes], calls: list | None = None):
    siblings = [
        SimpleNamespace(rfilename=n, size=len(b), lfs=SimpleNamespace(sha256=hashlib.sha256(b).hexdigest()))
        for n, b in files.items()
    ]
    monkeypatch.setattr(
        download.HfApi, "model_info", lambda self, *a, **k: SimpleNamespace(sha="c0ffee", siblings=siblings)
    )

    def snapshot(repo_id, revision, allow_patterns, local_dir, **kwargs):
        (calls if calls is not None else []).append((repo_id, revision, Path(local_dir)))
        for name, body in files.items():
            if any(Path(name).match(p) or name.startswith(p.rstrip("*")) for p in allow_patterns):
                (Path(local_dir) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(local_dir) / name).write_bytes(body)
        return str(local_dir)

    monkeypatch.setattr(download, "snapshot_download", snapshot)


def test_too_little_disk_space_is_caught_before_downloading(tmp_path, monkeypatch):
    _fake_hub(monkeypatch, {"big.bin": b"x" * 1000})
    monkeypatch.setattr(download.shutil, "disk_usage", lambda p: SimpleNamespace(free=10, total=10, used=0))
    with pytest.raises(DownloadError, match="not enough disk space"):
        fetch_hub(HubSource("org/repo"), tmp_path / "x")
    assert not (tmp_path / "x" / "big.bin").exists()


def test_a_repo_subfolder_lands_in_its_target_and_is_recorded(tmp_path, monkeypatch):
    files = {"mgie_7b/mllm.pt": b"m" * 7, "mgie_7b/unet.pt": b"u" * 9, "LLaVA-7B-v1/config.json": b"{}"}
    calls: list = []
    _fake_hub(monkeypatch, files, calls)
    target = tmp_path / "moved-by-env"  # not named like the repo subfolder: staged, then moved
    fetch_hub(HubSource("tsujuifu/ml-mgie", ("mgie_7b/*",), "abc", in_repo="mgie_7b"), target)
    assert sorted(p.name for p in target.iterdir()) == [".download.json", "mllm.pt", "unet.pt"]
    record = json.loads((target / ".download.json").read_text())
    assert record["revision"] == "c0ffee" and record["files"]["unet.pt"]["size"] == 9
    assert record["files"]["mllm.pt"]["sha256"] == hashlib.sha256(b"m" * 7).hexdigest()
    assert calls[0][:2] == ("tsujuifu/ml-mgie", "c0ffee")  # the revision resolved once, then pinned
    assert not any(p.name.startswith(".moved") for p in tmp_path.iterdir())


def test_licence_must_be_accepted_before_anything_is_fetched(tmp_path, monkeypatch):
    _fake_hub(monkeypatch, {"model_index.json": b"{}"})
    said: list[str] = []
    with pytest.raises(DownloadError, match="licence terms were not accepted"):
        download_model(MODELS["magicbrush"], tmp_path, confirm=lambda q: False, say=said.append)
    assert "creativeml-openrail-m" in said[0] and not (tmp_path / "magicbrush").exists()


# ---- downloads: a plain-URL archive, served locally -----------------------------------------------------------------


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `files` (path -> bytes) with HTTP Range support; 404 for anything else."""

    body = b""
    files: dict[str, bytes] = {}
    ranges: list = []

    def log_message(self, *args):
        pass

    def _found(self) -> bytes | None:
        if self.path not in self.files:
            self.send_error(404)
            return None
        return self.files[self.path]

    def do_HEAD(self):  # noqa: N802
        if (body := self._found()) is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def do_GET(self):  # noqa: N802
        if (body := self._found()) is None:
            return
        start = int(self.headers.get("Range", "bytes=0-").split("=")[1].split("-")[0])
        type(self).ranges.append(start)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])


@pytest.fixture
def archive_server(tmp_path):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, body in (("mgie_7b/mllm.pt", b"M" * 5000), ("mgie_7b/unet.pt", b"U" * 7000)):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    _RangeHandler.body, _RangeHandler.ranges = data.getvalue(), []
    _RangeHandler.files = {"/mgie_7b.tar.gz": _RangeHandler.body}
    yield from _serve()


@pytest.fixture
def file_server():
    """Two plain files, as download.pytorch.org and GitHub serve the LPIPS ones: a backbone named after the first
    8 hex digits of its SHA-256, and a lin file in a v0.1/ folder."""
    backbone, lin = bytes(range(256)) * 40, b"lin weights"
    prefix = hashlib.sha256(backbone).hexdigest()[:8]
    _RangeHandler.body, _RangeHandler.ranges = b"", []
    _RangeHandler.files = {f"/models/net-{prefix}.pth": backbone, "/weights/v0.1/net.pth": lin}
    yield from _serve()


def _serve():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", _RangeHandler
    server.shutdown()


def test_archive_download_resumes_and_unpacks(archive_server, tmp_path):
    url, handler = archive_server
    part = tmp_path / ".downloads" / "mgie_7b.tar.gz.part"
    part.parent.mkdir()
    part.write_bytes(handler.body[:100])  # an earlier, interrupted attempt
    fetch_archive(ArchiveSource(f"{url}/mgie_7b.tar.gz", "mgie_7b"), tmp_path / "mgie_7b", tmp_path)
    assert handler.ranges == [100]  # only the rest was asked for
    assert (tmp_path / "mgie_7b" / "unet.pt").read_bytes() == b"U" * 7000 and not part.exists()
    record = json.loads((tmp_path / "mgie_7b" / ".download.json").read_text())
    assert record["files"]["<archive mgie_7b.tar.gz>"]["sha256"] == hashlib.sha256(handler.body).hexdigest()


def test_archive_404_is_reported(archive_server, tmp_path):
    url, _ = archive_server
    with pytest.raises(DownloadError, match="answered 404"):
        fetch_archive(ArchiveSource(f"{url}/gone.tar.gz", "mgie_7b"), tmp_path / "mgie_7b", tmp_path)
    with pytest.raises(DownloadError, match="cannot reach the server"):
        fetch_archive(ArchiveSource("http://127.0.0.1:9/x.tar.gz", "mgie_7b"), tmp_path / "mgie_7b", tmp_path)


# ---- downloads: single files at plain URLs (the LPIPS backbones and lin heads) ---------------------------------------


def _file_set(url: str, handler) -> FileSet:
    (backbone, body), (lin, _) = handler.files.items()
    name = backbone.rsplit("/", 1)[1]
    prefix = name.removeprefix("net-").removesuffix(".pth")
    return FileSet((FileSource(f"{url}{backbone}", name, prefix, len(body)), FileSource(f"{url}{lin}", "v0.1/net.pth")))


def test_files_download_resume_and_are_recorded(file_server, tmp_path):
    url, handler = file_server
    files = _file_set(url, handler)
    target = tmp_path / "lpips"
    backbone = handler.files[files.files[0].url.removeprefix(url)]
    target.mkdir()
    (target / f"{files.files[0].filename}.part").write_bytes(backbone[:1000])  # an earlier, interrupted attempt
    component = catalog.Component("lpips", "two files", (files,), ("net-*.pth", "v0.1/net.pth"))
    assert download.fetch_component(component, tmp_path) == target
    assert handler.ranges == [1000, 0]  # the backbone's rest, then the whole lin file
    assert (target / files.files[0].filename).read_bytes() == backbone
    assert (target / "v0.1" / "net.pth").read_bytes() == b"lin weights"
    assert not list(target.rglob("*.part"))
    record = json.loads((target / ".download.json").read_text())
    assert record["source"] == f"2 file(s) from {url.removeprefix('http://')}"
    assert record["files"][files.files[0].filename] == {
        "size": len(backbone),
        "sha256": hashlib.sha256(backbone).hexdigest(),
        "url": files.files[0].url,
    }
    assert record["files"]["v0.1/net.pth"]["sha256"] == hashlib.sha256(b"lin weights").hexdigest()
    assert not check_files(catalog.ModelEntry("x", "", (component,), "", None), tmp_path, hashes=True)
    handler.ranges.clear()
    (target / "v0.1" / "net.pth").rename(target / "v0.1" / "net.safetensors")  # as `convert` leaves it
    download.fetch_files(files, target)  # everything present: nothing is asked for
    assert handler.ranges == []


def test_a_file_whose_sha256_differs_from_its_name_is_refused(file_server, tmp_path):
    url, handler = file_server
    good = _file_set(url, handler).files[0]
    bad = FileSource(good.url, "net-00000000.pth", "00000000")
    with pytest.raises(DownloadError, match="SHA-256 starts with .{8}, not 00000000 as its name says") as err:
        download.fetch_file(bad, tmp_path / "lpips")
    assert "rerun to download it again" in str(err.value)
    assert not (tmp_path / "lpips" / "net-00000000.pth").exists()  # neither as if complete
    assert not (tmp_path / "lpips" / "net-00000000.pth.part").exists()  # nor as a part to resume from
    assert not (tmp_path / "lpips" / ".download.json").exists()


def test_file_failures_are_reported(file_server, tmp_path):
    url, _ = file_server
    with pytest.raises(DownloadError, match="answered 404"):
        download.fetch_file(FileSource(f"{url}/models/gone.pth", "gone.pth"), tmp_path)
    with pytest.raises(DownloadError, match="cannot reach the server"):
        download.fetch_file(FileSource("http://127.0.0.1:9/x.pth", "x.pth"), tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing half-written


# ---- the evaluation backbones ----------------------------------------------------------------------------------------


def test_eval_metrics_entry_is_listed_and_is_not_an_editor(tmp_path, capsys):
    entry = MODELS["eval-metrics"]
    assert [c.folder for c in entry.components] == [
        "clip-vit-base-patch32",
        "clip-vit-large-patch14",
        "dino-vits16",
        "lpips",
    ]
    assert entry.kind == "metrics" and entry.editor is None and "eval-metrics" not in catalog.PREFERENCE
    for licence in ("MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause"):
        assert licence in entry.licence
    for file in catalog.LPIPS_FILES:  # torchvision's names end in their SHA-256 prefix, which the download checks
        assert file.sha256_prefix is None or file.filename.endswith(f"-{file.sha256_prefix}.pth")
    assert main(["list", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "eval-metrics       not installed  Evaluation backbones" in out and "not an editor" in out
    assert "missing alexnet-owt-7be5be79.pth or alexnet-owt-7be5be79.safetensors" in out
    assert "EDITOR_DINO_VITS16_DIR" in out


def test_verify_eval_metrics_loads_each_backbone(tree, capsys):
    from transformers import ViTConfig, ViTModel

    from tests.test_lpips import write_tiny_lpips

    shutil.copytree(tree / "clip-vit-large-patch14", tree / "clip-vit-base-patch32")
    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=32)
    ViTModel(config, add_pooling_layer=False).save_pretrained(tree / "dino-vits16")
    write_tiny_lpips(tree / "lpips")
    assert installed(MODELS["eval-metrics"], tree) and installed_editors(tree) == ["mgie-7b", "instruct-pix2pix"]
    assert main(["verify", "eval-metrics", "--weights-dir", str(tree)]) == 0
    assert "eval-metrics: ok" in capsys.readouterr().out
    lin = torch.load(tree / "lpips" / "v0.1" / "squeeze.pth", weights_only=True)
    lin["lin6.model.1.weight"] = torch.ones(1, 3, 1, 1)
    torch.save(lin, tree / "lpips" / "v0.1" / "squeeze.pth")
    assert main(["verify", "--weights-dir", str(tree)]) == 1  # every installed entry, eval-metrics among them
    out = capsys.readouterr().out
    assert "mgie-7b: ok" in out and "eval-metrics: FAILED" in out
    assert "lpips: does not load:" in out and "lin6.model.1.weight" in out


def test_a_full_disk_stops_instead_of_trying_the_next_source(tmp_path, monkeypatch):
    tried: list[str] = []

    def hub(source, target):
        tried.append(source.repo_id)
        raise download.StopDownload("disk full")

    monkeypatch.setattr(download, "fetch_hub", hub)
    two = catalog.Component("x", "two sources", (HubSource("first/repo"), HubSource("second/repo")), ("a.bin",))
    with pytest.raises(download.StopDownload):
        download.fetch_component(two, tmp_path)
    assert tried == ["first/repo"]

    def missing(source, target):
        raise DownloadError("not found")

    monkeypatch.setattr(download, "fetch_hub", missing)  # an ordinary failure: the next source is tried
    with pytest.raises(DownloadError, match="first/repo.*\n.*second/repo"):
        download.fetch_component(two, tmp_path)
