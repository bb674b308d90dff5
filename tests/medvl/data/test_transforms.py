"""Tests of medvl.data.transforms: preprocessing geometry / intensities and SSL augmentation."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medvl.data.transforms import (
    AugmentConfig,
    LoadVolumed,
    PreprocessConfig,
    build_augmentation,
    build_preprocessing,
)
from medvl.data.volume import Volume
from tests.medvl.data.nifti_helpers import diag_affine, save_nifti

KEEP_GRID = dict(spacing=None, spatial_size=None)  # orientation + windowing only: exact voxel checks


def _asymmetric_hu(shape=(6, 5, 4), seed=0) -> np.ndarray:
    """Distinct integer HU per voxel inside the window, so any flip / transpose is visible."""
    values = np.random.default_rng(seed).permutation(np.prod(shape)) * 10 - 900
    return values.reshape(shape).astype(np.int16)


def _run(config: PreprocessConfig, image, mask=None) -> dict:
    data = {"image": image} if mask is None else {"image": image, "organ_mask": mask}
    return build_preprocessing(config)(data)


@pytest.mark.parametrize(
    "diagonal, code",
    [((-2.0, 2.0, 3.0), "LAS"), ((-2.0, -2.0, 3.0), "LPS"), ((2.0, 2.0, -3.0), "RAI")],
)
def test_orientation_to_ras_moves_every_voxel_to_the_same_world_point(tmp_path, diagonal, code):
    hu = _asymmetric_hu()
    affine_in = diag_affine(*diagonal, origin=(10.0, -20.0, 5.0))
    assert "".join(nib.aff2axcodes(affine_in)) == code
    out = _run(PreprocessConfig(**KEEP_GRID), save_nifti(tmp_path / "v.nii.gz", hu, affine_in))["image"]

    affine_out = out.affine.numpy()
    assert "".join(nib.aff2axcodes(affine_out)) == "RAS"
    assert out.shape == (1, *hu.shape)
    # Reference: the input voxel at the same world point, (A_in^-1 A_out) applied to every output index.
    expected_scaled = (hu.astype(np.float64) + 1000.0) / 2000.0
    out_index = np.stack(np.meshgrid(*[np.arange(n) for n in hu.shape], indexing="ij"), -1).reshape(-1, 3)
    in_index = (np.linalg.inv(affine_in) @ affine_out @ np.c_[out_index, np.ones(len(out_index))].T)[:3].T
    in_index = np.rint(in_index).astype(int)
    got = out[0].numpy()[tuple(out_index.T)]
    np.testing.assert_allclose(got, expected_scaled[tuple(in_index.T)], atol=1e-6)
    # And a hand-made check of the flip: for LAS, input voxel i=0 (most Right) ends at i = X-1.
    if code == "LAS":
        np.testing.assert_allclose(out[0, -1].numpy(), expected_scaled[0], atol=1e-6)


def test_permuted_axes_are_transposed_to_ras(tmp_path):
    hu = _asymmetric_hu((6, 5, 4))
    affine_in = np.array([[0, 2.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 4.0, 0], [0, 0, 0, 1]])  # i -> A, j -> R: "ARS"
    out = _run(PreprocessConfig(**KEEP_GRID), save_nifti(tmp_path / "v.nii.gz", hu, affine_in))["image"]
    assert out.shape == (1, 5, 6, 4)
    np.testing.assert_allclose(out[0].numpy(), (hu.transpose(1, 0, 2) + 1000.0) / 2000.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out.affine.numpy()[:3, :3], axis=0), [2.0, 3.0, 4.0])


def test_output_shape_dtype_and_range(tmp_path):
    hu = np.random.default_rng(1).uniform(-1500, 2500, size=(20, 18, 10)).astype(np.float32)
    path = save_nifti(tmp_path / "v.nii.gz", hu, diag_affine(2.0, 2.0, 4.0))
    out = _run(PreprocessConfig(spacing=(4.0, 4.0, 4.0), spatial_size=(16, 12, 8)), path)["image"]
    assert out.shape == (1, 16, 12, 8)
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.max()) == 1.0  # values above the window are clipped to exactly 1


def test_spacing_change_preserves_physical_extent_and_values(tmp_path):
    shape, spacing = (20, 16, 10), (2.0, 2.5, 4.0)
    affine = diag_affine(*spacing, origin=(-7.0, 3.0, 11.0))
    # HU = 10 * x_world: a linear ramp is reproduced exactly by linear interpolation.
    x_world = affine[0, 0] * np.arange(shape[0]) + affine[0, 3]
    hu = np.broadcast_to((10.0 * x_world)[:, None, None], shape).astype(np.float32)
    path = save_nifti(tmp_path / "v.nii.gz", hu, affine)
    out = _run(PreprocessConfig(spacing=(4.0, 4.0, 2.0), spatial_size=None, hu_window=(-2000, 2000)), path)["image"]

    new_spacing = np.linalg.norm(out.affine.numpy()[:3, :3], axis=0)
    np.testing.assert_allclose(new_spacing, [4.0, 4.0, 2.0])
    # The span between the first and last voxel centres is kept to within one output voxel,
    # and the first voxel centre stays at the same world point.
    span_in = (np.array(shape) - 1) * np.array(spacing)
    span_out = (np.array(out.shape[1:]) - 1) * new_spacing
    assert np.all(np.abs(span_out - span_in) < new_spacing), (span_in, span_out)
    np.testing.assert_allclose(out.affine.numpy()[:3, 3], affine[:3, 3])
    # Interior voxels hold the ramp value of their own world x.
    affine_out = out.affine.numpy()
    assert np.count_nonzero(affine_out[:3, :3] - np.diag(np.diag(affine_out[:3, :3]))) == 0  # still axis-aligned
    x_out = affine_out[0, 0] * np.arange(out.shape[1]) + affine_out[0, 3]
    expected = (10.0 * x_out + 2000.0) / 4000.0
    inside = (x_out >= x_world.min()) & (x_out <= x_world.max())
    np.testing.assert_allclose(out[0, inside, 3, 5].numpy(), expected[inside], atol=1e-5)


def test_pad_value_is_air_not_mid_grey(tmp_path):
    hu = np.zeros((8, 8, 8), dtype=np.float32)  # water: 0.5 after a [-1000, 1000] window
    path = save_nifti(tmp_path / "v.nii.gz", hu, diag_affine(-5.0, 5.0, 5.0))
    out = _run(PreprocessConfig(spacing=(5.0, 5.0, 5.0), spatial_size=(12, 12, 12)), path)["image"][0]
    assert out.shape == (12, 12, 12)
    np.testing.assert_allclose(out[2:10, 2:10, 2:10].numpy(), 0.5)  # symmetric padding: 2 each side
    border = torch.ones_like(out, dtype=torch.bool)
    border[2:10, 2:10, 2:10] = False
    assert torch.all(out[border] == 0.0)


def test_resampling_does_not_pad_with_hu_zero(tmp_path):
    hu = np.full((7, 7, 7), -1000.0, dtype=np.float32)  # air everywhere
    path = save_nifti(tmp_path / "v.nii.gz", hu, diag_affine(3.0, 3.0, 3.0))
    out = _run(PreprocessConfig(spacing=(2.0, 2.0, 2.0), spatial_size=None), path)["image"]
    assert torch.all(out == 0.0)  # the extra edge of the finer grid is air, not water (0.5)


def test_crop_takes_the_centre(tmp_path):
    hu = np.full((10, 10, 10), -1000.0, dtype=np.float32)
    hu[3:7, 3:7, 3:7] = 1000.0
    path = save_nifti(tmp_path / "v.nii.gz", hu, diag_affine(1.0, 1.0, 1.0))
    out = _run(PreprocessConfig(spacing=None, spatial_size=(4, 4, 4)), path)["image"]
    assert torch.all(out == 1.0)


def test_foreground_crop_keeps_the_body_box(tmp_path):
    hu = np.full((16, 16, 16), -1000.0, dtype=np.float32)
    hu[2:7, 4:12, 9:15] = 40.0  # soft tissue block off-centre
    path = save_nifti(tmp_path / "v.nii.gz", hu, diag_affine(1.0, 1.0, 1.0))
    out = _run(PreprocessConfig(spacing=None, spatial_size=None, foreground_crop=True), path)["image"]
    assert tuple(out.shape[1:]) == (5, 8, 6)
    np.testing.assert_allclose(out.numpy(), 0.52)
    # The affine follows the crop: voxel 0 is the block's first voxel in world mm.
    np.testing.assert_allclose(out.affine.numpy()[:3, 3], [2.0, 4.0, 9.0])


def test_mask_follows_the_image_with_nearest_neighbour(tmp_path):
    labels = np.zeros((8, 8, 6), dtype=np.int16)
    labels[2:5, 1:6, 2:4] = 3
    hu = np.where(labels > 0, 1000.0, -1000.0).astype(np.float32)
    affine = diag_affine(-2.0, 2.0, 3.0)
    image_path = save_nifti(tmp_path / "v.nii.gz", hu, affine)
    mask_path = save_nifti(tmp_path / "m.nii.gz", labels, affine)

    same_grid = _run(PreprocessConfig(**KEEP_GRID), image_path, mask_path)
    mask = same_grid["organ_mask"]
    assert mask.dtype == torch.int64 and mask.shape == same_grid["image"].shape
    assert torch.equal(mask == 3, same_grid["image"] == 1.0)  # flipped together

    resampled = _run(PreprocessConfig(spacing=(1.0, 1.0, 1.0), spatial_size=(16, 16, 16)), image_path, mask_path)
    assert set(resampled["organ_mask"].unique().tolist()) == {0, 3}  # nearest: no blended label values
    assert resampled["organ_mask"].shape == resampled["image"].shape == (1, 16, 16, 16)


def test_mask_on_another_grid_is_refused(tmp_path):
    image_path = save_nifti(tmp_path / "v.nii.gz", np.zeros((8, 8, 6), np.float32), diag_affine(1, 1, 1))
    mask_path = save_nifti(tmp_path / "m.nii.gz", np.zeros((8, 8, 6), np.int16), diag_affine(2, 1, 1))
    with pytest.raises(RuntimeError) as info:
        _run(PreprocessConfig(), image_path, mask_path)
    assert "must share one voxel grid" in str(info.value.__cause__)


def test_load_volumed_gives_meta_tensor_with_affine(tmp_path):
    affine = diag_affine(-1.5, 2.0, 3.0, origin=(1.0, 2.0, 3.0))
    path = save_nifti(tmp_path / "v.nii.gz", _asymmetric_hu(), affine)
    out = LoadVolumed("image")({"image": path})["image"]
    assert isinstance(out, MetaTensor) and out.shape == (1, 6, 5, 4) and out.dtype == torch.float32
    np.testing.assert_allclose(out.affine.numpy(), affine)
    np.testing.assert_array_equal(out[0].numpy(), _asymmetric_hu())


def test_load_volumed_refuses_nan(tmp_path):
    def nan_loader(path):
        return Volume(array=np.full((2, 2, 2), np.nan, np.float32), affine=np.eye(4))

    with pytest.raises(ValueError, match="bad.nii.gz: volume contains NaN"):
        LoadVolumed("image", loader=nan_loader)({"image": tmp_path / "bad.nii.gz"})


def test_preprocess_config_to_dict_is_stable_and_json_ready():
    a = PreprocessConfig(spacing=[1, 1, 2], spatial_size=[8, 8, 8], hu_window=[-100, 100])
    b = PreprocessConfig(spacing=(1.0, 1.0, 2.0), spatial_size=(8, 8, 8), hu_window=(-100.0, 100.0))
    assert a == b and hash(a) == hash(b)
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())
    assert list(a.to_dict()) == sorted(a.to_dict())
    assert PreprocessConfig.from_dict(a.to_dict()) == a
    assert a.to_dict() != PreprocessConfig(spacing=(1.0, 1.0, 3.0), spatial_size=(8, 8, 8)).to_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(orientation="RAR"), "orientation"),
        (dict(spacing=(1.0, 0.0, 1.0)), "spacing"),
        (dict(spacing=(1.0, 1.0)), "spacing"),
        (dict(spatial_size=(8, 8, 8.5)), "spatial_size"),
        (dict(hu_window=(100, -100)), "hu_window"),
        (dict(foreground_crop=True, foreground_hu_threshold=-2000), "foreground_hu_threshold"),
        (dict(image_interpolation="cubic"), "image_interpolation"),
    ],
)
def test_preprocess_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PreprocessConfig(**kwargs)


def test_preprocess_config_from_dict_lists_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown preprocessing option\(s\) \['spacingg'\]"):
        PreprocessConfig.from_dict({"spacingg": (1, 1, 1)})


def _sample(size=8):
    mask = torch.zeros(1, size, size, size, dtype=torch.int64)
    mask[0, 1:4, 2:7, 0:3] = 2
    mask[0, 5:7, 0:2, 4:8] = 1
    image = MetaTensor(mask.float() / 2.0, affine=torch.eye(4, dtype=torch.float64))
    return {"image": image, "organ_mask": mask}


def test_augmentation_moves_image_and_mask_together():
    geometric_only = AugmentConfig(flip_prob=0.5, rotate90_prob=1.0, intensity_scale_prob=0.0,
                                   intensity_shift_prob=0.0, noise_prob=0.0)
    augment = build_augmentation(geometric_only, spatial_size=(8, 8, 8))
    changed = 0
    for seed in range(6):
        augment.set_random_state(seed)
        out = augment(_sample())
        assert out["image"].shape == (1, 8, 8, 8)
        assert torch.equal(out["image"].as_tensor(), out["organ_mask"].as_tensor().float() / 2.0)
        changed += not torch.equal(out["organ_mask"].as_tensor(), _sample()["organ_mask"])
    assert changed == 6  # a rotation (k >= 1) always happens with rotate90_prob=1


def test_augmentation_is_seeded_and_stays_in_unit_range():
    augment = build_augmentation(AugmentConfig(intensity_scale_prob=1.0, intensity_shift_prob=1.0, noise_prob=1.0))
    outs = []
    for _ in range(2):
        augment.set_random_state(123)
        outs.append(augment(_sample())["image"].as_tensor())
    assert torch.equal(outs[0], outs[1])
    assert float(outs[0].min()) >= 0.0 and float(outs[0].max()) <= 1.0
    assert not torch.equal(outs[0], _sample()["image"].as_tensor())


def test_augmentation_with_zero_probabilities_is_identity():
    off = AugmentConfig(flip_prob=0, rotate90_prob=0, intensity_scale_prob=0, intensity_shift_prob=0, noise_prob=0)
    out = build_augmentation(off)(_sample())
    assert torch.equal(out["image"].as_tensor(), _sample()["image"].as_tensor())


def test_augmentation_refuses_rotation_of_a_non_square_plane():
    with pytest.raises(ValueError, match="square plane"):
        build_augmentation(AugmentConfig(rotate90_axes=(0, 2)), spatial_size=(8, 8, 4))
    build_augmentation(AugmentConfig(rotate90_axes=(0, 1)), spatial_size=(8, 8, 4))  # square plane: fine


@pytest.mark.parametrize(
    "kwargs", [dict(flip_prob=1.5), dict(noise_std=-0.1), dict(rotate90_axes=(1, 1)), dict(rotate90_axes=(0, 3))]
)
def test_augment_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        AugmentConfig(**kwargs)
