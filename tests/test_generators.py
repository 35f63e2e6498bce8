"""Generators: tiny diffusers DDPMs on disk in the real `save_pretrained` layout, sampled in
seeded shards through the package's own loading path; merging; the npz import; train_ddpm.

Everything is local: models are built here and saved the way `google/ddpm-cifar10-32`
ships (model_index.json + unet/ + scheduler/), so `from_pretrained` never touches the hub.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

from port import generators
from port.artifacts import write_images
from port.errors import ArtifactError, SettingsError
from port.artifacts import CHUNK_IMAGES
from port.generators import (load_pipeline, merge_shards, resize_images, sample_diffusers_shard, sample_shard,
                             shard_bounds, stepping_scheduler, train_ddpm)


def tiny_unet(channels: int, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory) -> str:
    """3-channel model written by the package's own save_pipeline."""
    out = tmp_path_factory.mktemp("models") / "rgb"
    generators.save_pipeline(DDPMPipeline(unet=tiny_unet(3), scheduler=DDPMScheduler(num_train_timesteps=1000)), out)
    return str(out)


@pytest.fixture(scope="module")
def gray_model(tmp_path_factory) -> str:
    """1-channel model written directly with DDPMPipeline.save_pretrained."""
    out = tmp_path_factory.mktemp("models") / "gray"
    DDPMPipeline(unet=tiny_unet(1, seed=1), scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(out)
    return str(out)


def settings(**overrides) -> dict:
    base = {"kind": "diffusers", "scheduler": "ddim", "steps": 3, "n_images": 10, "n_shards": 2, "batch_size": 4}
    base.update(overrides)
    return base


def read(path):
    with h5py.File(path, "r") as handle:
        return handle["images"][()], dict(handle.attrs)


def sha256(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def sample(model, out, shard=0, seed=0, **overrides):
    sample_diffusers_shard(model, out, shard, settings(**overrides), seed, progress=False)
    return read(out)


# --------------------------------------------------------------------------- on-disk format


def test_saved_pipeline_has_the_hub_layout(rgb_model, gray_model):
    for model in (rgb_model, gray_model):
        root = Path(model)
        index = json.loads((root / "model_index.json").read_text())
        assert index["_class_name"] == "DDPMPipeline"
        assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"] == ["diffusers", "DDPMScheduler"]
        assert (root / "unet" / "config.json").is_file() and (root / "scheduler" / "scheduler_config.json").is_file()
        assert any((root / "unet").glob("diffusion_pytorch_model.*"))
    # save_pipeline leaves no temporary directory beside its output
    assert [p.name for p in Path(rgb_model).parent.iterdir()] == ["rgb"]


def test_save_pipeline_replaces_an_existing_directory(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    generators.save_pipeline(DDPMPipeline(unet=tiny_unet(1), scheduler=DDPMScheduler()), out)
    assert not (out / "stale.txt").exists() and (out / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("scheduler, pipeline_cls, scheduler_cls",
                         [("ddim", DDIMPipeline, DDIMScheduler), ("ddpm", DDPMPipeline, DDPMScheduler)])
def test_load_pipeline(gray_model, scheduler, pipeline_cls, scheduler_cls):
    pipeline = load_pipeline(gray_model, scheduler)
    assert type(pipeline) is pipeline_cls and type(pipeline.scheduler) is scheduler_cls
    assert pipeline.scheduler.config.num_train_timesteps == 100  # the saved schedule carries over
    assert pipeline.unet.config.in_channels == 1 and pipeline.unet.config.sample_size == 8
    reference = tiny_unet(1, seed=1).state_dict()
    loaded = pipeline.unet.state_dict()
    assert reference.keys() == loaded.keys()
    assert all(torch.equal(reference[k], loaded[k]) for k in reference)


def test_load_pipeline_refuses_a_plain_directory(tmp_path, rgb_model):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ArtifactError, match="not a diffusers model directory") as info:
        load_pipeline(str(tmp_path))
    assert str(tmp_path) in str(info.value)
    with pytest.raises(SettingsError, match="unknown scheduler 'euler'"):
        load_pipeline(rgb_model, "euler")
    with pytest.raises(SettingsError, match="unknown scheduler"):
        sample_diffusers_shard(rgb_model, tmp_path / "out.h5", 0, settings(scheduler="pndm"), 0, progress=False)
    assert not (tmp_path / "out.h5").exists()


def test_load_pipeline_corrupt_model_index(tmp_path):
    (tmp_path / "model_index.json").write_text("{ not json")
    with pytest.raises(ArtifactError, match="cannot load a diffusers DDPM pipeline"):
        load_pipeline(str(tmp_path))


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("n_images, n_shards", [(10, 2), (10, 3), (7, 7), (1000, 6), (5, 1)])
def test_shard_bounds_partition(n_images, n_shards):
    bounds = [shard_bounds(n_images, n_shards, s) for s in range(n_shards)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n_images
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


@pytest.mark.parametrize("shard", [-1, 2])
def test_shard_bounds_rejects_out_of_range(shard):
    with pytest.raises(ArtifactError, match=f"shard {shard} is outside 0..1"):
        shard_bounds(10, 2, shard)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_sample_shard_format_and_provenance(tmp_path, rgb_model, scheduler):
    for shard in (0, 1):
        config = settings(scheduler=scheduler)
        images, attrs = sample(rgb_model, tmp_path / f"shard_{shard}.h5", shard, seed=7, scheduler=scheduler)
        start, stop = shard_bounds(10, 2, shard)
        assert images.dtype == np.uint8 and images.shape == (stop - start, 8, 8, 3)
        assert images.std() > 0  # real samples, not a constant fill
        assert int(attrs["image_offset"]) == start and int(attrs["shard"]) == shard
        assert int(attrs["seed"]) == 7 and attrs["stage"] == "sample" and attrs["model"] == rgb_model
        assert json.loads(attrs["params"]) == config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard_0.h5", "shard_1.h5"]  # no temporaries


def test_sample_gray_model_keeps_a_channel_axis(tmp_path, gray_model):
    images, _ = sample(gray_model, tmp_path / "gray.h5", n_images=3, n_shards=1, batch_size=2, scheduler="ddpm")
    assert images.dtype == np.uint8 and images.shape == (3, 8, 8, 1)


def test_sample_resizes_to_image_size(tmp_path, rgb_model):
    native, _ = sample(rgb_model, tmp_path / "native.h5", n_images=4, n_shards=1)
    small, _ = sample(rgb_model, tmp_path / "small.h5", n_images=4, n_shards=1, image_size=4)
    assert small.shape == (4, 4, 4, 3) and small.dtype == np.uint8
    assert np.array_equal(small, resize_images(native, 4))


def test_sampling_is_deterministic(tmp_path, rgb_model):
    a, _ = sample(rgb_model, tmp_path / "a.h5", shard=1, seed=3)
    b, _ = sample(rgb_model, tmp_path / "b.h5", shard=1, seed=3)
    c, _ = sample(rgb_model, tmp_path / "c.h5", shard=1, seed=4)
    assert np.array_equal(a, b) and sha256(a) == sha256(b)
    assert a.shape == c.shape and not np.array_equal(a, c) and sha256(a) != sha256(c)


def test_ddpm_sampling_is_deterministic(tmp_path, gray_model):
    """DDPM draws fresh noise at every step: it too must come from the seeded generator."""
    a, _ = sample(gray_model, tmp_path / "a.h5", seed=5, scheduler="ddpm", n_images=4, n_shards=1)
    b, _ = sample(gray_model, tmp_path / "b.h5", seed=5, scheduler="ddpm", n_images=4, n_shards=1)
    assert sha256(a) == sha256(b)


def test_merged_shards_match_a_single_shard_run(tmp_path, rgb_model):
    """Batch seeds come from global image offsets, so the shard count does not change the
    images when every shard boundary falls on a batch boundary (here 8 images, batches of 4)."""
    single, _ = sample(rgb_model, tmp_path / "single.h5", seed=2, n_images=8, n_shards=1)
    paths = []
    for shard in (0, 1):
        paths.append(tmp_path / f"shard_{shard}.h5")
        sample(rgb_model, paths[-1], shard, seed=2, n_images=8, n_shards=2)
    assert merge_shards(shard_paths=paths, out_path=tmp_path / "merged.h5") == 8
    merged, _ = read(tmp_path / "merged.h5")
    assert np.array_equal(merged, single) and sha256(merged) == sha256(single)


def test_merged_shards_match_when_boundaries_cut_batches(tmp_path, rgb_model):
    single, _ = sample(rgb_model, tmp_path / "single.h5", seed=2, n_images=10, n_shards=1)
    paths = []
    for shard in (0, 1):
        paths.append(tmp_path / f"shard_{shard}.h5")
        sample(rgb_model, paths[-1], shard, seed=2, n_images=10, n_shards=2)
    merge_shards(shard_paths=paths, out_path=tmp_path / "merged.h5")
    assert np.array_equal(read(tmp_path / "merged.h5")[0], single)


@pytest.mark.parametrize("n_images, n_shards", [(5000, 2), (10_000_000, 200), (3000, 2), (2048, 2)])
def test_shard_edges_fall_on_chunks_when_shards_hold_a_chunk(n_images, n_shards):
    bounds = [shard_bounds(n_images, n_shards, s) for s in range(n_shards)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n_images
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(start % CHUNK_IMAGES == 0 for start, _ in bounds)
    sizes = [stop - start for start, stop in bounds]
    assert min(sizes) >= CHUNK_IMAGES and max(sizes) - min(sizes) <= CHUNK_IMAGES


@pytest.mark.parametrize("name, cls", [("ddpm", "DDIMScheduler"), ("ddim", "DDIMScheduler"),
                                       ("dpmsolver++", "DPMSolverMultistepScheduler"),
                                       ("unipc", "UniPCMultistepScheduler")])
def test_stepping_scheduler_choice(name, cls):
    scheduler, kwargs = stepping_scheduler(name, DDPMScheduler(num_train_timesteps=100).config, eta=0.3)
    assert type(scheduler).__name__ == cls
    assert kwargs.get("eta", 0.0) == {"ddpm": 1.0, "ddim": 0.3}.get(name, 0.0)
    if name in ("dpmsolver++", "unipc"):
        assert scheduler.config.timestep_spacing == "linspace"
    if name == "dpmsolver++":
        assert scheduler.config.algorithm_type == "dpmsolver++"
    with pytest.raises(SettingsError, match="unknown scheduler 'euler'"):
        stepping_scheduler("euler", DDPMScheduler().config)
    with pytest.raises(ArtifactError, match="fixed_large"):
        stepping_scheduler("ddpm", DDPMScheduler(variance_type="fixed_large").config)


@pytest.mark.parametrize("steps", [100, 10])
def test_ddpm_chain_steps_as_diffusers_ddpm_scheduler(steps):
    """The fast `ddpm` path (DDIM, eta 1, noise passed in) takes DDPMScheduler's own step: the same
    posterior mean and variance, given the same noise, at every timestep, clipping included."""
    config = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2").config
    reference = DDPMScheduler.from_config(config)
    reference.set_timesteps(steps)
    fast, kwargs = stepping_scheduler("ddpm", config)
    fast.set_timesteps(steps)
    torch.testing.assert_close(fast.timesteps, reference.timesteps)
    generator = torch.Generator().manual_seed(0)
    for t in reference.timesteps:
        x = torch.randn((4, 1, 8, 8), generator=generator)
        eps = torch.randn((4, 1, 8, 8), generator=generator) * 3  # large: x0 gets clipped
        noise = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(int(t)))
        expected = reference.step(eps, t, x, generator=torch.Generator().manual_seed(int(t))).prev_sample
        got = fast.step(eps, t, x, variance_noise=noise, **kwargs).prev_sample
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scheduler", ["ddpm", "dpmsolver++", "unipc"])
def test_every_scheduler_is_independent_of_shards_and_batch_size(tmp_path, rgb_model, scheduler):
    single, attrs = sample(rgb_model, tmp_path / "single.h5", seed=2, n_images=10, n_shards=1, scheduler=scheduler,
                           steps=4)
    assert json.loads(attrs["params"])["scheduler"] == scheduler and single.std() > 0
    paths = [tmp_path / f"shard_{shard}.h5" for shard in (0, 1)]
    for shard, path in enumerate(paths):
        sample(rgb_model, path, shard, seed=2, n_images=10, n_shards=2, scheduler=scheduler, steps=4, batch_size=3)
    merge_shards(shard_paths=paths, out_path=tmp_path / "merged.h5")
    np.testing.assert_array_equal(read(tmp_path / "merged.h5")[0], single)
    other_seed, _ = sample(rgb_model, tmp_path / "other.h5", seed=3, n_images=10, n_shards=1, scheduler=scheduler,
                           steps=4)
    assert not np.array_equal(other_seed, single)


# --------------------------------------------------------------------------- merging


def fake_shards(tmp_path, sizes=(3, 4, 2), shape=(5, 5, 3)):
    """Shard files as sample_shard writes them: images plus an `image_offset` attribute."""
    gen = np.random.default_rng(0)
    paths, arrays, offset = [], [], 0
    for shard, size in enumerate(sizes):
        images = gen.integers(0, 256, (size, *shape), dtype=np.uint8)
        path = tmp_path / f"shard_{shard}.h5"
        write_images(path, images, {"stage": "sample", "shard": shard, "image_offset": offset})
        paths.append(path)
        arrays.append(images)
        offset += size
    return paths, arrays


def test_merge_shards_concatenates_in_order(tmp_path):
    paths, arrays = fake_shards(tmp_path)
    out = tmp_path / "merged.h5"
    assert merge_shards(shard_paths=paths, out_path=out) == 9
    merged, attrs = read(out)
    assert np.array_equal(merged, np.concatenate(arrays))
    assert attrs["stage"] == "merge" and json.loads(attrs["params"])["shards"] == [str(p) for p in paths]


@pytest.mark.parametrize("order", [[1, 0, 2], [0, 2, 1], [1, 2]])
def test_merge_shards_refuses_misplaced_shards(tmp_path, order):
    paths, _ = fake_shards(tmp_path)
    out = tmp_path / "merged.h5"
    with pytest.raises(ArtifactError, match="starts at image [1-9][0-9]*, expected [0-9]+"):
        merge_shards(shard_paths=[paths[i] for i in order], out_path=out)
    assert not out.exists()
    assert not list(tmp_path.glob(".merged.h5.*"))  # no temporary left behind


def test_merge_shards_keeps_generator_labels(tmp_path):
    paths, arrays = fake_shards(tmp_path, sizes=(3, 0, 4))
    labels = np.array([2, 0, 1, 1, 2, 0, 0])
    bounds = [(0, 3), (3, 3), (3, 7)]
    for path, images, (start, stop) in zip(paths, arrays, bounds):
        write_images(path, images, {"stage": "sample", "image_offset": start}, source_labels=labels[start:stop])
    merge_shards(shard_paths=paths, out_path=tmp_path / "merged.h5")
    with h5py.File(tmp_path / "merged.h5", "r") as handle:
        np.testing.assert_array_equal(handle["source_labels"][()], labels)
        np.testing.assert_array_equal(handle["images"][()], np.concatenate(arrays))


def test_merge_shards_refuses_labels_on_some_shards_only(tmp_path):
    paths, arrays = fake_shards(tmp_path)
    write_images(paths[0], arrays[0], {"stage": "sample", "image_offset": 0}, source_labels=np.zeros(3, np.int64))
    with pytest.raises(ArtifactError, match=r"shard_1\.h5: no 'source_labels' while other shards of the set have them"):
        merge_shards(shard_paths=paths, out_path=tmp_path / "merged.h5")


def test_merge_shards_refuses_only_empty_shards(tmp_path):
    paths, _ = fake_shards(tmp_path, sizes=(0, 0))
    with pytest.raises(ArtifactError, match="no images in any of the 2 shard"):
        merge_shards(shard_paths=paths, out_path=tmp_path / "merged.h5")


def test_merge_shards_refuses_a_broken_shard(tmp_path):
    paths, _ = fake_shards(tmp_path)
    with h5py.File(paths[1], "w") as handle:
        handle.create_dataset("images", data=np.zeros((4, 5, 5), dtype=np.float32))
    with pytest.raises(ArtifactError, match="shard_1.h5: 'images' must be uint8 NHWC"):
        merge_shards(shard_paths=paths, out_path=tmp_path / "merged.h5")


# --------------------------------------------------------------------------- npz generator


@pytest.fixture
def npz_set(tmp_path):
    gen = np.random.default_rng(1)
    images = gen.integers(0, 256, (11, 6, 6, 3), dtype=np.uint8)
    labels = gen.integers(0, 10, 11)
    path = tmp_path / "presampled.npz"
    np.savez(path, image=images, label=labels)
    return path, images, labels


NPZ = {"kind": "npz", "n_shards": 2, "image_key": "image", "label_key": "label"}


def test_npz_shards_partition_and_merge(tmp_path, npz_set):
    path, images, labels = npz_set
    shards = []
    for shard in (0, 1):
        out = tmp_path / f"shard_{shard}.h5"
        sample_shard(source=str(path), out_path=out, shard=shard, settings=NPZ, seed=0)
        start, stop = shard_bounds(11, 2, shard)
        with h5py.File(out, "r") as handle:
            assert np.array_equal(handle["images"][()], images[start:stop])
            assert np.array_equal(handle["source_labels"][()], labels[start:stop])
            assert int(handle.attrs["image_offset"]) == start and handle.attrs["source"] == str(path)
            assert handle.attrs["stage"] == "import_npz"
        shards.append(out)
    assert merge_shards(shard_paths=shards, out_path=tmp_path / "merged.h5") == 11
    assert np.array_equal(read(tmp_path / "merged.h5")[0], images)


def test_npz_shard_respects_n_images_and_optional_labels(tmp_path, npz_set):
    path, images, _ = npz_set
    out = tmp_path / "first.h5"
    sample_shard(source=str(path), out_path=out, shard=0,
               settings={"kind": "npz", "n_shards": 1, "n_images": 4, "image_key": "image"}, seed=0)
    with h5py.File(out, "r") as handle:
        assert np.array_equal(handle["images"][()], images[:4])
        assert "source_labels" not in handle  # no label_key: images only
    sample_shard(source=str(path), out_path=out, shard=0, settings={"kind": "npz", "n_shards": 1, "n_images": 50},
                 seed=0)
    assert np.array_equal(read(out)[0], images)  # n_images beyond the file is capped


def test_npz_more_shards_than_images(tmp_path, npz_set):
    """Shards may be empty (2 images in 5 shards: shards 0, 2 and 4 hold none); merging still works."""
    path, images, labels = npz_set
    config = {**NPZ, "n_shards": 5, "n_images": 2}
    shards = [tmp_path / f"shard_{shard}.h5" for shard in range(5)]
    for shard, out in enumerate(shards):
        sample_shard(source=str(path), out_path=out, shard=shard, settings=config, seed=0)
    assert [len(read(p)[0]) for p in shards] == [0, 1, 0, 1, 0]
    assert merge_shards(shard_paths=shards, out_path=tmp_path / "merged.h5") == 2
    assert np.array_equal(read(tmp_path / "merged.h5")[0], images[:2])


def test_npz_shard_errors(tmp_path, npz_set):
    path, _, _ = npz_set
    with pytest.raises(ArtifactError, match="file not found"):
        sample_shard(source=str(tmp_path / "missing.npz"), out_path=tmp_path / "s.h5", shard=0, settings=NPZ, seed=0)
    with pytest.raises(ArtifactError, match=r"no key 'x' \(keys: image, label\)"):
        sample_shard(source=str(path), out_path=tmp_path / "s.h5", shard=0, settings={**NPZ, "image_key": "x"}, seed=0)
    with pytest.raises(SettingsError, match="unknown generator kind 'vae'"):
        sample_shard(source=str(path), out_path=tmp_path / "s.h5", shard=0, settings={**NPZ, "kind": "vae"}, seed=0)
    assert not (tmp_path / "s.h5").exists()


# --------------------------------------------------------------------------- training


DDPM_SETTINGS = {"block_out_channels": [8, 16], "attention_levels": [], "norm_num_groups": 4, "steps": 3,
                 "batch_size": 8, "lr": 1e-3, "warmup": 1}


@pytest.fixture(scope="module")
def digits_like(tmp_path_factory):
    gen = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("real") / "train.h5"
    write_images(path, gen.integers(0, 256, (24, 8, 8, 1), dtype=np.uint8), {"num_classes": 3},
                 labels=np.arange(24, dtype=np.int64) % 3)
    return path


@pytest.fixture(scope="module")
def trained_model(digits_like, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "ddpm"
    train_ddpm(train_path=digits_like, out_dir=out, settings=DDPM_SETTINGS, seed=0, progress=False)
    return out


def test_unet_config_from_settings():
    config = generators._unet_config({"block_out_channels": [8, 16, 32], "attention_levels": [1, 2]}, 16, 3)
    assert config["down_block_types"] == ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
    assert config["up_block_types"] == ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    assert config["sample_size"] == 16 and config["in_channels"] == config["out_channels"] == 3
    default = generators._unet_config({"block_out_channels": [8, 16]}, 8, 1)
    assert default["down_block_types"] == ("DownBlock2D", "AttnDownBlock2D")  # attention at the lowest level
    assert default["norm_num_groups"] == 8 and default["layers_per_block"] == 1
    UNet2DModel(**generators._unet_config(DDPM_SETTINGS, 8, 1))  # a valid diffusers config


def test_train_ddpm_writes_a_loadable_pipeline(trained_model, tmp_path):
    assert (trained_model / "model_index.json").is_file()
    pipeline = load_pipeline(str(trained_model), "ddpm")
    config = pipeline.unet.config
    assert tuple(config.block_out_channels) == (8, 16) and config.in_channels == 1 and config.sample_size == 8
    assert tuple(config.down_block_types) == ("DownBlock2D", "DownBlock2D")
    assert pipeline.scheduler.config.num_train_timesteps == 1000
    for scheduler in ("ddim", "ddpm"):
        images, attrs = sample(str(trained_model), tmp_path / f"{scheduler}.h5", shard=1, scheduler=scheduler,
                               n_images=6, n_shards=2, batch_size=2)
        assert images.dtype == np.uint8 and images.shape == (3, 8, 8, 1) and int(attrs["image_offset"]) == 3


def test_train_ddpm_is_seeded(digits_like, trained_model, tmp_path):
    train_ddpm(train_path=digits_like, out_dir=tmp_path / "same", settings=DDPM_SETTINGS, seed=0, progress=False)
    train_ddpm(train_path=digits_like, out_dir=tmp_path / "other", settings=DDPM_SETTINGS, seed=1, progress=False)
    reference = load_pipeline(str(trained_model), "ddim").unet.state_dict()
    same = load_pipeline(str(tmp_path / "same"), "ddim").unet.state_dict()
    other = load_pipeline(str(tmp_path / "other"), "ddim").unet.state_dict()
    assert all(torch.equal(reference[k], same[k]) for k in reference)
    assert not all(torch.equal(reference[k], other[k]) for k in reference)
    # training moved the (EMA) weights away from the seeded initialisation
    torch.manual_seed(generators.derive_seed(0, "ddpm-init"))
    init = UNet2DModel(**generators._unet_config(DDPM_SETTINGS, 8, 1)).state_dict()
    assert not all(torch.equal(reference[k], init[k]) for k in reference)


def test_train_ddpm_saves_the_ema_weights(digits_like, trained_model, tmp_path):
    """With ema_decay 0 the EMA is the last weights; by default (0.999, with warm-up) it lags them."""
    train_ddpm(train_path=digits_like, out_dir=tmp_path / "no_ema", settings={**DDPM_SETTINGS, "ema_decay": 0.0},
               seed=0, progress=False)
    averaged = load_pipeline(str(trained_model), "ddim").unet.state_dict()
    last = load_pipeline(str(tmp_path / "no_ema"), "ddim").unet.state_dict()
    assert averaged.keys() == last.keys()
    assert not all(torch.equal(averaged[k], last[k]) for k in averaged)


def test_train_ddpm_needs_labelled_real_images(tmp_path):
    path = tmp_path / "unlabelled.h5"
    write_images(path, np.zeros((8, 8, 8, 1), dtype=np.uint8), {})
    with pytest.raises(ArtifactError, match="no 'labels' dataset"):
        train_ddpm(train_path=path, out_dir=tmp_path / "model", settings=DDPM_SETTINGS, seed=0, progress=False)
    assert not (tmp_path / "model").exists()


# --- the class-conditional GAN -----------------------------------------------------------------------

def test_gan_trains_and_samples_the_same_images_for_any_shard_count(tmp_path):
    from port.gan import load_generator, sample_gan_shard, train_gan

    rng_ = np.random.default_rng(0)
    write_images(tmp_path / "train.h5", rng_.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8),
                 {"num_classes": 4}, labels=np.arange(64) % 4)
    train_gan(train_path=tmp_path / "train.h5", out_path=tmp_path / "gan.pt",
              settings={"z_dim": 8, "width": 8, "steps": 3, "batch_size": 16,
                                                           "lr": 2e-4}, seed=0, progress=False)
    generator, spec = load_generator(tmp_path / "gan.pt")
    assert generator.embed.num_embeddings == spec["num_classes"] == 4 and spec["image_size"] == 8
    settings = {"kind": "gan", "n_images": 10, "batch_size": 4}
    one = tmp_path / "one.h5"
    sample_gan_shard(tmp_path / "gan.pt", one, 0, {**settings, "n_shards": 1}, seed=3, progress=False)
    shards = [tmp_path / f"s{i}.h5" for i in range(3)]
    for i, path in enumerate(shards):
        sample_gan_shard(tmp_path / "gan.pt", path, i, {**settings, "n_shards": 3, "batch_size": 3}, seed=3,
                         progress=False)
    merge_shards(shard_paths=shards, out_path=tmp_path / "merged.h5")
    with h5py.File(one) as a, h5py.File(tmp_path / "merged.h5") as b:
        assert a["images"].shape == (10, 8, 8, 1) and a["images"].dtype == np.uint8
        np.testing.assert_array_equal(a["images"][()], b["images"][()])
        np.testing.assert_array_equal(a["source_labels"][()], np.arange(10) % 4)


def test_gan_checkpoint_of_another_kind_is_refused(tmp_path):
    from port.gan import load_generator

    torch.save({"weights": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ArtifactError, match="not a port-pipeline GAN"):
        load_generator(tmp_path / "x.pt")


# --------------------------------------------------------------------------- class-conditional DDPM


@pytest.fixture(scope="module")
def conditional_model(digits_like, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "ddpm-cond"
    train_ddpm(train_path=digits_like, out_dir=out,
               settings={**DDPM_SETTINGS, "class_conditional": True, "label_dropout": 0.2}, seed=0,
               progress=False)
    return out


def read_with_labels(path):
    with h5py.File(path, "r") as handle:
        return handle["images"][()], handle["source_labels"][()]


def test_conditional_ddpm_embeds_classes_plus_no_class(conditional_model):
    config = load_pipeline(str(conditional_model), "ddim").unet.config
    assert config.num_class_embeds == 3 + 1  # digits_like has 3 classes; the last is "no class"


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_conditional_shards_are_balanced_and_independent_of_sharding(conditional_model, tmp_path, scheduler):
    model = str(conditional_model)
    cfg = dict(scheduler=scheduler, n_images=7, guidance_scale=2.0)
    sample_diffusers_shard(model, tmp_path / "whole.h5", 0, settings(**cfg, n_shards=1, batch_size=7), 3,
                           progress=False)
    images, labels = read_with_labels(tmp_path / "whole.h5")
    np.testing.assert_array_equal(labels, np.arange(7) % 3)
    parts = []
    for shard in range(3):
        out = tmp_path / f"part{shard}.h5"
        sample_diffusers_shard(model, out, shard, settings(**cfg, n_shards=3, batch_size=2), 3, progress=False)
        parts.append(read_with_labels(out))
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), images)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), labels)
    sample_diffusers_shard(model, tmp_path / "plain.h5", 0,
                           settings(**{**cfg, "guidance_scale": 1.0}, n_shards=1, batch_size=7), 3, progress=False)
    assert not np.array_equal(read_with_labels(tmp_path / "plain.h5")[0], images)  # guidance changes the samples


@pytest.mark.parametrize("name", ["dpmsolver++", "unipc"])
@pytest.mark.parametrize("clip_sample", [True, False])
def test_solvers_clip_x0_as_the_ddpm_chain_does(name, clip_sample):
    """A DDPM trained with `clip_sample` has its x0 prediction clipped to [-1, 1] at every step of
    its chain; the few-step solvers must clip too or their digits land far from the real set."""
    config = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=clip_sample).config
    scheduler, _ = stepping_scheduler(name, config)
    scheduler.set_timesteps(10)
    x = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for t in scheduler.timesteps:  # a model whose noise estimate pushes x0 far outside [-1, 1]
        x = scheduler.step(-3 * x, t, x).prev_sample
    assert (x.abs().max() <= 1.0 + 1e-4) == clip_sample
