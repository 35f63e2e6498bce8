"""Offline compute nodes: hub ids and URLs are fetched once by the local rule fetch_model, a
`download: true` CIFAR source by fetch_source, and the sampling shards and prepare_data, with the
network disabled inside the job, read only the fetched copies."""

import contextlib
import functools
import hashlib
import http.server
import io
import os
import re
import shutil
import tarfile
import threading

import h5py
import numpy as np
import pytest
import yaml
from cifar_format import write_cifar10
from conftest import RGB_DATASET, rgb_config, run_snakemake
from diffusers import DDPMPipeline, DDPMScheduler
from stylegan_pickles import tiny_generator, write_network_pickle
from test_generators import tiny_unet

from torchvision.datasets import CIFAR10

from port import fetch
from port.artifacts import CHECKSUM_KEY
from port.errors import ArtifactError
from port.data import prepare_dataset

HUB_ID = "local/tiny-ddpm"
# Loaded by every Python process of the run (PYTHONPATH): connect() raises in a job of rule RULE
# (Snakemake runs a rule's script as .snakemake/scripts/tmp*.RULE.py).
SITECUSTOMIZE = '''import socket, sys
if any("RULE" in arg for arg in sys.argv):
    def _refuse(*args, **kwargs):
        raise OSError("network access is disabled in this job (tests/test_fetch.py)")
    socket.socket.connect = socket.socket.connect_ex = socket.create_connection = _refuse
'''
SHARDS = [f"results/digits/synthetic/{g}/shard_{i}.h5" for g in ("ddpm", "stylegan") for i in range(2)]


def block_network_in_jobs_of(rule: str, tmp_path, monkeypatch) -> None:
    """The Snakemake runs this test starts run every job of `rule` without a network."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.replace("RULE", rule))
    monkeypatch.setenv("PYTHONPATH", ":".join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))


@contextlib.contextmanager
def served(directory):
    """`directory` over HTTP on 127.0.0.1 (the machine has no internet); yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def generators_config(ddpm_model: str, stylegan_model: str) -> dict:
    shards = {"n_images": 8, "n_shards": 2, "batch_size": 4}
    return {"datasets": {"digits": {"generators": {
        "ddpm": {"kind": "diffusers", "model": ddpm_model, "scheduler": "ddim", "steps": 2, **shards},
        "stylegan": {"kind": "stylegan", "model": stylegan_model, **shards}}}}}


@pytest.fixture
def models(tmp_path):
    """A save_pretrained DDPM (also laid out as a hub cache entry) and a StyleGAN pickle served over HTTP."""
    local = tmp_path / "models" / "tiny-ddpm"
    DDPMPipeline(unet=tiny_unet(1), scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(local)
    snapshot = tmp_path / "hub" / "models--local--tiny-ddpm" / "snapshots" / "0123abcd"
    shutil.copytree(local, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    served_folder = tmp_path / "served"
    served_folder.mkdir()
    pickle = write_network_pickle(served_folder / "cifar10.pkl", tiny_generator(img_channels=1))  # digits are grey
    with served(served_folder) as base_url:
        yield {"local": str(local), "pickle": str(pickle), "hub": tmp_path / "hub", "url": f"{base_url}/cifar10.pkl"}


def images(workdir, name):
    with h5py.File(workdir / name) as handle:
        return handle["images"][:]


@pytest.mark.integration
def test_fetched_models_sample_offline_as_the_local_ones(models, tmp_path, monkeypatch):
    block_network_in_jobs_of("sample_shard", tmp_path, monkeypatch)
    remote, local = tmp_path / "remote", tmp_path / "local"
    for workdir, config in ((remote, generators_config(HUB_ID, models["url"])),
                            (local, generators_config(models["local"], models["pickle"]))):
        workdir.mkdir()
        (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    # the fetch, on the submitting host: the hub is the local cache (this machine has no internet)
    monkeypatch.setenv("HF_HUB_CACHE", str(models["hub"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fetched = run_snakemake(remote, "--cores", "1", "results/digits/fetched/ddpm", "results/digits/fetched/stylegan")
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    for generator in ("ddpm", "stylegan"):
        fetch.verify_fetched(remote / f"results/digits/fetched/{generator}")
    shutil.rmtree(models["hub"])  # neither the hub nor its cache is left for the shards
    result = run_snakemake(remote, "--cores", "1", *SHARDS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert run_snakemake(local, "--cores", "1", *SHARDS).returncode == 0
    assert not (local / "results/digits/fetched").exists()  # models on disk are used in place
    for name in SHARDS:
        np.testing.assert_array_equal(images(remote, name), images(local, name))


def test_a_changed_fetched_file_is_refused(models, tmp_path):
    folder = tmp_path / "fetched"
    fetch.fetch_model(model=models["url"], out_dir=folder)
    fetch.verify_if_fetched(folder / fetch.NETWORK_PICKLE)
    (folder / fetch.NETWORK_PICKLE).write_bytes(b"changed")
    with pytest.raises(ArtifactError, match="changed since it was fetched"):
        fetch.verify_if_fetched(folder / fetch.NETWORK_PICKLE)


FETCHED_SOURCE = f"results/{RGB_DATASET}/fetched/_source"
PREPARED = [f"results/{RGB_DATASET}/data/{split}.h5" for split in ("train", "test")]


def cifar10_archive(folder):
    """A tiny CIFAR-10 in the release's layout under folder/files, and packed as the release's archive
    under folder/served; returns the files' root, their md5 table with the archive's, and served/."""
    root, served_folder = folder / "files", folder / "served"
    _, _, md5 = write_cifar10(root, per_batch=4)
    served_folder.mkdir()
    with tarfile.open(served_folder / CIFAR10.filename, "w:gz") as tar:
        tar.add(root / CIFAR10.base_folder, arcname=CIFAR10.base_folder)
    return root, {**md5, CIFAR10.filename: md5_of(served_folder / CIFAR10.filename)}, served_folder


def md5_of(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def prepared(workdir, name):
    with h5py.File(workdir / name) as handle:
        return handle["images"][:], handle["labels"][:], handle.attrs[CHECKSUM_KEY]


@pytest.mark.integration
def test_a_download_true_source_is_fetched_once_and_prepared_offline_as_the_local_files(tmp_path, monkeypatch):
    block_network_in_jobs_of("prepare_data", tmp_path, monkeypatch)
    root, md5, served_folder = cifar10_archive(tmp_path)
    remote, local = tmp_path / "remote", tmp_path / "local"
    with served(served_folder) as base_url:
        for workdir, source in ((remote, {"kind": "cifar10", "download": True, "url": f"{base_url}/{CIFAR10.filename}",
                                          "md5": md5}),
                                (local, {"kind": "cifar10", "root": str(root), "md5": md5})):
            config = rgb_config(root, md5)
            config["datasets"][RGB_DATASET]["source"] = source
            workdir.mkdir()
            (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
        dry = run_snakemake(remote, "-n", *PREPARED)
        assert dry.returncode == 0 and "fetch_source" in dry.stdout, dry.stderr[-3000:]
        fetched = run_snakemake(remote, "--cores", "1", FETCHED_SOURCE)  # on the submitting host
        assert fetched.returncode == 0, fetched.stderr[-3000:]
    fetch.verify_fetched(remote / FETCHED_SOURCE)  # the server is gone: the jobs can reach only the copy
    result = run_snakemake(remote, "--cores", "1", *PREPARED)
    assert result.returncode == 0, result.stderr[-3000:]
    assert run_snakemake(local, "--cores", "1", *PREPARED).returncode == 0
    assert not (local / "results" / RGB_DATASET / "fetched").exists()  # download: false reads `root` in place
    for name in PREPARED:
        for from_fetched, from_root in zip(prepared(remote, name), prepared(local, name)):
            np.testing.assert_array_equal(from_fetched, from_root)


def test_an_archive_of_the_wrong_md5_is_refused_naming_its_url(tmp_path):
    _, _, served_folder = cifar10_archive(tmp_path)
    out = tmp_path / "fetched"
    with served(served_folder) as base_url, pytest.raises(ArtifactError) as info:
        fetch.fetch_source(kind="cifar10", url=f"{base_url}/{CIFAR10.filename}", md5=None, out_dir=out)
    # without source.md5 the archive must be the release (torchvision's md5), which the tiny one is not
    message = str(info.value)
    assert f"{base_url}/{CIFAR10.filename}: md5 " in message and f"expected {CIFAR10.tgz_md5}" in message
    assert not out.exists() and list(tmp_path.glob(".fetched.*")) == []  # nothing half-fetched is left


def test_a_source_file_changed_after_fetching_is_refused_naming_it(tmp_path):
    _, md5, served_folder = cifar10_archive(tmp_path)
    out = tmp_path / "fetched"
    with served(served_folder) as base_url:
        fetch.fetch_source(kind="cifar10", url=f"{base_url}/{CIFAR10.filename}", md5=md5, out_dir=out)
    assert not (out / CIFAR10.filename).exists()  # only the extracted files are kept
    changed = out / CIFAR10.base_folder / "data_batch_2"
    changed.write_bytes(changed.read_bytes()[:-1] + b"\0")
    with pytest.raises(ArtifactError, match=re.escape(f"{changed}: missing or changed since it was fetched")):
        prepare_dataset(name="cifar10", source={"kind": "cifar10", "download": True, "md5": md5}, seed=0,
                        train_out=tmp_path / "train.h5", test_out=tmp_path / "test.h5", fetched=str(out))


def test_an_archive_member_outside_its_folder_is_refused(tmp_path):
    served_folder = tmp_path / "served"
    served_folder.mkdir()
    archive = served_folder / CIFAR10.filename
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo("../outside.txt")
        member.size = 3
        tar.addfile(member, io.BytesIO(b"bad"))
    with served(served_folder) as base_url, pytest.raises(ArtifactError, match="cannot extract"):
        fetch.fetch_source(kind="cifar10", url=f"{base_url}/{CIFAR10.filename}",
                           md5={CIFAR10.filename: md5_of(archive)}, out_dir=tmp_path / "fetched")
    assert not (tmp_path / "outside.txt").exists()
