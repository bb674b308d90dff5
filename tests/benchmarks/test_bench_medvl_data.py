"""The loader benchmark's CT-CLIP reference path equals a direct computation on a tiny volume."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_medvl_data.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_medvl_data", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ctclip_load_matches_block_mean_clip_scale_crop_pad(bench, tmp_path):
    # Source spacing exactly half the target: trilinear (align_corners=False) samples at 2i + 0.5, i.e. the mean
    # of each 2x2x2 block. Then clip to [-1000, 1000], / 1000, crop x 4 -> 3 (first 3), pad y 3 -> 4 with -1.
    rng = np.random.default_rng(0)
    stored = rng.integers(-1500, 1500, size=(8, 6, 4)).astype(np.int16)
    target_spacing = (0.75, 0.75, 1.5)
    image = nib.Nifti1Image(stored, np.diag([0.375, 0.375, 0.75, 1.0]))
    path = tmp_path / "tiny.nii.gz"
    nib.save(image, str(path))

    out = bench.ctclip_load(path, target_spacing=target_spacing, size=(3, 4, 2)).numpy()

    blocks = stored.astype(np.float64).reshape(4, 2, 3, 2, 2, 2).mean(axis=(1, 3, 5))  # (4, 3, 2)
    expected_core = np.clip(blocks, -1000, 1000) / 1000.0
    expected = np.full((3, 4, 2), -1.0)
    expected[:, :3, :] = expected_core[:3]  # crop x: start (4 - 3) // 2 = 0; pad y: offset (4 - 3) // 2 = 0
    assert out.shape == (1, 3, 4, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


def test_geometry_scales_the_full_size(bench):
    assert bench.geometry(512) == ((512, 512, 224), (480, 480, 240))
    assert bench.geometry(128) == ((128, 128, 56), (120, 120, 60))
