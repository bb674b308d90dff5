"""Hyper-parameters as plain Python containers.

Hydra hands modules ``DictConfig`` / ``ListConfig`` objects; stored as they are in a checkpoint, they make it
unloadable with ``torch.load(weights_only=True)``. Modules and datamodules convert what they save with this.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def plain_container(value: Any) -> Any:
    """DictConfig / ListConfig / mappings / tuples -> plain dicts and lists, recursively (other values as they are)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): plain_container(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_container(v) for v in value]
    return value
