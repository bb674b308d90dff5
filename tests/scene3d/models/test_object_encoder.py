"""PointNetObjectEncoder: shapes, point-order invariance, masked objects keep only their position, gradients."""
from __future__ import annotations

import pytest
import torch

from scene3d.models.components.object_encoder import PointNetObjectEncoder


def _inputs(n: int = 5, p: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, p, 6, generator=g), torch.randn(n, 3, generator=g), torch.rand(n, 3, generator=g)


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return PointNetObjectEncoder(dim=16, point_channels=(8, 12)).eval()


def test_shapes_and_point_order_invariance(encoder):
    points, centers, sizes = _inputs()
    out = encoder(points, centers, sizes)
    assert out.shape == (5, 16)
    shuffled = points[:, torch.randperm(points.shape[1])]
    torch.testing.assert_close(encoder(shuffled, centers, sizes), out)


def test_masked_object_depends_on_its_position_only(encoder):
    points, centers, sizes = _inputs()
    masked = torch.tensor([False, True, False, False, False])
    out = encoder(points, centers, sizes, masked)
    other_points, other_sizes = points.clone(), sizes.clone()
    other_points[1] = torch.randn(7, 6) * 5
    other_sizes[1] = torch.tensor([3.0, 0.01, 2.0])
    torch.testing.assert_close(encoder(other_points, centers, other_sizes, masked), out)  # own geometry hidden
    moved = centers.clone()
    moved[1] += 1.0
    assert not torch.allclose(encoder(points, moved, sizes, masked)[1], out[1])  # position still counts
    # an unmasked object does see its own points
    assert not torch.allclose(encoder(other_points, centers, other_sizes)[1], encoder(points, centers, sizes)[1])


def test_appearance_then_combine_equals_forward(encoder):
    points, centers, sizes = _inputs()
    masked = torch.tensor([True, False, False, True, False])
    torch.testing.assert_close(encoder.combine(encoder.appearance(points, sizes), centers, masked),
                               encoder(points, centers, sizes, masked))


def test_gradients_reach_every_parameter():
    encoder = PointNetObjectEncoder(dim=8, point_channels=(4,))
    points, centers, sizes = _inputs(4, 3)
    encoder(points, centers, sizes, torch.tensor([True, False, False, False])).square().sum().backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kwargs", [{"dim": 0}, {"point_channels": ()}, {"point_channels": (8, -1)},
                                    {"in_channels": 0}])
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError):
        PointNetObjectEncoder(**kwargs)


def test_bad_inputs(encoder):
    points, centers, sizes = _inputs()
    with pytest.raises(ValueError, match="points"):
        encoder(points[..., :3], centers, sizes)
    with pytest.raises(ValueError, match="P = 0"):
        encoder(points[:, :0], centers, sizes)
    with pytest.raises(ValueError, match="centers"):
        encoder(points, centers[:3], sizes)
    with pytest.raises(ValueError, match="masked"):
        encoder(points, centers, sizes, torch.zeros(5))
    bad = sizes.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        encoder(points, centers, bad)
