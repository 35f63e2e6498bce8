"""What a job would fetch from the network, fetched once on the submitting host.

Compute nodes often have no internet. A generator whose `model` is a Hugging Face hub id (kind
diffusers) or a URL (kind stylegan) is fetched by the local rule `fetch_model` into
`results/{dataset}/fetched/{generator}/`, and a `download: true` CIFAR source by the local rule
`fetch_source` into `results/{dataset}/fetched/_source/`, each with a manifest of SHA-256 digests;
the jobs read only those copies, checked against the manifest first, and every job runs with
HF_HUB_OFFLINE=1 (port.logs). A model already on disk (a save_pretrained directory, a .pkl file)
is read in place and never fetched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.request import urlopen

from .artifacts import FETCHED_MARKER as MANIFEST
from .errors import ArtifactError
from .settings.generation import is_url

NETWORK_PICKLE = "network.pkl"  # a URL's file, under this name (port.settings.generation.fetched_source)


def _digest(path: Path, algorithm: str = "sha256") -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _download(url: str, path: Path) -> None:
    try:
        with urlopen(url) as response, open(path, "wb") as handle:
            shutil.copyfileobj(response, handle)
    except OSError as err:
        raise ArtifactError(f"{url}: cannot fetch ({err})") from err


def _fetch_into(out_dir, record: dict, fill) -> dict:
    """`fill(folder)` fills a temporary folder beside `out_dir`, which gets the manifest (`record`
    and {file: sha256}) and is renamed to `out_dir`: a failed fetch leaves no folder to trust."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        fill(tmp)
        files = {str(p.relative_to(tmp)): _digest(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {**record, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_model(*, model: str, out_dir) -> dict:
    """Download `model` (a URL, or a hub id through huggingface_hub) into `out_dir`, whole or not at
    all, with the manifest {file: sha256}."""
    def fill(folder: Path) -> None:
        if is_url(model):
            _download(model, folder / NETWORK_PICKLE)
            return
        from huggingface_hub import snapshot_download

        try:  # through the hub cache (a copy already there is reused), then copied out whole
            snapshot = snapshot_download(repo_id=model)
        except Exception as err:  # the hub raises its own error types (offline, not found, HTTP)
            raise ArtifactError(f"{model}: cannot fetch from the Hugging Face hub ({err})") from err
        shutil.copytree(snapshot, folder, dirs_exist_ok=True)  # the cache's symlinks become files

    return _fetch_into(out_dir, {"model": model}, fill)


def torchvision_dataset(kind: str):
    """torchvision's class for a CIFAR kind: its reader, and the release's URL, archive and md5s."""
    from torchvision import datasets

    return {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[kind]


def fetch_source(*, kind: str, url: str | None, md5: dict | None, out_dir) -> dict:
    """Download the archive of a `download: true` CIFAR source (torchvision's URL, or the mirror
    `url`), check its md5 (torchvision's for the release, or `md5[<archive name>]` for another
    copy) and extract it into `out_dir`, the root prepare_data reads without a network."""
    release = torchvision_dataset(kind)
    url = url or release.url
    expected = (md5 or {}).get(release.filename, release.tgz_md5)

    def fill(folder: Path) -> None:
        archive = folder / release.filename
        _download(url, archive)
        actual = _digest(archive, "md5")
        if actual != expected:
            raise ArtifactError(f"{url}: md5 {actual} of {release.filename}, expected {expected} "
                                f"(source.md5['{release.filename}'], without it the release's, from torchvision)")
        try:  # the "data" filter refuses absolute paths, `..`, links out of the folder and devices
            with tarfile.open(archive) as tar:
                tar.extractall(folder, filter="data")
        except tarfile.TarError as err:
            raise ArtifactError(f"{url}: cannot extract {release.filename} ({err})") from err
        archive.unlink()
        if not (folder / release.base_folder).is_dir():
            raise ArtifactError(f"{url}: {release.filename} holds no {release.base_folder}/ (the {kind} layout)")

    return _fetch_into(out_dir, {"url": url, "md5": expected}, fill)


def verify_fetched(folder) -> None:
    """Check every file of a fetched folder against its manifest (ArtifactError naming the file)."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise ArtifactError(f"{folder}: no {MANIFEST}; fetch it again (delete the folder, rerun)")
    for name, digest in json.loads(manifest.read_text())["files"].items():
        path = folder / name
        if not path.is_file() or _digest(path) != digest:
            raise ArtifactError(f"{path}: missing or changed since it was fetched (manifest {manifest})")


def verify_if_fetched(source) -> None:
    """Verify a shard's model against its manifest when it is (inside) a fetched folder (an
    imported npz set's `source` is a list or mapping of parts: never fetched)."""
    if not isinstance(source, (str, Path)):
        return
    folder = Path(source) if Path(source).is_dir() else Path(source).parent
    if (folder / MANIFEST).is_file():
        verify_fetched(folder)
