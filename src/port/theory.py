"""Theorem 1 of Sehwag et al. (ICLR 2022) checked on Gaussians (Appendix A.5, Figure 4).

The theorem. For a classifier h and a labelled distribution D, the average robustness is
Rob_d(h, D) = E_(x,y)~D [ inf { d(x, x') : h(x') != y } ], the expected distance (metric d) from
a sample to the nearest input h labels otherwise (0 for a misclassified sample). For two labelled
distributions D, D~ with the same label marginal,

    | Rob_d(h, D) - Rob_d(h, D~) |  <=  cwd_d(D, D~) = E_y [ W_d(D|y, D~|y) ],

the conditional Wasserstein (W1) distance under the same metric d. The bound needs no Lipschitz or
loss constant: for a fixed label, x -> inf {d(x, x') : h(x') != y} is 1-Lipschitz in d, so its
expectations under two distributions differ by at most their W1 distance. We take d = l2 and bound
W1 by the closed-form W2 of Gaussians (W1 <= W2 by Jensen), so the bound drawn is cwd with W2: the
theorem's bound or looser, never tighter.

What is measured: a 4-layer MLP adversarially trained (l2 PGD) on each proxy D~ (class means and
covariances perturbed by a strength t, t = 0 is the real distribution), and its average robustness
on the real and on the proxy distribution, each sample's distance to the boundary estimated by a
bisection over PGD radii. The attack finds *an* adversarial point, so each distance is an upper
estimate of the true one, and both averages carry sampling error; the real and proxy samples share
their standard-normal draws (x = m + L z, x~ = m~ + L~ z), so at t = 0 they coincide and the gap is
exactly 0. Robust accuracy at the training eps is reported too: it is not what the theorem bounds
(a fraction is not a distance), so it does not enter the check.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import linalg

from .artifacts import write_csv
from .errors import SettingsError
from .seeds import derive_seed, rng
from .settings.threats import step_size
from .statistics import t_interval

log = logging.getLogger(__name__)


def gaussian_w2_squared(mean_a, cov_a, mean_b, cov_b) -> float:
    """Squared Wasserstein-2 distance between N(mean_a, cov_a) and N(mean_b, cov_b):
    ||m_a - m_b||^2 + tr(S_a + S_b - 2 (S_b^1/2 S_a S_b^1/2)^1/2)."""
    mean_a, mean_b = np.asarray(mean_a, float), np.asarray(mean_b, float)
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, float)), np.atleast_2d(np.asarray(cov_b, float))
    root_b = linalg.sqrtm(cov_b).real
    cross = linalg.sqrtm(root_b @ cov_a @ root_b).real
    value = float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * cross))
    return max(value, 0.0)  # sqrtm's rounding can leave a tiny negative for equal Gaussians


def conditional_w2(means_a, covs_a, means_b, covs_b, class_probs=None) -> float:
    """E_y [ W2(N(means_a[y], covs_a[y]), N(means_b[y], covs_b[y])) ], y uniform unless given."""
    distances = np.array([np.sqrt(gaussian_w2_squared(ma, ca, mb, cb))
                          for ma, ca, mb, cb in zip(means_a, covs_a, means_b, covs_b, strict=True)])
    probs = np.full(len(distances), 1 / len(distances)) if class_probs is None else np.asarray(class_probs, float)
    return float(probs @ distances)


class GaussianClasses:
    """Class-conditional Gaussians N(means[c], covs[c]) with covs[c] = roots[c] @ roots[c].T."""

    def __init__(self, means: np.ndarray, roots: np.ndarray):
        self.means, self.roots = means, roots

    @property
    def covs(self) -> np.ndarray:
        return self.roots @ self.roots.transpose(0, 2, 1)

    def sample(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """x = means[y] + roots[y] z: the same z maps onto coupled samples of two distributions."""
        x = np.empty_like(z)
        for c in range(len(self.means)):
            rows = labels == c
            x[rows] = self.means[c] + z[rows] @ self.roots[c].T
        return x


def real_distribution(settings: dict, seed: int) -> GaussianClasses:
    """Random class means (norm about `mean_scale`) and rotated diagonal covariances with variances
    uniform in [0.5, 1.5]."""
    generator = rng(seed, "theorem1-real")
    k, d = settings["classes"], settings["dim"]
    means = generator.standard_normal((k, d)) * settings["mean_scale"] / np.sqrt(d)
    roots = []
    for _ in range(k):
        rotation, _ = np.linalg.qr(generator.standard_normal((d, d)))
        roots.append(rotation * np.sqrt(generator.uniform(0.5, 1.5, d)))
    return GaussianClasses(means, np.stack(roots))


def proxy_distribution(real: GaussianClasses, strength: float, settings: dict, seed: int) -> GaussianClasses:
    """Means moved by strength * mean_shift along a random direction per class; the covariance's
    scale along each eigenvector multiplied by exp(strength * cov_scale * u), u uniform in [-1, 1]."""
    generator = rng(seed, "theorem1-proxy")  # the same directions at every strength: a path away from D
    k, d = real.means.shape
    directions = generator.standard_normal((k, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    stretch = np.exp(strength * settings["cov_scale"] * generator.uniform(-1, 1, (k, 1, d)) / 2)
    return GaussianClasses(real.means + strength * settings["mean_shift"] * directions, real.roots * stretch)


def mlp(dim: int, classes: int, width: int) -> nn.Module:
    """The paper's 4-layer fully connected network."""
    return nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes))


def l2_pgd(model, x, y, eps: torch.Tensor, steps: int) -> torch.Tensor:
    """l2 PGD in R^d with one radius per sample (port.attacks works in the [0, 1] pixel box)."""
    radius = eps.view(-1, 1)
    step = step_size(radius, steps, 2.5)
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y), delta)
        with torch.no_grad():
            delta = delta + step * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
            delta = delta * (radius / delta.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta).detach()


def train_robust_mlp(x: np.ndarray, y: np.ndarray, settings: dict, seed: int) -> nn.Module:
    """Adversarial training (l2 PGD at `eps`) of the 4-layer MLP, SGD with momentum, cosine lr."""
    torch.manual_seed(derive_seed(seed, "init"))
    model = mlp(x.shape[1], settings["classes"], settings["width"])
    steps_per_epoch = -(-len(x) // settings["batch_size"])
    optimizer = torch.optim.SGD(model.parameters(), lr=settings["lr"], momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings["epochs"] * steps_per_epoch)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    order = rng(seed, "theorem1-batches")
    for _ in range(settings["epochs"]):
        permutation = torch.as_tensor(order.permutation(len(x)))
        for i in range(steps_per_epoch):
            batch = permutation[i * settings["batch_size"]:(i + 1) * settings["batch_size"]]
            radius = torch.full((len(batch),), float(settings["eps"]))
            x_adv = l2_pgd(model, xt[batch], yt[batch], radius, settings["attack_steps"])
            loss = F.cross_entropy(model(x_adv), yt[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def boundary_distance(model, x: np.ndarray, y: np.ndarray, settings: dict) -> np.ndarray:
    """Per sample, the smallest l2 radius (bisection over [0, max_radius], `search_steps` halvings)
    at which PGD finds a misclassified point; 0 when the sample itself is misclassified, max_radius
    when none is found (an underestimate, counted in `capped_fraction`)."""
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    with torch.no_grad():
        correct = model(xt).argmax(1) == yt
    low, high = torch.zeros(len(x)), torch.full((len(x),), float(settings["max_radius"]))
    for _ in range(settings["search_steps"]):
        middle = (low + high) / 2
        x_adv = l2_pgd(model, xt, yt, middle, settings["attack_steps"])
        with torch.no_grad():
            fooled = model(x_adv).argmax(1) != yt
        high = torch.where(fooled, middle, high)
        low = torch.where(fooled, low, middle)
    return torch.where(correct, high, torch.zeros(len(x))).numpy()


def robust_accuracy(model, x: np.ndarray, y: np.ndarray, eps: float, steps: int) -> float:
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    x_adv = l2_pgd(model, xt, yt, torch.full((len(x),), float(eps)), steps)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == yt).float().mean())


def theorem1_check(*, settings: dict, seed: int, out_csv, out_plot) -> pd.DataFrame:
    """One row per proxy strength: the conditional W2 distance (the bound), the measured average
    robustness on the real and the proxy distribution of an MLP trained on the proxy, their gap
    with a 95% interval (paired over the coupled samples), and whether the gap is under the bound."""
    if settings["strengths"] != sorted(settings["strengths"]) or min(settings["strengths"]) < 0:
        raise SettingsError(f"studies.theorem1.strengths must be increasing and non-negative, got {settings['strengths']}")
    real = real_distribution(settings, seed)
    generator = rng(seed, "theorem1-samples")
    k, d = settings["classes"], settings["dim"]
    y_train = np.arange(settings["n_train"]) % k
    z_train = generator.standard_normal((settings["n_train"], d))
    y_eval = np.arange(settings["n_eval"]) % k
    z_eval = generator.standard_normal((settings["n_eval"], d))
    x_real = real.sample(z_eval, y_eval)
    rows = []
    for strength in settings["strengths"]:
        proxy = proxy_distribution(real, strength, settings, seed)
        bound = conditional_w2(real.means, real.covs, proxy.means, proxy.covs)
        model = train_robust_mlp(proxy.sample(z_train, y_train), y_train, settings, derive_seed(seed, "mlp", str(strength)))
        x_proxy = proxy.sample(z_eval, y_eval)
        on_real = boundary_distance(model, x_real, y_eval, settings)
        on_proxy = boundary_distance(model, x_proxy, y_eval, settings)
        difference, _, low, high, _ = t_interval(on_proxy - on_real)
        row = {"strength": strength, "cwd_w2": bound, "rob_real": float(on_real.mean()),
               "rob_proxy": float(on_proxy.mean()), "gap": abs(difference), "difference_ci_low": low,
               "difference_ci_high": high,
               "under_bound": bool(abs(difference) <= bound),
               "interval_under_bound": bool(max(abs(low), abs(high)) <= bound) if np.isfinite(low) else False,
               "capped_fraction": float(np.mean(np.r_[on_real, on_proxy] >= settings["max_radius"])),
               "robust_acc_real": robust_accuracy(model, x_real, y_eval, settings["eps"], settings["attack_steps"]),
               "robust_acc_proxy": robust_accuracy(model, x_proxy, y_eval, settings["eps"], settings["attack_steps"]),
               "eps": settings["eps"], "n_eval": settings["n_eval"]}
        log.info("theorem 1 at strength %s: %s", strength, row)
        rows.append(row)
    table = pd.DataFrame(rows)
    write_csv(table, out_csv)
    _plot_theorem1(table, out_plot)
    return table


def _plot_theorem1(table: pd.DataFrame, out_plot) -> None:
    from .reporting import figure_axes, save_figure

    figure, axis = figure_axes(figsize=(5, 3.6))
    low, high = table["difference_ci_low"].abs(), table["difference_ci_high"].abs()
    # the interval of |gap|: from 0 when the signed interval covers 0, else between its ends
    covers_zero = table["difference_ci_low"] * table["difference_ci_high"] <= 0
    gap_low, gap_high = np.where(covers_zero, 0.0, np.minimum(low, high)), np.maximum(low, high)
    top = float(np.nanmax([table["cwd_w2"].max(), np.nanmax(gap_high) if np.isfinite(gap_high).any() else 0, 1e-3])) * 1.05
    line = np.linspace(0, top, 2)
    axis.plot(line, line, color="black", linestyle="--", label="Theorem 1 bound: gap = cwd")
    axis.fill_between(line, line, top, color="red", alpha=0.08, label="violates the bound")
    under = table["under_bound"].to_numpy(bool)
    error = np.clip(np.vstack([table["gap"] - gap_low, gap_high - table["gap"]]), 0, None)
    axis.errorbar(table["cwd_w2"], table["gap"], yerr=np.nan_to_num(error), fmt="none", ecolor="grey", capsize=2)
    axis.scatter(table["cwd_w2"][under], table["gap"][under], color="tab:blue", zorder=3, label="measured gap (under)")
    if (~under).any():
        axis.scatter(table["cwd_w2"][~under], table["gap"][~under], color="tab:red", marker="x", zorder=3,
                     label="measured gap (ABOVE the bound)")
    axis.set(xlim=(0, top), ylim=(0, top), xlabel="conditional Wasserstein distance (W2, l2)",
             ylabel="|Rob(h, D~) - Rob(h, D)| (l2)", title="Theorem 1 on 128-d Gaussians")
    axis.legend(fontsize=7, loc="upper left")
    save_figure(figure, out_plot)
