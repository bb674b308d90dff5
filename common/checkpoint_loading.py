"""The one loader behind every checkpoint load of every entry point (train / resume, evaluate, export, segment).

``load_checkpoint(path)`` reads a ``torch.save`` / Lightning ``.ckpt`` file with ``torch.load(weights_only=True)``
and turns each way a file can be wrong into an error that names the file and says what to do:

- a missing path or a folder                         -> ``FileNotFoundError`` / ``CheckpointFileError``
- a ``.safetensors`` file (weights only)             -> ``CheckpointFileError`` saying which file to give instead
- a truncated or corrupt file (e.g. a killed copy)   -> ``CheckpointFileError``
- a pickle that carries code (classes, functions)    -> ``UnsafeCheckpointError`` naming the pickled global. The
  file is never unpickled beyond the refused global; the message does not suggest ``weights_only=False``.
- ``expected_module=`` another model's checkpoint     -> ``CheckpointFileError`` naming the class it belongs to

torch's own messages are not passed on: they quote pickle internals and suggest ``weights_only=False``, the one
thing a user must not do with a file they did not write.

``MODULE_CLASS_KEY`` is the checkpoint entry in which ``VLPModule`` records its class (``package.module.Class``);
checkpoints without it are checked by their hyper-parameters (the class's required constructor arguments).
"""
from __future__ import annotations

import inspect
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "MODULE_CLASS_KEY",
    "CheckpointFileError",
    "UnsafeCheckpointError",
    "WeightsFileError",
    "check_checkpoint_module",
    "load_checkpoint",
    "load_lightning_module",
    "qualified_name",
    "validate_checkpoint",
]

MODULE_CLASS_KEY = "module_class"
_SAFETENSORS_SUFFIX = ".safetensors"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_2_PLUS = b"\x80"


class WeightsFileError(ValueError):
    """A weights or checkpoint file cannot be read (not safetensors, not a PyTorch checkpoint, corrupt)."""


class CheckpointFileError(WeightsFileError):
    """A checkpoint file cannot be used: not a PyTorch checkpoint, truncated, or another model's."""


class UnsafeCheckpointError(CheckpointFileError):
    """A checkpoint would need arbitrary unpickling (custom classes or functions, i.e. code) to load."""


def qualified_name(cls: type) -> str:
    """``package.module.Class`` of a class (what ``MODULE_CLASS_KEY`` holds)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def load_checkpoint(
    path: str | Path,
    map_location: Any = "cpu",
    *,
    expected_module: type | None = None,
    mmap: bool = False,
) -> dict[str, Any]:
    """Load a ``torch.save`` / Lightning ``.ckpt`` file without running code; refuse bad files clearly.

    Args:
        path: the checkpoint file.
        map_location: device (or torch map_location callable) for the tensors.
        expected_module: the LightningModule class the checkpoint must belong to (see
            :func:`check_checkpoint_module`); None skips the check.
        mmap: memory-map the tensors (cheap validation of a large file; zip-format files only).

    Returns:
        The checkpoint dict (for Lightning: ``state_dict``, ``hyper_parameters``, ``epoch``, ...).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: loading would need arbitrary unpickling (the message names the global).
        CheckpointFileError: a folder, a safetensors file, a truncated / corrupt / non-PyTorch file, a file that
            does not hold a dict, or (with ``expected_module``) another model's checkpoint.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint not found: {path}; give a .ckpt written by a training run "
            "(e.g. outputs/<task>/runs/<time>/checkpoints/last.ckpt)"
        )
    if path.is_dir():
        raise CheckpointFileError(f"{path} is a folder; expected a checkpoint file (e.g. {path}/last.ckpt)")
    head = _read_head(path)
    if path.suffix == _SAFETENSORS_SUFFIX or _looks_like_safetensors(head):
        raise CheckpointFileError(
            f"{path} is a safetensors weights file, not a Lightning checkpoint: it holds weights only (no "
            "hyper-parameters, optimiser or loop state), so it can neither rebuild the model nor resume a run. "
            "Give the .ckpt of the run instead (<run dir>/checkpoints/last.ckpt or best-*.ckpt); exported "
            "weights are read with medvl.export.load_exported(DIR) or common.export.load_weights, and a "
            "segmentation fine-tuning starts from an export with export_dir=DIR"
        )
    if not head:
        raise CheckpointFileError(f"{path} is empty (0 bytes): a checkpoint write that never finished; use another "
                                  "checkpoint of the run (checkpoints/*.ckpt)")
    try:
        checkpoint = _torch_load(path, map_location, mmap)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        if found is None and not head.startswith((_ZIP_MAGIC, _PICKLE_PROTOCOL_2_PLUS)):
            raise CheckpointFileError(_not_a_checkpoint(path, head)) from None
        what = f"a pickled '{found.group(1)}'" if found else "an object that is not a tensor or plain value"
        raise UnsafeCheckpointError(
            f"refusing to unpickle {path}: it contains {what}, which only running code could rebuild, so loading it "
            "could execute anything. Checkpoints written by this platform hold only tensors and plain values; "
            "this file was written by other code or altered. Do not load it; re-create it by training with this "
            "platform, or ask its author for a safetensors export."
        ) from None
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError, ... for files it cannot parse
        if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTOCOL_2_PLUS):
            raise CheckpointFileError(
                f"{path} is truncated or corrupt ({_short_reason(error)}): it starts like a PyTorch checkpoint "
                "but cannot be read to the end, e.g. a copy or a write that was cut off. Use another checkpoint "
                "of the run (checkpoints/*.ckpt) or copy the file again."
            ) from None
        raise CheckpointFileError(_not_a_checkpoint(path, head)) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointFileError(f"{path} holds a {type(checkpoint).__name__}, expected a checkpoint dict "
                                  "(torch.save of a dict, as Lightning writes)")
    if expected_module is not None:
        check_checkpoint_module(checkpoint, expected_module, source=str(path))
    return checkpoint


def validate_checkpoint(path: str | Path, expected_module: type | None = None) -> Path:
    """Check (cheaply: tensors memory-mapped) that ``path`` is a loadable checkpoint of ``expected_module``.

    Entry points call this before building anything, so a bad ``ckpt_path`` fails in a second, not after the data
    are built. Returns the path; raises what :func:`load_checkpoint` raises.
    """
    load_checkpoint(path, map_location="cpu", expected_module=expected_module, mmap=True)
    return Path(path).expanduser()


def load_lightning_module(cls: type, path: str | Path, map_location: Any = "cpu", **kwargs: Any) -> Any:
    """``cls.load_from_checkpoint(path, weights_only=True)`` after :func:`validate_checkpoint`: the same model,
    with the clear refusals above instead of torch's / Lightning's messages."""
    path = validate_checkpoint(path, expected_module=cls)
    return cls.load_from_checkpoint(path, map_location=map_location, weights_only=True, **kwargs)


def check_checkpoint_module(checkpoint: Mapping[str, Any], expected: type, source: str = "the checkpoint") -> None:
    """Refuse a Lightning checkpoint that belongs to another model than ``expected``.

    The checkpoint's ``MODULE_CLASS_KEY`` (written by ``VLPModule``) must name ``expected``;
    checkpoints without it must have a ``state_dict`` and hyper-parameters holding every required constructor
    argument of ``expected``.

    Raises:
        CheckpointFileError: no ``state_dict`` (not a Lightning checkpoint), or another model's checkpoint.
    """
    want = qualified_name(expected)
    if not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointFileError(
            f"{source} has no 'state_dict', so it is not a Lightning checkpoint (its entries: "
            f"{sorted(map(str, checkpoint))[:12]}); give a .ckpt written by training {expected.__name__}"
        )
    stored = checkpoint.get(MODULE_CLASS_KEY)
    if isinstance(stored, str):
        if stored != want:
            raise CheckpointFileError(
                f"{source} is a checkpoint of {stored}, not of {want}: it was written by another entry point "
                f"(e.g. a {stored.split('.')[0]} run); give a checkpoint of a {expected.__name__} run"
            )
        return
    hparams = checkpoint.get("hyper_parameters")
    hparams = hparams if isinstance(hparams, Mapping) else {}
    missing = [name for name in _required_arguments(expected) if name not in hparams]
    if missing:
        raise CheckpointFileError(
            f"{source} is not a checkpoint of {want}: its hyper-parameters lack {missing} (it has "
            f"{sorted(map(str, hparams))[:12]}), so it was written by another model; give a checkpoint of a "
            f"{expected.__name__} run"
        )


def _required_arguments(cls: type) -> list[str]:
    """Constructor arguments of ``cls`` without a default (what its hyper-parameters must hold)."""
    try:
        parameters = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.name != "self" and p.kind in kinds and p.default is inspect.Parameter.empty]


def _torch_load(path: Path, map_location: Any, mmap: bool) -> Any:
    if mmap and zipfile.is_zipfile(path):
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    return torch.load(path, map_location=map_location, weights_only=True)


def _read_head(path: Path, size: int = 16) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


def _looks_like_safetensors(head: bytes) -> bool:
    """safetensors = 8-byte little-endian header length, then a JSON header starting with '{'."""
    return len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000


def _not_a_checkpoint(path: Path, head: bytes) -> str:
    return (f"{path} is not a PyTorch checkpoint (it starts with {head[:8]!r}, not a torch.save archive); give a "
            ".ckpt written by a training run (<run dir>/checkpoints/last.ckpt)")


def _short_reason(error: BaseException) -> str:
    """First line of a library error, without torch's advice (which may suggest weights_only=False)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if "weights_only" in text:
        text = ""
    return f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__
