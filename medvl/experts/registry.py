"""Experts come from Hydra configs only: ``configs/experts/<name>.yaml``, each one ``_target_``.

In an entry point's config the experts are a defaults-list selection of that group,

    defaults:
      - experts: [segmentation, measurement, findings]

which puts each file under ``experts.<file name>`` (the files say ``# @package _group_.<file name>``);
``experts=[]`` (or ``use_experts=false`` in ``medvl.vqa`` / ``medvl.chat``) runs with none. ``build_experts`` turns
that node into the registry the tool caller runs from; nothing else can run an expert.
"""
from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from medvl.experts.expert import Expert

__all__ = ["build_experts", "expert_config_dir", "load_expert_configs"]


def expert_config_dir() -> Path:
    """The ``configs/experts`` folder of the installed ``configs`` package."""
    return Path(str(resources.files("configs"))) / "experts"


def load_expert_configs(names: list[str] | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None
                        ) -> DictConfig:
    """``{name: config}`` of ``configs/experts/<name>.yaml`` (all files when ``names`` is None), for callers
    without Hydra (tests, notebooks); ``overrides`` = {name: {key: value}} merged into each.

    Raises:
        ValueError: a name without a config file (lists those that exist).
    """
    folder = expert_config_dir()
    available = sorted(p.stem for p in folder.glob("*.yaml"))
    names = available if names is None else list(names)
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"no expert config {missing} in {folder}; available: {available}")
    node = {}
    for name in names:
        config = OmegaConf.load(folder / f"{name}.yaml")
        node[name] = OmegaConf.merge(config, dict((overrides or {}).get(name, {})))
    return OmegaConf.create(node)


def build_experts(node: Mapping[str, Any] | None) -> dict[str, Expert]:
    """Trigger name -> expert, instantiated from ``{config name: {_target_: ..., ...}}``.

    Raises:
        ValueError: an entry without ``_target_``, a target that is not an ``Expert``, or two experts with the
            same trigger name.
    """
    experts: dict[str, Expert] = {}
    for key, config in dict(node or {}).items():
        if config is None:
            continue
        if "_target_" not in config:
            raise ValueError(f"expert config '{key}' has no _target_ (see configs/experts/*.yaml)")
        expert = instantiate(config, _convert_="all")
        if not isinstance(expert, Expert):
            raise ValueError(f"expert config '{key}': {config['_target_']} is not a medvl.experts.Expert")
        if expert.name in experts:
            raise ValueError(f"expert configs give the trigger name {expert.name!r} twice")
        experts[expert.name] = expert
    return experts
