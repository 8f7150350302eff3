import pytest
import torch
import torch.nn.functional as F

from hf_advft.attacks import fgsm, pgd
from hf_advft.pixel_space import PixelSpace


EPS = 8 / 255


@pytest.fixture
def batch(digits16):
    x, y = digits16
    return x[:64], y[:64]


@pytest.mark.parametrize("norm,eps,step", [("linf", EPS, 2 / 255), ("l2", 0.5, 0.1)])
@pytest.mark.parametrize("restarts", [1, 3])
def test_pgd_stays_in_ball_and_in_range(trained_cnn, batch, norm, eps, step, restarts):
    x, y = batch
    x_adv = pgd(trained_cnn, x, y, epsilon=eps, step_size=step, steps=5, norm=norm, restarts=restarts)
    delta = (x_adv - x).flatten(1)
    measured = delta.abs().max(dim=1).values if norm == "linf" else delta.norm(dim=1)
    assert measured.max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert measured.max() > eps / 2  # the attack actually moved
    assert not x_adv.requires_grad


def test_pgd_raises_loss_and_more_steps_do_not_lower_it(trained_cnn, batch):
    x, y = batch
    clean = F.cross_entropy(trained_cnn(x), y).item()
    losses = []
    for steps in (1, 5, 20):
        torch.manual_seed(0)
        x_adv = pgd(trained_cnn, x, y, epsilon=EPS, step_size=EPS / 4, steps=steps, random_start=False)
        losses.append(F.cross_entropy(trained_cnn(x_adv), y).item())
    assert losses[0] > clean
    assert losses[0] <= losses[1] + 1e-4 <= losses[2] + 2e-4


def test_restarts_keep_per_example_worst(trained_cnn, batch):
    x, y = batch
    loss = lambda xa: F.cross_entropy(trained_cnn(xa), y, reduction="none")  # noqa: E731
    g = torch.Generator().manual_seed(1)
    single = pgd(trained_cnn, x, y, epsilon=EPS, step_size=2 / 255, steps=2, generator=g)
    g = torch.Generator().manual_seed(1)
    multi = pgd(trained_cnn, x, y, epsilon=EPS, step_size=2 / 255, steps=2, restarts=4, generator=g)
    # With the same generator the first restart equals `single`: the kept example is never worse.
    assert torch.all(loss(multi) >= loss(single) - 1e-5)
    assert torch.any(loss(multi) > loss(single) + 1e-5)


def test_attack_never_touches_parameter_grads(trained_cnn, batch):
    x, y = batch
    for p in trained_cnn.parameters():
        p.grad = torch.full_like(p, 7.0)
    pgd(trained_cnn, x, y, epsilon=EPS, step_size=2 / 255, steps=3)
    assert all(torch.all(p.grad == 7.0) for p in trained_cnn.parameters())
    for p in trained_cnn.parameters():
        p.grad = None


def test_k_steps_cost_k_forward_backward_passes(trained_cnn, batch):
    x, y = batch
    calls = {"fwd": 0, "bwd": 0}

    def logits_fn(z):
        calls["fwd"] += 1
        z.register_hook(lambda g: calls.__setitem__("bwd", calls["bwd"] + 1))
        return trained_cnn(z)

    pgd(logits_fn, x, y, epsilon=EPS, step_size=2 / 255, steps=7)
    assert calls == {"fwd": 7, "bwd": 7}


def test_fgsm_is_one_step(trained_cnn, batch):
    x, y = batch
    x_adv = fgsm(trained_cnn, x, y, epsilon=EPS)
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert F.cross_entropy(trained_cnn(x_adv), y) > F.cross_entropy(trained_cnn(x), y)


def test_epsilon_zero_returns_input(trained_cnn, batch):
    x, y = batch
    assert torch.equal(pgd(trained_cnn, x, y, epsilon=0.0, step_size=1 / 255, steps=3), x)


def test_normalized_model_gives_same_delta_as_pixel_model(trained_cnn, batch):
    x, y = batch
    space = PixelSpace(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), source="test")

    mean = torch.tensor(space.mean).view(3, 1, 1)
    std = torch.tensor(space.std).view(3, 1, 1)

    # The same model, written as one that expects normalized inputs (as a pretrained ViT or ResNet does).
    def normalized_model(z):
        return trained_cnn(z * std + mean)

    g = torch.Generator().manual_seed(3)
    direct = pgd(trained_cnn, x, y, epsilon=EPS, step_size=2 / 255, steps=5, generator=g)
    g = torch.Generator().manual_seed(3)
    wrapped = pgd(space.wrap(normalized_model), x, y, epsilon=EPS, step_size=2 / 255, steps=5, generator=g)
    assert torch.allclose(direct, wrapped, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(epsilon=8, step_size=2 / 255, steps=3), "8/255"),
        (dict(epsilon=-0.1, step_size=2 / 255, steps=3), "epsilon"),
        (dict(epsilon=EPS, step_size=2 / 255, steps=0), "steps"),
        (dict(epsilon=EPS, step_size=0, steps=3), "step_size"),
        (dict(epsilon=EPS, step_size=2 / 255, steps=3, norm="l1"), "norm"),
        (dict(epsilon=EPS, step_size=2 / 255, steps=3, restarts=0), "restarts"),
    ],
)
def test_bad_attack_arguments(trained_cnn, batch, kwargs, match):
    x, y = batch
    with pytest.raises(ValueError, match=match):
        pgd(trained_cnn, x, y, **kwargs)
