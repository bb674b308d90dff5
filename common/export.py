"""Weights and model export shared by every domain: safetensors, checkpoints, TorchScript and ONNX.

Every writer here is atomic and checks its own output before publishing it:

- ``save_weights`` writes a safetensors file into a hidden staging folder beside the target, re-reads it,
  compares every tensor bit for bit and only then moves it into place (``os.replace``), so a crash or a
  failed check never leaves a half-written or wrong file where a good one was.
- ``export_torchscript`` / ``export_onnx`` save the model, load the saved file back (``torch.jit.load`` /
  an onnxruntime CPU session) and compare its outputs with the PyTorch module's on the example inputs;
  ONNX files with a dynamic batch axis are also run on a second batch size. A difference beyond the
  tolerance raises ``ExportParityError`` (with the largest absolute difference) and publishes nothing.

Readers give errors that name the file and say what to do: ``read_weights`` / ``load_weights`` for
safetensors, ``load_checkpoint`` for Lightning ``.ckpt`` files (``weights_only`` unpickling only: a file
that would need arbitrary code to load is refused), ``state_dict_from_checkpoint`` to pull one
sub-module's weights out of a Lightning checkpoint.

All functions that run the module put it (and every sub-module) in eval mode and restore each
sub-module's previous mode afterwards, see ``eval_mode``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import safetensors
import safetensors.torch
import torch
from torch import nn

from common import checkpoint_loading
from common.checkpoint_loading import UnsafeCheckpointError, WeightsFileError
from common.io import default_file_mode

__all__ = [
    "ExportError",
    "ExportParityError",
    "UnsafeCheckpointError",
    "WeightsFileError",
    "WeightsMismatchError",
    "eval_mode",
    "export_onnx",
    "export_torchscript",
    "load_checkpoint",
    "load_weights",
    "read_weights",
    "save_weights",
    "state_dict_from_checkpoint",
    "verify_onnx",
    "verify_torchscript",
]

logger = logging.getLogger(__name__)

# Metadata key under which save_weights records tied weights ({alias name: stored name}) so that
# read_weights can give the alias back as the very same tensor; never returned to the caller.
_TIED_WEIGHTS_KEY = "__tied_weights__"
# At most this many names per list in error messages; the rest is summarised as "... and N more".
_MAX_LISTED_KEYS = 20
# Protobuf cannot hold more than 2 GiB; above this size ONNX weights go to a `<name>.data` side file.
_ONNX_INLINE_WEIGHTS_LIMIT_BYTES = 1_800_000_000
# Lowest opset the torch.export-based ONNX exporter emits natively (see export_onnx).
_MIN_ONNX_OPSET = 18

TensorDict = dict[str, torch.Tensor]


class WeightsMismatchError(ValueError):
    """Weights do not fit a module: missing keys, unexpected keys or tensors of another shape.

    Attributes:
        missing: sorted keys the module has and the weights lack.
        unexpected: sorted keys the weights have and the module lacks.
        shape_mismatches: sorted ``(name, shape the module expects, shape in the weights)``.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        shape_mismatches: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
    ) -> None:
        super().__init__(message)
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.shape_mismatches = sorted(shape_mismatches)


class ExportError(RuntimeError):
    """A written file does not hold what was exported (weights differ on re-read, invalid ONNX graph)."""


class ExportParityError(ExportError):
    """An exported model's outputs differ from the PyTorch module's beyond the tolerance.

    Attributes:
        max_abs_diff: largest absolute difference over all outputs (``inf`` for shape / count mismatches).
        output_name: name of the output holding that difference (``None`` when the outputs do not pair up).
    """

    def __init__(self, message: str, *, max_abs_diff: float, output_name: str | None) -> None:
        super().__init__(message)
        self.max_abs_diff = max_abs_diff
        self.output_name = output_name


# --------------------------------------------------------------------------------------------------
# Eval mode and atomic publishing
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` and all its sub-modules in eval mode, then restore each one's own previous mode.

    ``module.train(was_training)`` would not do: it sets every sub-module to the same mode and so
    would unfreeze, e.g., a backbone deliberately kept in eval mode inside a training model.
    """
    previous = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for sub, training in previous:
            sub.training = training


@contextlib.contextmanager
def _staging_folder(path: Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``path`` (same file system, so ``os.replace`` is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _publish(staging: Path, path: Path) -> None:
    """Move every file of ``staging`` next to ``path``; ``path`` itself last, so it never points at
    side files (ONNX external data) that are not there yet."""
    main = staging / path.name
    side_files = sorted(p for p in staging.iterdir() if p != main)
    mode = default_file_mode()
    for staged in [*side_files, main]:
        _fsync(staged)
        # safetensors (and temp-file writers) create 0600 files: give the usual permissions (0644 under umask 022),
        # so that other users' pipelines can read an export
        os.chmod(staged, mode)
        os.replace(staged, path.parent / staged.name)
    # Make the renames themselves durable; folders cannot be opened for fsync on every OS (Windows).
    with contextlib.suppress(OSError):
        folder_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)


# --------------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------------


def _same_view_key(tensor: torch.Tensor) -> tuple | None:
    """Key shared exactly by tensors that are the same view of the same memory (tied weights)."""
    if tensor.numel() == 0 or tensor.device.type == "meta":
        return None
    return (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))


def _tied_aliases(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """``{alias: kept name}`` for keys that are the same tensor view as another key (first name kept)."""
    groups: dict[tuple, list[str]] = {}
    for name in sorted(state_dict):
        key = _same_view_key(state_dict[name])
        if key is not None:
            groups.setdefault(key, []).append(name)
    return {alias: names[0] for names in groups.values() for alias in names[1:]}


def _to_state_dict(module_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> TensorDict:
    if isinstance(module_or_state_dict, nn.Module):
        state = dict(module_or_state_dict.state_dict())
    elif isinstance(module_or_state_dict, Mapping):
        state = dict(module_or_state_dict)
    else:
        raise TypeError(
            f"expected an nn.Module or a state dict (mapping name -> tensor), got "
            f"{type(module_or_state_dict).__name__}"
        )
    not_tensors = {k: type(v).__name__ for k, v in state.items() if not isinstance(v, torch.Tensor)}
    if not_tensors:
        raise ValueError(
            f"safetensors stores tensors only; these entries are not tensors: {not_tensors}. "
            "Keep non-tensor state (step counters, configs) in `metadata` as strings instead."
        )
    on_meta = [k for k, v in state.items() if v.device.type == "meta"]
    if on_meta:
        raise ValueError(
            f"tensors on the meta device hold no values: {_format_names(on_meta)}; materialise the model "
            "(e.g. module.to_empty(device='cpu') and load real weights) before saving"
        )
    bad_names = [k for k in state if not isinstance(k, str)]
    if bad_names:
        raise ValueError(f"state dict keys must be strings, got {bad_names[:_MAX_LISTED_KEYS]}")
    return state


def _bytes_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (unlike torch.equal, NaN == NaN and -0.0 != 0.0, i.e. exactly what was written)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    # (*shape) -> (numel * itemsize,) raw bytes
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def _verify_safetensors(path: Path, expected: TensorDict, metadata: dict[str, str]) -> None:
    """Re-read ``path`` and compare every tensor bit for bit and the metadata exactly."""
    with safetensors.safe_open(str(path), framework="pt", device="cpu") as handle:
        found_metadata = handle.metadata() or {}
        found_keys = set(handle.keys())
        if found_keys != set(expected):
            raise ExportError(
                f"re-reading {path} gave other tensor names than were written: missing "
                f"{_format_names(set(expected) - found_keys)}, extra {_format_names(found_keys - set(expected))}"
            )
        for name, tensor in expected.items():
            if not _bytes_equal(handle.get_tensor(name), tensor):
                raise ExportError(
                    f"re-reading {path}: tensor '{name}' differs from what was written "
                    "(disk or file-system corruption?); the previous file, if any, was left untouched"
                )
    if found_metadata != metadata:
        raise ExportError(f"re-reading {path}: metadata {found_metadata} differs from what was written {metadata}")


def save_weights(
    module_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    metadata: dict[str, str] | None = None,
    verify: bool = True,
) -> Path:
    """Save weights as one safetensors file, atomically, and check the written file.

    Tied weights (several names for the same tensor, e.g. an embedding shared with an output layer)
    are stored once and come back from ``read_weights`` as one shared tensor under every name.
    Other tensors sharing memory (overlapping or partial views) and non-contiguous tensors are stored
    as contiguous copies. ``metadata["format"]`` defaults to ``"pt"``, which transformers requires.

    Args:
        module_or_state_dict: an ``nn.Module`` (its ``state_dict()``) or a mapping name -> tensor.
        path: target file, conventionally ``*.safetensors``; missing parent folders are created.
        metadata: string -> string pairs stored in the header (e.g. model config as JSON).
        verify: re-read the staged file and compare every tensor bit for bit before publishing it.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        TypeError: ``module_or_state_dict`` is neither a module nor a mapping.
        ValueError: no tensors, non-tensor entries, non-string metadata, or a reserved metadata key.
        ExportError: the re-read file differs from what was written (the old file is left in place).
    """
    path = Path(path)
    state = _to_state_dict(module_or_state_dict)
    if not state:
        raise ValueError(f"nothing to save to {path}: the module / state dict has no tensors")
    metadata = dict(metadata or {})
    bad_metadata = {k: type(v).__name__ for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad_metadata:
        raise ValueError(
            f"safetensors metadata must map str -> str; offending entries (key: value type): {bad_metadata}. "
            "Convert values with str() or json.dumps()."
        )
    if _TIED_WEIGHTS_KEY in metadata:
        raise ValueError(f"metadata key '{_TIED_WEIGHTS_KEY}' is reserved for tied weights; rename it")
    metadata.setdefault("format", "pt")

    aliases = _tied_aliases(state)
    stored: TensorDict = {}
    storage_users: dict[tuple, int] = {}
    for name, tensor in state.items():
        if name not in aliases and tensor.numel() > 0:
            storage = (tensor.device, tensor.untyped_storage().data_ptr())
            storage_users[storage] = storage_users.get(storage, 0) + 1
    for name, tensor in state.items():
        if name in aliases:
            continue
        tensor = tensor.detach()
        shares_memory = tensor.numel() > 0 and storage_users[(tensor.device, tensor.untyped_storage().data_ptr())] > 1
        # .to/.contiguous return the same tensor when nothing changes; clone so that no two stored
        # tensors share memory (safetensors refuses that: it could not tell them apart on load).
        copy = tensor.to("cpu").contiguous()
        stored[name] = copy.clone() if shares_memory and copy.data_ptr() == tensor.data_ptr() else copy
    file_metadata = dict(metadata)
    if aliases:
        file_metadata[_TIED_WEIGHTS_KEY] = json.dumps(aliases, sort_keys=True)

    with _staging_folder(path) as staging:
        staged = staging / path.name
        safetensors.torch.save_file(stored, str(staged), metadata=file_metadata)
        if verify:
            _verify_safetensors(staged, stored, file_metadata)
        _publish(staging, path)
    return path


def _describe_unreadable(path: Path) -> str:
    """A hint about what the file is, from its first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "it looks like a torch.save / Lightning checkpoint: read it with load_checkpoint()"
    return "expected a safetensors file (written by save_weights or safetensors.torch.save_file)"


def read_weights(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[TensorDict, dict[str, str]]:
    """Read a safetensors file into a state dict and its metadata.

    Tied weights saved by ``save_weights`` come back as one tensor under every name.

    Args:
        path: the ``.safetensors`` file.
        device: where to put the tensors.

    Returns:
        ``(state_dict, metadata)``; ``metadata`` is ``{}`` when the file has none.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        WeightsFileError: ``path`` is a folder or not a valid safetensors file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.is_dir():
        raise WeightsFileError(f"{path} is a folder; expected a .safetensors file")
    try:
        with safetensors.safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = dict(handle.metadata() or {})
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises SafetensorError, OSError or ValueError depending on the damage
        raise WeightsFileError(
            f"cannot read {path} as safetensors ({type(error).__name__}: {error}); {_describe_unreadable(path)}"
        ) from error
    aliases = json.loads(metadata.pop(_TIED_WEIGHTS_KEY, "{}"))
    missing_targets = sorted({target for target in aliases.values() if target not in state})
    if missing_targets:
        raise WeightsFileError(f"{path}: tied-weight metadata points at tensors not in the file: {missing_targets}")
    for alias, target in aliases.items():
        state[alias] = state[target]
    return state, metadata


# --------------------------------------------------------------------------------------------------
# Loading into a module
# --------------------------------------------------------------------------------------------------


def _format_names(names: Sequence[str] | set[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_MAX_LISTED_KEYS])
    if len(names) > _MAX_LISTED_KEYS:
        shown += f", ... and {len(names) - _MAX_LISTED_KEYS} more"
    return shown or "(none)"


def _normalise_prefix(prefix: str) -> str:
    if not prefix:
        raise ValueError("prefix must be a non-empty string such as 'volume_encoder.' (or None for no prefix)")
    return prefix if prefix.endswith(".") else prefix + "."


def _select_prefix(state: Mapping[str, torch.Tensor], prefix: str, source: str) -> TensorDict:
    """Keys of ``state`` starting with ``prefix``, with ``prefix`` removed."""
    prefix = _normalise_prefix(prefix)
    selected = {name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}
    if not selected:
        depth = prefix.count(".")
        available = {".".join(name.split(".")[:depth]) + "." for name in state if name.count(".") >= depth}
        if not available:  # the prefix is deeper than any key: show the top-level names instead
            available = {name.split(".")[0] + "." for name in state if "." in name}
        raise WeightsMismatchError(
            f"no key in {source} starts with '{prefix}'; prefixes there: {_format_names(available)}"
        )
    return selected


def _guess_prefix(unexpected: set[str], expected: set[str]) -> str | None:
    """The most common ``p`` with ``p + expected_key`` in ``unexpected`` (e.g. 'model.' or 'module.')."""
    counts: dict[str, int] = {}
    for name in unexpected:
        for candidate in expected:
            if name.endswith("." + candidate):
                prefix = name[: -len(candidate)]
                counts[prefix] = counts.get(prefix, 0) + 1
    return max(counts, key=counts.get) if counts else None


def load_weights(
    module: nn.Module,
    path_or_state_dict: str | Path | Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    prefix: str | None = None,
) -> nn.Module:
    """Load safetensors weights (or a state dict) into ``module``, checking names and shapes first.

    Nothing is copied into the module unless the check passes, so a failed load leaves it untouched.
    Keys the module ties to another key (e.g. an output layer sharing the embedding) may be absent
    from the weights, as in files written by transformers or ``safetensors.torch.save_model``.

    Args:
        module: the model to fill.
        path_or_state_dict: a safetensors file or a mapping name -> tensor.
        strict: when False, missing and unexpected keys are logged and skipped (shape mismatches still
            raise: such tensors cannot be loaded).
        prefix: load only the keys starting with this prefix, with the prefix removed, e.g.
            ``"volume_encoder."`` to fill a bare volume encoder from a full pre-training model.

    Returns:
        ``module``.

    Raises:
        FileNotFoundError, WeightsFileError: the file is missing or unreadable (see ``read_weights``).
        WeightsMismatchError: missing / unexpected keys (strict) or shape mismatches; the message lists
            them and suggests a prefix when the weights look nested one level deeper.
    """
    if isinstance(path_or_state_dict, Mapping):
        state, source = dict(path_or_state_dict), "the given state dict"
    else:
        state, source = read_weights(path_or_state_dict)[0], str(path_or_state_dict)
    if prefix is not None:
        state = _select_prefix(state, prefix, source)
        source += f" (prefix '{_normalise_prefix(prefix)}')"

    target = module.state_dict()
    for alias, kept in _tied_aliases(target).items():
        if alias not in state and kept in state:
            state[alias] = state[kept]
        elif kept not in state and alias in state:
            state[kept] = state[alias]
    missing = set(target) - set(state)
    unexpected = set(state) - set(target)
    mismatched = sorted(
        (name, tuple(target[name].shape), tuple(state[name].shape))
        for name in set(target) & set(state)
        if target[name].shape != state[name].shape
    )
    if mismatched or (strict and (missing or unexpected)):
        raise WeightsMismatchError(
            _mismatch_message(module, source, missing, unexpected, mismatched),
            missing=missing, unexpected=unexpected, shape_mismatches=mismatched,
        )
    if missing or unexpected:
        logger.warning(
            "loading %s into %s with strict=False: %d missing keys (%s) left as initialised, %d unexpected keys "
            "(%s) ignored", source, type(module).__name__, len(missing), _format_names(missing),
            len(unexpected), _format_names(unexpected),
        )
    module.load_state_dict({name: state[name] for name in set(target) & set(state)}, strict=False)
    return module


def _mismatch_message(
    module: nn.Module,
    source: str,
    missing: set[str],
    unexpected: set[str],
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
) -> str:
    lines = [
        f"weights from {source} do not fit {type(module).__name__}: {len(missing)} missing keys, "
        f"{len(unexpected)} unexpected keys, {len(mismatched)} shape mismatches.",
        f"  missing keys (in the model, not in the weights): {_format_names(missing)}",
        f"  unexpected keys (in the weights, not in the model): {_format_names(unexpected)}",
    ]
    shown = [f"{name}: model {list(want)} vs weights {list(found)}" for name, want, found in mismatched]
    if len(shown) > _MAX_LISTED_KEYS:
        shown = shown[:_MAX_LISTED_KEYS] + [f"... and {len(mismatched) - _MAX_LISTED_KEYS} more"]
    lines.append("  shape mismatches (name: model expects vs weights have): " + ("; ".join(shown) or "(none)"))
    hint = _guess_prefix(unexpected, missing) if missing and unexpected else None
    if hint:
        lines.append(f"How to fix: the weights look nested under '{hint}': pass prefix='{hint}'.")
    elif mismatched:
        lines.append(
            "How to fix: the weights were saved from a model of another size or architecture; build the model "
            "with the same configuration (feature size, depth, heads, vocabulary size) as the run that saved them."
        )
    else:
        lines.append(
            "How to fix: check that the weights belong to this architecture (or pass prefix= to take a "
            "sub-module's weights); pass strict=False to load only the keys both sides have."
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# torch.save / Lightning checkpoints
# --------------------------------------------------------------------------------------------------


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a torch.save / Lightning ``.ckpt`` file without running arbitrary code.

    The platform's one checkpoint loader, ``common.checkpoint_loading.load_checkpoint`` (``weights_only``
    unpickling; clear refusals of code-carrying pickles, truncated files, safetensors files).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: loading would need arbitrary unpickling (message names the global).
        WeightsFileError: ``path`` is not a (complete) PyTorch checkpoint or does not hold a dict.
    """
    return checkpoint_loading.load_checkpoint(path, map_location=map_location)


def state_dict_from_checkpoint(
    checkpoint: Mapping[str, Any] | str | Path, prefix: str | None = None
) -> TensorDict:
    """Weights of one sub-module from a Lightning checkpoint's ``state_dict``.

    Args:
        checkpoint: a dict from ``load_checkpoint`` or the path of a ``.ckpt`` file.
        prefix: the sub-module's attribute path in the LightningModule, e.g. ``"volume_encoder."``; its
            keys are returned with the prefix removed. ``None`` returns the whole state dict.

    Returns:
        Mapping name -> tensor, ready for ``load_weights`` / ``module.load_state_dict``.

    Raises:
        WeightsFileError: the checkpoint has no ``state_dict`` (not a Lightning checkpoint).
        WeightsMismatchError: no key starts with ``prefix`` (the message lists the prefixes there are).
    """
    source = "the checkpoint"
    if isinstance(checkpoint, (str, Path)):
        source = str(checkpoint)
        checkpoint = load_checkpoint(checkpoint)
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping):
        raise WeightsFileError(
            f"{source} has no 'state_dict' entry, so it is not a Lightning checkpoint; its keys are "
            f"{_format_names([str(k) for k in checkpoint])}"
        )
    return dict(state) if prefix is None else _select_prefix(state, prefix, f"{source}'s state_dict")


# --------------------------------------------------------------------------------------------------
# Output comparison shared by TorchScript and ONNX
# --------------------------------------------------------------------------------------------------


def _flatten_outputs(outputs: Any, name: str = "output") -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of a tensor / tuple / list / dict output, in pytree order (dict insertion
    order), which is also the order of an exported ONNX graph's outputs. ``None`` entries are skipped."""
    if isinstance(outputs, torch.Tensor):
        return [(name, outputs)]
    if outputs is None:
        return []
    if isinstance(outputs, Mapping):
        return [pair for key, value in outputs.items() for pair in _flatten_outputs(value, f"{name}.{key}")]
    if isinstance(outputs, (tuple, list)):
        return [pair for i, value in enumerate(outputs) for pair in _flatten_outputs(value, f"{name}[{i}]")]
    raise ValueError(
        f"model output '{name}' is a {type(outputs).__name__}; only tensors, tuples, lists and dicts of "
        "tensors can be exported and compared"
    )


def _compare_outputs(
    expected: list[tuple[str, torch.Tensor]],
    found: list[tuple[str, torch.Tensor]],
    *,
    atol: float,
    rtol: float,
    what: str,
) -> float:
    """Raise ExportParityError unless every ``found`` tensor is within ``atol + rtol * |expected|``.

    Returns:
        The largest absolute difference over all outputs.
    """
    if len(expected) != len(found):
        raise ExportParityError(
            f"{what} returned {len(found)} outputs ({_format_names([n for n, _ in found])}) but the PyTorch "
            f"module returns {len(expected)} ({_format_names([n for n, _ in expected])})",
            max_abs_diff=float("inf"), output_name=None,
        )
    worst, worst_name, failing = 0.0, None, []
    for (name, want), (_, got) in zip(expected, found):
        want, got = want.detach().cpu(), got.detach().cpu()
        if want.shape != got.shape:
            raise ExportParityError(
                f"{what}: output '{name}' has shape {list(got.shape)}, the PyTorch module gives {list(want.shape)}",
                max_abs_diff=float("inf"), output_name=name,
            )
        if want.numel() == 0:
            continue
        want64, got64 = want.to(torch.float64), got.to(torch.float64)
        # equal values (infinities included) and NaN in both count as 0; NaN in one only as infinite
        same = (want64 == got64) | (torch.isnan(want64) & torch.isnan(got64))
        diff = torch.where(same, torch.zeros_like(want64), (want64 - got64).abs()).nan_to_num(nan=float("inf"))
        if diff.max().item() >= worst:
            worst, worst_name = diff.max().item(), name
        exact = not want.is_floating_point()  # integer / bool outputs (ids, masks) must match exactly
        tolerance = {"rtol": 0.0, "atol": 0.0} if exact else {"rtol": rtol, "atol": atol}
        if not torch.isclose(got64, want64, equal_nan=True, **tolerance).all():
            failing.append(name)
    if failing:
        raise ExportParityError(
            f"{what} differs from the PyTorch module beyond atol={atol}, rtol={rtol}: max |difference| = "
            f"{worst:.3g} (output '{worst_name}'); failing outputs: {_format_names(failing)}. Typical causes: "
            "control flow on tensor values or Python numbers taken from shapes, frozen in at export time.",
            max_abs_diff=worst, output_name=worst_name,
        )
    return worst


def _check_example_inputs(example_inputs: Any) -> tuple[Any, ...]:
    if isinstance(example_inputs, torch.Tensor) or not isinstance(example_inputs, (tuple, list)):
        raise ValueError(
            "example_inputs must be a tuple of the forward's positional arguments, e.g. (x,) rather than x; "
            f"got {type(example_inputs).__name__}"
        )
    if not example_inputs:
        raise ValueError("example_inputs is empty; pass the forward's positional arguments, e.g. (x,)")
    return tuple(example_inputs)


def _check_tolerances(atol: float, rtol: float) -> None:
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol and rtol must be >= 0, got atol={atol}, rtol={rtol}")


def _input_device(example_inputs: tuple[Any, ...]) -> torch.device:
    return next((x.device for x in example_inputs if isinstance(x, torch.Tensor)), torch.device("cpu"))


@contextlib.contextmanager
def _no_torchscript_deprecation_warnings() -> Iterator[None]:
    # torch.jit is deprecated upstream in favour of torch.export; TorchScript is still what libtorch
    # (C++) deployments load, so it is exported on request without repeating the warning each call.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        yield


# --------------------------------------------------------------------------------------------------
# TorchScript
# --------------------------------------------------------------------------------------------------


def verify_torchscript(
    path: str | Path,
    module: nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> float:
    """Load a TorchScript file and compare its outputs with ``module``'s (in eval mode).

    Args:
        path: the TorchScript file.
        module: the PyTorch reference.
        example_inputs: positional arguments of ``forward``.
        atol, rtol: element-wise tolerance ``|found - expected| <= atol + rtol * |expected|``.

    Returns:
        The largest absolute difference.

    Raises:
        ValueError: bad ``example_inputs`` or tolerances.
        ExportParityError: outputs differ in count, shape or value.
    """
    example_inputs = _check_example_inputs(example_inputs)
    _check_tolerances(atol, rtol)
    with _no_torchscript_deprecation_warnings():
        loaded = torch.jit.load(str(path), map_location=_input_device(example_inputs))
    with eval_mode(module), torch.no_grad():
        expected = _flatten_outputs(module(*example_inputs))
        found = _flatten_outputs(loaded(*example_inputs))
    return _compare_outputs(expected, found, atol=atol, rtol=rtol, what=f"TorchScript file {path}")


def export_torchscript(
    module: nn.Module,
    example_inputs: tuple[Any, ...],
    path: str | Path,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    method: Literal["trace", "script"] = "trace",
) -> Path:
    """Export ``module`` to TorchScript, reload the file and check its outputs, then publish it atomically.

    ``trace`` records the operations run on ``example_inputs`` (Python control flow is frozen);
    ``script`` compiles the Python source (needs TorchScript-compatible code). TorchScript is
    deprecated upstream: prefer ``export_onnx`` unless the consumer is libtorch (C++).

    Args:
        module: the model; put in eval mode during export, each sub-module's mode restored afterwards.
        example_inputs: positional arguments of ``forward``, e.g. ``(volume,)``.
        path: target file (``*.pt``); missing parent folders are created.
        atol, rtol: parity tolerance, see ``verify_torchscript``.
        method: ``"trace"`` or ``"script"``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: bad ``example_inputs``, tolerances or ``method``.
        ExportParityError: the reloaded file's outputs differ (nothing is written to ``path``).
    """
    path = Path(path)
    example_inputs = _check_example_inputs(example_inputs)
    _check_tolerances(atol, rtol)
    if method not in ("trace", "script"):
        raise ValueError(f"method must be 'trace' or 'script', got {method!r}")
    with eval_mode(module), _no_torchscript_deprecation_warnings(), _staging_folder(path) as staging:
        if method == "trace":
            # strict=False allows dict and list outputs; check_trace=False because verify_torchscript
            # below compares the saved file itself, with the caller's tolerance.
            with torch.no_grad():
                exported = torch.jit.trace(module, example_inputs, strict=False, check_trace=False)
        else:
            exported = torch.jit.script(module)
        staged = staging / path.name
        torch.jit.save(exported, str(staged))
        verify_torchscript(staged, module, example_inputs, atol=atol, rtol=rtol)
        _publish(staging, path)
    return path


# --------------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------------


def _grow_batch(x: Any, dynamic: bool) -> Any:
    """One more sample along axis 0: the first sample reversed along its last axis (different data,
    same dtype and value range, valid for token ids and masks too)."""
    if not dynamic or not isinstance(x, torch.Tensor) or x.dim() == 0:
        return x
    extra = x[:1].flip(-1) if x.dim() >= 2 else x[:1]
    return torch.cat([x, extra], dim=0)


def verify_onnx(
    path: str | Path,
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> float:
    """Run an ONNX file in an onnxruntime CPU session and compare its outputs with ``module``'s.

    When an input's axis 0 is symbolic in the graph (dynamic batch), the comparison is repeated with
    one more sample in those inputs, so a batch size frozen in at export time is caught.

    Args:
        path: the ``.onnx`` file.
        module: the PyTorch reference (run in eval mode).
        example_inputs: tensors, in the order of the graph's inputs.
        atol, rtol: element-wise tolerance ``|found - expected| <= atol + rtol * |expected|``.

    Returns:
        The largest absolute difference over all runs.

    Raises:
        ValueError: bad ``example_inputs`` (not tensors, wrong count) or tolerances.
        ExportParityError: outputs differ in count, shape or value.
    """
    import onnxruntime  # optional heavy dependency: imported only when ONNX is used

    example_inputs = _check_example_inputs(example_inputs)
    _check_tolerances(atol, rtol)
    not_tensors = [i for i, x in enumerate(example_inputs) if not isinstance(x, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"ONNX graphs take tensors only; example_inputs at positions {not_tensors} are not tensors")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_inputs = session.get_inputs()
    if len(graph_inputs) != len(example_inputs):
        raise ValueError(
            f"{path} has {len(graph_inputs)} inputs ({[i.name for i in graph_inputs]}) but "
            f"{len(example_inputs)} example inputs were given"
        )
    dynamic_batch = [bool(g.shape) and not isinstance(g.shape[0], int) for g in graph_inputs]
    runs = [example_inputs]
    if any(dynamic_batch):
        runs.append(tuple(_grow_batch(x, dyn) for x, dyn in zip(example_inputs, dynamic_batch)))
    worst = 0.0
    output_names = [o.name for o in session.get_outputs()]
    for run, inputs in enumerate(runs):
        batch_size = next(x.shape[0] for x, dyn in zip(inputs, dynamic_batch) if dyn) if any(dynamic_batch) else None
        at_batch = f" at batch size {batch_size}" if batch_size is not None else ""
        try:
            with eval_mode(module), torch.no_grad():
                expected = _flatten_outputs(module(*inputs))
        except Exception as error:
            if run == 0:
                raise
            raise ExportParityError(
                f"{path} has a dynamic batch axis but the PyTorch module itself fails{at_batch} "
                f"({type(error).__name__}: {error}); make its forward batch-size agnostic or export it "
                "without a dynamic batch axis",
                max_abs_diff=float("inf"), output_name=None,
            ) from error
        feed = {g.name: x.detach().cpu().numpy() for g, x in zip(graph_inputs, inputs)}
        try:
            arrays = session.run(None, feed)
        except Exception as error:  # onnxruntime raises its own Fail / InvalidArgument / RuntimeException types
            raise ExportParityError(
                f"onnxruntime cannot run {path}{at_batch}: {type(error).__name__}: {error}",
                max_abs_diff=float("inf"), output_name=None,
            ) from error
        found = [(name, torch.from_numpy(array)) for name, array in zip(output_names, arrays)]
        worst = max(worst, _compare_outputs(expected, found, atol=atol, rtol=rtol, what=f"ONNX file {path}{at_batch}"))
    return worst


def _dynamic_shapes(
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]],
    input_names: Sequence[str],
    output_names: Sequence[str],
    example_inputs: tuple[torch.Tensor, ...],
) -> tuple[dict[int, str] | None, ...]:
    """Legacy ``dynamic_axes`` -> per-input ``dynamic_shapes`` of the torch.export-based exporter.

    Output axes are not passed on: torch.export derives them from the inputs' symbolic sizes.
    """
    unknown = set(dynamic_axes) - set(input_names) - set(output_names)
    if unknown:
        raise ValueError(f"dynamic_axes names {sorted(unknown)} are neither input_names nor output_names")
    shapes: list[dict[int, str] | None] = []
    for name, x in zip(input_names, example_inputs):
        axes = dynamic_axes.get(name)
        if axes is None:
            shapes.append(None)
            continue
        named = dict(axes) if isinstance(axes, Mapping) else {axis: f"{name}_dim{axis}" for axis in axes}
        bad = [axis for axis in named if not isinstance(axis, int) or not 0 <= axis < x.dim()]
        if bad:
            raise ValueError(f"dynamic_axes['{name}'] has axes {bad} outside the input's {x.dim()} dimensions")
        shapes.append(named)
    return tuple(shapes)


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    opset: int = _MIN_ONNX_OPSET,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> Path:
    """Export ``module`` to ONNX, validate the graph, check it in onnxruntime, then publish it atomically.

    Exporter choice: the torch.export-based exporter (``dynamo=True``, the default since torch 2.9,
    needs onnxscript). With torch 2.13 both exporters reproduced MONAI ViT and SwinUNETR outputs
    within 1e-5 on a second batch size, but the legacy TorchScript-based one (``dynamo=False``) warns
    that it will be removed, and as a tracer it follows one branch of value-dependent control flow
    (and freezes ``int(x.shape[0])``) with only a TracerWarning; torch.export traces sizes
    symbolically and raises on value-dependent control flow. It costs about a second per export.

    Args:
        module: the model; eval mode during export, each sub-module's mode restored afterwards.
        example_inputs: tensors passed positionally to ``forward``.
        path: target ``.onnx`` file; weights over ~1.8 GB go to a ``<name>.data`` file beside it.
        input_names: one name per example input.
        output_names: one name per output tensor (tuple / dict outputs flattened in order).
        dynamic_axes: legacy format ``{"volume": {0: "batch"}, "embedding": {0: "batch"}}`` or
            ``{"volume": [0]}``; input entries become symbolic sizes, output axes follow from them.
        opset: ONNX opset, >= 18 (the exporter's lowest native opset: converting down to 17 fails on
            common ops such as ReduceMean; onnxruntime >= 1.14 runs opset 18).
        atol, rtol: parity tolerance, see ``verify_onnx``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: bad inputs, names, axes, opset or tolerances.
        ExportError: the exported graph fails ``onnx.checker``.
        ExportParityError: onnxruntime's outputs differ, or an axis asked to be dynamic came out fixed
            (nothing is written to ``path``).
    """
    import onnx  # optional heavy dependency: imported only when ONNX is used

    path = Path(path)
    example_inputs = _check_example_inputs(example_inputs)
    _check_tolerances(atol, rtol)
    if not all(isinstance(x, torch.Tensor) for x in example_inputs):
        raise ValueError("ONNX graphs take tensors only; every example input must be a torch.Tensor")
    input_names, output_names = list(input_names), list(output_names)
    if len(input_names) != len(example_inputs):
        raise ValueError(f"got {len(input_names)} input_names for {len(example_inputs)} example inputs")
    if len(set(input_names + output_names)) != len(input_names) + len(output_names):
        raise ValueError(f"input and output names must be unique, got {input_names} and {output_names}")
    if opset < _MIN_ONNX_OPSET:
        raise ValueError(
            f"opset {opset} is below {_MIN_ONNX_OPSET}, the lowest the torch.export-based exporter emits "
            f"natively; use opset >= {_MIN_ONNX_OPSET}"
        )
    dynamic_shapes = _dynamic_shapes(dynamic_axes or {}, input_names, output_names, example_inputs)

    with eval_mode(module):
        with torch.no_grad():
            n_outputs = len(_flatten_outputs(module(*example_inputs)))
        if n_outputs != len(output_names):
            raise ValueError(
                f"the module returns {n_outputs} tensors but {len(output_names)} output_names were given"
            )
        weight_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
        with _staging_folder(path) as staging:
            staged = staging / path.name
            with warnings.catch_warnings():
                # torch's exporter trips over its own pytree deprecation (torch 2.13); nothing a caller can fix
                warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
                torch.onnx.export(
                    module,
                    example_inputs,
                    str(staged),
                    input_names=input_names,
                    output_names=output_names,
                    opset_version=opset,
                    dynamo=True,
                    dynamic_shapes=dynamic_shapes if any(s is not None for s in dynamic_shapes) else None,
                    external_data=weight_bytes > _ONNX_INLINE_WEIGHTS_LIMIT_BYTES,
                    verbose=False,
                )
            try:
                onnx.checker.check_model(str(staged))
            except onnx.checker.ValidationError as error:
                raise ExportError(f"the exported ONNX graph for {path} is invalid: {error}") from error
            _check_dynamic_axes_kept(onnx.load(str(staged), load_external_data=False), dynamic_axes or {}, path)
            verify_onnx(staged, module, example_inputs, atol=atol, rtol=rtol)
            _publish(staging, path)
    return path


def _check_dynamic_axes_kept(
    model: Any, dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]], path: Path
) -> None:
    """Raise when an axis that ``dynamic_axes`` asks to be dynamic has a fixed size in the graph.

    The exporter names the requested input axes whatever it traced, but an output axis comes out
    fixed when the forward specialised on the size (e.g. ``if x.shape[0] == 1``), which this catches.
    """
    graph_values = {v.name: v.type.tensor_type.shape.dim for v in [*model.graph.input, *model.graph.output]}
    for name, axes in dynamic_axes.items():
        if name not in graph_values:  # an input the graph does not use may be dropped by the exporter
            continue
        for axis in axes:
            if not 0 <= axis < len(graph_values[name]):
                rank = len(graph_values[name])
                raise ValueError(f"dynamic_axes['{name}'] has axis {axis}, but '{name}' has {rank} axes")
            dim = graph_values[name][axis]
            if dim.HasField("dim_value"):
                raise ExportParityError(
                    f"ONNX export for {path} fixed '{name}' axis {axis} to size {dim.dim_value} although "
                    "dynamic_axes asks for it to be dynamic: the forward specialises on that size (e.g. "
                    "`if x.shape[0] == 1`, .item(), view with a hard-coded size); make it size-agnostic or drop "
                    "the axis from dynamic_axes",
                    max_abs_diff=float("inf"), output_name=name,
                )
