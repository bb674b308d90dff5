"""Read a ``python -m medvl.export`` folder back as encoders that reproduce the trained module's embeddings.

    from medvl.export import load_exported
    encoders = load_exported("export/")                                   # runtime="auto"
    pooled = encoders.encode_volume(volume)["pooled"]                     # (B, E), volume (B, 1, D, H, W) in [0, 1]
    report = encoders.encode_report([["The liver is enlarged.", "No pleural effusion."]])  # (B, E)
    similarity = torch.nn.functional.cosine_similarity(pooled, report)

The volume side runs on one of three runtimes, all giving the same embeddings (cosine >= 0.9999 with the trained
module, checked at export):

- ``safetensors``: the ``VolumeEncoder`` rebuilt in PyTorch from the JSON's "encoder" entry, the backbone file and
  ``volume_encoder_heads.safetensors`` (projection heads and the pooled feature's batch-norm statistics);
- ``torchscript``: ``volume_encoder.torchscript.pt``;
- ``onnx``: ``volume_encoder.onnx`` in onnxruntime (CPU).

The report side is the transformers ``BertModel`` of ``report_encoder/`` with TriBERT's input layout
(``ReportBatchEncoder``) and hierarchical attention mask, its global [CLS] state standardised with the pre-training
batch-norm statistics (``report_norm.safetensors``) and projected (``report_projection.safetensors``), exactly as
``MedVLPretrainModule.encode_report`` in eval mode.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from common.export import load_weights, read_weights
from common.layers.projection import ProjectionHead

__all__ = ["EMBEDDING_COSINE_MIN", "RUNTIMES", "ExportedEncoders", "available_runtimes", "load_exported"]

RUNTIMES = ("safetensors", "torchscript", "onnx")
# Lowest cosine similarity between an export's embeddings and the trained module's that the export check accepts.
EMBEDDING_COSINE_MIN = 0.9999
_OUTPUT_NAMES = ("pooled", "fine", "coarse", "tokens")
_RUNTIME_FILE_KEYS = {"safetensors": "heads_weights", "torchscript": "torchscript", "onnx": "onnx"}

VolumeRunner = Callable[[Tensor], Sequence[Tensor]]


def available_runtimes(export_dir: str | Path) -> list[str]:
    """The volume runtimes an export folder holds, in the order ``runtime="auto"`` tries them."""
    from medvl.export import read_export_info

    files = read_export_info(export_dir).get("files", {})
    return [runtime for runtime in RUNTIMES if _RUNTIME_FILE_KEYS[runtime] in files]


class ExportedEncoders:
    """The exported volume and report encoders, with the trained module's ``encode_volume`` / ``encode_report``.

    Built by ``load_exported``; ``runtime`` says which volume file runs, ``info`` is ``volume_encoder.json``.
    """

    def __init__(self, info: dict[str, Any], runtime: str, volume_runner: VolumeRunner,
                 report_encoder: Callable[[list[list[str]]], Tensor] | None, export_dir: Path) -> None:
        self.info = info
        self.runtime = runtime
        self.export_dir = export_dir
        self.input_shape = tuple(info["input"]["shape"][1:])  # (C, D, H, W)
        self._volume_runner = volume_runner
        self._report_encoder = report_encoder

    def encode_volume(self, volume: Tensor | np.ndarray) -> dict[str, Tensor]:
        """Volume embeddings, as ``MedVLPretrainModule.encode_volume`` in eval mode.

        Shapes:
            volume: (B, C, D, H, W) float in [0, 1], (C, D, H, W) = ``input_shape`` (preprocess as in
            ``info["input"]["how"]``) -> {"pooled": (B, E), "fine": (B, Nf, E), "coarse": (B, Nc, E),
            "tokens": (B, Nt, E)}

        Raises:
            ValueError: another shape or a non-float volume.
        """
        volume = torch.as_tensor(volume)
        if volume.dim() != 5 or tuple(volume.shape[1:]) != self.input_shape or not volume.is_floating_point():
            raise ValueError(f"encode_volume expects a float (B, {', '.join(map(str, self.input_shape))}) volume in "
                             f"[0, 1], got {volume.dtype} {tuple(volume.shape)}; preprocess it as "
                             f"{self.export_dir / 'volume_encoder.json'} -> input.how says")
        with torch.no_grad():
            outputs = self._volume_runner(volume.float().cpu())
        return {name: torch.as_tensor(np.asarray(out) if not isinstance(out, Tensor) else out)
                for name, out in zip(_OUTPUT_NAMES, outputs)}

    def encode_report(self, sentences: Sequence[Sequence[str]]) -> Tensor:
        """Report embeddings in the shared space, as ``MedVLPretrainModule.encode_report`` in eval mode.

        Shapes:
            sentences: B reports, each a list of sentences -> (B, E)

        Raises:
            ValueError: the export has no report encoder (exported without the "transformers" format).
        """
        if self._report_encoder is None:
            raise ValueError(f"{self.export_dir} holds no report encoder; export with format=all or include "
                             "'transformers' in format=")
        with torch.no_grad():
            return self._report_encoder([list(report) for report in sentences])


def load_exported(export_dir: str | Path, runtime: str = "auto") -> ExportedEncoders:
    """Load a ``python -m medvl.export`` folder as ``ExportedEncoders``.

    Args:
        export_dir: the export folder (``volume_encoder.json`` inside).
        runtime: "auto" (the first of safetensors, torchscript, onnx that the folder holds) or one of them.

    Raises:
        FileNotFoundError: not an export folder.
        ValueError: an unknown runtime, or one the folder lacks (the message lists those it has), or an export
            from before the report standardisation statistics were exported (re-export the checkpoint).
    """
    from medvl.export import read_export_info

    export_dir = Path(export_dir)
    info = read_export_info(export_dir)
    available = available_runtimes(export_dir)
    if runtime not in ("auto", *RUNTIMES):
        raise ValueError(f"runtime must be 'auto' or one of {list(RUNTIMES)}, got {runtime!r}")
    if runtime == "auto":
        if not available:
            raise ValueError(f"{export_dir} holds no runnable volume encoder (files: {info.get('files')}); "
                             "re-export with format=all")
        runtime = available[0]
    if runtime not in available:
        raise ValueError(f"{export_dir} has no {runtime} volume encoder; it holds {available or 'none'} "
                         "(re-export with format=all, or choose another runtime)")
    runners = {"safetensors": _safetensors_runner, "torchscript": _torchscript_runner, "onnx": _onnx_runner}
    volume_runner = runners[runtime](export_dir, info)
    report_dir = export_dir / info["report_encoder"] if info.get("report_encoder") else None
    report_encoder = _report_encoder(report_dir) if report_dir is not None else None
    return ExportedEncoders(info, runtime, volume_runner, report_encoder, export_dir)


# --------------------------------------------------------------------------------------------------
# Volume runtimes
# --------------------------------------------------------------------------------------------------


def _safetensors_runner(export_dir: Path, info: dict[str, Any]) -> VolumeRunner:
    from medvl.models.components.volume_encoder import VolumeEncoder

    encoder_entry = info.get("encoder")
    if not encoder_entry:
        raise ValueError(f"{export_dir / 'volume_encoder.json'} has no 'encoder' entry; re-export the checkpoint")
    kwargs = dict(encoder_entry["kwargs"])
    encoder = VolumeEncoder(kwargs.pop("backbone"), **kwargs)
    backbone, _ = read_weights(export_dir / info["files"]["backbone_weights"])
    heads, _ = read_weights(export_dir / info["files"]["heads_weights"])
    state = {**{f"backbone.{key}": tensor for key, tensor in backbone.items()}, **heads}
    load_weights(encoder, state, strict=True)
    encoder.eval()

    def run(volume: Tensor) -> Sequence[Tensor]:
        out = encoder.encode_volume(volume)
        return [out[name] for name in _OUTPUT_NAMES]

    return run


def _torchscript_runner(export_dir: Path, info: dict[str, Any]) -> VolumeRunner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream; it still loads
        return torch.jit.load(str(export_dir / info["files"]["torchscript"]), map_location="cpu").eval()


def _onnx_runner(export_dir: Path, info: dict[str, Any]) -> VolumeRunner:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(export_dir / info["files"]["onnx"]),
                                           providers=["CPUExecutionProvider"])

    def run(volume: Tensor) -> Sequence[Tensor]:
        return [torch.from_numpy(array) for array in session.run(None, {"volume": volume.numpy()})]

    return run


# --------------------------------------------------------------------------------------------------
# Report encoder
# --------------------------------------------------------------------------------------------------


def _report_encoder(report_dir: Path) -> Callable[[list[list[str]]], Tensor]:
    from transformers import AutoModel, AutoTokenizer

    from medvl.export import REPORT_INFO_FILE, bert_attention_mask
    from medvl.models.components.report_tokenization import ReportBatchEncoder

    report_info = json.loads((report_dir / REPORT_INFO_FILE).read_text(encoding="utf-8"))
    norm_info, projection_info = report_info.get("report_norm"), report_info.get("report_projection")
    if not norm_info or not projection_info:
        raise ValueError(f"{report_dir / REPORT_INFO_FILE} lacks the report standardisation statistics or the "
                         "projection (an export from an older medvl): re-export the checkpoint with "
                         "`python -m medvl.export`")
    bert = AutoModel.from_pretrained(str(report_dir), local_files_only=True, add_pooling_layer=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(report_dir), local_files_only=True)
    batcher = ReportBatchEncoder(tokenizer, max_length=report_info["max_length"],
                                 max_sentences=report_info["max_sentences"])
    statistics, _ = read_weights(report_dir / norm_info["file"])
    mean, std = statistics["running_mean"], torch.sqrt(statistics["running_var"] + norm_info["eps"])
    projection = ProjectionHead(projection_info["in_dim"], projection_info["out_dim"],
                                num_layers=projection_info["num_layers"]).eval()
    load_weights(projection, read_weights(report_dir / projection_info["file"])[0], strict=True)

    def encode(sentences: list[list[str]]) -> Tensor:
        batch = batcher(sentences)
        hidden = bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                      attention_mask=bert_attention_mask(batch)).last_hidden_state  # (B, L, hidden)
        return projection((hidden[:, 0] - mean) / std)  # global [CLS] (B, hidden) -> (B, E)

    return encode
