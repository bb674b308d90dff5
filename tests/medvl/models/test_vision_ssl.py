"""Tests for medvl.models.components.vision_ssl."""
from __future__ import annotations

import math

import pytest
import torch

from medvl.models.components.vision_ssl import (
    MaskedBlockReconstruction,
    RotationPrediction,
    ViewContrastive,
    mask_blocks,
    masked_l1_loss,
    random_intensity_views,
)
from medvl.models.components.volume_encoder import VolumeEncoder


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_grads(module: torch.nn.Module) -> None:
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------- rotation
def test_rotation_labels_match_the_applied_rotation_4_classes():
    x = torch.rand(16, 2, 3, 5, 5, generator=_gen(1))  # only the (H, W) plane must be square
    rotated, labels = RotationPrediction(8, num_classes=4).rotate_batch(x, generator=_gen(2))
    assert labels.dtype == torch.long and labels.shape == (16,)
    assert set(labels.tolist()) == {0, 1, 2, 3}  # 16 draws of 4 classes with this seed hit all of them
    for i, label in enumerate(labels.tolist()):
        assert torch.equal(rotated[i : i + 1], torch.rot90(x[i : i + 1], label, dims=(3, 4)))


def test_rotation_labels_match_the_applied_rotation_10_classes():
    # hand-written table: label -> (quarter turns, plane) for (B, C, D, H, W)
    table = [(0, (3, 4))] + [(k, plane) for plane in ((3, 4), (2, 4), (2, 3)) for k in (1, 2, 3)]
    x = torch.rand(40, 1, 4, 4, 4, generator=_gen(3))
    rotated, labels = RotationPrediction(8, num_classes=10).rotate_batch(x, generator=_gen(4))
    assert len(set(labels.tolist())) >= 8
    for i, label in enumerate(labels.tolist()):
        turns, dims = table[label]
        assert torch.equal(rotated[i : i + 1], torch.rot90(x[i : i + 1], turns, dims=dims))
    # the 10 rotations are distinct orientations of an asymmetric volume
    probe = torch.arange(64.0).view(1, 1, 4, 4, 4)
    orientations = {tuple(torch.rot90(probe, k, dims=d).flatten().tolist()) for k, d in table}
    assert len(orientations) == 10


def test_rotate_batch_is_seeded_and_rejects_non_square_planes():
    x = torch.rand(6, 1, 4, 4, 4)
    head = RotationPrediction(8)
    assert torch.equal(head.rotate_batch(x, _gen(5))[1], head.rotate_batch(x, _gen(5))[1])
    with pytest.raises(ValueError, match=r"\(H, W\) plane"):
        head.rotate_batch(torch.rand(2, 1, 4, 4, 6))
    with pytest.raises(ValueError, match="square"):
        RotationPrediction(8, num_classes=10).rotate_batch(torch.rand(2, 1, 3, 4, 4))


def test_rotation_loss_known_value_and_gradients():
    head = RotationPrediction(6, num_classes=4)
    torch.nn.init.zeros_(head.head.weight)
    torch.nn.init.zeros_(head.head.bias)
    features = torch.randn(5, 6, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 1])
    loss = head(features, labels)["rotation_loss"]
    torch.testing.assert_close(loss, torch.tensor(math.log(4.0)))  # uniform logits: CE = log(num_classes)
    loss.backward()
    _assert_grads(head)


def test_rotation_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_classes"):
        RotationPrediction(8, num_classes=6)
    head = RotationPrediction(8)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        head(torch.randn(2, 8), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="int64"):
        head(torch.randn(2, 8), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        head(torch.randn(2, 7), torch.tensor([0, 1]))


# ---------------------------------------------------------------------------------------- contrastive views
def test_random_intensity_views_shapes_range_and_determinism():
    x = torch.rand(3, 1, 6, 6, 6, generator=_gen(6))
    a, b = random_intensity_views(x, generator=_gen(7))
    a2, b2 = random_intensity_views(x, generator=_gen(7))
    assert a.shape == b.shape == x.shape
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert not torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    (same,) = random_intensity_views(x, 1, scale=0.0, shift=0.0, noise_std=0.0)
    assert torch.equal(same, x)
    with pytest.raises(ValueError):
        random_intensity_views(x, scale=1.5)


def test_view_contrastive_known_value_and_gradients():
    head = ViewContrastive(8, proj_dim=4)
    identical = torch.randn(1, 8).expand(5, 8)
    # every row projects to the same vector: all logits equal, loss = log(B)
    torch.testing.assert_close(head(identical, identical)["view_contrastive_loss"], torch.tensor(math.log(5.0)))
    a = torch.randn(4, 8, requires_grad=True)
    b = torch.randn(4, 8, requires_grad=True)
    loss = head(a, b)["view_contrastive_loss"]
    assert torch.isfinite(loss)
    loss.backward()
    _assert_grads(head)
    assert a.grad is not None and torch.isfinite(a.grad).all()
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        head(torch.randn(4, 8), torch.randn(3, 8))


# ------------------------------------------------------------------------------------ masked reconstruction
def test_mask_blocks_ratio_alignment_and_zero_fill():
    x = torch.rand(2, 2, 16, 16, 16, generator=_gen(8)) + 0.5  # no voxel is 0 before masking
    x_masked, masked = mask_blocks(x, block_size=4, mask_ratio=0.3, generator=_gen(9))
    assert masked.shape == (2, 1, 16, 16, 16) and masked.dtype == torch.bool
    # 64 blocks, round(0.3 * 64) = 19 of them, in every volume
    assert masked.flatten(1).sum(dim=1).tolist() == [19 * 64, 19 * 64]
    # every 4^3 block is hidden entirely or not at all
    per_block = masked.view(2, 4, 4, 4, 4, 4, 4).permute(0, 1, 3, 5, 2, 4, 6).reshape(2, 64, 64).float().mean(dim=2)
    assert set(per_block.unique().tolist()) <= {0.0, 1.0}
    expanded = masked.expand_as(x)  # the same voxels in every channel
    assert (x_masked[expanded] == 0).all()
    assert torch.equal(x_masked[~expanded], x[~expanded])
    assert not torch.equal(masked[0], masked[1])  # volumes draw their own blocks


def test_mask_blocks_uneven_sides_noise_fill_and_determinism():
    x = torch.full((3, 1, 10, 12, 9), 5.0)  # 5.0 is outside the noise range [0, 1)
    x_masked, masked = mask_blocks(x, block_size=(4, 4, 4), mask_ratio=0.5, generator=_gen(10), fill="noise")
    ratio = masked.float().mean().item()
    assert abs(ratio - 0.5) < 0.15  # edge blocks are cut by the border, so the share is approximate
    assert (x_masked[masked.expand_as(x)] < 1).all() and (x_masked[masked.expand_as(x)] >= 0).all()
    again, masked_again = mask_blocks(x, block_size=(4, 4, 4), mask_ratio=0.5, generator=_gen(10), fill="noise")
    assert torch.equal(again, x_masked) and torch.equal(masked_again, masked)


@pytest.mark.parametrize(
    "kwargs", [{"block_size": 0}, {"block_size": 20}, {"mask_ratio": 0.0}, {"mask_ratio": 1.0}, {"fill": "mean"}]
)
def test_mask_blocks_bad_arguments_raise(kwargs):
    args = {"block_size": 4, "mask_ratio": 0.3, **kwargs}
    with pytest.raises(ValueError):
        mask_blocks(torch.rand(1, 1, 16, 16, 16), **args)


def test_masked_l1_is_zero_on_exact_masked_voxels_and_positive_otherwise():
    target = torch.rand(2, 1, 8, 8, 8, generator=_gen(11))
    _, masked = mask_blocks(target, 4, 0.5, generator=_gen(12))
    prediction = torch.where(masked, target, torch.zeros_like(target))  # wrong only where nothing is hidden
    assert masked_l1_loss(prediction, target, masked).item() == 0.0
    shifted = torch.where(masked, target + 0.5, target)
    torch.testing.assert_close(masked_l1_loss(shifted, target, masked), torch.tensor(0.5))
    with pytest.raises(ValueError, match="no hidden voxel"):
        masked_l1_loss(target, target, torch.zeros_like(masked))
    with pytest.raises(ValueError, match="bool"):
        masked_l1_loss(target, target, masked.float())


def test_reconstruction_decoder_shapes_loss_and_gradients():
    head = MaskedBlockReconstruction(in_dim=6, upsample_factor=4, hidden_dim=16)
    tokens = torch.randn(2, 2 * 3 * 2, 6, requires_grad=True)
    assert head.decode(tokens, (2, 3, 2)).shape == (2, 1, 8, 12, 8)
    target = torch.rand(2, 1, 8, 12, 8)
    _, masked = mask_blocks(target, 4, 0.5, generator=_gen(13))
    loss = head(tokens, (2, 3, 2), target, masked)["reconstruction_loss"]
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    _assert_grads(head)
    with pytest.raises(ValueError, match="target must be"):
        head(tokens, (2, 3, 2), torch.rand(2, 1, 8, 8, 8), masked)
    with pytest.raises(ValueError, match="power of 2"):
        MaskedBlockReconstruction(6, upsample_factor=6)


# ---------------------------------------------------------------------------------------------- integration
def test_ssl_recipe_with_tiny_encoder_gives_finite_losses_and_encoder_gradients():
    torch.manual_seed(0)
    encoder = VolumeEncoder.from_preset("tiny", image_size=32, out_dim=16)
    rotation = RotationPrediction(16)
    contrastive = ViewContrastive(16, proj_dim=8)
    reconstruction = MaskedBlockReconstruction(16, upsample_factor=encoder.fine_stride)
    g = _gen(14)
    x = torch.rand(2, 1, 32, 32, 32, generator=g)
    view_a, view_b = random_intensity_views(x, generator=g)
    view_a, rot_a = rotation.rotate_batch(view_a, generator=g)
    view_b, rot_b = rotation.rotate_batch(view_b, generator=g)
    input_a, masked_a = mask_blocks(view_a, 8, 0.3, generator=g, fill="noise")
    input_b, _ = mask_blocks(view_b, 8, 0.3, generator=g, fill="noise")
    out_a, out_b = encoder(input_a), encoder(input_b)
    losses = {
        **rotation(torch.cat([out_a["pooled"], out_b["pooled"]]), torch.cat([rot_a, rot_b])),
        **contrastive(out_a["pooled"], out_b["pooled"]),
        **reconstruction(out_a["fine"], out_a["fine_grid"], view_a, masked_a),
    }
    assert set(losses) == {"rotation_loss", "view_contrastive_loss", "reconstruction_loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for module in (rotation, contrastive, reconstruction):
        _assert_grads(module)
    # the unused "coarse" / "tokens" projections get no gradient; the backbone does
    for name, parameter in encoder.backbone.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
