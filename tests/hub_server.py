"""A local stand-in for the Hugging Face Hub: the two routes huggingface_hub's `model_info` and `snapshot_download`
call (`/api/models/<repo>[/revision/<rev>]` and `/<repo>/resolve/<rev>/<file>`), serving files from local folders.

Pointing huggingface_hub at it with `HF_ENDPOINT` is what a Space behind a Hub mirror does, so the app's download
code runs unchanged (HfApi, snapshot_download, resume, manifests). `hold` names files whose body waits until
`release` is set: a test can look at the app while a download is in flight without any timing assumption.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    repos: dict[str, dict[str, Path]]  # repo id -> {path in the repo: local file}
    hold: set[str] = field(default_factory=set)  # "repo/path" whose GET waits for `release`
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def sibling(self, repo: str, name: str) -> dict:
        data = self.repos[repo][name].read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        return {
            "rfilename": name,
            "size": len(data),
            "blobId": digest[:40],
            "lfs": {"sha256": digest, "size": len(data), "pointerSize": 134},
        }

    def tree(self, repo: str, under: str) -> list[dict]:
        """`list_repo_tree`'s answer (recursive): every file under `under`."""
        entries = []
        for name in sorted(n for n in self.repos[repo] if n.startswith(under)):
            s = self.sibling(repo, name)
            lfs = {"oid": s["lfs"]["sha256"], "size": s["size"], "pointerSize": 134}
            entries.append({"type": "file", "path": name, "size": s["size"], "oid": s["blobId"], "lfs": lfs})
        return entries

    def info(self, repo: str) -> dict:
        siblings = [self.sibling(repo, name) for name in sorted(self.repos[repo])]
        return {"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "gated": False, "siblings": siblings}


def folder_files(folder: Path, prefix: str = "") -> dict[str, Path]:
    """Every file under `folder`, keyed by its path in the repository (`prefix` + relative path)."""
    return {prefix + p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _handler(hub: FakeHub) -> type[http.server.BaseHTTPRequestHandler]:
    api = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/[^/]+)?$")
    tree = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/[^/]+/?(?P<under>.*)$")
    resolve = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/[^/]+/(?P<file>.+)$")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _route(self) -> tuple[str, str, str | None] | None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append(f"{self.command} {path}")
            if (m := api.match(path)) and m["repo"] in hub.repos:
                return "api", m["repo"], None
            if (m := tree.match(path)) and m["repo"] in hub.repos:
                return "tree", m["repo"], m["under"]
            if (m := resolve.match(path)) and m["repo"] in hub.repos and m["file"] in hub.repos[m["repo"]]:
                return "file", m["repo"], m["file"]
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.send_header("X-Error-Code", "EntryNotFound" if resolve.match(path) else "RepoNotFound")
            self.end_headers()
            return None

        def _headers(self, kind: str, repo: str, name: str | None, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            if kind == "file":
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hub.sibling(repo, name)["lfs"]["sha256"]}"')
            else:
                self.send_header("Content-Type", "application/json")
            self.end_headers()

        def _body(self, kind: str, repo: str, name: str | None) -> bytes:
            if kind == "api":
                return json.dumps(hub.info(repo)).encode()
            if kind == "tree":
                return json.dumps(hub.tree(repo, name or "")).encode()
            return hub.repos[repo][name].read_bytes()

        def do_HEAD(self) -> None:  # noqa: N802
            if route := self._route():
                self._headers(*route, self._body(*route))

        def do_GET(self) -> None:  # noqa: N802
            if not (route := self._route()):
                return
            body = self._body(*route)
            if route[0] == "file" and f"{route[1]}/{route[2]}" in hub.hold:
                hub.release.wait()
            self._headers(*route, body)
            self.wfile.write(body)

    return Handler


def serve(hub: FakeHub) -> http.server.ThreadingHTTPServer:
    """Start `hub` on a free local port (hub.url is set); call .shutdown() on the result to stop it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server


def mgie_repos(tree: Path) -> dict[str, dict[str, Path]]:
    """The three Hub repositories mgie-7b's catalog entry downloads from, holding a tiny official-layout tree (the
    Apple archive's mgie_7b/ is also in the Hub copy, which the catalog falls back to)."""
    return {
        "tsujuifu/ml-mgie": {
            **folder_files(tree / "LLaVA-7B-v1", "LLaVA-7B-v1/"),
            **folder_files(tree / "mgie_7b", "mgie_7b/"),
        },
        "timbrooks/instruct-pix2pix": folder_files(tree / "instruct-pix2pix"),
        "openai/clip-vit-large-patch14": folder_files(tree / "clip-vit-large-patch14"),
    }
