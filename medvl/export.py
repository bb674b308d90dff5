"""Export a pre-trained medvl checkpoint for downstream use.

    python -m medvl.export ckpt_path=outputs/medvl/runs/<time>/checkpoints/last.ckpt out=export/ [format=all]

Writes into ``out`` (``format`` = ``all`` or a comma-separated subset of safetensors, torchscript, onnx,
transformers; the JSON is always written):

    volume_encoder.safetensors     the MONAI backbone alone; loads with strict=True into
                                   SwinUNETR(...).swinViT (Swin) or UNETR(...).vit (ViT); unet: the keys of
                                   BasicUNet(...)'s encoder levels conv_0, down_1 ... down_4
    volume_encoder_heads.safetensors  the rest of the volume encoder (projection heads, the pooled feature's
                                   batch-norm statistics): with the backbone file and the JSON's "encoder"
                                   entry it rebuilds the whole encoder in PyTorch
    volume_encoder.json            everything a pipeline needs to preprocess identically and rebuild the network:
                                   the training preprocessing (orientation, spacing, HU window, input size), the
                                   MONAI backbone / segmentation classes and their arguments, output sizes, files
    volume_encoder.torchscript.pt  the whole volume encoder (backbone + projection heads) with plain tensor
    volume_encoder.onnx            outputs (pooled, fine, coarse, tokens), each checked against PyTorch at export
    report_encoder/                TriBERT's text path as a transformers BertModel + its tokenizer
                                   (save_pretrained layout, AutoModel / AutoTokenizer offline), the report
                                   standardisation statistics and projection into the shared space, and
                                   medvl_report_encoder.json

``medvl.export.load_exported(DIR)`` (``medvl/exported_encoders.py``) reads such a folder back into an object with
``encode_volume`` / ``encode_report`` that reproduce the trained module's embeddings, on any of the three runtimes.

Loading never unpickles arbitrary code (``common.export.load_checkpoint``: weights_only), and a checkpoint
whose weights do not fit the architecture in its own hyper-parameters raises ``WeightsMismatchError``
listing the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
import transformers
from torch import Tensor, nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerFast

from common import checkpoint_loading
from common.export import (
    ExportError,
    ExportParityError,
    WeightsFileError,
    WeightsMismatchError,
    eval_mode,
    export_onnx,
    export_torchscript,
    load_weights,
    save_weights,
    state_dict_from_checkpoint,
)
from common.io import atomic_write_json
from medvl.data.transforms import PreprocessConfig
from medvl.models.components.report_tokenization import ReportBatchEncoder
from medvl.models.components.tribert import TriBERT, tribert_attention_mask
from medvl.models.components.volume_encoder import VolumeEncoder

if TYPE_CHECKING:
    from medvl.models.medvl_module import MedVLPretrainModule

__all__ = [
    "EXPORT_FORMATS",
    "ExportArgumentError",
    "VolumeEncoderForExport",
    "bert_attention_mask",
    "export_pretrained",
    "export_report_encoder",
    "export_volume_encoder",
    "load_exported",
    "load_pretrained_module",
    "main",
    "parse_args",
    "read_export_info",
    "tribert_to_bert",
]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("safetensors", "torchscript", "onnx", "transformers")
EXPORT_FORMAT_VERSION = 1
WEIGHTS_FILE = "volume_encoder.safetensors"
INFO_FILE = "volume_encoder.json"
TORCHSCRIPT_FILE = "volume_encoder.torchscript.pt"
ONNX_FILE = "volume_encoder.onnx"
REPORT_ENCODER_DIR = "report_encoder"
REPORT_PROJECTION_FILE = "report_projection.safetensors"
REPORT_NORM_FILE = "report_norm.safetensors"
HEADS_FILE = "volume_encoder_heads.safetensors"
VOLUME_ENCODER_CLASS = "medvl.models.components.volume_encoder.VolumeEncoder"
REPORT_INFO_FILE = "medvl_report_encoder.json"
OUTPUT_NAMES = ("pooled", "fine", "coarse", "tokens")
# Parity tolerances of the exported files against PyTorch (TorchScript replays the same kernels; ONNX Runtime
# fuses and reorders float32 reductions, hence the looser bound).
TORCHSCRIPT_ATOL, TORCHSCRIPT_RTOL = 1e-5, 1e-4
ONNX_ATOL, ONNX_RTOL = 1e-4, 1e-3
TRANSFORMERS_ATOL = 1e-5
# Sentences of the text used to check the transformers export against TriBERT (any text works: unknown pieces
# become [UNK], which is still a valid comparison).
_PARITY_REPORTS = (
    ["The liver is normal in size.", "No focal lesion is seen."],
    ["A small nodule is present in the right lower lobe."],
)
# Keys the CLI accepts, with their defaults (None = required).
CLI_ARGUMENTS: dict[str, str | None] = {
    "ckpt_path": None,
    "out": None,
    "format": "all",
    "text_layers": "all",
    "overwrite": "false",
}


class ExportArgumentError(ValueError):
    """Bad command-line arguments of ``python -m medvl.export`` (the message lists the valid ones)."""


# --------------------------------------------------------------------------------------------------
# Loading the pre-training checkpoint
# --------------------------------------------------------------------------------------------------


def load_pretrained_module(ckpt_path: str | Path) -> MedVLPretrainModule:
    """Rebuild the pre-training module from a Lightning checkpoint alone, without arbitrary unpickling.

    The architecture comes from the checkpoint's ``hyper_parameters`` (the module's constructor arguments), the
    weights from its ``state_dict``, loaded with strict=True. ``text_encoder.pretrained_dir`` is ignored: it only
    initialised the run that wrote the checkpoint, whose weights are in the file.

    Args:
        ckpt_path: a ``.ckpt`` written by ``python -m medvl.train``.

    Returns:
        The ``MedVLPretrainModule`` in eval mode, on CPU.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError / WeightsFileError: the file needs arbitrary unpickling, or is not a checkpoint.
        ValueError: the hyper-parameters are missing or do not build a MedVLPretrainModule.
        WeightsMismatchError: the weights do not fit the architecture (lists missing, unexpected and
            mis-shaped keys).
    """
    from medvl.models.medvl_module import MedVLPretrainModule  # noqa: F811 (the LightningModule: heavy import)

    ckpt_path = Path(ckpt_path)
    checkpoint = checkpoint_loading.load_checkpoint(ckpt_path, map_location="cpu", expected_module=MedVLPretrainModule)
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, Mapping) or not hparams:
        raise WeightsFileError(
            f"{ckpt_path} has no 'hyper_parameters', so the architecture cannot be rebuilt; export a checkpoint "
            "written by `python -m medvl.train` (Lightning saves the hyper-parameters in every .ckpt)"
        )
    required = ("tokenizer_json", "label_names", "preprocess")
    missing = [key for key in required if key not in hparams]
    if missing:
        raise ValueError(
            f"{ckpt_path} is not a medvl pre-training checkpoint: its hyper-parameters lack {missing} "
            f"(found {sorted(hparams)}); export a checkpoint written by `python -m medvl.train`"
        )
    kwargs = {key: value for key, value in hparams.items() if not str(key).startswith("_")}
    if isinstance(kwargs.get("text_encoder"), Mapping):
        kwargs["text_encoder"] = {**kwargs["text_encoder"], "pretrained_dir": None}
    state = state_dict_from_checkpoint(checkpoint)
    volume = kwargs.get("volume_encoder")
    if isinstance(volume, Mapping) and "backbone" not in volume:
        # Checkpoints whose hyper-parameters lost the backbone name (the module popped it from the saved dict):
        # MONAI's ViT names its patch embedding `patch_embedding`, the Swin transformer `patch_embed`.
        is_vit = any(key.startswith("volume_encoder.backbone.patch_embedding.") for key in state)
        kwargs["volume_encoder"] = {**volume, "backbone": "vit" if is_vit else "swin"}
    try:
        module = MedVLPretrainModule(**kwargs)
    except TypeError as error:  # an argument the constructor does not know: another module's checkpoint
        raise ValueError(
            f"the hyper-parameters of {ckpt_path} do not build a MedVLPretrainModule ({error}); is it a checkpoint "
            "of another model?"
        ) from error
    try:
        load_weights(module, state, strict=True)
    except WeightsMismatchError as error:
        raise WeightsMismatchError(
            f"{ckpt_path}: the weights do not fit the architecture described by its own hyper-parameters "
            f"(another architecture or size?).\n{error}",
            missing=error.missing, unexpected=error.unexpected, shape_mismatches=error.shape_mismatches,
        ) from None
    return module.eval()


# --------------------------------------------------------------------------------------------------
# Volume encoder
# --------------------------------------------------------------------------------------------------


class VolumeEncoderForExport(nn.Module):
    """A ``VolumeEncoder`` whose outputs are plain tensors, for TorchScript and ONNX.

    Args:
        encoder: the pre-trained volume encoder (backbone and projection heads).

    Shapes:
        volume: (B, C, D, H, W) float in [0, 1], (D, H, W) = the encoder's image_size ->
        pooled (B, E), fine (B, Nf, E), coarse (B, Nc, E), tokens (B, Nt, E); E = out_dim, token grids and
        strides in ``volume_encoder.json`` ("outputs").
    """

    def __init__(self, encoder: VolumeEncoder) -> None:
        super().__init__()
        if not isinstance(encoder, VolumeEncoder):
            raise ValueError(f"expected a VolumeEncoder, got {type(encoder).__name__}")
        self.encoder = encoder

    def forward(self, volume: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self.encoder.encode_volume(volume)
        return out["pooled"], out["fine"], out["coarse"], out["tokens"]


def _output_description(encoder: VolumeEncoder) -> dict[str, Any]:
    """Names, shapes, token grids and strides of the exported outputs (B = batch)."""
    e = encoder.out_dim

    def tokens(grid: Sequence[int], stride: int, what: str) -> dict[str, Any]:
        return {"shape": ["B", math.prod(grid), e], "grid": list(grid), "stride_voxels": stride, "what": what}

    return {
        "pooled": {"shape": ["B", e], "what": "global embedding (mean of the last-stage tokens, projected)"},
        "fine": tokens(encoder.fine_grid, encoder.fine_stride, f"stage {encoder.fine_stage} patch tokens"),
        "coarse": tokens(encoder.coarse_grid, encoder.coarse_stride, f"stage {encoder.coarse_stage} region tokens"),
        "tokens": tokens(encoder.tokens_grid, encoder.tokens_stride, "last-stage tokens"),
        "token_order": "raster: token n sits at (n // (H*W), (n // W) % H, n % W) of its grid (D slowest)",
    }


def _example_volume(encoder: VolumeEncoder) -> Tensor:
    """A seeded (1, C, D, H, W) volume in [0, 1] for the parity checks (independent of the global RNG)."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand((1, encoder.in_channels, *encoder.image_size), generator=generator)


def export_volume_encoder(
    encoder: VolumeEncoder,
    preprocess: Mapping[str, Any],
    out_dir: str | Path,
    formats: Sequence[str] = ("safetensors", "torchscript", "onnx"),
    *,
    encoder_kwargs: Mapping[str, Any] | None = None,
    extra_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the volume encoder's backbone weights, its description JSON and, on request, TorchScript / ONNX.

    Args:
        encoder: the pre-trained encoder.
        preprocess: ``PreprocessConfig.to_dict()`` of the pre-training data (checked by rebuilding it).
        out_dir: the export folder (created).
        formats: any of "safetensors", "torchscript", "onnx" ("transformers" is ignored here).
        encoder_kwargs: the ``VolumeEncoder`` constructor arguments (backbone included); with "safetensors" the
            rest of the encoder (heads, batch-norm statistics) goes to ``volume_encoder_heads.safetensors`` and the
            arguments into the JSON's "encoder" entry, so that ``load_exported`` rebuilds it in PyTorch.
        extra_info: more entries for the JSON (e.g. the source checkpoint).

    Returns:
        The JSON written to ``<out_dir>/volume_encoder.json``.

    Raises:
        ValueError: an unknown format or an invalid preprocessing dict.
        ExportError / ExportParityError: a written file does not reproduce the PyTorch outputs.
    """
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose from {list(EXPORT_FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    preprocess = PreprocessConfig.from_dict(preprocess).to_dict()
    spec = encoder.backbone_spec()
    files: dict[str, str] = {}
    if "safetensors" in formats:
        state = encoder.backbone_state_dict()
        save_weights(state, out_dir / WEIGHTS_FILE, metadata={"medvl_backbone_spec": json.dumps(spec, sort_keys=True)})
        files["backbone_weights"] = WEIGHTS_FILE
        if encoder_kwargs is not None:
            full = encoder.state_dict()
            backbone_keys = {f"backbone.{key}" for key in state}
            if not backbone_keys <= set(full):
                raise ExportError("the backbone's keys are not the encoder's 'backbone.' keys; cannot split the heads off")
            heads = {key: tensor for key, tensor in full.items() if key not in backbone_keys}
            save_weights(heads, out_dir / HEADS_FILE)
            files["heads_weights"] = HEADS_FILE
    wrapper = VolumeEncoderForExport(encoder)  # the exporters run it in eval mode and restore the modes after
    example = _example_volume(encoder)
    if "torchscript" in formats:
        export_torchscript(wrapper, (example,), out_dir / TORCHSCRIPT_FILE, atol=TORCHSCRIPT_ATOL, rtol=TORCHSCRIPT_RTOL)
        files["torchscript"] = TORCHSCRIPT_FILE
    if "onnx" in formats:
        export_onnx(
            wrapper, (example,), out_dir / ONNX_FILE,
            input_names=["volume"], output_names=list(OUTPUT_NAMES),
            dynamic_axes={"volume": {0: "batch"}}, atol=ONNX_ATOL, rtol=ONNX_RTOL,
        )
        files["onnx"] = ONNX_FILE
    info: dict[str, Any] = {
        "format_version": EXPORT_FORMAT_VERSION,
        "created_with": "medvl.export",
        "preprocess": preprocess,
        "input": {
            "name": "volume",
            "shape": ["B", encoder.in_channels, *encoder.image_size],
            "dtype": "float32",
            "value_range": [0.0, 1.0],
            "how": (
                f"load the CT in HU, reorient to {preprocess['orientation']}, resample to spacing "
                f"{preprocess['spacing']} mm, map the HU window {preprocess['hu_window']} linearly to [0, 1] and "
                f"clip, then crop / pad (with 0 = air) to {list(encoder.image_size)} "
                "(medvl.data.transforms.build_preprocessing(PreprocessConfig.from_dict(preprocess)) does exactly this)"
            ),
        },
        "outputs": _output_description(encoder),
        "backbone_spec": spec,
        **({"encoder": {"class": VOLUME_ENCODER_CLASS, "kwargs": _jsonable_kwargs(encoder_kwargs)}}
           if encoder_kwargs is not None else {}),
        "files": files,
        "parity": {
            "torchscript": {"atol": TORCHSCRIPT_ATOL, "rtol": TORCHSCRIPT_RTOL},
            "onnx": {"atol": ONNX_ATOL, "rtol": ONNX_RTOL, "runtime": "onnxruntime CPU, batch 1 and 2"},
        },
        "torch_version": torch.__version__,
        **dict(extra_info or {}),
    }
    atomic_write_json(out_dir / INFO_FILE, info)
    return info


def _jsonable_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments as JSON values (tuples become lists; json raises TypeError for anything else)."""
    return json.loads(json.dumps(dict(kwargs)))


def read_export_info(export_dir: str | Path) -> dict[str, Any]:
    """Read ``volume_encoder.json`` of an export folder.

    Raises:
        FileNotFoundError: the folder or its JSON is missing.
        ValueError: the JSON is invalid or from another export format version.
    """
    export_dir = Path(export_dir)
    path = export_dir / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {export_dir} is not a medvl export folder; create one with "
            "`python -m medvl.export ckpt_path=... out=...`"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(info, dict) or info.get("format_version") != EXPORT_FORMAT_VERSION:
        found = info.get("format_version") if isinstance(info, dict) else None
        raise ValueError(
            f"{path} has export format version {found!r}; this code reads version {EXPORT_FORMAT_VERSION}: "
            "re-export the checkpoint with this version of medvl"
        )
    return info


# --------------------------------------------------------------------------------------------------
# Report encoder
# --------------------------------------------------------------------------------------------------


def tribert_to_bert(text_encoder: TriBERT, layers: str = "all") -> BertModel:
    """Copy TriBERT's text-only path into a plain transformers ``BertModel`` (no pooler).

    ``layers="all"`` keeps every layer as the text-only path runs it (the upper layers' cross-attention
    sub-layers, used only by ``TriBERT.fuse``, are dropped), so ``last_hidden_state`` equals
    ``encode_text(...)["tokens"]``; ``"lower"`` keeps the layers below the cross-attention ones
    (= ``encode_text(...)["lower_tokens"]``). Lost either way: the MLM head, the cross-attention, and the
    hierarchical attention mask, which the caller must pass as a (B, 1, L, L) mask (see docs/export.md).

    Raises:
        ValueError: ``layers`` is not "all" / "lower", or "lower" when TriBERT has no lower layers.
    """
    if layers not in ("all", "lower"):
        raise ValueError(f"layers must be 'all' (the whole text path) or 'lower', got {layers!r}")
    num_layers = text_encoder.num_layers if layers == "all" else text_encoder.num_lower_layers
    if num_layers < 1:
        raise ValueError(
            "TriBERT has no lower layers (every layer cross-attends to vision); export with layers='all'"
        )
    settings = text_encoder.config.to_dict()
    for key in ("is_decoder", "add_cross_attention", "num_hidden_layers", "architectures", "_attn_implementation"):
        settings.pop(key, None)
    config = BertConfig(**settings, num_hidden_layers=num_layers, architectures=["BertModel"])
    bert = BertModel(config, add_pooling_layer=False)
    state: dict[str, Tensor] = {}
    for name, tensor in text_encoder.state_dict().items():
        if name.startswith("embeddings."):
            state[name] = tensor
        elif name.startswith("layers."):
            index = int(name.split(".")[1])
            if index < num_layers and ".crossattention." not in name:
                state["encoder.layer." + name[len("layers."):]] = tensor
    load_weights(bert, state, strict=True)
    return bert.eval()


def _parity_batch(tokenizer: PreTrainedTokenizerFast, text_encoder: TriBERT) -> dict[str, Tensor]:
    encoder = ReportBatchEncoder(
        tokenizer, max_length=text_encoder.config.max_position_embeddings, max_sentences=text_encoder.max_sentences
    )
    return encoder([list(report) for report in _PARITY_REPORTS])


def bert_attention_mask(batch: Mapping[str, Tensor]) -> Tensor:
    """TriBERT's hierarchical mask for a ``ReportBatchEncoder`` batch, shaped for ``BertModel``.

    Shapes:
        batch: the encoder's dict (L tokens, S sentences) -> (B, 1, L, L) bool, True = may attend.
    """
    token_mask = batch["attention_mask"].bool()
    # (B, S) positions of the sentence tokens -> (B, L) bool "is a sentence token"
    is_sentence = torch.zeros_like(token_mask).scatter(1, batch["sentence_token_positions"], batch["sentence_mask"].bool())
    return tribert_attention_mask(token_mask, batch["sentence_index"], is_sentence)[:, None]  # (B, L, L) -> (B, 1, L, L)


def export_report_encoder(
    text_encoder: TriBERT,
    tokenizer: PreTrainedTokenizerFast,
    out_dir: str | Path,
    *,
    report_projection: nn.Module | None = None,
    report_norm: nn.BatchNorm1d | None = None,
    layers: str = "all",
    extra_info: Mapping[str, Any] | None = None,
) -> Path:
    """Save TriBERT's text path as a ``BertModel`` + tokenizer (``save_pretrained``) and check the reload.

    The folder reloads offline with ``AutoModel.from_pretrained(dir)`` / ``AutoTokenizer.from_pretrained(dir)``;
    at export both are reloaded and the model's ``last_hidden_state`` is compared with TriBERT's on a sample
    batch (with the hierarchical mask). ``report_projection`` (the pre-training ``ProjectionHead`` of the
    report embedding into the shared vision-language space) is saved beside it as safetensors.

    Args:
        text_encoder: the pre-trained TriBERT.
        tokenizer: its tokenizer (with the [SENT] token).
        out_dir: the folder to write (created).
        report_projection: optional projection head of the report embedding.
        report_norm: the batch norm (affine=False) that standardises the report [CLS] state before the projection;
            its running mean / variance are saved as ``report_norm.safetensors`` (the embedding is
            ``projection((cls - mean) / sqrt(var + eps))``).
        layers: "all" or "lower", see ``tribert_to_bert``.
        extra_info: more entries for ``medvl_report_encoder.json``.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ExportError: the reloaded model or tokenizer does not reproduce TriBERT.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bert = tribert_to_bert(text_encoder, layers)
    tokenizer.model_max_length = text_encoder.config.max_position_embeddings
    bert.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    files = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    projection_info = None
    if report_projection is not None:
        save_weights(report_projection, out_dir / REPORT_PROJECTION_FILE)
        linear = [m for m in report_projection.modules() if isinstance(m, nn.Linear)]
        projection_info = {
            "file": REPORT_PROJECTION_FILE,
            "class": f"{type(report_projection).__module__}.{type(report_projection).__qualname__}",
            "in_dim": linear[0].in_features,
            "out_dim": linear[-1].out_features,
            "num_layers": len(linear),
            "keys": sorted(report_projection.state_dict()),
        }
        files.append(REPORT_PROJECTION_FILE)
    norm_info = None
    if report_norm is not None:
        if report_norm.affine or report_norm.running_mean is None:
            raise ExportError("report_norm must be a BatchNorm1d with running statistics and affine=False")
        save_weights({"running_mean": report_norm.running_mean, "running_var": report_norm.running_var},
                     out_dir / REPORT_NORM_FILE)
        norm_info = {"file": REPORT_NORM_FILE, "eps": float(report_norm.eps),
                     "formula": "(last_hidden_state[:, 0] - running_mean) / sqrt(running_var + eps)"}
        files.append(REPORT_NORM_FILE)

    reloaded = AutoModel.from_pretrained(str(out_dir), local_files_only=True, add_pooling_layer=False).eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(str(out_dir), local_files_only=True)
    if reloaded_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ExportError(f"the tokenizer reloaded from {out_dir} has another vocabulary than the one saved")
    batch = _parity_batch(reloaded_tokenizer, text_encoder)
    with torch.no_grad(), eval_mode(text_encoder):
        expected = text_encoder.encode_text(batch)["tokens" if layers == "all" else "lower_tokens"]
        found = reloaded(
            input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=bert_attention_mask(batch)
        ).last_hidden_state
    valid = batch["attention_mask"].bool()
    difference = float((found - expected)[valid].abs().max())
    if not difference <= TRANSFORMERS_ATOL:
        raise ExportError(
            f"the BertModel reloaded from {out_dir} differs from TriBERT by {difference:.3g} (> {TRANSFORMERS_ATOL}); "
            "the transformers version may build BERT layers differently"
        )
    info = {
        "format_version": EXPORT_FORMAT_VERSION,
        "created_with": "medvl.export",
        "layers": layers,
        "num_layers": bert.config.num_hidden_layers,
        "tribert_num_layers": text_encoder.num_layers,
        "max_sentences": text_encoder.max_sentences,
        "max_length": text_encoder.config.max_position_embeddings,
        "sentence_token": "[SENT]",
        "input_layout": "[CLS] [SENT] pieces of sentence 1 ... [SENT] pieces of sentence 2 ... [PAD]; token_type_ids "
                        "= sentence number (1-based, 0 for [CLS] and padding); build it with "
                        "medvl.models.components.report_tokenization.ReportBatchEncoder",
        "attention_mask": "pass a (B, 1, L, L) bool mask (True = may attend): [CLS] and word pieces see every real "
                          "token, a [SENT] token sees [CLS], itself and its own sentence's pieces; "
                          "medvl.export.bert_attention_mask(batch) builds it. A plain (B, L) padding mask runs but "
                          "gives other sentence-token states than pre-training.",
        "report_embedding": "report_projection(report_norm(last_hidden_state[:, 0])): the global [CLS], standardised "
                            "with report_norm's statistics, projected into the space of the volume encoder's 'pooled' "
                            "output (compare with cosine similarity); medvl.export.load_exported(dir).encode_report "
                            "does all of it",
        "report_norm": norm_info,
        "report_projection": projection_info,
        "parity_max_abs_diff": difference,
        "files": files + [REPORT_INFO_FILE],
        **dict(extra_info or {}),
    }
    atomic_write_json(out_dir / REPORT_INFO_FILE, info)
    return out_dir


# --------------------------------------------------------------------------------------------------
# The whole export
# --------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def export_pretrained(
    ckpt_path: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] = EXPORT_FORMATS,
    *,
    text_layers: str = "all",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a pre-training checkpoint: volume encoder (+ TorchScript / ONNX) and report encoder.

    Args:
        ckpt_path: the Lightning ``.ckpt``.
        out_dir: the export folder.
        formats: subset of ``EXPORT_FORMATS``.
        text_layers: "all" or "lower" TriBERT layers in the transformers export (see ``tribert_to_bert``).
        overwrite: replace an existing export in ``out_dir``.

    Returns:
        The content of ``volume_encoder.json``.

    Raises:
        ValueError: unknown formats, or ``out_dir`` holds an export and ``overwrite`` is False.
        See ``load_pretrained_module`` for checkpoint errors and ``export_volume_encoder`` for export errors.
    """
    formats = list(dict.fromkeys(formats))
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown or not formats:
        raise ValueError(f"unknown export formats {unknown or formats}; choose from {list(EXPORT_FORMATS)}")
    out_dir = Path(out_dir)
    if (out_dir / INFO_FILE).exists() and not overwrite:
        raise ValueError(f"{out_dir} already holds an export ({INFO_FILE}); pass overwrite=true or another out")
    if text_layers not in ("all", "lower"):
        raise ValueError(f"text_layers must be 'all' or 'lower', got {text_layers!r}")
    ckpt_path = Path(ckpt_path)
    module = load_pretrained_module(ckpt_path)
    checkpoint_info = {
        "source_checkpoint": {
            "file_name": ckpt_path.name,
            "sha256": _sha256(ckpt_path),
            "label_names": list(module.hparams.get("label_names", [])),
            "embed_dim": int(module.hparams.get("embed_dim", module.volume_encoder.out_dim)),
        }
    }
    if "transformers" in formats:
        export_report_encoder(
            module.text_encoder, module.tokenizer, out_dir / REPORT_ENCODER_DIR,
            report_projection=getattr(module, "report_proj", None), report_norm=getattr(module, "report_norm", None),
            layers=text_layers,
            extra_info={**checkpoint_info, "logit_scale": float(module.clip.logit_scale)} if hasattr(module, "clip")
            else checkpoint_info,
        )
    extra = dict(checkpoint_info)
    if "transformers" in formats:
        extra["report_encoder"] = REPORT_ENCODER_DIR
    encoder_kwargs = {**module.hparams["volume_encoder"], "out_dim": module.volume_encoder.out_dim}
    info = export_volume_encoder(module.volume_encoder, module.hparams["preprocess"], out_dir, formats,
                                 encoder_kwargs=encoder_kwargs, extra_info=extra)
    check_exported_embeddings(module, out_dir)
    return info


def check_exported_embeddings(module: MedVLPretrainModule, export_dir: str | Path) -> dict[str, float]:
    """Load ``export_dir`` back with ``load_exported`` on every runtime it holds and compare its embeddings with the
    module's: the lowest cosine similarity of "pooled" (volume) and of the report embedding must be >= 0.9999.

    Returns:
        {"<runtime>/volume_cosine": ..., "report_cosine": ...} (the lowest cosine over the check samples).

    Raises:
        ExportParityError: an embedding of the export differs from the module's.
    """
    from medvl.exported_encoders import EMBEDDING_COSINE_MIN, available_runtimes, load_exported

    result: dict[str, float] = {}
    volume = _example_volume(module.volume_encoder).repeat(2, 1, 1, 1, 1)
    volume[1] = volume[1].flip(-1)
    with torch.no_grad(), eval_mode(module):
        expected_volume = module.encode_volume(volume)["pooled"]
        reports = [list(report) for report in _PARITY_REPORTS]
        expected_report = module.encode_report(reports) if (Path(export_dir) / REPORT_ENCODER_DIR).is_dir() else None
    for runtime in available_runtimes(export_dir):
        exported = load_exported(export_dir, runtime=runtime)
        found = exported.encode_volume(volume)["pooled"]
        result[f"{runtime}/volume_cosine"] = float(F.cosine_similarity(found, expected_volume, dim=-1).min())
        if expected_report is not None and "report_cosine" not in result:
            result["report_cosine"] = float(F.cosine_similarity(exported.encode_report(reports), expected_report,
                                                                dim=-1).min())
    bad = {name: value for name, value in result.items() if not value >= EMBEDDING_COSINE_MIN}
    if bad:
        raise ExportParityError(f"the export in {export_dir} does not reproduce the module's embeddings: lowest "
                                f"cosine similarities {bad} (< {EMBEDDING_COSINE_MIN})", max_abs_diff=float("nan"),
                                output_name=next(iter(bad)))
    return result


def load_exported(export_dir: str | Path, runtime: str = "auto"):  # noqa: ANN201 (lazy import of the class)
    """See ``medvl.exported_encoders.load_exported``."""
    from medvl.exported_encoders import load_exported as _load

    return _load(export_dir, runtime=runtime)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _usage() -> str:
    listed = ", ".join(f"{k}=<required>" if v is None else f"{k}={v}" for k, v in CLI_ARGUMENTS.items())
    return (
        "usage: python -m medvl.export ckpt_path=PATH out=DIR [format=all|safetensors,torchscript,onnx,transformers] "
        f"[text_layers=all|lower] [overwrite=false]\nvalid arguments: {listed}"
    )


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ExportArgumentError(f"{name} must be true or false, got {value!r}")


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` arguments (Hydra style) into export_pretrained's arguments.

    Raises:
        ExportArgumentError: an argument without '=', an unknown or repeated key, a missing required key, or a
            bad value; the message lists the valid arguments.
    """
    values: dict[str, str] = {}
    for argument in argv:
        key, sep, value = argument.partition("=")
        key = key.strip().lstrip("+")
        if not sep or not key:
            raise ExportArgumentError(f"argument {argument!r} is not key=value\n{_usage()}")
        if key not in CLI_ARGUMENTS:
            raise ExportArgumentError(f"unknown argument {key!r}\n{_usage()}")
        if key in values:
            raise ExportArgumentError(f"argument {key!r} given twice\n{_usage()}")
        values[key] = value
    missing = [key for key, default in CLI_ARGUMENTS.items() if default is None and not values.get(key)]
    if missing:
        raise ExportArgumentError(f"missing required argument(s) {missing}\n{_usage()}")
    merged = {key: values.get(key, default) for key, default in CLI_ARGUMENTS.items()}
    requested = [part.strip() for part in merged["format"].split(",") if part.strip()]
    formats = list(EXPORT_FORMATS) if requested == ["all"] else requested
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown or not formats:
        raise ExportArgumentError(
            f"unknown format(s) {unknown or requested}: use 'all' or a comma-separated subset of "
            f"{', '.join(EXPORT_FORMATS)}\n{_usage()}"
        )
    if merged["text_layers"] not in ("all", "lower"):
        raise ExportArgumentError(f"text_layers must be 'all' or 'lower', got {merged['text_layers']!r}\n{_usage()}")
    return {
        "ckpt_path": merged["ckpt_path"],
        "out_dir": merged["out"],
        "formats": formats,
        "text_layers": merged["text_layers"],
        "overwrite": _parse_bool("overwrite", merged["overwrite"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m medvl.export``; returns the exit status (0 ok, 2 bad arguments, 1 failed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(_usage())
        return 0
    try:
        arguments = parse_args(argv)
    except ExportArgumentError as error:
        print(f"medvl.export: error: {error}", file=sys.stderr)
        return 2
    transformers.utils.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # tracing freezes the encoder's shape checks; the exported files are compared with PyTorch instead
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            info = export_pretrained(**arguments)
    except (ValueError, FileNotFoundError, ExportError) as error:  # WeightsMismatchError, UnsafeCheckpointError, ...
        print(f"medvl.export: error: {error}", file=sys.stderr)
        return 1
    out_dir = Path(arguments["out_dir"]).resolve()
    print(f"exported {arguments['ckpt_path']} -> {out_dir}")
    for kind, name in info["files"].items():
        print(f"  {kind:<17} {out_dir / name}")
    if "report_encoder" in info:
        print(f"  {'report_encoder':<17} {out_dir / info['report_encoder']}")
    print(f"  {'description':<17} {out_dir / INFO_FILE}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
