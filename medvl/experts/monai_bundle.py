"""Run a MONAI bundle folder's inference config on one volume and read back its label map.

    Volume (HU, affine; no meta) --NIfTI in a private temporary folder ("input.nii.gz": no name from the source)-->
        monai.bundle.ConfigParser(configs/inference.json) with bundle_root / input_file / output_dir overridden
        --"initialize", "run", "finalize" (those present)--> <output_dir>/**/*.nii.gz --nibabel--> (X, Y, Z) labels

Works for the bundles ``python -m medvl.segment`` writes (``medvl.segmentation.bundle``) and for MONAI bundles
that read ``input_file`` and write label maps on the input's grid; a bundle with other key names (e.g. VISTA3D's
``input_dict``) is run by giving ``input_key`` and extra ``overrides`` in the expert's config. Class names come
from ``configs/metadata.json`` (``pred_classes`` or ``label_classes``) or from a label-groups JSON.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medvl.data.volume import Volume

__all__ = ["BundleError", "MonaiBundle", "bundle_eval_metrics"]

INFERENCE_CONFIG = "configs/inference.json"
METADATA = "configs/metadata.json"


class BundleError(ValueError):
    """A bundle folder that cannot be used; the message names the folder and the problem."""


def bundle_eval_metrics(folder: str | Path) -> dict[str, float]:
    """``eval_metrics`` of the bundle's metadata.json ({} when absent): what its training run measured."""
    path = Path(folder) / METADATA
    if not path.is_file():
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8")).get("eval_metrics", {})
    except json.JSONDecodeError:
        return {}
    return {str(k): float(v) for k, v in dict(metrics).items() if isinstance(v, (int, float))}


class MonaiBundle:
    """A MONAI bundle folder, run in-process on ``Volume``s.

    Args:
        folder: the bundle folder (holds ``configs/inference.json``).
        input_key: the config key the input path goes to ("input_file" in medvl's bundles).
        output_key: the config key of the output folder.
        overrides: further config entries set before parsing (e.g. a device).

    Raises:
        BundleError: no ``configs/inference.json`` in ``folder``.
    """

    def __init__(self, folder: str | Path, *, input_key: str = "input_file", output_key: str = "output_dir",
                 overrides: Mapping[str, Any] | None = None) -> None:
        self.folder = Path(folder).expanduser()
        if not (self.folder / INFERENCE_CONFIG).is_file():
            raise BundleError(f"{self.folder} is not a MONAI bundle folder: it has no {INFERENCE_CONFIG}")
        self.input_key, self.output_key = input_key, output_key
        self.overrides = dict(overrides or {})

    def class_names(self) -> dict[int, str]:
        """Label id -> name from metadata.json's ``pred_classes`` (else ``label_classes``); {} when absent."""
        path = self.folder / METADATA
        if not path.is_file():
            return {}
        try:
            metadata = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise BundleError(f"{path} is not valid JSON: {error}") from error
        classes = metadata.get("pred_classes") or metadata.get("label_classes") or {}
        out = {}
        for key, name in dict(classes).items():
            if not str(key).isdigit() or not isinstance(name, str):
                raise BundleError(f"{path}: pred_classes entry {key!r}: {name!r} is not 'id': 'name'")
            out[int(key)] = name
        return out

    def segment(self, volume: Volume, extra_overrides: Mapping[str, Any] | None = None) -> np.ndarray:
        """The bundle's label map of ``volume`` on its voxel grid.

        Shapes:
            volume.array (X, Y, Z) -> (X, Y, Z) int32

        Raises:
            BundleError: the bundle wrote no NIfTI, or one of another shape than the input.
        """
        from monai.bundle import ConfigParser

        with tempfile.TemporaryDirectory(prefix="medvl-expert-") as work:
            work = Path(work)
            source = work / "input.nii.gz"
            image = nib.Nifti1Image(np.asarray(volume.array, np.float32), np.asarray(volume.affine))
            image.set_qform(volume.affine, code=1)
            image.set_sform(volume.affine, code=1)
            nib.save(image, str(source))
            out_dir = work / "out"
            out_dir.mkdir()
            parser = ConfigParser()
            parser.read_config(str(self.folder / INFERENCE_CONFIG))
            parser.update({"bundle_root": str(self.folder), self.input_key: str(source),
                           self.output_key: str(out_dir), **self.overrides, **dict(extra_overrides or {})})
            for step in ("initialize", "run", "finalize"):
                if step in parser:
                    parser.get_parsed_content(step)
            written = sorted(out_dir.rglob("*.nii*"))
            if not written:
                raise BundleError(f"the bundle {self.folder} wrote no label map into its {self.output_key}")
            labels = np.asarray(nib.load(str(written[0])).dataobj)
        labels = np.squeeze(labels)
        if labels.shape != volume.array.shape:
            raise BundleError(f"the bundle {self.folder} wrote a label map of shape {labels.shape}, not the input's "
                              f"{volume.array.shape}; it must write labels on the input's grid")
        return np.rint(labels).astype(np.int32)
