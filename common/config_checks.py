"""Type and range checks of a composed config, run by every entry point before anything is built.

A wrong override (``trainer.max_epochs=abc``, ``model.optimizer.lr=-1``, ``data.batch_size=0``) would otherwise pass
setup and fail minutes later deep inside Lightning or torch. ``check_config(cfg)`` walks the table ``CHECKS`` (dotted
key -> rule; ``*`` matches any one key) and raises one ``ConfigValueError`` listing every bad value with its key and
what is allowed. Keys a config does not have are skipped, so one table serves every entry point.
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["CHECKS", "ConfigValueError", "Number", "check_config"]


class ConfigValueError(ValueError):
    """One or more config values have the wrong type or are out of range (the message lists each)."""


@dataclass(frozen=True)
class Number:
    """A number rule: ``integer`` or real, ``low`` / ``high`` bounds (``*_open``: strict), None allowed or not.

    ``also`` lists extra accepted non-numeric values (e.g. ``"auto"``); ``note`` explains special values.
    """

    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    none_ok: bool = False
    also: tuple[Any, ...] = ()
    note: str = ""

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else what is wrong with it."""
        if value is None:
            return None if self.none_ok else "it must be set"
        if isinstance(value, str) and value in self.also:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "not a number"
        if self.integer and not (isinstance(value, int) or float(value).is_integer()):
            return "not an integer"
        if not math.isfinite(float(value)):
            return "not finite"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return "too small"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return "too large"
        return None

    def allowed(self) -> str:
        kind = "an integer" if self.integer else "a number"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        text = kind + (" " + " and ".join(bounds) if bounds else "")
        extras = (["null"] if self.none_ok else []) + [repr(v) for v in self.also]
        if extras:
            text += " (or " + ", ".join(extras) + ")"
        return text + (f"; {self.note}" if self.note else "")


_COUNT = Number(integer=True, low=1)
_STEPS_OR_UNLIMITED = Number(integer=True, low=-1, note="-1 = no limit")
_FRACTION = Number(low=0.0, high=1.0, high_open=True)
_PROBABILITY = Number(low=0.0, high=1.0)
_POSITIVE = Number(low=0.0, low_open=True)
_NON_NEGATIVE = Number(low=0.0)
_LIMIT_BATCHES = Number(low=0.0, none_ok=True, note="a fraction of the batches in [0, 1] or a whole number of batches")

#: dotted key (``*`` = any one key) -> rule. Keys missing from a config are skipped.
CHECKS: dict[str, Number] = {
    "seed": Number(integer=True, low=0, high=2**32 - 1, none_ok=True),
    "trainer.max_epochs": Number(integer=True, low=-1, none_ok=True, note="-1 = no limit"),
    "trainer.min_epochs": Number(integer=True, low=0, none_ok=True),
    "trainer.max_steps": _STEPS_OR_UNLIMITED,
    "trainer.min_steps": Number(integer=True, low=0, none_ok=True),
    "trainer.devices": Number(integer=True, low=-1, also=("auto",), note="-1 = all devices"),
    "trainer.num_nodes": _COUNT,
    "trainer.log_every_n_steps": _COUNT,
    "trainer.check_val_every_n_epoch": Number(integer=True, low=1, none_ok=True),
    "trainer.val_check_interval": Number(low=0.0, low_open=True, none_ok=True),
    "trainer.num_sanity_val_steps": Number(integer=True, low=-1, note="-1 = all validation batches"),
    "trainer.accumulate_grad_batches": _COUNT,
    "trainer.gradient_clip_val": Number(low=0.0, none_ok=True),
    "trainer.limit_train_batches": _LIMIT_BATCHES,
    "trainer.limit_val_batches": _LIMIT_BATCHES,
    "trainer.limit_test_batches": _LIMIT_BATCHES,
    "data.batch_size": _COUNT,
    "data.num_workers": Number(integer=True, low=0),
    "data.val_fraction": _FRACTION,
    "data.test_fraction": _FRACTION,
    "model.optimizer.lr": _POSITIVE,
    "model.optimizer.weight_decay": _NON_NEGATIVE,
    "model.optimizer.eps": _POSITIVE,
    "model.scheduler.warmup_steps": Number(integer=True, low=0),
    "model.temperature": _POSITIVE,
    "model.mlm_probability": _PROBABILITY,
    "model.embed_dim": _COUNT,
    "model.loss_weights.*": _NON_NEGATIVE,
    "model.lr_scales.*": _NON_NEGATIVE,
    "callbacks.last_checkpoint.every_n_train_steps": Number(integer=True, low=1, none_ok=True),
    "callbacks.last_checkpoint.every_n_minutes": Number(low=0.0, low_open=True, none_ok=True),
}

#: keys that must be booleans (a string such as "yes" or "flase" is refused rather than read as true)
BOOLEAN_KEYS: tuple[str, ...] = ("resume", "test", "trainer.deterministic", "trainer.benchmark",
                                 "trainer.enable_checkpointing", "data.pin_memory")


def check_config(cfg: DictConfig | Mapping[str, Any], checks: Mapping[str, Number] | None = None,
                 boolean_keys: Sequence[str] = BOOLEAN_KEYS) -> None:
    """Raise ``ConfigValueError`` naming every key whose value breaks its rule in ``checks`` (default ``CHECKS``).

    Interpolations are resolved first (an unresolvable one is reported with its key). Values are checked as
    composed: an override ``trainer.max_epochs=abc`` arrives as the string ``'abc'`` and is refused.
    """
    checks = CHECKS if checks is None else checks
    problems = []
    for key in _leaf_keys(cfg):
        rule = next((rule for pattern, rule in checks.items() if _matches(key, pattern)), None)
        boolean = key in boolean_keys
        if rule is None and not boolean:
            continue
        try:
            value = _value(cfg, key)
        except Exception as error:  # noqa: BLE001 (omegaconf raises several types for bad interpolations)
            problems.append(f"  {key}: cannot be resolved ({type(error).__name__}: {str(error).splitlines()[0]})")
            continue
        problem = rule.problem(value) if rule is not None else None
        if problem:
            problems.append(f"  {key}={value!r}: {problem}; allowed: {rule.allowed()}")
        if boolean and value is not None and not isinstance(value, bool):
            problems.append(f"  {key}={value!r}: not a boolean; allowed: true or false")
    if problems:
        raise ConfigValueError("invalid config value(s):\n" + "\n".join(problems) +
                               "\nfix the override(s) on the command line or in the config file")


def _matches(key: str, pattern: str) -> bool:
    if "*" not in pattern:
        return key == pattern
    return key.count(".") == pattern.count(".") and fnmatch.fnmatchcase(key, pattern)


def _leaf_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys of the leaves of a DictConfig / mapping (lists are leaves), without resolving anything."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _leaf_keys(value, f"{prefix}{key}.")
    elif prefix:
        yield prefix[:-1]


def _value(cfg: Any, key: str) -> Any:
    if isinstance(cfg, DictConfig):
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True, throw_on_missing=True)
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
    for part in key.split("."):
        cfg = cfg[part]
    return cfg
