"""SlidingWindowSegmenter: windows on volumes larger than the crop, and labels back on the input's own grid."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from medvl.data.transforms import PreprocessConfig
from medvl.segmentation.inference import SlidingWindowSegmenter

from .conftest import LPS_AFFINE, synthetic_case, write_nifti


class Threshold(nn.Module):
    """Voxel-wise two-class 'network': class 1 where the scaled intensity is above 0.5 (HU > 0 for [-1000, 1000])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1) * 20.0


def test_windows_over_a_larger_volume_equal_one_pass_of_a_voxelwise_network():
    image = torch.rand(1, 1, 70, 50, 40, generator=torch.Generator().manual_seed(0))
    segmenter = SlidingWindowSegmenter(Threshold(), PreprocessConfig(), (32, 32, 32), ["background", "dense"])
    probabilities = segmenter.probabilities(image)
    assert probabilities.shape == (1, 2, 70, 50, 40)
    torch.testing.assert_close(probabilities, torch.softmax(Threshold()(image), dim=1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(1, 70, 50, 40))


def test_prediction_of_an_lps_file_comes_back_exactly_on_its_grid(tmp_path):
    hu, _ = synthetic_case()
    path = write_nifti(hu, LPS_AFFINE, tmp_path / "ct.nii.gz")
    segmenter = SlidingWindowSegmenter(Threshold(), PreprocessConfig(spacing=(3.0, 3.0, 3.0)), (16, 16, 16),
                                       ["background", "dense"])
    prediction = segmenter.predict(path)
    # same spacing: reorienting to RAS and back is a pure permutation, so the labels are exact
    np.testing.assert_array_equal(prediction.labels, (hu > 0).astype(np.uint8))
    np.testing.assert_allclose(prediction.affine, LPS_AFFINE)
    written = nib.load(segmenter.predict_to_file(path, tmp_path / "out" / "ct_seg.nii.gz"))
    np.testing.assert_allclose(written.affine, LPS_AFFINE)
    np.testing.assert_array_equal(np.asarray(written.dataobj), prediction.labels)


def test_prediction_after_resampling_has_the_input_shape_and_affine(tmp_path):
    hu, _ = synthetic_case()
    path = write_nifti(hu, LPS_AFFINE, tmp_path / "ct.nii.gz")
    segmenter = SlidingWindowSegmenter(Threshold(), PreprocessConfig(spacing=(5.0, 5.0, 5.0)), (16, 16, 16),
                                       ["background", "dense"])
    prediction = segmenter.predict(path)
    assert prediction.labels.shape == hu.shape
    np.testing.assert_allclose(prediction.affine, LPS_AFFINE)
    assert (prediction.labels == (hu > 0)).mean() > 0.9  # 3 -> 5 -> 3 mm blurs only the boundaries


def test_bad_arguments():
    with pytest.raises(ValueError, match="overlap"):
        SlidingWindowSegmenter(Threshold(), PreprocessConfig(), (16, 16, 16), ["a", "b"], overlap=1.0)
    with pytest.raises(ValueError, match="blend_mode"):
        SlidingWindowSegmenter(Threshold(), PreprocessConfig(), (16, 16, 16), ["a", "b"], blend_mode="max")
    with pytest.raises(ValueError, match="roi_size"):
        SlidingWindowSegmenter(Threshold(), PreprocessConfig(), (16, 16), ["a", "b"])
    segmenter = SlidingWindowSegmenter(Threshold(), PreprocessConfig(), (16, 16, 16), ["a", "b", "c"])
    with pytest.raises(ValueError, match="2 channels but 3 class names"):
        segmenter.probabilities(torch.rand(1, 1, 16, 16, 16))
