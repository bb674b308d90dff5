"""Sliding-window segmentation of whole CT volumes, with the prediction mapped back onto the input's own grid.

    volume file --build_preprocessing (no crop / pad)--> (1, D, H, W) in [0, 1]
        --monai sliding_window_inference (roi_size windows, Gaussian blending)--> (K, D, H, W) logits --softmax-->
        --monai Invertd (undoes Spacingd / Orientationd / crops, bilinear on the probabilities)-->
        (K, X, Y, Z) on the input's voxel grid --argmax--> label map, saved as NIfTI with the input's affine

The same steps, written with MONAI classes only, make up a bundle's ``configs/inference.json`` (see
``medvl.segmentation.bundle``), so that both give the same labels.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Invertd
from monai.utils.enums import MetaKeys
from torch import Tensor, nn

from medvl.data.transforms import IMAGE_KEY, PreprocessConfig, build_preprocessing

__all__ = ["BLEND_MODES", "PREDICTION_KEY", "SegmentationPrediction", "SlidingWindowSegmenter", "sliding_window_logits"]

PREDICTION_KEY = "pred"
BLEND_MODES = ("gaussian", "constant")


def sliding_window_logits(
    network: nn.Module,
    image: Tensor,
    roi_size: Sequence[int],
    *,
    sw_batch_size: int = 2,
    overlap: float = 0.5,
    blend_mode: str = "gaussian",
) -> Tensor:
    """Logits of a volume of any size from ``roi_size`` windows (padded where the volume is smaller).

    Shapes:
        image: (B, C, D, H, W) -> (B, K, D, H, W)
    """
    logits = sliding_window_inference(
        image, roi_size=list(roi_size), sw_batch_size=sw_batch_size, predictor=network, overlap=overlap,
        mode=blend_mode,
    )
    return logits.as_tensor() if isinstance(logits, MetaTensor) else logits


@dataclass
class SegmentationPrediction:
    """A predicted label map on the input volume's voxel grid.

    Attributes:
        labels: (X, Y, Z) uint8 (int16 above 256 classes) class indices, 0 = background, voxel order of ``affine``.
        affine: (4, 4) float64, voxel -> RAS world mm: the input volume's own affine.
        class_names: name of each class index.
    """

    labels: np.ndarray
    affine: np.ndarray
    class_names: list[str]

    def save(self, path: str | Path) -> Path:
        """Write the label map as NIfTI (qform and sform = ``affine``); parent folders are created."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        image = nib.Nifti1Image(self.labels, self.affine)
        image.header.set_xyzt_units("mm")
        image.set_qform(self.affine, code=1)
        image.set_sform(self.affine, code=1)
        nib.save(image, str(path))
        return path


class SlidingWindowSegmenter:
    """Segment CT files (NIfTI or DICOM folder) with a network trained on preprocessed crops.

    Args:
        network: (B, 1, d, h, w) -> (B, K, d, h, w) logits, e.g. a fine-tuned SwinUNETR.
        preprocess: the training preprocessing (``PreprocessConfig`` or its dict); its spatial_size is ignored
            (whole volumes are segmented with sliding windows).
        roi_size: window size (the training crop size).
        class_names: one name per output channel (index 0 = background).
        sw_batch_size: windows per forward pass.
        overlap: window overlap fraction in [0, 1).
        blend_mode: "gaussian" (weights fall off toward a window's border) or "constant".
        device: where the network runs.

    Raises:
        ValueError: bad roi_size, overlap, blend mode, or class_names of the wrong length (checked on use).
    """

    def __init__(
        self,
        network: nn.Module,
        preprocess: PreprocessConfig | Mapping[str, Any],
        roi_size: Sequence[int],
        class_names: Sequence[str],
        *,
        sw_batch_size: int = 2,
        overlap: float = 0.5,
        blend_mode: str = "gaussian",
        device: str | torch.device = "cpu",
    ) -> None:
        config = preprocess if isinstance(preprocess, PreprocessConfig) else PreprocessConfig.from_dict(preprocess)
        self.preprocess = PreprocessConfig.from_dict({**config.to_dict(), "spatial_size": None})
        self.roi_size = [int(s) for s in roi_size]
        if len(self.roi_size) != 3 or min(self.roi_size) < 1:
            raise ValueError(f"roi_size must be 3 positive sides, got {list(roi_size)}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if blend_mode not in BLEND_MODES:
            raise ValueError(f"blend_mode must be one of {BLEND_MODES}, got {blend_mode!r}")
        if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be an int >= 1, got {sw_batch_size!r}")
        self.network = network
        self.class_names = list(class_names)
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap
        self.blend_mode = blend_mode
        self.device = torch.device(device)
        self.pipeline = build_preprocessing(self.preprocess)
        self.inverter = Invertd(keys=PREDICTION_KEY, transform=self.pipeline, orig_keys=IMAGE_KEY,
                                nearest_interp=False, to_tensor=True)

    @torch.no_grad()
    def probabilities(self, image: Tensor) -> Tensor:
        """Class probabilities of preprocessed volumes.

        Shapes:
            image: (B, 1, D, H, W) -> (B, K, D, H, W), summing to 1 over K.
        """
        was_training = self.network.training
        self.network.eval()
        try:
            logits = sliding_window_logits(
                self.network, image.to(self.device), self.roi_size, sw_batch_size=self.sw_batch_size,
                overlap=self.overlap, blend_mode=self.blend_mode,
            )
        finally:
            self.network.train(was_training)
        if logits.shape[1] != len(self.class_names):
            raise ValueError(
                f"the network gives {logits.shape[1]} channels but {len(self.class_names)} class names were given"
            )
        return torch.softmax(logits.float(), dim=1)

    def predict(self, path: str | Path) -> SegmentationPrediction:
        """Segment one volume file and return the label map on its own voxel grid.

        Raises:
            VolumeReadError / ValueError: the file cannot be read (names the path).
        """
        data = self.pipeline({IMAGE_KEY: Path(path)})
        image: MetaTensor = data[IMAGE_KEY]
        probabilities = self.probabilities(image[None].as_tensor())[0].cpu()  # (1, D, H, W) -> (K, D, H, W)
        data[PREDICTION_KEY] = MetaTensor(probabilities, affine=image.affine.clone())
        inverted = self.inverter(data)[PREDICTION_KEY]  # (K, X, Y, Z) on the loaded volume's grid
        dtype = np.uint8 if len(self.class_names) <= 256 else np.int16
        labels = torch.as_tensor(inverted).argmax(dim=0).numpy().astype(dtype)  # (K, X, Y, Z) -> (X, Y, Z)
        original_affine = np.asarray(image.meta[MetaKeys.ORIGINAL_AFFINE], dtype=np.float64)
        return SegmentationPrediction(labels=labels, affine=original_affine, class_names=self.class_names)

    def predict_to_file(self, path: str | Path, out_path: str | Path) -> Path:
        """Segment ``path`` and write the label map NIfTI to ``out_path``."""
        return self.predict(path).save(out_path)
