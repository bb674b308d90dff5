"""Tests for common/layers/projection.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from common.layers.projection import ProjectionHead


def test_single_linear_layer_matches_hand_computation() -> None:
    head = ProjectionHead(3, 2)
    linear = head.net[1]
    assert isinstance(linear, nn.Linear)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]]))
        linear.bias.copy_(torch.tensor([0.5, 0.0]))
    out = head(torch.tensor([[1.0, 2.0, 3.0]]))
    torch.testing.assert_close(out, torch.tensor([[7.5, 1.0]]))


def test_two_layers_any_leading_shape_and_normalisation() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(8, 4, hidden_dim=16, num_layers=2, normalize=True)
    assert head.net[0].out_features == 16
    out = head(torch.randn(2, 3, 5, 8))
    assert out.shape == (2, 3, 5, 4)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 3, 5))
    assert ProjectionHead(8, 4, num_layers=2).net[0].out_features == 8  # hidden defaults to in_dim


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(6, 4, num_layers=2, dropout=0.1, normalize=True)
    head(torch.randn(5, 6)).sum(0).pow(2).sum().backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_dim=0, out_dim=4), "in_dim"),
        (dict(in_dim=4, out_dim=4, num_layers=3), "num_layers"),
        (dict(in_dim=4, out_dim=4, hidden_dim=8), "only used with num_layers=2"),
        (dict(in_dim=4, out_dim=4, num_layers=2, hidden_dim=0), "hidden_dim"),
        (dict(in_dim=4, out_dim=4, dropout=-0.1), "dropout"),
    ],
)
def test_bad_arguments_raise(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProjectionHead(**kwargs)


def test_wrong_input_width_raises() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        ProjectionHead(4, 2)(torch.randn(3, 5))
