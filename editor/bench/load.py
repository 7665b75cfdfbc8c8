"""Load and fuzz benchmark of the served app: `python -m editor.bench.load [--clients 20] [--turns 2] [--fuzz]`.

Serves the app in this process with the tiny random-weight MGIE (as app.py does: one model slot, queue of 64),
then:
1. load: `--clients` gradio_client sessions at once, each editing `--turns` turns (the first from an upload), then
   undo and export; prints latency percentiles of /edit and of the history calls, and the process's RSS;
2. `--fuzz`: hostile inputs generated here (a looping EPS, a DDS, a 9000x9000 1-bit PNG, session zips with
   wrong types, 2,000 turns, or a 64 MB whitespace session.json, bad numbers and text), each sent once by one
   client; counts the answers that name the problem and those that are Gradio's generic error; RSS after.
RSS is this process's (server and clients together): VmRSS now and VmHWM (the peak). Not a test: numbers vary
with the machine; the README quotes one run.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import struct
import tempfile
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gradio_client import Client, handle_file
from PIL import Image

from editor.pipelines.mgie import MGIEPaths, load_mgie
from editor.pipelines.spec import LoadOptions
from editor.tiny import build_tiny_mgie_tree
from editor.ui import build_demo

GENERIC = "upstream Gradio app has raised an exception"


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def percentiles(values: list[float]) -> str:
    if not values:
        return "no calls"
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return f"n={len(values)} p50 {cuts[49]:.2f} s  p90 {cuts[89]:.2f} s  p99 {cuts[98]:.2f} s  max {max(values):.2f} s"


def one_session(url: str, image: str, turns: int, folder: Path, times: dict[str, list[float]], lock) -> None:
    client = Client(url, verbose=False, analytics_enabled=False, download_files=folder)
    for turn in range(turns):
        start = time.perf_counter()
        client.predict(image=handle_file(image) if turn == 0 else None, instruction=f"make it red {turn}",
                       steps=2, size=64, api_name="/edit")  # fmt: skip
        with lock:
            times["edit"].append(time.perf_counter() - start)
    for api in ("/undo", "/export"):
        start = time.perf_counter()
        client.predict(api_name=api)
        with lock:
            times["history"].append(time.perf_counter() - start)


def _png(width: int, height: int, bits: int = 1) -> bytes:
    """A real, fully decodable grey PNG of `width` x `height` (zeros), small on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width * bits + 7) // 8)
    pixels = zlib.compressobj(9)
    body = b"".join(pixels.compress(row) for _ in range(height)) + pixels.flush()
    header = struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def hostile_files(folder: Path, good_archive: str) -> dict[str, Path]:
    with zipfile.ZipFile(good_archive) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    record = json.loads(members["session.json"])
    wrong = json.loads(members["session.json"])
    wrong["turns"][0]["parent"] = "0"
    many = record | {"turns": [record["turns"][0] | {"id": i, "parent": None} for i in range(2000)]}
    made = {
        "loop.eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n{ } loop\n%%EOF\n",
        "texture.dds": b"DDS |" + b"\0" * 123,
        "bomb.png": _png(9000, 9000),
        "wrong.zip": _zip(members | {"session.json": json.dumps(wrong).encode()}),
        "many.zip": _zip(members | {"session.json": json.dumps(many).encode()}),
        "bloated.zip": _zip(members | {"session.json": members["session.json"] + b" " * 64 * 1024**2}),
    }
    paths = {}
    for name, data in made.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


def fuzz(url: str, image: str, folder: Path) -> tuple[int, int, int]:
    """(named, generic, accepted) answers over the hostile inputs."""
    client = Client(url, verbose=False, analytics_enabled=False, download_files=folder)
    client.predict(image=handle_file(image), instruction="make it red", steps=2, size=64, api_name="/edit")
    files = hostile_files(folder, client.predict(api_name="/export"))
    base = dict(image=handle_file(image), instruction="x", steps=2, size=64)
    calls = [("/edit", base | {"image": handle_file(str(files[n]))}) for n in ("loop.eps", "texture.dds", "bomb.png")]
    calls += [("/restore", {"archive": handle_file(str(files[n]))}) for n in ("wrong.zip", "many.zip", "bloated.zip")]
    calls += [("/edit", base | change) for change in (
        {"steps": "ten"}, {"steps": None}, {"size": [1]}, {"seed": {"a": 1}}, {"model": ["x"]}, {"instruction": 12345},
        {"instruction": "\x00\x00"}, {"instruction": "\u200b\ufeff"}, {"randomize_seed": "yes"},
    )]  # fmt: skip
    calls += [("/revert", {"turn": "a"}), ("/explore", base | {"step": 1e-320}), ("/explore", base | {"start": None})]
    named = generic = accepted = 0
    for api, kwargs in calls:
        try:
            client.predict(**kwargs, api_name=api)
            accepted += 1
        except Exception as err:
            generic += GENERIC in str(err)
            named += GENERIC not in str(err)
    return named, generic, accepted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m editor.bench.load", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--fuzz", action="store_true", help="also send the hostile inputs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as root:
        root = Path(root)
        editor = load_mgie(
            MGIEPaths.from_weights_dir(build_tiny_mgie_tree(root / "weights")), options=LoadOptions("cpu")
        )
        image = root / "photo.png"
        Image.new("RGB", (96, 64), (30, 140, 200)).save(image)
        demo = build_demo({editor.name: editor}, examples_dir=None).queue(default_concurrency_limit=1, max_size=64)
        demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
        try:
            print(f"start: RSS {rss_mb()[0]:.0f} MB", flush=True)
            times: dict[str, list[float]] = {"edit": [], "history": []}
            lock, start = threading.Lock(), time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                jobs = [pool.submit(one_session, demo.local_url, str(image), args.turns, root, times, lock)
                        for _ in range(args.clients)]  # fmt: skip
                for job in jobs:
                    job.result()
            now, peak = rss_mb()
            print(f"load: {args.clients} clients x {args.turns} turns in {time.perf_counter() - start:.1f} s; "
                  f"RSS {now:.0f} MB (peak {peak:.0f} MB)")  # fmt: skip
            print(f"  /edit    {percentiles(times['edit'])}")
            print(f"  history  {percentiles(times['history'])}  (/undo, /export)", flush=True)
            if args.fuzz:
                start = time.perf_counter()
                named, generic, accepted = fuzz(demo.local_url, str(image), root)
                now, peak = rss_mb()
                took = time.perf_counter() - start
                print(f"fuzz: {named} named, {generic} generic, {accepted} accepted in {took:.1f} s; "
                      f"RSS {now:.0f} MB (peak {peak:.0f} MB)", flush=True)  # fmt: skip
        finally:
            demo.close()


if __name__ == "__main__":
    main()
