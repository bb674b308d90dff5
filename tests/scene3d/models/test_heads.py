"""ObjectClassHead and RelationPairHead: shapes, pair order matters, gradients, bad arguments."""
from __future__ import annotations

import pytest
import torch

from scene3d.models.components.heads import ObjectClassHead, RelationPairHead


def test_object_class_head_shapes_and_gradients():
    head = ObjectClassHead(8, 18, hidden_dim=4)
    logits = head(torch.randn(5, 8))
    assert logits.shape == (5, 18)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    with pytest.raises(ValueError):
        ObjectClassHead(8, 1)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        head(torch.randn(5, 4))


def test_relation_pair_head_is_directional():
    torch.manual_seed(0)
    head = RelationPairHead(8, 6)
    h = torch.randn(4, 8)
    forward = head(h, torch.tensor([0, 2]), torch.tensor([1, 3]))
    assert forward.shape == (2, 6)
    assert not torch.allclose(head(h, torch.tensor([1, 3]), torch.tensor([0, 2])), forward)  # (s, o) != (o, s)
    forward.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def test_relation_pair_head_bad_indices():
    head = RelationPairHead(8, 6)
    with pytest.raises(ValueError, match="outside"):
        head(torch.randn(4, 8), torch.tensor([0]), torch.tensor([4]))
    with pytest.raises(ValueError, match="integer"):
        head(torch.randn(4, 8), torch.tensor([0.0]), torch.tensor([1]))
    with pytest.raises(ValueError):
        RelationPairHead(0, 6)
