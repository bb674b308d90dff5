"""Single-process tests for ClipInfoNCELoss (the 2-process DDP equivalence lives in test_contrastive_ddp.py)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from common.losses.contrastive import ClipInfoNCELoss

# 2x2 case: a = identity, b rows normalise to (0.6, 0.8) and (0, 1); temperature 0.5 -> logit scale 2.
A = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
B = torch.tensor([[3.0, 4.0], [0.0, 2.0]])


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(z) for z in logits))


def test_known_value_2x2() -> None:
    loss_fn = ClipInfoNCELoss(init_temperature=0.5)
    # a -> b logits: 2 * [[0.6, 0], [0.8, 1]]; b -> a logits are the transpose
    a_to_b = _ce([1.2, 0.0], 0) + _ce([1.6, 2.0], 1)
    b_to_a = _ce([1.2, 1.6], 0) + _ce([0.0, 2.0], 1)
    expected = (a_to_b + b_to_a) / 4
    loss = loss_fn(A, B)
    assert set(loss) == {"contrastive_loss"} and loss["contrastive_loss"].shape == ()
    assert loss["contrastive_loss"].item() == pytest.approx(expected, rel=1e-6)
    assert float(loss_fn.logit_scale) == pytest.approx(2.0)


def test_label_smoothing_known_value() -> None:
    eps = 0.2
    loss_fn = ClipInfoNCELoss(init_temperature=0.5, label_smoothing=eps)

    def smoothed(logits: list[float], target: int) -> float:
        # (1 - eps) * NLL of the target + eps * mean NLL over all classes
        return (1 - eps) * _ce(logits, target) + eps * sum(_ce(logits, k) for k in range(len(logits))) / len(logits)

    rows = [([1.2, 0.0], 0), ([1.6, 2.0], 1), ([1.2, 1.6], 0), ([0.0, 2.0], 1)]
    expected = sum(smoothed(z, t) for z, t in rows) / 4
    assert loss_fn(A, B)["contrastive_loss"].item() == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(ClipInfoNCELoss(init_temperature=0.5)(A, B)["contrastive_loss"].item())


def test_matches_naive_reference_and_similarity() -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=generator), torch.randn(5, 8, generator=generator)
    loss_fn = ClipInfoNCELoss(loss_name="report_loss")
    scale = 1 / 0.07
    logits = scale * torch.stack([torch.stack([F.cosine_similarity(x, y, dim=0) for y in b]) for x in a])
    labels = torch.arange(5)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(loss_fn(a, b)["report_loss"], expected)
    torch.testing.assert_close(loss_fn.similarity(a, b), logits)
    assert loss_fn.similarity(a[:2], b).shape == (2, 5)


def test_temperature_clamp() -> None:
    loss_fn = ClipInfoNCELoss(init_temperature=0.07, max_logit_scale=100.0)
    assert float(loss_fn.logit_scale) == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        loss_fn.log_logit_scale.fill_(math.log(1000.0))
    assert float(loss_fn.logit_scale) == pytest.approx(100.0, rel=1e-5)
    torch.testing.assert_close(loss_fn.similarity(A, A), 100.0 * torch.eye(2))
    with torch.no_grad():
        loss_fn.log_logit_scale.fill_(-3.0)
    assert float(loss_fn.logit_scale) == pytest.approx(1.0)


def test_gradient_reaches_logit_scale_and_inputs() -> None:
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(4, 6, generator=generator, requires_grad=True)
    b = torch.randn(4, 6, generator=generator, requires_grad=True)
    loss_fn = ClipInfoNCELoss()
    loss_fn(a, b)["contrastive_loss"].backward()
    for grad in (loss_fn.log_logit_scale.grad, a.grad, b.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # outside the clamp range the scale is constant, so no gradient reaches it
    with torch.no_grad():
        loss_fn.log_logit_scale.fill_(math.log(500.0))
    loss_fn.log_logit_scale.grad = None
    loss_fn(a, b)["contrastive_loss"].backward()
    assert loss_fn.log_logit_scale.grad.item() == 0.0


def test_fixed_temperature_is_a_buffer() -> None:
    loss_fn = ClipInfoNCELoss(learnable_temperature=False)
    assert list(loss_fn.parameters()) == []
    assert "log_logit_scale" in loss_fn.state_dict()
    assert not loss_fn.logit_scale.requires_grad
    assert not ClipInfoNCELoss().logit_scale.requires_grad  # detached: safe to float() / log


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init_temperature": 0.0}, "init_temperature"),
        ({"init_temperature": -0.1}, "init_temperature"),
        ({"init_temperature": float("nan")}, "init_temperature"),
        ({"init_temperature": 0.001}, "above max_logit_scale"),
        ({"max_logit_scale": 0.5}, "max_logit_scale"),
        ({"label_smoothing": -0.1}, "label_smoothing"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"loss_name": "contrastive"}, "_loss"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClipInfoNCELoss(**kwargs)


@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [((4,), (4,)), ((2, 3), (2, 4)), ((2, 3), (3, 3)), ((0, 3), (0, 3)), ((2, 3, 1), (2, 3, 1))],
)
def test_bad_inputs_raise(a_shape: tuple, b_shape: tuple) -> None:
    with pytest.raises(ValueError, match=r"two \(B, C\) tensors"):
        ClipInfoNCELoss()(torch.ones(a_shape), torch.ones(b_shape))
    if len(a_shape) != 2:
        with pytest.raises(ValueError, match="similarity expects"):
            ClipInfoNCELoss().similarity(torch.ones(a_shape), torch.ones(b_shape))


def test_single_pair_is_zero_and_determinism() -> None:
    # one pair: the only candidate is the positive, so the loss is exactly 0
    single_pair = ClipInfoNCELoss()(torch.randn(1, 4), torch.randn(1, 4))["contrastive_loss"]
    assert single_pair.item() == pytest.approx(0.0, abs=1e-7)
    losses = []
    for _ in range(2):
        torch.manual_seed(123)
        a, b = torch.randn(6, 5), torch.randn(6, 5)
        losses.append(ClipInfoNCELoss(label_smoothing=0.1)(a, b)["contrastive_loss"])
    assert torch.equal(losses[0], losses[1])
