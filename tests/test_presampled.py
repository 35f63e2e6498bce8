"""Pre-sampled sets in parts (npz, compressed npz, .npy pairs): shards read only their range."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from port.errors import ArtifactError
from port.generators import sample_shard, merge_shards, shard_bounds


def read(path):
    with h5py.File(path, "r") as handle:
        return handle["images"][()], (handle["source_labels"][()] if "source_labels" in handle else None)


@pytest.fixture
def parts(tmp_path):
    """13 images in three parts of three formats."""
    gen = np.random.default_rng(0)
    images = gen.integers(0, 256, (13, 4, 4, 3), dtype=np.uint8)
    labels = gen.integers(0, 10, 13)
    np.savez(tmp_path / "a.npz", image=images[:5], label=labels[:5])
    np.savez_compressed(tmp_path / "b.npz", image=images[5:9], label=labels[5:9])
    np.save(tmp_path / "c_image.npy", images[9:])
    np.save(tmp_path / "c_label.npy", labels[9:])
    listing = [str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
               {"image": str(tmp_path / "c_image.npy"), "label": str(tmp_path / "c_label.npy")}]
    return listing, images, labels


def settings(**overrides):
    return {"kind": "npz", "n_shards": 3, "image_key": "image", "label_key": "label", "num_classes": 10, **overrides}


def test_parts_import_in_shards_across_part_boundaries(tmp_path, parts, monkeypatch):
    from port import presampled

    monkeypatch.setattr(presampled, "READ_BLOCK_BYTES", 2 * 4 * 4 * 3)  # two images per read: many blocks
    listing, images, labels = parts
    shards = [tmp_path / f"shard_{i}.h5" for i in range(3)]
    for shard, out in enumerate(shards):
        sample_shard(source=listing, out_path=out, shard=shard, settings=settings(), seed=0)
        start, stop = shard_bounds(13, 3, shard)
        got_images, got_labels = read(out)
        np.testing.assert_array_equal(got_images, images[start:stop])
        np.testing.assert_array_equal(got_labels, labels[start:stop])
    merge_shards(shard_paths=shards, out_path=tmp_path / "merged.h5")
    np.testing.assert_array_equal(read(tmp_path / "merged.h5")[0], images)
    np.testing.assert_array_equal(read(tmp_path / "merged.h5")[1], labels)


def test_bad_parts_name_the_file_and_key(tmp_path, parts):
    listing, images, labels = parts
    out = tmp_path / "s.h5"
    with pytest.raises(ArtifactError, match=r"a\.npz: no key 'img' \(keys: image, label\)"):
        sample_shard(source=listing, out_path=out, shard=0, settings=settings(image_key="img"), seed=0)
    np.savez(tmp_path / "short.npz", image=images[:3], label=labels[:2])
    with pytest.raises(ArtifactError, match=r"short\.npz: 'label': 2 labels for the 3 images of .*short\.npz: 'image'"):
        sample_shard(source=[listing[0], str(tmp_path / "short.npz")], out_path=out, shard=0, settings=settings(),
                     seed=0)
    np.savez(tmp_path / "float.npz", image=images.astype(np.float32), label=labels)
    with pytest.raises(ArtifactError, match=r"float\.npz: 'image': images must be uint8 .* got float32"):
        sample_shard(source=str(tmp_path / "float.npz"), out_path=out, shard=0, settings=settings(), seed=0)
    np.savez(tmp_path / "rank.npz", image=images[..., 0], label=labels)
    with pytest.raises(ArtifactError, match=r"rank\.npz: 'image': images must be uint8 \(N, H, W, C\).*\(13, 4, 4\)"):
        sample_shard(source=str(tmp_path / "rank.npz"), out_path=out, shard=0, settings=settings(), seed=0)
    np.savez(tmp_path / "range.npz", image=images, label=labels + 5)
    with pytest.raises(ArtifactError, match=r"range\.npz: 'label': labels must lie in \[0, 9\]"):
        sample_shard(source=str(tmp_path / "range.npz"), out_path=out, shard=0, settings=settings(n_shards=1), seed=0)
    with pytest.raises(ArtifactError, match=r"c_image\.npy: no labels while other parts of the set have them"):
        sample_shard(source=[listing[0], {"image": listing[2]["image"]}], out_path=out, shard=0, settings=settings(),
                     seed=0)
    assert not out.exists()


MEASURE = textwrap.dedent("""
    import json, sys
    from port.generators import sample_shard

    def status_kib(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

    listing, out, shard, settings, warm_up = json.loads(sys.argv[1])
    sample_shard(source=warm_up, out_path=out + ".warm", shard=0, settings={**settings, "n_shards": 1},
                 seed=0)  # one-time library set-up
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak (VmHWM) to the current RSS
    before = status_kib("VmRSS")
    sample_shard(source=listing, out_path=out, shard=shard, settings=settings, seed=0)
    print(json.dumps({"before_kib": before, "peak_kib": status_kib("VmHWM")}))
""")


@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_a_shard_of_a_million_image_set_stays_below_twice_its_bytes(tmp_path, fmt):
    """1M 8x8x1 images (64 MB) in 5 parts; one of 4 shards (16 MB, spanning two parts) is
    imported in a fresh process whose peak RSS may grow by less than twice the shard's bytes
    (measured after a 4-image warm-up import, so HDF5's one-time set-up is not counted)."""
    n_images, n_parts, n_shards, shard = 1_000_000, 5, 4, 1
    per_part = n_images // n_parts
    listing = []
    for part in range(n_parts):
        images = np.full((per_part, 8, 8, 1), part, dtype=np.uint8)
        labels = np.full(per_part, part, dtype=np.int64)
        if fmt == "npz":
            np.savez(tmp_path / f"part{part}.npz", image=images, label=labels)
            listing.append(str(tmp_path / f"part{part}.npz"))
        else:
            np.save(tmp_path / f"part{part}_image.npy", images)
            np.save(tmp_path / f"part{part}_label.npy", labels)
            listing.append({"image": str(tmp_path / f"part{part}_image.npy"),
                            "label": str(tmp_path / f"part{part}_label.npy")})
        del images
    np.savez(tmp_path / "warm.npz", image=np.zeros((4, 8, 8, 1), np.uint8), label=np.zeros(4, np.int64))
    out = tmp_path / "shard.h5"
    args = json.dumps([listing, str(out), shard, settings(n_shards=n_shards), str(tmp_path / "warm.npz")])
    result = subprocess.run([sys.executable, "-c", MEASURE, args], capture_output=True, text=True, check=True)
    usage = json.loads(result.stdout.strip().splitlines()[-1])
    start, stop = shard_bounds(n_images, n_shards, shard)
    shard_bytes = (stop - start) * 64
    grew = (usage["peak_kib"] - usage["before_kib"]) * 1024
    assert grew < 2 * shard_bytes, f"peak RSS grew by {grew / 2**20:.1f} MiB for a {shard_bytes / 2**20:.1f} MiB shard"
    got_images, got_labels = read(out)
    assert len(got_images) == stop - start
    np.testing.assert_array_equal(got_images[:, 0, 0, 0], np.arange(start, stop) // per_part)
    np.testing.assert_array_equal(got_labels, np.arange(start, stop) // per_part)
