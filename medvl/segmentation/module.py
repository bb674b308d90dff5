"""LightningModule that fine-tunes a MONAI SwinUNETR / UNETR (pre-trained medvl encoder or random init).

Training: Dice + cross-entropy (``monai.losses.DiceCELoss``) on random crops. Validation / test: whole volumes
through ``monai.inferers.sliding_window_inference``; the same loss, and Dice per class
(``monai.metrics.DiceMetric``, background excluded) logged as ``<stage>/dice/<class>`` and their mean over the
classes as ``<stage>/dice_mean``.

Everything needed to rebuild the model (network spec, classes, preprocessing, roi size) is saved as plain
hyper-parameters, so ``load_segmentation_module(ckpt)`` needs the checkpoint alone (not the export folder).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from torch import Tensor

from common.lightning.hparams import plain_container
from common.export import WeightsFileError, load_checkpoint, load_weights, state_dict_from_checkpoint
from common.lightning.vlp_module import VLPModule
from medvl.data.transforms import PreprocessConfig
from medvl.segmentation.inference import BLEND_MODES, SlidingWindowSegmenter, sliding_window_logits
from medvl.segmentation.network import build_segmentation_network, check_roi_size, network_spec

__all__ = ["SegmentationModule", "load_segmentation_module"]


def _tensor(x: Tensor) -> Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else x


class SegmentationModule(VLPModule):
    """Fine-tune a segmentation network whose encoder may come from a medvl export.

    Args:
        class_names: one name per output channel, index 0 = "background" (from the datamodule).
        preprocess: the data's ``PreprocessConfig.to_dict()`` (kept for prediction and bundles).
        roi_size: training crop and sliding-window size (D, H, W).
        export_dir: medvl export folder: architecture and (if ``pretrained``) backbone weights.
        pretrained: load the export's backbone weights; False = the export's architecture, random init.
        architecture: ``VolumeEncoder`` arguments (or {"preset": "tiny"}) when there is no export.
        network_spec: the resolved spec (filled in automatically and saved, so checkpoints rebuild without the
            export folder); give it only to rebuild a saved model.
        dice_weight, ce_weight: weights of the Dice and cross-entropy terms of ``DiceCELoss``.
        sw_batch_size, overlap, blend_mode: sliding-window inference for validation, test and prediction.
        optimizer, scheduler, scheduler_interval, lr_scales: see ``VLPModule`` (partial optimiser / scheduler
            factories; e.g. lr_scales={"network.vit": 0.1} fine-tunes a pre-trained UNETR encoder at 10% of the rate).
        class_map: the data's source label id -> class index (from the datamodule; saved so that evaluating the
            checkpoint needs no ``data.source_labels``).

    Shapes:
        forward(image): (B, 1, D, H, W) -> (B, K, D, H, W) logits; batches: {"image": (B, 1, D, H, W) float,
        "label": (B, 1, D, H, W) int class indices}.

    Raises:
        ValueError: fewer than two class names or a first one other than "background"; a roi_size the network
            cannot run at; bad sliding-window settings; see ``network_spec`` / ``build_segmentation_network``.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        preprocess: Mapping[str, Any],
        roi_size: Sequence[int],
        export_dir: str | None = None,
        pretrained: bool = True,
        architecture: Mapping[str, Any] | None = None,
        network_spec: Mapping[str, Any] | None = None,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        sw_batch_size: int = 2,
        overlap: float = 0.5,
        blend_mode: str = "gaussian",
        optimizer: Any = None,
        scheduler: Any = None,
        scheduler_interval: str = "step",
        lr_scales: Mapping[str, float] | None = None,
        class_map: Mapping[Any, int] | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         lr_scales=lr_scales)
        class_names = [str(name) for name in class_names]
        if len(class_names) < 2 or class_names[0] != "background":
            raise ValueError(f"class_names must start with 'background' and name at least one class, got {class_names}")
        if not 0.0 <= overlap < 1.0 or blend_mode not in BLEND_MODES or isinstance(sw_batch_size, bool) \
                or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
            raise ValueError(
                f"sliding windows need 0 <= overlap < 1, blend_mode in {BLEND_MODES} and an int sw_batch_size >= 1; "
                f"got overlap={overlap!r}, blend_mode={blend_mode!r}, sw_batch_size={sw_batch_size!r}"
            )
        if pretrained and network_spec is None and export_dir is None:
            raise ValueError("pretrained=true needs export_dir (a `python -m medvl.export` folder); "
                             "set pretrained=false with architecture=... for a randomly initialised network")
        spec = dict(plain_container(network_spec)) if network_spec is not None else network_spec_of(export_dir, architecture)
        roi = list(check_roi_size(spec, roi_size))
        preprocess = PreprocessConfig.from_dict(plain_container(preprocess)).to_dict()
        self.save_hyperparameters({
            "class_names": class_names, "preprocess": preprocess, "roi_size": roi,
            "export_dir": str(export_dir) if export_dir is not None else None, "pretrained": bool(pretrained),
            "architecture": plain_container(architecture), "network_spec": spec, "dice_weight": float(dice_weight),
            "ce_weight": float(ce_weight), "sw_batch_size": int(sw_batch_size), "overlap": float(overlap),
            "blend_mode": blend_mode, "scheduler_interval": scheduler_interval,
            "class_map": None if class_map is None else {int(k): int(v) for k, v in dict(class_map).items()},
        })
        weights = export_dir if (pretrained and export_dir is not None) else None
        self.network = build_segmentation_network(spec, len(class_names), backbone_weights=weights)
        self.class_names = class_names
        self.roi_size = roi
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=dice_weight, lambda_ce=ce_weight)
        # One metric per stage, so that validation inside `fit` and a later `test` never mix their states.
        self._dice_metrics = {stage: DiceMetric(include_background=False, reduction="mean_batch", get_not_nans=True)
                              for stage in ("val", "test")}

    # ------------------------------------------------------------------------------------------ inference
    def forward(self, image: Tensor) -> Tensor:
        return self.network(image)

    def sliding_window(self, image: Tensor) -> Tensor:
        """Logits of whole volumes, window by window (see ``sliding_window_logits``)."""
        return sliding_window_logits(
            self.network, image, self.roi_size, sw_batch_size=int(self.hparams["sw_batch_size"]),
            overlap=float(self.hparams["overlap"]), blend_mode=str(self.hparams["blend_mode"]),
        )

    def segmenter(self, device: str | torch.device | None = None) -> SlidingWindowSegmenter:
        """A ``SlidingWindowSegmenter`` for files, with this module's network, preprocessing and classes."""
        return SlidingWindowSegmenter(
            self.network, self.hparams["preprocess"], self.roi_size, self.class_names,
            sw_batch_size=int(self.hparams["sw_batch_size"]), overlap=float(self.hparams["overlap"]),
            blend_mode=str(self.hparams["blend_mode"]), device=device or self.device,
        )

    # ------------------------------------------------------------------------------------------ losses
    def compute_losses(self, batch: Mapping[str, Any], stage: str) -> dict[str, Tensor]:
        image, label = _tensor(batch["image"]).float(), _tensor(batch["label"]).long()
        if label.max() >= len(self.class_names) or label.min() < 0:
            raise ValueError(
                f"labels hold class indices outside [0, {len(self.class_names) - 1}]; remap the label maps to the "
                f"classes {self.class_names} (SegmentationDataModule does)"
            )
        logits = self.network(image) if stage == "train" else self.sliding_window(image)
        out = {"segmentation_loss": self.loss(logits, label)}
        if stage in self._dice_metrics:
            prediction = one_hot(logits.argmax(dim=1, keepdim=True), num_classes=len(self.class_names))
            self._dice_metrics[stage](y_pred=prediction, y=one_hot(label, num_classes=len(self.class_names)))
        return out

    def dice_per_class(self, stage: str) -> dict[str, float]:
        """Dice of each class over the volumes seen since the last reset (NaN: the class is in no reference
        label map) and ``dice_mean``, their mean over the classes with a value; resets the accumulator."""
        metric = self._dice_metrics[stage]
        if metric.get_buffer() is None:
            return {}
        values, counts = (t.float().cpu() for t in metric.aggregate())  # (K - 1,) each: mean over volumes, count
        # DiceMetric reports 0 for a class with no volume to average (absent from every reference): make it NaN
        values = torch.where(counts > 0, values, torch.full_like(values, float("nan")))
        metric.reset()
        out = {f"dice/{name}": float(v) for name, v in zip(self.class_names[1:], values.tolist())}
        finite = [v for v in out.values() if math.isfinite(v)]
        out["dice_mean"] = float(sum(finite) / len(finite)) if finite else float("nan")
        return out

    def _log_dice(self, stage: str) -> None:
        for name, value in self.dice_per_class(stage).items():
            self.log(f"{stage}/{name}", value, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._dice_metrics["val"].reset()

    def on_test_epoch_start(self) -> None:
        self._dice_metrics["test"].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_dice("val")

    def on_test_epoch_end(self) -> None:
        self._log_dice("test")


def network_spec_of(export_dir: str | Path | None, architecture: Mapping[str, Any] | None) -> dict[str, Any]:
    """``network_spec`` from an export folder or VolumeEncoder arguments (plain values)."""
    return network_spec(export_dir=export_dir, architecture=plain_container(architecture) if architecture is not None else None)


def load_segmentation_module(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> SegmentationModule:
    """Rebuild a fine-tuned ``SegmentationModule`` from its checkpoint alone (weights_only, strict).

    Raises:
        FileNotFoundError, WeightsFileError, UnsafeCheckpointError: see ``common.export.load_checkpoint``.
        WeightsMismatchError: the weights do not fit the saved architecture.
    """
    checkpoint = load_checkpoint(ckpt_path, map_location=map_location)
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, Mapping) or "network_spec" not in hparams:
        raise WeightsFileError(f"{ckpt_path} is not a segmentation checkpoint written by `python -m medvl.segment`")
    # the weights come from the checkpoint: never touch the export folder again
    module = SegmentationModule(**{**hparams, "pretrained": False})
    load_weights(module, state_dict_from_checkpoint(checkpoint), strict=True)
    return module.eval()
