"""SceneGraphEncoder: shapes, edge types matter, node-permutation equivariance, batching, gradients, bad inputs."""
from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from scene3d.models.components.graph_encoder import SceneGraphEncoder, symlog

R, G = 5, 3


def _graph(n: int = 4, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.tensor([[0, 1, 1, 2, 3, 0], [1, 0, 2, 1, 0, 3]])[:, : 2 * (n - 1)]
    e = edge_index.shape[1]
    return Data(x=torch.randn(n, 8, generator=g), edge_index=edge_index,
                edge_attr=(torch.rand(e, R, generator=g) > 0.5).float(), edge_geom=torch.randn(e, G, generator=g))


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return SceneGraphEncoder(dim=8, num_layers=2, num_heads=2, num_relations=R, geometry_dim=G).eval()


def _run(encoder, data):
    return encoder(data.x, data.edge_index, data.edge_attr, data.edge_geom)


def test_symlog_known_values():
    torch.testing.assert_close(symlog(torch.tensor([0.0, 1.0, -math.e + 1])), torch.tensor([0.0, math.log(2), -1.0]))


def test_output_shape_and_edge_types_change_the_output(encoder):
    data = _graph()
    out = _run(encoder, data)
    assert out.shape == (4, 8)
    flipped = data.clone()
    flipped.edge_attr = 1.0 - flipped.edge_attr  # other relation types on the same pairs
    changed = _run(encoder, flipped)
    receivers = data.edge_index[1].unique()
    assert not torch.allclose(changed[receivers], out[receivers])
    no_edges = data.clone()
    no_edges.edge_index, no_edges.edge_attr, no_edges.edge_geom = (
        torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, R), torch.zeros(0, G))
    assert not torch.allclose(_run(encoder, no_edges), out)  # messages matter


def test_node_permutation_equivariance(encoder):
    data = _graph()
    perm = torch.tensor([2, 0, 3, 1])  # new node i = old node perm[i]
    inverse = torch.argsort(perm)
    permuted = Data(x=data.x[perm], edge_index=inverse[data.edge_index], edge_attr=data.edge_attr,
                    edge_geom=data.edge_geom)
    torch.testing.assert_close(_run(encoder, permuted), _run(encoder, data)[perm], atol=1e-5, rtol=1e-5)


def test_batched_graphs_equal_separate_graphs(encoder):
    graphs = [_graph(4, 0), _graph(3, 1)]
    batch = Batch.from_data_list(graphs)
    together = _run(encoder, batch)
    torch.testing.assert_close(together, torch.cat([_run(encoder, g) for g in graphs]), atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    encoder = SceneGraphEncoder(dim=8, num_layers=2, num_heads=2, num_relations=R, geometry_dim=G)
    _run(encoder, _graph()).square().sum().backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kwargs", [{"dim": 6, "num_heads": 4}, {"num_layers": 0}, {"num_relations": 0},
                                    {"dropout": 1.0}, {"ffn_ratio": 0}])
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError):
        SceneGraphEncoder(**{"dim": 8, "num_heads": 2, **kwargs})


def test_bad_inputs(encoder):
    data = _graph()
    with pytest.raises(ValueError, match="outside"):
        encoder(data.x, data.edge_index + 10, data.edge_attr, data.edge_geom)
    with pytest.raises(ValueError, match="relation_flags"):
        encoder(data.x, data.edge_index, data.edge_attr[:, :2], data.edge_geom)
    with pytest.raises(ValueError, match="edge_geometry"):
        encoder(data.x, data.edge_index, data.edge_attr, data.edge_geom[:-1])
    bad = data.edge_geom.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="inf"):
        encoder(data.x, data.edge_index, data.edge_attr, bad)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        encoder(data.x[:, :4], data.edge_index, data.edge_attr, data.edge_geom)
