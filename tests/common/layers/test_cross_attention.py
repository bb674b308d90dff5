"""Tests for common/layers/cross_attention.py."""
from __future__ import annotations

import pytest
import torch

from common.layers.cross_attention import CrossAttentionBlock, CrossAttentionFusion

DIM, KV_DIM, HEADS = 16, 12, 4


def _inputs(batch: int = 2, num_queries: int = 5, num_context: int = 7, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, num_queries, DIM, generator=generator)
    context = torch.randn(batch, num_context, KV_DIM, generator=generator)
    x_mask = torch.ones(batch, num_queries, dtype=torch.bool)
    x_mask[1, 3:] = False  # sample 1: 3 valid queries
    context_mask = torch.ones(batch, num_context, dtype=torch.bool)
    context_mask[0, 4:] = False  # sample 0: 4 valid visual tokens
    return x, x_mask, context, context_mask


def _block(**kwargs) -> CrossAttentionBlock:
    torch.manual_seed(0)
    return CrossAttentionBlock(DIM, HEADS, kv_dim=KV_DIM, **kwargs).eval()


@pytest.mark.parametrize("self_attention", [True, False])
def test_shapes_and_attention_rows_sum_to_one(self_attention: bool) -> None:
    x, x_mask, context, context_mask = _inputs()
    out, weights = _block(self_attention=self_attention)(x, x_mask, context, context_mask, return_attention=True)
    assert out.shape == (2, 5, DIM)
    assert weights.shape == (2, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))
    assert torch.isfinite(out).all()


def test_masks_default_to_all_valid() -> None:
    x, _, context, _ = _inputs()
    block = _block()
    full_x = torch.ones(2, 5, dtype=torch.bool)
    full_c = torch.ones(2, 7, dtype=torch.bool)
    torch.testing.assert_close(block(x, None, context, None), block(x, full_x, context, full_c))


def test_masked_context_gets_zero_attention_and_cannot_change_output() -> None:
    x, x_mask, context, context_mask = _inputs()
    block = _block()
    out, weights = block(x, x_mask, context, context_mask, return_attention=True)
    assert (weights[0, :, 4:] == 0).all()
    assert (weights[0, :, :4] > 0).all()
    changed = context.clone()
    changed[0, 4:] = 1000.0 * torch.randn(3, KV_DIM)
    torch.testing.assert_close(block(x, x_mask, changed, context_mask), out)


def test_padded_queries_do_not_change_valid_outputs() -> None:
    x, x_mask, context, context_mask = _inputs()
    block = _block(self_attention=True)
    out = block(x, x_mask, context, context_mask)
    changed = x.clone()
    changed[1, 3:] = 1000.0 * torch.randn(2, DIM)
    out_changed = block(changed, x_mask, context, context_mask)
    torch.testing.assert_close(out_changed[x_mask], out[x_mask])
    # Sanity check that the test can fail: without the mask the padded tokens do leak in.
    leaked = block(changed, None, context, context_mask)
    assert not torch.allclose(leaked[1, :3], out[1, :3], atol=1e-4)


def test_inference_fast_path_matches_autograd_path_and_keeps_masking() -> None:
    """Under no_grad, nn.MultiheadAttention takes its fused fast path; results must not change."""
    x, x_mask, context, context_mask = _inputs()
    block = _block(self_attention=True)
    expected = block(x, x_mask, context, context_mask)
    changed = x.clone()
    changed[1, 3:] = 1000.0
    with torch.no_grad():
        fast = block(x, x_mask, context, context_mask)
        fast_changed = block(changed, x_mask, context, context_mask)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_changed[x_mask], fast[x_mask])


def test_matches_reference_computation() -> None:
    """Fast path equals a hand-written pre-norm block built from the same weights (no self-attention)."""
    x, _, context, context_mask = _inputs()
    block = _block(self_attention=False)
    attn = block.cross_attn
    q = block.norm_query(x) @ attn.q_proj_weight.T + attn.in_proj_bias[:DIM]
    kv = block.norm_context(context)
    k = kv @ attn.k_proj_weight.T + attn.in_proj_bias[DIM : 2 * DIM]
    v = kv @ attn.v_proj_weight.T + attn.in_proj_bias[2 * DIM :]
    head = DIM // HEADS
    # (B, L, C) -> (B, H, L, C/H)
    q, k, v = (t.reshape(t.shape[0], t.shape[1], HEADS, head).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / head**0.5  # (B, H, L, M)
    scores = scores.masked_fill(~context_mask[:, None, None, :], float("-inf"))
    probs = scores.softmax(-1)
    h = (probs @ v).transpose(1, 2).reshape(2, 5, DIM)  # (B, H, L, C/H) -> (B, L, C)
    h = attn.out_proj(h)
    expected = x + h
    expected = expected + block.mlp(block.norm_mlp(expected))
    out, weights = block(x, None, context, context_mask, return_attention=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, probs.mean(1), atol=1e-6, rtol=1e-5)


def test_empty_context_sample_raises_instead_of_nan() -> None:
    x, x_mask, context, context_mask = _inputs()
    context_mask[1] = False
    with pytest.raises(ValueError, match=r"samples \[1\] have no valid context token"):
        _block()(x, x_mask, context, context_mask)
    x_mask[0] = False
    with pytest.raises(ValueError, match="no valid query token"):
        _block()(x, x_mask, context, torch.ones_like(context_mask))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: (t[0][..., :-1], *t[1:]), r"x must have shape \(B, L, 16\)"),
        (lambda t: (t[0], t[1], t[2][..., :-1], t[3]), r"context must have shape \(B, M, 12\)"),
        (lambda t: (t[0], t[1], t[2][:1], t[3][:1]), "batch size"),
        (lambda t: (t[0], t[1].float(), t[2], t[3]), "x_mask must be a bool tensor"),
        (lambda t: (t[0], t[1], t[2], t[3][:, :-1]), r"context_mask must have shape \(B, M\)"),
    ],
)
def test_bad_inputs_raise(change, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _block()(*change(_inputs()))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=10, num_heads=4), "divisible by num_heads"),
        (dict(dim=0, num_heads=1), "dim must be a positive int"),
        (dict(dim=8, num_heads=2, kv_dim=0), "kv_dim"),
        (dict(dim=8, num_heads=2, dropout=1.0), "dropout"),
        (dict(dim=8, num_heads=2, mlp_ratio=0.0), "mlp_ratio"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CrossAttentionBlock(**kwargs)


def test_fusion_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(DIM, depth=2, num_heads=HEADS, kv_dim=KV_DIM, dropout=0.1)
    x, x_mask, context, context_mask = _inputs()
    context.requires_grad_(True)
    out, attentions = fusion(x, x_mask, context, context_mask, return_attention=True)
    assert out.shape == (2, 5, DIM) and len(attentions) == 2
    assert all(a.shape == (2, 5, 7) for a in attentions)
    out[x_mask].pow(2).sum().backward()
    for name, parameter in fusion.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert context.grad[0, 4:].abs().sum() == 0  # masked visual tokens receive no gradient


def test_fusion_is_deterministic_and_checks_depth() -> None:
    x, x_mask, context, context_mask = _inputs()
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        fusion = CrossAttentionFusion(DIM, depth=2, num_heads=HEADS, kv_dim=KV_DIM).eval()
        outputs.append(fusion(x, x_mask, context, context_mask))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="depth"):
        CrossAttentionFusion(DIM, depth=0, num_heads=HEADS)
    context_mask[0] = False
    with pytest.raises(ValueError, match="no valid context token"):
        CrossAttentionFusion(DIM, depth=1, num_heads=HEADS, kv_dim=KV_DIM)(x, x_mask, context, context_mask)
