"""Downloading a model's components into the weights folder: Hub repositories (huggingface_hub, which resumes
partial files), plain-URL archives and single files (both resumed with HTTP ranges), and LLaVA deltas applied to a
local LLaMA.

Every failure becomes a `DownloadError` whose message says what happened and what to do: offline, gated, not
found, disk full, interrupted. Nothing waits on a dead network: the first request of each source has a timeout and
no retries, so an unreachable hub fails in seconds.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm import tqdm

from editor.weights.catalog import (
    MANIFEST,
    ArchiveSource,
    Component,
    FileSet,
    FileSource,
    HubSource,
    ModelEntry,
    component_dir,
    missing_files,
)

TIMEOUT_S = 15.0
HEADROOM = 1.05  # keep 5 % spare when checking free space


class DownloadError(RuntimeError):
    """A download failed; the message names the cause and the fix."""


class StopDownload(DownloadError):
    """A failure another source cannot fix (interrupted, disk full): stop instead of trying the next source."""


def _is_network_error(err: BaseException) -> bool:
    names = {c.__name__ for c in type(err).__mro__}
    url_error = isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError)
    return (
        url_error
        or isinstance(err, ConnectionError | TimeoutError)
        or bool(names & {"TransportError", "NetworkError", "TimeoutException", "ConnectError", "OfflineModeIsEnabled"})
    )


@contextmanager
def explained(what: str, target: Path, hub: bool = True) -> Iterator[None]:
    """Turn the ways a download fails into one specific, actionable message."""
    copy_hint = f"or download it on another machine and copy it to {target}"
    try:
        yield
    except KeyboardInterrupt:
        raise StopDownload(
            f"interrupted while downloading {what}; rerun the same command to resume (finished files are kept and "
            "partial ones continue where they stopped)"
        ) from None
    except GatedRepoError:
        raise DownloadError(
            f"{what} is gated: open https://huggingface.co/{what.split('@')[0]}, accept its terms while logged in, "
            "then run `hf auth login` (or set HF_TOKEN) and rerun"
        ) from None
    except RevisionNotFoundError:
        raise DownloadError(f"{what}: the pinned revision no longer exists on the Hub; please report it") from None
    except RepositoryNotFoundError:
        raise DownloadError(
            f"{what} was not found on the Hub (removed, renamed or private); if it is private, log in with "
            f"`hf auth login`; {copy_hint}"
        ) from None
    except RemoteEntryNotFoundError as err:
        raise DownloadError(f"{what}: a file is missing on the Hub ({err}); {copy_hint}") from None
    except LocalEntryNotFoundError:
        raise DownloadError(_offline(what, copy_hint, hub)) from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", "?")
        raise DownloadError(f"{what}: the server answered HTTP {status}; try again later, {copy_hint}") from None
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise StopDownload(
                f"disk full while writing {target}: free some space or pass --weights-dir on a larger disk, then "
                "rerun to resume"
            ) from None
        if _is_network_error(err):
            raise DownloadError(_offline(what, copy_hint, hub)) from None
        raise
    except Exception as err:
        if _is_network_error(err):
            raise DownloadError(_offline(what, copy_hint, hub)) from None
        raise


def _offline(what: str, copy_hint: str, hub: bool) -> str:
    if hub and constants.HF_HUB_OFFLINE:
        return f"cannot download {what}: HF_HUB_OFFLINE is set; unset it, {copy_hint}"
    server = f"the Hub ({constants.ENDPOINT})" if hub else "the server"
    return (
        f"cannot reach {server} for {what} (no network, DNS, proxy or firewall). Check the connection "
        f"(HTTPS_PROXY if you use one) and rerun, {copy_hint}"
    )


def check_space(where: Path, needed: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(where).free
    if needed * HEADROOM > free:
        raise StopDownload(
            f"not enough disk space in {where}: the download needs {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB are "
            "free. Free some space or pass --weights-dir on a larger disk"
        )


def _write_manifest(target: Path, source: str, revision: str | None, files: dict[str, dict]) -> None:
    path = target / MANIFEST
    old = json.loads(path.read_text()).get("files", {}) if path.exists() else {}
    record = {"source": source, "revision": revision, "files": old | files}
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def fetch_hub(source: HubSource, target: Path) -> None:
    what = f"{source.repo_id}@{source.revision}" if source.revision != "main" else source.repo_id
    with explained(what, target):
        info = HfApi().model_info(source.repo_id, revision=source.revision, files_metadata=True, timeout=TIMEOUT_S)
    files = [s for s in info.siblings or () if any(fnmatch.fnmatch(s.rfilename, p) for p in source.allow)]
    if not files:
        raise DownloadError(f"{what} has no files matching {list(source.allow)}; please report it")
    prefix = f"{source.in_repo}/" if source.in_repo else ""
    # snapshot_download mirrors the repository's paths: a repo subfolder lands in a staging folder unless the
    # target already has the subfolder's name beside its parent.
    if not prefix:
        root = target
    else:
        root = target.parent if target.name == source.in_repo else target.with_name(f".{target.name}.download")
    todo = [s for s in files if not _complete(root / s.rfilename, s.size)]
    check_space(root, sum(s.size or 0 for s in todo))
    with explained(what, target):
        snapshot_download(
            source.repo_id, revision=info.sha, allow_patterns=list(source.allow), local_dir=root, etag_timeout=TIMEOUT_S
        )
    if prefix and root != target.parent:
        _move_into(root / source.in_repo, target)
        shutil.rmtree(root, ignore_errors=True)
    records = {
        s.rfilename.removeprefix(prefix): {"size": s.size, "sha256": s.lfs.sha256 if s.lfs else None} for s in files
    }
    _write_manifest(target, source.describe(), info.sha, records)


def _complete(path: Path, size: int | None) -> bool:
    return path.is_file() and (size is None or path.stat().st_size == size)


def _move_into(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if (dst / item.name).exists():
            if (dst / item.name).is_dir():
                shutil.rmtree(dst / item.name)
            else:
                (dst / item.name).unlink()
        shutil.move(str(item), dst / item.name)


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _request(url: str, method: str = "GET", start: int = 0):
    headers = {"Range": f"bytes={start}-"} if start else {}
    return urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers), timeout=TIMEOUT_S)


def _stream(url: str, part: Path, size: int | None) -> None:
    """Append the rest of `url` to `part` (HTTP Range), with a progress bar; restart if the server ignores ranges."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have >= size:
        return
    with _request(url, start=have) as response:
        if have and response.status != 206:  # no range support: start over
            have = 0
            part.unlink()
        with part.open("ab") as out, tqdm(total=size, initial=have, unit="B", unit_scale=True, desc=part.stem) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))
    if size is not None and part.stat().st_size != size:
        raise DownloadError(f"{url}: got {part.stat().st_size:,} of {size:,} bytes; rerun to resume")


def _fetch_url(url: str, part: Path, target: Path, approx_size: int | None, copies: int = 1) -> None:
    """Complete `part` from `url`: the size from a HEAD request, a part longer than that dropped, free space for
    the rest (plus `copies - 1` more of the whole, e.g. an archive's unpacked files) checked, then the rest fetched
    with HTTP Range. Every failure is a DownloadError that says what to do."""
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        with explained(url, target, hub=False), _request(url, "HEAD") as head:
            size = int(head.headers.get("Content-Length") or 0) or None
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        total = size or approx_size or 0
        check_space(part.parent, (total - have) + (copies - 1) * total)
        with explained(url, target, hub=False):
            _stream(url, part, size)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"{url} answered {err.code} ({err.reason}); it may have moved") from None


def fetch_file(source: FileSource, target: Path, record_as: str | None = None) -> None:
    """Download one file into `target/<filename>` with resume (`<filename>.part` beside it, so the final rename
    never crosses disks), check its SHA-256 prefix when the catalog knows one, and record its size and SHA-256."""
    path = target / source.filename
    part = path.with_name(f"{path.name}.part")
    _fetch_url(source.url, part, target, source.size)
    digest = sha256_file(part)
    if source.sha256_prefix and not digest.startswith(source.sha256_prefix):
        part.unlink()
        raise DownloadError(
            f"{source.url}: the downloaded file's SHA-256 starts with {digest[: len(source.sha256_prefix)]}, not "
            f"{source.sha256_prefix} as its name says (corrupted in transit, or not the official file). It was "
            f"deleted; rerun to download it again, or download it on another machine and copy it to {path}"
        )
    part.replace(path)
    record = {"size": path.stat().st_size, "sha256": digest, "url": source.url}
    _write_manifest(target, record_as or source.describe(), None, {source.filename: record})


def fetch_files(source: FileSet, target: Path) -> None:
    """Each file of `source` not in `target` yet: files already there (fetched, placed by hand, or replaced by the
    `.safetensors` twin that `convert` writes) are kept."""
    for file in source.files:
        path = target / file.filename
        if not path.is_file() and not path.with_suffix(".safetensors").is_file():
            fetch_file(file, target, source.describe())


def fetch_archive(source: ArchiveSource, target: Path, weights_dir: Path) -> None:
    """Download a .tar.gz with resume (HTTP Range), unpack `source.member` into `target`, record the archive's
    size and SHA-256, and delete the archive."""
    name = source.url.rsplit("/", 1)[-1]
    part = Path(weights_dir) / ".downloads" / f"{name}.part"
    _fetch_url(source.url, part, target, source.size, copies=2)  # the archive, then its unpacked files
    staging = target.with_name(f".{target.name}.unpack")
    shutil.rmtree(staging, ignore_errors=True)
    with explained(source.url, target, hub=False):
        try:
            with tarfile.open(part) as tar:
                members = [m for m in tar.getmembers() if m.name.lstrip("./").startswith(source.member + "/")]
                if not members:
                    raise DownloadError(f"{name} holds no {source.member}/ folder; please report it")
                tar.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, EOFError) as err:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{name} is corrupt ({err}); it was deleted, rerun to download it again") from None
    _move_into(staging / source.member, target)
    shutil.rmtree(staging, ignore_errors=True)
    files = {
        str(p.relative_to(target)): {"size": p.stat().st_size, "sha256": None}
        for p in target.rglob("*")
        if p.is_file() and p.name != MANIFEST
    }
    files[f"<archive {name}>"] = {"size": part.stat().st_size, "sha256": sha256_file(part), "archive": True}
    _write_manifest(target, source.describe(), None, files)
    part.unlink()


def fetch_component(component: Component, weights_dir: Path, llama_base: Path | None = None) -> Path:
    """Make `component` present under `weights_dir` (or its environment override); returns its folder."""
    target = component_dir(weights_dir, component)
    if not missing_files(target, component):
        return target
    if llama_base is not None and component.delta is not None:
        from editor.weights.delta import apply_llava_delta  # torch and the loaders only when merging

        delta = component.delta
        delta_dir = Path(weights_dir) / ".deltas" / delta.repo_id.replace("/", "--")
        fetch_hub(HubSource(delta.repo_id, revision=delta.revision), delta_dir)
        apply_llava_delta(Path(llama_base), delta_dir, target)
        return target
    if not component.sources:
        base = component.delta.base if component.delta else "a base model"
        raise DownloadError(
            f"{component.folder}: no ready-merged copy is published; rerun with --llama-base DIR pointing at "
            f"{base} to apply {component.delta.repo_id if component.delta else 'the delta'}"
        )
    errors = []
    for source in component.sources:
        try:
            if isinstance(source, HubSource):
                fetch_hub(source, target)
            elif isinstance(source, FileSet):
                fetch_files(source, target)
            else:
                fetch_archive(source, target, weights_dir)
        except StopDownload:
            raise
        except DownloadError as err:
            errors.append(f"{source.describe()}: {err}")
            continue
        still = missing_files(target, component)
        if not still:
            return target
        errors.append(f"{source.describe()}: downloaded, but {', '.join(still)} still missing in {target}")
    raise DownloadError(f"could not get {component.folder}:\n  " + "\n  ".join(errors))


def download_model(
    entry: ModelEntry,
    weights_dir: Path,
    accept_licence: bool = False,
    llama_base: Path | None = None,
    confirm: Callable[[str], bool] | None = None,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """Show the licence, get it accepted (flag or `confirm`), fetch every missing component."""
    say(f"{entry.name}: {entry.title}\nLicence: {entry.licence}")
    if not accept_licence and not (confirm and confirm("Accept these terms and download? [y/N] ")):
        raise DownloadError("download cancelled: the licence terms were not accepted (pass --yes to accept them)")
    folders = []
    for component in entry.components:
        target = component_dir(weights_dir, component)
        state = "present" if not missing_files(target, component) else "downloading"
        say(f"  {component.folder}: {state} ({component.title})")
        folders.append(fetch_component(component, weights_dir, llama_base))
    return folders
