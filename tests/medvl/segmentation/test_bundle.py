"""The MONAI bundle runs with MONAI alone (a subprocess) and gives the same labels as SlidingWindowSegmenter."""
from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from medvl.data.transforms import PreprocessConfig
from medvl.segmentation.bundle import write_bundle
from medvl.segmentation.inference import SlidingWindowSegmenter
from medvl.segmentation.network import build_segmentation_network, network_spec

from .conftest import LPS_AFFINE, synthetic_case, write_nifti

CLASS_NAMES = ["background", "liver", "spleen"]
PREPROCESS = PreprocessConfig(spacing=(6.0, 6.0, 6.0), hu_window=(-900.0, 1100.0))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    spec = network_spec(architecture={"preset": "tiny", "depths": [1, 1, 1, 1]})
    network = build_segmentation_network(spec, len(CLASS_NAMES)).eval()
    folder = write_bundle(network, root / "bundle", network_spec=spec, class_names=CLASS_NAMES, preprocess=PREPROCESS,
                          roi_size=(64, 64, 64), overlap=0.25)
    hu, _ = synthetic_case(shape=(44, 40, 24))
    image = write_nifti(hu, LPS_AFFINE, root / "ct.nii.gz")
    return folder, network, image, root


def _expressions(node) -> list[str]:
    if isinstance(node, dict):
        return [e for value in node.values() for e in _expressions(value)]
    if isinstance(node, list):
        return [e for value in node for e in _expressions(value)]
    return [node] if isinstance(node, str) else []


def test_bundle_layout_and_only_monai_torch_references(bundle):
    folder, network, _, _ = bundle
    config = json.loads((folder / "configs" / "inference.json").read_text())
    metadata = json.loads((folder / "configs" / "metadata.json").read_text())
    state = torch.load(folder / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in network.state_dict().items())
    assert metadata["pred_classes"] == {"0": "background", "1": "liver", "2": "spleen"}
    assert metadata["network_data_format"]["inputs"]["image"]["spatial_shape"] == [64, 64, 64]
    assert config["network_def"]["_target_"] == "monai.networks.nets.SwinUNETR"
    assert not any("medvl" in text or "common." in text for text in _expressions(config))


def test_bundle_runs_in_a_subprocess_like_our_segmenter(bundle, tmp_path):
    folder, network, image, _ = bundle
    command = ("from monai.bundle import run; run(config_file='configs/inference.json', "
               f"input_file={str(image)!r}, output_dir={str(tmp_path)!r})")
    result = subprocess.run([sys.executable, "-c", command], cwd=folder, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = nib.load(tmp_path / "ct_seg.nii.gz")
    source = nib.load(image)
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    assert written.shape == source.shape
    expected = SlidingWindowSegmenter(network, PREPROCESS, (64, 64, 64), CLASS_NAMES, overlap=0.25).predict(image)
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected.labels)


def test_bundle_runs_with_the_monai_bundle_command(bundle, tmp_path):
    pytest.importorskip("fire", reason="`python -m monai.bundle` needs the `fire` package")
    folder, _, image, _ = bundle
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
         "--input_file", str(image), "--output_dir", str(tmp_path)],
        cwd=folder, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(nib.load(tmp_path / "ct_seg.nii.gz").affine, nib.load(image).affine, atol=1e-5)


def test_channel_count_must_match_the_class_names(bundle, tmp_path):
    _, network, _, _ = bundle
    with pytest.raises(ValueError, match="3 output channels but 2 class names"):
        write_bundle(network, tmp_path, network_spec=network_spec(architecture={"preset": "tiny"}),
                     class_names=["background", "liver"], preprocess=PREPROCESS, roi_size=(64, 64, 64))
