"""ObjectwiseEncoder (no-graph ablation): no exchange between objects, matched parameter budget."""
from __future__ import annotations

import pytest
import torch

from scene3d.models.components.graph_encoder import SceneGraphEncoder
from scene3d.models.components.objectwise_encoder import ObjectwiseEncoder, matched_hidden_dim


def test_objects_do_not_see_each_other_and_edges_are_ignored():
    torch.manual_seed(0)
    encoder = ObjectwiseEncoder(dim=8, num_layers=2, hidden_dim=16).eval()
    x = torch.randn(4, 8)
    out = encoder(x)
    assert out.shape == (4, 8)
    changed = x.clone()
    changed[2] += 3.0
    torch.testing.assert_close(encoder(changed)[[0, 1, 3]], out[[0, 1, 3]])
    edges = torch.tensor([[0, 1], [1, 0]])
    torch.testing.assert_close(encoder(x, edges, torch.ones(2, 3), torch.ones(2, 2)), out)


@pytest.mark.parametrize("dim,layers", [(64, 3), (32, 2), (128, 4)])
def test_matched_hidden_dim_matches_the_graph_encoder_budget(dim, layers):
    graph = SceneGraphEncoder(dim=dim, num_layers=layers, num_heads=4)
    budget = sum(p.numel() for p in graph.parameters())
    objectwise = ObjectwiseEncoder(dim, layers, matched_hidden_dim(budget, dim, layers))
    assert sum(p.numel() for p in objectwise.parameters()) == pytest.approx(budget, rel=0.01)


def test_gradients_reach_every_parameter():
    encoder = ObjectwiseEncoder(dim=8, num_layers=2, hidden_dim=4)
    encoder(torch.randn(3, 8)).square().sum().backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_bad_arguments():
    with pytest.raises(ValueError):
        ObjectwiseEncoder(dim=0)
    with pytest.raises(ValueError):
        ObjectwiseEncoder(hidden_dim=0)
    with pytest.raises(ValueError):
        matched_hidden_dim(0, 8, 2)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        ObjectwiseEncoder(dim=8)(torch.zeros(3, 4))
