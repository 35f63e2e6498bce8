"""Offline compute nodes: hub ids and URLs are fetched once by the local rule fetch_model, and the
sampling shards, with the network disabled inside the job, read only the fetched copies."""

import contextlib
import functools
import http.server
import os
import shutil
import threading

import h5py
import numpy as np
import pytest
import yaml
from conftest import run_snakemake
from diffusers import DDPMPipeline, DDPMScheduler
from stylegan_pickles import tiny_generator, write_network_pickle
from test_generators import tiny_unet

from port import fetch
from port.artifacts import ArtifactError

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

