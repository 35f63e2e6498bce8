"""Projected gradient descent and the BatchNorm mode switch (port.attacks)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from port.attacks import batchnorm_mode, pgd, project, random_start

ATTACKS = [("linf", 0.05, 0.02), ("l2", 0.5, 0.2)]


def _linear_problem(seed=0, n=32, shape=(1, 4, 4), classes=3):
    """A random linear classifier on inputs inside [0.25, 0.75]: no clipping at [0, 1] for small eps."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()), classes))
    g = torch.Generator().manual_seed(seed + 1)
    x = 0.25 + 0.5 * torch.rand((n, *shape), generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return model, x, y


def _size(delta, norm):
    flat = delta.flatten(1)
    return flat.abs().max(1).values if norm == "linf" else flat.norm(dim=1)


def _per_sample_loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


@pytest.mark.parametrize("norm,eps,step", ATTACKS)
@pytest.mark.parametrize("random_init", [True, False])
def test_pgd_stays_in_eps_ball_and_unit_box(norm, eps, step, random_init):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    g = torch.Generator().manual_seed(3)
    x = torch.rand((16, 3, 8, 8), generator=g)
    x[:4] = 0.0  # images at the edges of the box, where the ball sticks out of [0, 1]
    x[4:8] = 1.0
    y = torch.randint(0, 5, (16,), generator=g)
    x_adv = pgd(model, x, y, norm, eps, step, steps=7, random_init=random_init)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (_size(x_adv - x, norm) <= eps * (1 + 1e-5) + 1e-6).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert (x_adv - x).abs().max() > 0  # it moved
    if norm == "linf":  # sign steps of 0.02 for 7 steps reach the boundary of the 0.05 box
        assert _size(x_adv[8:] - x[8:], norm).min() == pytest.approx(eps, rel=1e-5)


@pytest.mark.parametrize("norm,eps,step", ATTACKS)
def test_one_step_raises_every_samples_loss(norm, eps, step):
    # Cross-entropy of a linear model is convex in x: a step along the gradient cannot lower it.
    model, x, y = _linear_problem()
    x_adv = pgd(model, x, y, norm, eps, step, steps=1, random_init=False)
    clean, attacked = _per_sample_loss(model, x, y), _per_sample_loss(model, x_adv, y)
    assert (attacked > clean).all()
    assert torch.allclose(_size(x_adv - x, norm), torch.full((len(x),), step), rtol=1e-4)


@pytest.mark.parametrize("norm,eps,step", ATTACKS)
def test_many_steps_with_random_start_raise_the_loss(norm, eps, step):
    model, x, y = _linear_problem(seed=1)
    torch.manual_seed(7)
    x_adv = pgd(model, x, y, norm, eps, step, steps=10, random_init=True)
    clean, attacked = _per_sample_loss(model, x, y), _per_sample_loss(model, x_adv, y)
    assert attacked.mean() > clean.mean() + 0.01
    assert (attacked >= clean - 1e-6).float().mean() > 0.9
    # and it beats a random point of the same ball
    torch.manual_seed(7)
    x_rand = x + random_start(x, norm, eps)
    assert attacked.mean() > _per_sample_loss(model, x_rand, y).mean()


def test_pgd_is_deterministic_under_a_fixed_seed():
    model, x, y = _linear_problem()
    torch.manual_seed(5)
    a = pgd(model, x, y, "l2", 0.5, 0.1, steps=3)
    torch.manual_seed(5)
    b = pgd(model, x, y, "l2", 0.5, 0.1, steps=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_init", [True, False])
def test_eps_zero_returns_the_input(norm, random_init):
    model, x, y = _linear_problem()
    x_adv = pgd(model, x, y, norm, 0.0, 0.1, steps=3, random_init=random_init)
    assert torch.equal(x_adv, x)


def test_zero_steps_without_random_start_returns_the_input():
    model, x, y = _linear_problem()
    assert torch.equal(pgd(model, x, y, "linf", 0.1, 0.1, steps=0, random_init=False), x)


@pytest.mark.parametrize("kwargs", [dict(eps=-0.1), dict(step_size=-0.01), dict(steps=-1), dict(norm="l1")])
def test_invalid_arguments_raise(kwargs):
    model, x, y = _linear_problem()
    args = dict(norm="linf", eps=0.1, step_size=0.01, steps=2) | kwargs
    with pytest.raises(ValueError):
        pgd(model, x, y, **args)


def test_project_l2_and_linf():
    delta = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    l2 = project(delta, "l2", 1.0)
    assert torch.allclose(l2[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(l2[1], delta[1])  # inside the ball: unchanged
    assert torch.equal(project(delta, "linf", 0.5), torch.tensor([[0.5, 0.5], [0.3, 0.4]]))


def test_pgd_does_not_touch_model_parameters_or_grads():
    model, x, y = _linear_problem()
    before = [p.detach().clone() for p in model.parameters()]
    pgd(model, x, y, "linf", 0.1, 0.05, steps=3)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(p.grad is None for p in model.parameters())


# --- batchnorm_mode -----------------------------------------------------------------------------

def _bn_model():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5), nn.Flatten(),
                         nn.Linear(8, 4), nn.BatchNorm1d(4))


def _modes(model):
    bns = [m.training for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    others = [m.training for m in model.modules() if not isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return bns, others


def test_batchnorm_mode_train_switches_only_batchnorm_and_restores():
    model = _bn_model().eval()
    with batchnorm_mode(model, "train"):
        bns, others = _modes(model)
        assert bns == [True, True] and not any(others)
        model(torch.rand(4, 1, 4, 4))  # updates running statistics in train mode
    assert _modes(model) == ([False, False], [False] * len(others))
    assert not torch.equal(model[1].running_mean, torch.zeros(2))


def test_batchnorm_mode_eval_switches_only_batchnorm_and_restores():
    model = _bn_model().train()
    with batchnorm_mode(model, "eval"):
        bns, others = _modes(model)
        assert bns == [False, False] and all(others)
        model(torch.rand(4, 1, 4, 4))
    assert torch.equal(model[1].running_mean, torch.zeros(2))  # eval mode: statistics untouched
    bns, others = _modes(model)
    assert all(bns) and all(others)


def test_batchnorm_mode_restores_mixed_modes_after_an_exception():
    model = _bn_model().train()
    model[1].eval()  # one BN in eval, one in train
    with pytest.raises(RuntimeError, match="inside"):
        with batchnorm_mode(model, "train"):
            assert model[1].training
            raise RuntimeError("inside")
    assert model[1].training is False and model[5].training is True and model.training is True


def test_batchnorm_mode_rejects_unknown_mode():
    with pytest.raises(ValueError, match="batchnorm mode"):
        with batchnorm_mode(_bn_model(), "frozen"):
            pass  # pragma: no cover
