"""StyleGAN2-ADA: the restricted network-pickle loader and the plain-PyTorch generator, on tiny
pickles written in the official persistence layout (tests/stylegan_pickles.py)."""

from __future__ import annotations

import math
import os
import pickle
from collections import OrderedDict

import h5py
import numpy as np
import pytest
import torch

from port.generators import sample_shard
from port.safe_pickle import RefusedPickle, load_network_pickle
from port.stylegan import (StyleGANError, generate, load_stylegan, sample_stylegan_shard, to_uint8, upsample2d)
from stylegan_pickles import RecordedModule, official_globals, tiny_generator, write_network_pickle


@pytest.fixture(scope="module")
def g_record():
    return tiny_generator()


@pytest.fixture(scope="module")
def network_pkl(tmp_path_factory, g_record):
    return write_network_pickle(tmp_path_factory.mktemp("stylegan") / "network-snapshot-000000.pkl", g_record)


def settings(**overrides):
    return {"kind": "stylegan", "n_images": 10, "n_shards": 1, "batch_size": 4, "truncation_psi": 1.0,
            "noise_mode": "const", **overrides}


def read(path):
    with h5py.File(path, "r") as handle:
        return handle["images"][()], (handle["source_labels"][()] if "source_labels" in handle else None)


# --------------------------------------------------------------------------- restricted unpickler


def test_every_tensor_round_trips_exactly(network_pkl, g_record):
    data = load_network_pickle(network_pkl)
    assert data["G_ema"].class_name == "Generator" and data["training_set_kwargs"]["use_labels"] is True
    loaded, original = data["G_ema"].tensors(), g_record.tensors()
    assert sorted(loaded) == sorted(original)
    for name, tensor in original.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    # weight gains are numpy float64 scalars in the official pickles: read back as floats
    fc0 = data["G_ema"].modules["mapping"].modules["fc0"]
    assert fc0.state["weight_gain"] == pytest.approx(0.01 / math.sqrt(4 + 8))
    # and the generator consumes every one of them
    state = load_stylegan(network_pkl).state_dict()
    assert sorted(state) == sorted(original)
    for name, tensor in original.items():
        assert torch.equal(state[name], tensor.float()), name


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_with_any_other_global_is_refused_without_running_it(tmp_path, g_record):
    marker = tmp_path / "ran"
    path = write_network_pickle(tmp_path / "evil.pkl", g_record, payload=Payload(marker))
    with pytest.raises(RefusedPickle, match=r"evil\.pkl: refused global (posix|os|nt)\.system"):
        load_network_pickle(path)
    assert not marker.exists()
    # a global hidden inside a recorded module's state is refused as well
    g_record.state["hook"] = Payload(marker)
    try:
        path = write_network_pickle(tmp_path / "nested.pkl", g_record)
    finally:
        del g_record.state["hook"]
    with pytest.raises(RefusedPickle, match=r"nested\.pkl: refused global"):
        load_stylegan(path)
    assert not marker.exists()


def test_plain_torch_pickle_of_a_module_is_refused(tmp_path):
    path = tmp_path / "module.pkl"
    path.write_bytes(pickle.dumps({"G_ema": torch.nn.Linear(2, 2)}))
    with pytest.raises(RefusedPickle, match=r"module\.pkl: refused global torch\.nn"):
        load_stylegan(path)


def test_stylegan3_pickle_is_refused_by_name(tmp_path):
    record = tiny_generator()
    synthesis = record.state["_modules"]["synthesis"]
    synthesis.state["_modules"] = OrderedDict(input=RecordedModule("SynthesisInput", w_dim=8),
                                              L0_36_512=RecordedModule("SynthesisLayer"))
    path = write_network_pickle(tmp_path / "stylegan3-r.pkl", record)
    with pytest.raises(StyleGANError, match=r"stylegan3-r\.pkl: a StyleGAN3 pickle"):
        load_stylegan(path)


def test_missing_or_misshapen_tensors_are_named(tmp_path):
    record = tiny_generator()
    b8 = record.state["_modules"]["synthesis"].state["_modules"]["b8"]
    b8.state["_modules"]["conv1"].state["_parameters"]["weight"] = torch.nn.Parameter(torch.zeros(8, 8, 3, 5))
    with pytest.raises(StyleGANError, match=r"synthesis\.b8\.conv1\.weight has shape \(8, 8, 3, 5\)"):
        load_stylegan(write_network_pickle(tmp_path / "shape.pkl", record))
    record = tiny_generator()
    record.state["_modules"]["mapping"].state["_buffers"]["extra"] = torch.zeros(2)
    with pytest.raises(StyleGANError, match=r"unused: \['mapping\.extra'\]"):
        load_stylegan(write_network_pickle(tmp_path / "extra.pkl", record))


# --------------------------------------------------------------------------- generator math


def lrelu(x):
    return np.where(x > 0, x, 0.2 * x) * math.sqrt(2)


def fc(record, x):
    s = record.state
    w = s["_parameters"]["weight"].double().numpy() * float(s["weight_gain"])
    return x @ w.T + s["_parameters"]["bias"].double().numpy() * s["bias_gain"]


def test_one_layer_generator_matches_hand_computed_values(tmp_path):
    """4x4 output: const -> one modulated, demodulated 3x3 conv with noise -> toRGB, with a
    1-layer conditional mapping network, computed here with explicit numpy sums."""
    record = tiny_generator(seed=3, z_dim=2, c_dim=2, w_dim=3, img_resolution=4, img_channels=1, channel_base=8,
                            channel_max=2, mapping_layers=1, conv_clamp=0.5)
    generator = load_stylegan(write_network_pickle(tmp_path / "one.pkl", record))
    mapping = record.state["_modules"]["mapping"].state["_modules"]
    block = record.state["_modules"]["synthesis"].state["_modules"]["b4"].state
    conv, rgb = block["_modules"]["conv1"].state, block["_modules"]["torgb"].state
    z, label = np.array([0.7, -1.3]), 1
    noise = np.random.default_rng(0).standard_normal((4, 4))

    def normalize(v):
        return v / np.sqrt(np.mean(v ** 2) + 1e-8)

    embed = normalize(fc(mapping["embed"], np.eye(2)[label]))
    w = lrelu(fc(mapping["fc0"], np.concatenate([normalize(z), embed])))
    styles = fc(conv["_modules"]["affine"], w)
    weight = conv["_parameters"]["weight"].double().numpy() * styles[None, :, None, None]
    weight /= np.sqrt((weight ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-8)
    const = np.pad(block["_parameters"]["const"].double().numpy(), ((0, 0), (1, 1), (1, 1)))
    x = np.zeros((2, 4, 4))
    for o in range(2):
        for i in range(4):
            for j in range(4):
                x[o, i, j] = (weight[o] * const[:, i:i + 3, j:j + 3]).sum()
    strength = float(conv["_parameters"]["noise_strength"])
    x = np.clip(lrelu(x + noise * strength + conv["_parameters"]["bias"].double().numpy()[:, None, None]), -0.5, 0.5)
    rgb_styles = fc(rgb["_modules"]["affine"], w) * rgb["weight_gain"]
    rgb_weight = rgb["_parameters"]["weight"].double().numpy()[:, :, 0, 0] * rgb_styles[None, :]
    expected = np.einsum("oi,ihw->ohw", rgb_weight, x) + rgb["_parameters"]["bias"].double().numpy()[:, None, None]
    expected = np.clip(expected, -0.5, 0.5)

    c = torch.nn.functional.one_hot(torch.tensor([label]), 2).float()
    with torch.no_grad():
        got = generator(torch.from_numpy(z[None]).float(), c, noises=[torch.from_numpy(noise).float()[None, None]])
    np.testing.assert_allclose(got[0].double().numpy(), expected, atol=1e-5)
    # noise_mode const uses the recorded noise_const buffer
    with torch.no_grad():
        const_img = generator(torch.from_numpy(z[None]).float(), c)
        with_buffer = generator(torch.from_numpy(z[None]).float(), c,
                                noises=[conv["_buffers"]["noise_const"][None, None]])
    assert torch.equal(const_img, with_buffer)


def test_fir_upsampling_keeps_a_constant_image_constant_inside():
    image = torch.full((1, 2, 4, 4), 0.75)
    up = upsample2d(image, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert up.shape == (1, 2, 8, 8)
    torch.testing.assert_close(up[..., 1:-1, 1:-1], torch.full((1, 2, 6, 6), 0.75))


def test_truncation_psi_zero_gives_the_w_avg_image_for_every_z(network_pkl):
    generator = load_stylegan(network_pkl)
    images, labels = generate(generator, np.arange(6), seed=1, truncation_psi=0.0, class_labels=[2])
    assert (labels == 2).all() and all(np.array_equal(images[0], image) for image in images[1:])
    ws = generator.mapping.w_avg[None, None].expand(1, generator.num_ws, -1)
    with torch.no_grad():
        assert np.array_equal(images[0], to_uint8(generator.synthesis(ws))[0])
    different, _ = generate(generator, np.arange(6), seed=1, truncation_psi=1.0, class_labels=[2])
    assert len({image.tobytes() for image in different}) == 6


# --------------------------------------------------------------------------- sampling shards


def test_shards_are_deterministic_balanced_and_independent_of_sharding(tmp_path, network_pkl):
    for noise_mode in ("const", "random"):
        whole = tmp_path / f"whole-{noise_mode}.h5"
        sample_stylegan_shard(network_pkl, whole, 0, settings(noise_mode=noise_mode), seed=5, progress=False)
        images, labels = read(whole)
        assert images.shape == (10, 8, 8, 3) and images.dtype == np.uint8 and images.std() > 0
        np.testing.assert_array_equal(labels, np.arange(10) % 3)
        parts = []
        for shard in range(3):
            out = tmp_path / f"part{shard}-{noise_mode}.h5"
            sample_stylegan_shard(network_pkl, out, shard, settings(noise_mode=noise_mode, n_shards=3, batch_size=3),
                                  seed=5, progress=False)
            parts.append(read(out))
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), images)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), labels)
        again = tmp_path / f"again-{noise_mode}.h5"
        sample_stylegan_shard(network_pkl, again, 0, settings(noise_mode=noise_mode), seed=5, progress=False)
        np.testing.assert_array_equal(read(again)[0], images)
    assert not np.array_equal(read(tmp_path / "whole-const.h5")[0], read(tmp_path / "whole-random.h5")[0])


def test_unconditional_generator_writes_no_labels(tmp_path):
    path = write_network_pickle(tmp_path / "uncond.pkl", tiny_generator(c_dim=0, img_channels=1))
    out = tmp_path / "u.h5"
    sample_shard(source=str(path), out_path=out, shard=0, settings=settings(n_images=3),
                 seed=0)  # the kind dispatch of sample_shard
    images, labels = read(out)
    assert images.shape == (3, 8, 8, 1) and labels is None


def test_bf16_autocast_runs_and_stays_close(network_pkl):
    """The CUDA path samples under bf16 autocast; CPU autocast exercises the same dtype handling
    (truncation lerp, float32 image path) and the result stays near the float32 one."""
    from port.stylegan import image_inputs

    generator = load_stylegan(network_pkl)
    z, noises = image_inputs(generator, np.arange(4), 0, "random")
    c = torch.nn.functional.one_hot(torch.arange(4) % 3, 3).float()
    with torch.no_grad():
        reference = generator(z, c, 0.7, noises)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = generator(z, c, 0.7, noises)
    assert low.dtype == torch.float32
    assert (low - reference).abs().max() < 0.05 * reference.abs().max()


def test_upsampling_conv_equals_fir_upsampling_then_convolution():
    """The stride-2 transposed-convolution path equals its definition: zero-insert, FIR low-pass
    (gain 4, padding for a 4-tap filter and a 3x3 kernel), then a true convolution (flipped kernel)."""
    from port.stylegan import fir_filter, modulated_conv2d

    gen = torch.Generator().manual_seed(0)
    x, weight = torch.randn(2, 3, 5, 5, generator=gen), torch.randn(4, 3, 3, 3, generator=gen)
    styles = torch.rand(2, 3, generator=gen) + 0.5
    f = torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64
    got = modulated_conv2d(x, weight, styles, up=2, padding=1, resample_filter=f)
    w = weight[None] * styles[:, None, :, None, None]
    w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    stuffed = torch.zeros(2, 3, 10, 10)
    stuffed[..., ::2, ::2] = x
    blurred = fir_filter(stuffed, f, (3, 2, 3, 2), gain=4)
    expected = torch.stack([torch.nn.functional.conv2d(blurred[i:i + 1], w[i].flip([2, 3]))[0] for i in range(2)])
    assert got.shape == (2, 4, 10, 10)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_url_is_fetched_once_into_the_cache(tmp_path, network_pkl, g_record):
    from port.stylegan import network_file

    url = network_pkl.resolve().as_uri()  # file:// stands in for NVIDIA's https address
    cached = network_file(url, cache_dir=tmp_path / "cache")
    assert cached.read_bytes() == network_pkl.read_bytes() and cached.parent == tmp_path / "cache" / "stylegan"
    assert network_file(url, cache_dir=tmp_path / "cache") == cached
    assert network_file(str(network_pkl)) == network_pkl  # a path is used in place
    with pytest.raises(StyleGANError, match="cannot fetch the network pickle"):
        network_file((tmp_path / "missing.pkl").as_uri(), cache_dir=tmp_path / "cache")
