"""SeparableSpacingd reproduces MONAI Spacingd (grid, values, masks) without its coordinate grid."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Orientationd, Spacingd

from medvl.data.separable_spacing import SeparableSpacingd
from medvl.data.transforms import PreprocessConfig, build_preprocessing
from tests.medvl.data.nifti_helpers import diag_affine, save_nifti

KEYS = ["image", "organ_mask"]


def _case(affine: np.ndarray, shape=(13, 11, 9), seed=0) -> dict:
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.normal(size=shape).astype(np.float32))[None]
    mask = torch.from_numpy(rng.integers(0, 5, size=shape))[None]
    affine_t = torch.from_numpy(affine)
    data = {"image": MetaTensor(image, affine=affine_t), "organ_mask": MetaTensor(mask, affine=affine_t.clone())}
    return Orientationd(KEYS, axcodes="RAS", labels=None)(data)


@pytest.mark.parametrize(
    "affine, pixdim",
    [
        (diag_affine(1.5, 1.5, 2.0, origin=(3.0, -7.0, 11.0)), (2.0, 1.0, 3.0)),  # down, up, down
        (diag_affine(-0.7, -0.7, 1.25), (0.75, 0.75, 1.5)),  # LPS-stored (flipped by Orientationd), CT-CLIP target
        (diag_affine(2.0, 2.0, 2.0), (2.0, 2.0, 2.0)),  # identity
    ],
)
def test_matches_monai_spacingd(affine, pixdim):
    data = _case(affine)
    reference = Spacingd(KEYS, pixdim=pixdim, mode=("bilinear", "nearest"), padding_mode=("border", "zeros"))(data)
    ours = SeparableSpacingd(KEYS, pixdim=pixdim, mode=("bilinear", "nearest"), padding_mode=("border", "zeros"))(data)
    for key in KEYS:
        assert ours[key].shape == reference[key].shape
        np.testing.assert_allclose(ours[key].affine.numpy(), reference[key].affine.numpy(), atol=1e-9)
    assert ours["image"].dtype == torch.float32
    torch.testing.assert_close(ours["image"].as_tensor(), reference["image"].as_tensor().float(), atol=1e-5, rtol=0)
    assert torch.equal(ours["organ_mask"].as_tensor().long(), reference["organ_mask"].as_tensor().long())


def test_oblique_input_falls_back_to_monai():
    angle = np.deg2rad(10.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]) * 2
    data = _case(affine)
    reference = Spacingd(KEYS, pixdim=(3.0, 3.0, 3.0), mode=("bilinear", "nearest"),
                         padding_mode=("border", "zeros"))(data)
    ours = SeparableSpacingd(KEYS, pixdim=(3.0, 3.0, 3.0), mode=("bilinear", "nearest"),
                             padding_mode=("border", "zeros"))(data)
    torch.testing.assert_close(ours["image"].as_tensor(), reference["image"].as_tensor().float(), atol=1e-5, rtol=0)


def test_pipeline_with_and_without_inverse_record_agree(tmp_path):
    rng = np.random.default_rng(1)
    path = save_nifti(tmp_path / "ct.nii.gz", rng.integers(-1000, 1000, size=(20, 18, 10)).astype(np.int16),
                      diag_affine(-0.9, -0.9, 2.5))
    config = PreprocessConfig(spacing=(1.5, 1.5, 2.0), spatial_size=(16, 16, 16))
    invertible = build_preprocessing(config)({"image": path})["image"]
    fast = build_preprocessing(config, invertible=False)({"image": path})["image"]
    np.testing.assert_allclose(fast.affine.numpy(), invertible.affine.numpy(), atol=1e-9)
    torch.testing.assert_close(fast.as_tensor(), invertible.as_tensor(), atol=1e-5, rtol=0)


def test_bilinear_with_zero_padding_is_refused():
    with pytest.raises(ValueError, match="padding_mode"):
        SeparableSpacingd(["image"], pixdim=(1, 1, 1), mode=("bilinear",), padding_mode=("zeros",))
