"""Randomized-smoothing certification (Cohen, Rosenfeld & Kolter, ICML 2019, `core.py`).

The smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), is certified
robust in L2 within sigma * Phi^-1(pA) when its top class has probability at least pA.
Noise is added in [0, 1] pixel space because every model normalises internally, and it
is not clamped: the certificate holds only for the Gaussian that was actually sampled.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch
from scipy.stats import beta, binomtest, norm
from tqdm import tqdm

from .artifacts import ResumeCheckpoint, read_image_set, write_csv
from .compute import Compute
from .loaders import to_tensor
from .seeds import derive_seed

log = logging.getLogger(__name__)


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion, k of n."""
    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


class Smooth:
    ABSTAIN = -1

    def __init__(self, base_classifier: torch.nn.Module, num_classes: int, sigma: float,
                 compute: Compute | None = None):
        """`compute`: bf16 noisy forward passes on CUDA; None or fp32 counts exactly as a plain fp32 loop."""
        self.base_classifier, self.num_classes, self.sigma = base_classifier, num_classes, sigma
        self.compute = compute or Compute("fp32")
        self._forward = self.compute.compiled(base_classifier)

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                generator: torch.Generator | None = None) -> tuple[int, float]:
        """CERTIFY: pick the class on n0 samples and bound its probability on n fresh ones,
        so the selection does not bias the bound. Returns (class or ABSTAIN, L2 radius)."""
        c_hat = int(self._sample_noise(x, n0, batch_size, generator).argmax())
        p_lower = lower_confidence_bound(int(self._sample_noise(x, n, batch_size, generator)[c_hat]), n, alpha)
        if p_lower < 0.5:
            return Smooth.ABSTAIN, 0.0
        return c_hat, self.sigma * float(norm.ppf(p_lower))

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int,
                generator: torch.Generator | None = None) -> int:
        """PREDICT: the top class, or ABSTAIN unless a binomial test separates it from the
        runner-up at level alpha (then the answer differs from g(x) with probability <= alpha)."""
        counts = self._sample_noise(x, n, batch_size, generator)
        second, first = np.argsort(counts, kind="stable")[-2:]
        if binomtest(int(counts[first]), int(counts[first] + counts[second]), p=0.5).pvalue > alpha:
            return Smooth.ABSTAIN
        return int(first)

    def _sample_noise(self, x: torch.Tensor, num: int, batch_size: int,
                      generator: torch.Generator | None = None) -> np.ndarray:
        """Class counts of f(x + e) over `num` noise draws for one CHW image x. Noise is drawn
        from `generator` on the generator's device, so a seed fixes the counts. The counts stay
        on the device until all batches are queued: one host sync per call, not per batch."""
        self.base_classifier.eval()
        device = generator.device if generator is not None else x.device
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=x.device)
        with torch.inference_mode(), self.compute.autocast(x.device):
            for start in range(0, num, batch_size):
                size = min(batch_size, num - start)
                noise = torch.randn((size, *x.shape), generator=generator, device=device).to(x.device)
                batch = (x.unsqueeze(0) + noise * self.sigma).contiguous(memory_format=torch.channels_last)
                counts += torch.bincount(self._forward(batch).argmax(1), minlength=self.num_classes)
        return counts.cpu().numpy()


def certify_dataset(*, model_path, test_path, out_csv, settings: dict, seed: int, checkpoint_path=None,
                    checkpoint_seconds: float = 60.0) -> pd.DataFrame:
    """Certify every `skip`-th test image and write one CSV row per image (Cohen et al.'s
    certify.py columns). Each image's noise is seeded from (seed, idx), so a certificate
    does not depend on which other images are certified, and a run killed part way resumes
    from its checkpoint (the rows so far, saved every `checkpoint_seconds`) to the same table."""
    from .devices import default_device
    from .models import load_model

    model, spec = load_model(model_path)
    device = default_device()
    model.to(device)
    images, labels = read_image_set(test_path, spec["num_classes"])
    smooth = Smooth(model, spec["num_classes"], settings["sigma"], Compute.from_settings(settings.get("compute")))
    checkpoint = ResumeCheckpoint(checkpoint_path, settings, seed, (model_path, test_path))
    rows = (checkpoint.load() or {"rows": []})["rows"]
    saved_at = time.time()
    todo = [idx for idx in range(0, len(images), settings["skip"]) if idx > (rows[-1]["idx"] if rows else -1)]
    for idx in tqdm(todo, desc="certify", mininterval=10):
        x = to_tensor(images[idx:idx + 1])[0].to(device)
        generator = torch.Generator(device=device).manual_seed(derive_seed(seed, "certify", idx))
        started = time.time()
        prediction, radius = smooth.certify(x, settings["n0"], settings["n"], settings["alpha"],
                                            settings["batch_size"], generator)
        seconds = time.time() - started
        smoothed = smooth.predict(x, settings["n"], settings["alpha"], settings["batch_size"], generator)
        label = int(labels[idx])
        rows.append(dict(idx=idx, label=label, predict=prediction, radius=radius, correct=int(prediction == label),
                         smoothed_predict=smoothed, seconds=seconds))
        if time.time() - saved_at > checkpoint_seconds:
            checkpoint.save({"rows": rows})
            saved_at = time.time()
    frame = pd.DataFrame(rows, columns=["idx", "label", "predict", "radius", "correct", "smoothed_predict",
                                        "seconds"])
    write_csv(frame, out_csv)
    checkpoint.finish()
    log.info("certified %d images: accuracy %.4f at radius 0, %d abstained", len(frame),
             certified_accuracy(frame, [0.0])[0], int((frame["predict"] == Smooth.ABSTAIN).sum()))
    return frame


def certified_accuracy(frame: pd.DataFrame, radii) -> list[float]:
    """Fraction of certified images that are correct with radius >= r, for each r (Cohen et al.)."""
    return [float(((frame["correct"] == 1) & (frame["radius"] >= r)).mean()) for r in radii]
