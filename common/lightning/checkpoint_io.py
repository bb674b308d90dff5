"""Crash-safe checkpoint writing for Lightning.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file lives in the
system temp dir; committing it is then a cross-device copy on many servers (``/tmp`` on another disk), which is
neither atomic nor fsynced. A job killed mid-save can leave a truncated ``last.ckpt``. This plug-in writes the
temporary file next to the target, fsyncs it and renames it over the target with ``os.replace`` (atomic on
POSIX and Windows), so a checkpoint path always holds either the old or the new complete file.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from common.checkpoint_loading import load_checkpoint
from common.io import atomic_write_bytes


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``save_checkpoint`` is atomic on local disks (see module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options; remove them from save_checkpoint().")
        if "://" in str(path):  # remote file systems: keep Lightning's fsspec path
            super().save_checkpoint(checkpoint, path)
            return
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        """Load through the platform's checkpoint loader (``common.checkpoint_loading``): always
        ``weights_only=True`` (resuming never unpickles code, whatever the caller asks) and clear refusals of
        truncated, code-carrying and safetensors files."""
        if "://" in str(path):  # remote file systems: Lightning's fsspec reader, still weights_only
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")
