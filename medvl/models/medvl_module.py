"""The medvl pre-training LightningModule: 3D CT encoder + TriBERT with hierarchical alignment and self-supervision.

Objectives (each weighted in ``loss_weights``; weight 0 switches it off and its heads are not even built):

================== ======================================================================= =====================
key                what                                                                    on
================== ======================================================================= =====================
report_contrastive CLIP InfoNCE, pooled last-stage volume feature <-> report [CLS]         global
sentence_alignment GLoRIA local alignment, sentence embeddings <-> coarse region tokens      stage 3 (image / 16)
word_alignment     GLoRIA local alignment, whole-word embeddings <-> fine patch tokens       stage 2 (image / 8)
matching           volume-report matching, hard negatives from the contrastive similarities  TriBERT upper layers
multimodal_mlm     MLM through the upper layers with cross-attention to the volume tokens   TriBERT upper layers
text_mlm           MLM of the text-only path                                                 TriBERT
rotation           rotation prediction of a rotated + block-masked copy of the volume       pooled
view_contrastive   InfoNCE between that copy and the original volume                         pooled
reconstruction     L1 reconstruction of the masked blocks from the copy's fine tokens       stage 2
================== ======================================================================= =====================

Everything the module needs from the data (tokenizer, label names, preprocessing, organ labels) arrives as plain
Python values (``CTReportDataModule.model_kwargs()``) and is stored in the checkpoint's hyper-parameters, so
``MedVLPretrainModule.load_from_checkpoint(path, weights_only=True)`` rebuilds the model from the file alone.

Validation and test epochs also compute the evaluation metrics (see ``medvl/evaluation``): retrieval Recall@K
both ways, zero-shot finding AUROC from prompt pairs, and pointing accuracy of finding sentences (demo masks).
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common.distributed import gather_objects
from common.layers.projection import ProjectionHead
from common.lightning.hparams import plain_container
from common.lightning.vlp_module import VLPModule
from common.losses.contrastive import ClipInfoNCELoss
from common.losses.local_alignment import LocalAlignmentLoss
from common.losses.masked_modeling import MaskedLanguageModelingLoss, mask_tokens
from common.losses.matching import ImageTextMatchingLoss
from common.metrics.classification import multilabel_auroc
from common.metrics.retrieval import retrieval_recall_at_k
from common.text.tokenizer import tokenizer_from_json
from medvl.evaluation.figures import slice_axes
from medvl.evaluation.pointing import (
    attention_peak_voxel,
    find_sentence,
    organ_fraction,
    pointing_hit,
    pointing_summary,
    upsample_attention,
)
from medvl.evaluation.zeroshot import finding_prompts, resolve_zeroshot_templates, zero_shot_probabilities
from medvl.models.components.report_tokenization import ReportBatchEncoder
from medvl.models.components.tribert import TriBERT, pool_by_group
from medvl.models.components.vision_ssl import (
    MaskedBlockReconstruction,
    RotationPrediction,
    ViewContrastive,
    mask_blocks,
)
from medvl.models.components.volume_encoder import VolumeEncoder

log = logging.getLogger(__name__)

OBJECTIVES = (
    "report_contrastive", "sentence_alignment", "word_alignment", "matching", "multimodal_mlm", "text_mlm",
    "rotation", "view_contrastive", "reconstruction",
)
DEFAULT_VOLUME_ENCODER = {"backbone": "swin", "feature_size": 12, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24)}
DEFAULT_TEXT_ENCODER = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_cross_attention_layers": 2,
                        "dropout": 0.1}
DEFAULT_SSL = {"block_size": 8, "mask_ratio": 0.3, "rotation_classes": 4, "reconstruction_stride": 1}
# Which attention map a finding sentence points with (see MedVLPretrainModule.pointing_method).
POINTING_SOURCES = ("auto", "word_alignment", "sentence_alignment", "global_cam")


def _organ_family(name: str) -> str:
    """Lung lobes count as one organ for pointing ("lung_upper_lobe_left" -> "lung")."""
    return "lung" if name.startswith("lung_") else name


class MedVLPretrainModule(VLPModule):
    """Pre-train a CT volume encoder and the TriBERT report encoder (VELVET-Med style).

    Args:
        tokenizer_json: the report tokenizer as JSON (from the datamodule).
        label_names: finding names, order of the label columns (used by zero-shot evaluation).
        preprocess: the data's preprocessing config (``PreprocessConfig.to_dict()``); its spatial_size is the
            encoder's input size.
        organ_labels: organ name -> organ-mask label id (pointing evaluation; {} disables it).
        volume_encoder: ``VolumeEncoder`` keyword arguments (backbone, feature_size, depths, ...).
        text_encoder: ``TriBERT`` keyword arguments (hidden_size, num_layers, num_heads, ...).
        embed_dim: shared embedding width of vision and text.
        loss_weights: objective -> weight (see the module docstring; missing keys default to 1, 0 disables).
        ssl: vision self-supervision options: block_size, mask_ratio, rotation_classes, reconstruction_stride
            (1 = reconstruct every voxel; 2 or 4 = the volume average-pooled by that factor, 8x / 64x cheaper
            decoding: with a ViT's 16^3 patches the full-resolution decoder is most of a velvet_full step).
        mlm_probability: share of maskable tokens masked for MLM.
        temperature: initial CLIP temperature (learnable).
        max_sentences, max_length: report truncation (sentences per report, tokens per report).
        zeroshot_templates: {"positive": [...], "negative": [...]} paired prompt templates with ``{finding}``,
            optionally "context": sentences placed before every prompt, so that a prompt is encoded as a report,
            and "phrases": {label: phrase(s)} used in the prompts instead of the label name
            (``medvl.evaluation.zeroshot.resolve_zeroshot_templates``).
        pointing_source: the attention a finding sentence points with (``pointing_method``): "word_alignment"
            (mean of its words' attention over the fine tokens), "sentence_alignment" (its attention over the
            coarse regions), "global_cam" (cosine with the last-stage tokens in the global space), or "auto":
            the finest of these the model was trained for (word, then sentence alignment, else global_cam).
        optimizer, scheduler, scheduler_interval, lr_scales: see ``VLPModule``.

    Raises:
        ValueError: unknown objective names, all objectives off, or an encoder image size that differs from the
            preprocessing's spatial_size, an unknown zeroshot_templates key, or a pointing_source that is unknown
            or names an alignment objective that is switched off.
    """

    def __init__(
        self,
        tokenizer_json: str,
        label_names: Sequence[str],
        preprocess: Mapping[str, Any],
        organ_labels: Mapping[str, int] | None = None,
        volume_encoder: Mapping[str, Any] | None = None,
        text_encoder: Mapping[str, Any] | None = None,
        embed_dim: int = 128,
        loss_weights: Mapping[str, float] | None = None,
        ssl: Mapping[str, Any] | None = None,
        mlm_probability: float = 0.15,
        temperature: float = 0.07,
        max_sentences: int = 50,
        max_length: int = 512,
        zeroshot_templates: Mapping[str, Sequence[str]] | None = None,
        optimizer: Any = None,
        scheduler: Any = None,
        scheduler_interval: str = "step",
        lr_scales: Mapping[str, float] | None = None,
        pointing_source: str = "auto",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         lr_scales=lr_scales)
        preprocess = plain_container(preprocess)
        weights = {name: 1.0 for name in OBJECTIVES}
        unknown = set(plain_container(loss_weights or {})) - set(OBJECTIVES)
        if unknown:
            raise ValueError(f"unknown objectives {sorted(unknown)} in loss_weights; known: {list(OBJECTIVES)}")
        weights.update({k: float(v) for k, v in plain_container(loss_weights or {}).items()})
        if not any(weights.values()):
            raise ValueError("every objective has weight 0: switch on at least one in loss_weights")
        spatial_size = preprocess.get("spatial_size")
        if not spatial_size:
            raise ValueError("preprocess.spatial_size must be set: the encoder needs a fixed input size")
        vol_kwargs = {**DEFAULT_VOLUME_ENCODER, **plain_container(volume_encoder or {})}
        if "image_size" in vol_kwargs and list(vol_kwargs["image_size"]) != list(spatial_size):
            raise ValueError(f"volume_encoder.image_size {vol_kwargs['image_size']} differs from the data's "
                             f"preprocess.spatial_size {spatial_size}; set only the data's spatial_size")
        vol_kwargs["image_size"] = list(spatial_size)
        text_kwargs = {**DEFAULT_TEXT_ENCODER, **plain_container(text_encoder or {})}
        ssl_options = {**DEFAULT_SSL, **plain_container(ssl or {})}
        templates = resolve_zeroshot_templates(plain_container(zeroshot_templates or {}), list(label_names))
        pointing_method = resolve_pointing_source(pointing_source, weights)
        self.save_hyperparameters({
            "tokenizer_json": tokenizer_json, "label_names": list(label_names), "preprocess": preprocess,
            "organ_labels": {str(k): int(v) for k, v in plain_container(organ_labels or {}).items()},
            "volume_encoder": vol_kwargs, "embed_dim": embed_dim,
            # the pre-trained folder only seeds the weights, which the checkpoint holds: a reload needs no folder
            "text_encoder": {**text_kwargs, "pretrained_dir": None},
            "loss_weights": weights, "ssl": ssl_options, "mlm_probability": mlm_probability,
            "temperature": temperature, "max_sentences": max_sentences, "max_length": max_length,
            "zeroshot_templates": templates,
            "scheduler_interval": scheduler_interval, "pointing_source": pointing_source,
        })
        self.loss_weights = weights
        self.pointing_method = pointing_method
        self.label_names = list(label_names)

        self.tokenizer = tokenizer_from_json(tokenizer_json)
        self.report_batcher = ReportBatchEncoder(self.tokenizer, max_length=max_length, max_sentences=max_sentences)
        encoder_kwargs = dict(vol_kwargs)  # the saved hparams keep "backbone"
        backbone = encoder_kwargs.pop("backbone")
        self.volume_encoder = VolumeEncoder(backbone, out_dim=embed_dim, **encoder_kwargs)
        uses_fusion = bool(weights["matching"] or weights["multimodal_mlm"])
        if not uses_fusion:
            text_kwargs["num_cross_attention_layers"] = 0  # no cross-attention weights that never get gradients
        self.text_encoder = TriBERT(vocab_size=len(self.tokenizer), pad_token_id=self.tokenizer.pad_token_id,
                                    max_sentences=max_sentences, max_position_embeddings=max_length,
                                    vision_dim=embed_dim if uses_fusion else None, **text_kwargs)
        hidden = self.text_encoder.hidden_size
        # Demo and real reports share most of their sentences (normal statements), so a fresh encoder gives
        # nearly the same [CLS] vector for every report; standardising it over the batch (as the volume
        # encoder does for its pooled feature) lets the contrastive loss see the differences from step one.
        self.report_norm = torch.nn.BatchNorm1d(hidden, affine=False)
        self.report_proj = ProjectionHead(hidden, embed_dim)
        self.clip = ClipInfoNCELoss(init_temperature=temperature, loss_name="report_contrastive_loss")
        if weights["sentence_alignment"]:
            self.sentence_proj = ProjectionHead(hidden, embed_dim)
            self.sentence_alignment = LocalAlignmentLoss(loss_name="sentence_alignment_loss")
        if weights["word_alignment"]:
            self.word_proj = ProjectionHead(hidden, embed_dim)
            self.word_alignment = LocalAlignmentLoss(loss_name="word_alignment_loss")
        if weights["matching"]:
            self.matching = ImageTextMatchingLoss(hidden, loss_name="matching_loss")
        if weights["text_mlm"] or weights["multimodal_mlm"]:
            self.mlm = MaskedLanguageModelingLoss()
        if weights["rotation"]:
            self.rotation = RotationPrediction(embed_dim, num_classes=int(ssl_options["rotation_classes"]))
        if weights["view_contrastive"]:
            self.view_contrastive = ViewContrastive(embed_dim)
        if weights["reconstruction"]:
            stride = ssl_options["reconstruction_stride"]
            fine_stride = self.volume_encoder.fine_stride
            if not (isinstance(stride, int) and stride >= 1 and fine_stride % stride == 0
                    and all(side % stride == 0 for side in spatial_size)):
                raise ValueError(f"ssl.reconstruction_stride must be a positive integer dividing the fine tokens' "
                                 f"stride {fine_stride} and the input size {list(spatial_size)}; got {stride!r}")
            self.reconstruction = MaskedBlockReconstruction(embed_dim, upsample_factor=fine_stride // stride)
        self._freeze_unused_encoder_heads()
        self._eval_store: dict[str, list[Any]] = defaultdict(list)

    # ------------------------------------------------------------------------------------------------ set-up
    def _freeze_unused_encoder_heads(self) -> None:
        """Output heads no objective reads get requires_grad=False, so DDP needs no find_unused_parameters."""
        w = self.loss_weights
        used = {
            "fine_proj": w["word_alignment"] or w["reconstruction"],
            "coarse_proj": w["sentence_alignment"],
            "tokens_proj": w["matching"] or w["multimodal_mlm"],
            "pooled_proj": w["report_contrastive"] or w["rotation"] or w["view_contrastive"] or w["matching"],
        }
        for name, is_used in used.items():
            if not is_used:
                getattr(self.volume_encoder, name).requires_grad_(False)
        if not w["report_contrastive"] and not w["matching"]:
            self.report_proj.requires_grad_(False)
            self.clip.requires_grad_(False)
        if not (w["text_mlm"] or w["multimodal_mlm"]):
            for name, param in self.text_encoder.named_parameters():
                if name.startswith("mlm_"):
                    param.requires_grad_(False)

    @property
    def objectives_on(self) -> list[str]:
        return [name for name in OBJECTIVES if self.loss_weights[name]]

    # ------------------------------------------------------------------------------------------------ encoding
    def encode_reports(self, sentences: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        """Tokenise reports (lists of sentences) into TriBERT inputs on this module's device."""
        batch = self.report_batcher([list(s) for s in sentences])
        return {key: value.to(self.device) for key, value in batch.items()}

    def encode_volume(self, images: Tensor) -> dict[str, Any]:
        """Multi-scale volume features (see ``VolumeEncoder``); "pooled" is the global embedding."""
        return self.volume_encoder.encode_volume(images)

    def encode_report(self, sentences: Sequence[Sequence[str]]) -> Tensor:
        """Global report embeddings in the shared space.

        Shapes:
            len(sentences) = B -> (B, embed_dim)
        """
        return self.project_report(self.text_encoder.encode_text(self.encode_reports(sentences))["report"])

    def project_report(self, report_cls: Tensor) -> Tensor:
        """Report [CLS] states (B, hidden) -> shared space (B, embed_dim): batch standardisation + projection.

        A batch of one (e.g. one prompt) in training mode is standardised with the running statistics."""
        if self.training and report_cls.shape[0] == 1:
            norm = self.report_norm
            return self.report_proj((report_cls - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps))
        return self.report_proj(self.report_norm(report_cls))

    def forward(self, images: Tensor, sentences: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        """Global embeddings of both modalities: {"volume": (B, E), "report": (B, E)}."""
        return {"volume": self.encode_volume(images)["pooled"], "report": self.encode_report(sentences)}

    def _fuse_cls(self, text_tokens: Tensor, text_mask: Tensor, vision_tokens: Tensor,
                  vision_mask: Tensor | None) -> Tensor:
        return self.text_encoder.fuse(text_tokens, text_mask, vision_tokens, vision_mask)[:, 0]  # global [CLS]

    # ------------------------------------------------------------------------------------------------ losses
    def compute_losses(self, batch: Mapping[str, Any], stage: str) -> dict[str, Tensor]:
        images: Tensor = batch["image"]
        w = self.loss_weights
        text_inputs = self.encode_reports(batch["sentences"])
        vision = self.encode_volume(images)
        text = self.text_encoder.encode_text(text_inputs)
        volume_emb = vision["pooled"]
        report_emb = self.project_report(text["report"])
        out: dict[str, Tensor] = {}

        if w["report_contrastive"]:
            out["report_contrastive_loss"] = w["report_contrastive"] * self.clip(volume_emb, report_emb)[
                "report_contrastive_loss"]
        if w["sentence_alignment"]:
            out["sentence_alignment_loss"] = w["sentence_alignment"] * self.sentence_alignment(
                self.sentence_proj(text["sentences"]), text["sentence_mask"], vision["coarse"])["sentence_alignment_loss"]
        if w["word_alignment"]:
            out["word_alignment_loss"] = w["word_alignment"] * self.word_alignment(
                self.word_proj(text["words"]), text["word_mask"], vision["fine"])["word_alignment_loss"]
        if w["matching"]:
            reports = [" ".join(s) for s in batch["sentences"]]
            same = torch.tensor([[a == b for b in reports] for a in reports], device=self.device)
            if images.shape[0] > 1 and (~same).any(dim=1).all():  # every volume needs one other report
                similarity = self.clip.similarity(volume_emb, report_emb).detach()
                result = self.matching(self._fuse_cls, vision["tokens"], None, text["lower_tokens"],
                                       text["attention_mask"], similarity, positive_mask=same)
                out["matching_loss"] = w["matching"] * result["matching_loss"]
                out["matching_acc"] = result["matching_acc"]
        if w["text_mlm"] or w["multimodal_mlm"]:
            masked_ids, labels = mask_tokens(
                text_inputs["input_ids"], special_tokens_mask=text_inputs["special_tokens_mask"],
                attention_mask=text_inputs["attention_mask"], mask_token_id=self.report_batcher.mask_token_id,
                vocab_size=self.report_batcher.vocab_size, mlm_probability=float(self.hparams["mlm_probability"]),
                random_token_ids=self.report_batcher.non_special_token_ids.to(self.device))
            masked_text = self.text_encoder.encode_text({**text_inputs, "input_ids": masked_ids})
            if w["text_mlm"]:
                logits = self.text_encoder.mlm_logits(masked_text["tokens"])
                out["text_mlm_loss"] = w["text_mlm"] * self.mlm(logits, labels)["mlm_loss"]
            if w["multimodal_mlm"]:
                fused = self.text_encoder.fuse(masked_text["lower_tokens"], masked_text["attention_mask"],
                                               vision["tokens"], None)
                out["multimodal_mlm_loss"] = w["multimodal_mlm"] * self.mlm(
                    self.text_encoder.mlm_logits(fused), labels)["mlm_loss"]
        if w["rotation"] or w["view_contrastive"] or w["reconstruction"]:
            out.update(self._vision_ssl_losses(images, volume_emb))
        out["logit_scale"] = self.clip.logit_scale
        if stage in ("val", "test"):
            self._collect_for_evaluation(batch, vision, text, text_inputs, volume_emb, report_emb, stage)
        return out

    def _vision_ssl_losses(self, images: Tensor, volume_emb: Tensor) -> dict[str, Tensor]:
        """One extra encoder pass on a rotated, block-masked copy serves all three self-supervised tasks."""
        w, ssl = self.loss_weights, self.hparams["ssl"]
        view = images
        rotation_labels = None
        if w["rotation"]:
            view, rotation_labels = self.rotation.rotate_batch(images)
        masked = None
        corrupted = view
        if w["reconstruction"]:
            corrupted, masked = mask_blocks(view, int(ssl["block_size"]), float(ssl["mask_ratio"]), fill="noise")
        features = self.encode_volume(corrupted)
        out = {}
        if w["rotation"]:
            out["rotation_loss"] = w["rotation"] * self.rotation(features["pooled"], rotation_labels)["rotation_loss"]
        if w["view_contrastive"]:
            out["view_contrastive_loss"] = w["view_contrastive"] * self.view_contrastive(
                features["pooled"], volume_emb)["view_contrastive_loss"]
        if w["reconstruction"]:
            stride = int(ssl["reconstruction_stride"])
            if stride > 1:  # target and mask at 1/stride resolution: a voxel counts as hidden if most of it is
                view = F.avg_pool3d(view, stride)
                masked = F.avg_pool3d(masked.float(), stride) > 0.5
            out["reconstruction_loss"] = w["reconstruction"] * self.reconstruction(
                features["fine"], features["fine_grid"], view, masked)["reconstruction_loss"]
        return out

    # ------------------------------------------------------------------------------------------------ evaluation
    def _collect_for_evaluation(self, batch: Mapping[str, Any], vision: Mapping[str, Any], text: Mapping[str, Tensor],
                                text_inputs: Mapping[str, Tensor], volume_emb: Tensor, report_emb: Tensor,
                                stage: str) -> None:
        store = self._eval_store
        store["volume"].append(volume_emb.detach().float().cpu())
        store["report"].append(report_emb.detach().float().cpu())
        store["labels"].append(batch["labels"].detach().float().cpu())
        rows = _row_indices(batch)
        store["index"].extend(rows)
        reports = [" ".join(s) for s in batch["sentences"]]
        store["reports"].extend(reports)
        if stage == "test":
            axial_axis, coronal_axis = self._slice_axes()
            for row, image in zip(rows, batch["image"][:, 0].detach().float().cpu()):  # (B, 1, X, Y, Z) -> (X, Y, Z)
                if len(store["slices"]) >= _RETRIEVAL_FIGURE_EXAMPLES:
                    break
                axial = image.select(axial_axis, image.shape[axial_axis] // 2)
                coronal = image.select(coronal_axis, image.shape[coronal_axis] // 2)
                coronal = F.interpolate(coronal[None, None], size=tuple(axial.shape), mode="nearest")[0, 0]
                store["slices"].append(np.stack([axial.numpy(), coronal.numpy()]))  # (2, *axial.shape)
                store["slices_row"].append(row)
        if self.hparams["organ_labels"] and "organ_mask" in batch:
            self._collect_pointing(batch, vision, text, text_inputs, keep_examples=stage == "test")

    def _slice_axes(self) -> tuple[int, int]:
        """Axes of the (axial, coronal) slices in the data's orientation: the S/I and A/P axes (RAS: 2, 1)."""
        return slice_axes(str(self.hparams["preprocess"].get("orientation", "RAS")))

    def _sentence_attention(self, vision: Mapping[str, Any], text: Mapping[str, Tensor],
                            text_inputs: Mapping[str, Tensor],
                            sentences: Sequence[Sequence[str]]) -> tuple[Tensor, tuple[int, int, int]]:
        """(B, S, N) attention of every report sentence over the volume and its token grid, by ``pointing_method``:

        - "word_alignment": the mean of the GLoRIA attention maps of the sentence's words over the fine tokens;
        - "sentence_alignment": the sentence's GLoRIA attention over the coarse regions;
        - "global_cam": a class activation map in the global space: cosine of each sentence (encoded alone as a
          report) with the last-stage tokens projected like the pooled feature (all a global model has).
        """
        if self.pointing_method == "word_alignment":
            words = self.word_alignment.attention(self.word_proj(text["words"]), text["word_mask"],
                                                  vision["fine"])  # (B, W, Nf)
            word_sentence = text_inputs["word_sentence"].to(words.device)  # (B, W), -1 for padding
            attention = pool_by_group(words, word_sentence, text["sentence_mask"].shape[1], mean=True)  # (B, S, Nf)
            return attention, tuple(vision["fine_grid"])
        if self.pointing_method == "sentence_alignment":
            attention = self.sentence_alignment.attention(self.sentence_proj(text["sentences"]), text["sentence_mask"],
                                                          vision["coarse"])
            return attention, tuple(vision["coarse_grid"])
        return self._global_cam(vision, sentences), tuple(vision["tokens_grid"])

    def _global_cam(self, vision: Mapping[str, Any], sentences: Sequence[Sequence[str]]) -> Tensor:
        tokens = vision["pooled_tokens"]  # (B, Nt, E)
        b, s = len(sentences), max(len(x) for x in sentences)
        maps = tokens.new_zeros(b, s, tokens.shape[1])
        for i, report in enumerate(sentences):
            sentence_emb = self.encode_report([[sentence] for sentence in report])  # (S_i, E)
            sims = F.normalize(sentence_emb, dim=-1) @ F.normalize(tokens[i], dim=-1).T  # (S_i, Nt)
            maps[i, : len(report)] = (sims * float(self.clip.logit_scale)).softmax(dim=-1)
        return maps

    def _collect_pointing(self, batch: Mapping[str, Any], vision: Mapping[str, Any], text: Mapping[str, Tensor],
                          text_inputs: Mapping[str, Tensor], keep_examples: bool = False) -> None:
        """Pointing hits per finding sentence (and, with ``keep_examples``, slices for the test figure)."""
        organ_labels = self.hparams["organ_labels"]
        families: dict[str, list[int]] = defaultdict(list)
        for name, label in organ_labels.items():
            families[_organ_family(name)].append(int(label))
        attention, grid = self._sentence_attention(vision, text, text_inputs, batch["sentences"])
        masks = batch["organ_mask"][:, 0].cpu()
        valid = batch.get("organ_mask_valid")
        store = self._eval_store
        rows = _row_indices(batch)
        for i, findings in enumerate(batch["findings"]):
            if valid is not None and not bool(valid[i]):
                continue
            sentences = batch["sentences"][i]
            stated = [(f, find_sentence(sentences, f.get("sentence", ""))) for f in findings]
            # Control: the report's first sentence that states no finding (the demo's technique sentence). If its
            # map points into the finding's organ as often, the maps know where organs are but not what was said.
            finding_indices = {index for _, index in stated if index is not None}
            control = next((j for j in range(len(sentences)) if j not in finding_indices), None)
            for finding, index in stated:
                organ = finding.get("organ")
                if organ not in organ_labels or index is None:
                    continue
                family = _organ_family(organ)
                family_mask = torch.isin(masks[i], torch.tensor(families[family])).long()
                sentence_map = attention[i, index].detach().float().cpu()
                hit = float(pointing_hit(sentence_map, grid, family_mask, 1))
                if keep_examples and len(store["pointing_examples"]) < _POINTING_FIGURE_EXAMPLES:
                    store["pointing_examples"].append(_pointing_example(
                        batch["image"][i, 0], sentence_map, grid, family_mask, self._slice_axes()[0],
                        sentences[index], family, hit))
                    store["pointing_examples_row"].append(rows[i])
                store["pointing_row"].append(rows[i])
                store["pointing_hits"].append(hit)
                store["pointing_families"].append(family)
                store["pointing_chance"].append(organ_fraction(family_mask, 1))
                store["pointing_control_hits"].append(float("nan") if control is None else float(
                    pointing_hit(attention[i, control].detach().cpu(), grid, family_mask, 1)))
        store["pointing_grid_tokens"] = [math.prod(grid)]

    @torch.no_grad()
    def _prompt_embeddings(self) -> tuple[list[Tensor], list[Tensor]]:
        """Positive and negative prompt embeddings per finding label: K tensors (P_k, E) each."""
        templates = self.hparams["zeroshot_templates"]
        # Each prompt is encoded as a report: the context sentences, then the prompt sentence. A bare one-sentence
        # prompt is far from the multi-sentence reports a report-level encoder was trained on.
        context = list(templates.get("context", []))  # checkpoints from before the context option have none
        pos, neg = [], []
        for name in self.label_names:
            positive, negative = finding_prompts(name, templates)
            pos.append(self.encode_report([[*context, p] for p in positive]))
            neg.append(self.encode_report([[*context, p] for p in negative]))
        return [p.float().cpu() for p in pos], [n.float().cpu() for n in neg]

    def set_zeroshot_templates(self, overrides: Mapping[str, Any]) -> None:
        """Replace the given zero-shot prompt settings (keys of ``resolve_zeroshot_templates``), keep the rest.

        For trying other prompts on a trained checkpoint (``python -m medvl.evaluate zeroshot_templates=...``).
        """
        self.hparams["zeroshot_templates"] = resolve_zeroshot_templates(
            plain_container(overrides), self.label_names, base=self.hparams["zeroshot_templates"])

    def gather_evaluation_store(self) -> None:
        """Replace this rank's evaluation records by those of the whole split, identical on every rank.

        Under DDP each rank sees a share of the split (and DistributedSampler repeats a few examples to even the
        shares out): the records of all ranks are gathered, each example (by its dataset index) is kept once and
        put in dataset order, so the metrics equal a single-process evaluation and every rank logs the same keys.
        A collective: every rank calls it. Single process: the records are only put in dataset order.
        """
        self._eval_store = merge_evaluation_stores(gather_objects(dict(self._eval_store)))

    def evaluation_metrics(self) -> dict[str, float]:
        """Retrieval, zero-shot AUROC and pointing accuracy over everything collected this epoch (call
        ``gather_evaluation_store`` first under DDP)."""
        store = self._eval_store
        if not store.get("volume"):
            return {}
        volume = torch.cat(store["volume"])
        report = torch.cat(store["report"])
        # identical report texts count as correct matches of each other
        digest = [int(hashlib.sha1(r.encode()).hexdigest()[:12], 16) for r in store["reports"]]
        group_ids = torch.tensor(digest, dtype=torch.long)
        metrics = {f"retrieval/{k}": v for k, v in retrieval_recall_at_k(
            volume, report, ks=(1, 5, 10), a_name="v", b_name="t", group_ids=group_ids).items()}
        metrics["retrieval/chance_R@1"] = 1.0 / len(volume)
        labels = torch.cat(store["labels"])
        if self.label_names and labels.numel():
            pos, neg = self._prompt_embeddings()
            probabilities = zero_shot_probabilities(volume, pos, neg, self.clip.logit_scale)
            known = (labels >= 0).all(dim=1)
            if known.sum() >= 2:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # single-class labels are NaN + excluded by design
                    auroc = multilabel_auroc(probabilities[known], labels[known].long(), self.label_names)
                metrics["zeroshot/auroc_mean"] = auroc["auroc_mean"]
                for name in self.label_names:
                    metrics[f"zeroshot/auroc/{name}"] = auroc[f"auroc_{name}"]
        if store.get("pointing_hits"):
            metrics.update({f"grounding/{k}": v for k, v in pointing_summary(
                store["pointing_hits"], store["pointing_families"], store["pointing_chance"],
                store["pointing_control_hits"]).items()})
            metrics["grounding/pointing_grid_tokens"] = float(store["pointing_grid_tokens"][0])
            for method in POINTING_SOURCES[1:]:  # which map pointed: 1.0 for the one in use
                metrics[f"grounding/uses_{method}"] = float(self.pointing_method == method)
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._eval_store = defaultdict(list)

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.gather_evaluation_store()
        metrics = self.evaluation_metrics()
        # the values are already over the whole split and equal on every rank: sync_dist averages equal values
        for name, value in metrics.items():
            if not _test_only_metric(name):
                self.log(f"val/{name}", value, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self.gather_evaluation_store()
        metrics = self.evaluation_metrics()
        for name, value in metrics.items():
            self.log(name, value, sync_dist=True)
        if self.trainer.is_global_zero and self._eval_store.get("volume"):
            self._write_test_figures()

    def _write_test_figures(self) -> None:
        from medvl.evaluation.figures import plot_pointing_examples, plot_retrieval_examples, plot_similarity_matrix

        out = Path(self.trainer.default_root_dir) / "figures"
        volume = F.normalize(torch.cat(self._eval_store["volume"]), dim=-1)
        report = F.normalize(torch.cat(self._eval_store["report"]), dim=-1)
        similarity = (volume @ report.T).numpy()
        plot_similarity_matrix(similarity, out / "similarity_matrix.png")
        if self._eval_store.get("slices"):
            plot_retrieval_examples(self._eval_store["slices"], self._eval_store["reports"], similarity,
                                    out / "retrieval_examples.png")
        if self._eval_store.get("pointing_examples"):
            plot_pointing_examples(self._eval_store["pointing_examples"], out / "pointing_examples.png")


_POINTING_FIGURE_EXAMPLES = 6
_RETRIEVAL_FIGURE_EXAMPLES = 16
# Evaluation records and the dataset-index list each is aligned with ("index": one entry per example).
_ROW_ALIGNED = {
    "index": ("volume", "report", "labels", "reports"),
    "slices_row": ("slices",),
    "pointing_row": ("pointing_hits", "pointing_families", "pointing_chance", "pointing_control_hits"),
    "pointing_examples_row": ("pointing_examples",),
}
_FIGURE_LIMITS = {"slices_row": _RETRIEVAL_FIGURE_EXAMPLES, "pointing_examples_row": _POINTING_FIGURE_EXAMPLES}
_BATCHED = ("volume", "report", "labels")  # lists of (B, *) tensors; the rest are lists of per-entry values


def _row_indices(batch: Mapping[str, Any]) -> list[int]:
    """Dataset index of every example in the batch (``collate_ct_reports``'s "index").

    Raises:
        ValueError: the batch has no "index" (evaluation needs it to count each example once under DDP).
    """
    if "index" not in batch:
        raise ValueError("evaluation batches need an 'index' entry (each example's dataset index, as "
                         "medvl.data.collate.collate_ct_reports gives) to count every example once under DDP")
    return [int(i) for i in batch["index"]]


def merge_evaluation_stores(stores: Sequence[Mapping[str, list[Any]]]) -> dict[str, list[Any]]:
    """One evaluation store from every rank's (in rank order): each dataset index once, in index order.

    An example that several ranks evaluated (DistributedSampler's padding) is kept from the first rank that has
    it; entries tied to an example (pointing hits, figure slices) follow their example. Figure lists keep their
    first examples by index. The tensors of ``_BATCHED`` come back as one (N, *) tensor each (a one-item list).
    """
    owner: dict[int, int] = {}
    for rank, store in enumerate(stores):
        for row in store.get("index", []):
            owner.setdefault(int(row), rank)
    merged: dict[str, list[Any]] = defaultdict(list)
    for row_key, keys in _ROW_ALIGNED.items():
        entries = []  # (row, rank, position, {key: value})
        for rank, store in enumerate(stores):
            rows = store.get(row_key, [])
            columns = {}
            for key in keys:
                values = store.get(key, [])
                if key in _BATCHED:
                    values = list(torch.cat(values)) if values else []  # list of (B, *) -> N rows (*)
                if len(values) != len(rows):
                    raise RuntimeError(f"evaluation store: {len(values)} '{key}' entries for {len(rows)} examples")
                columns[key] = values
            for position, row in enumerate(rows):
                if owner.get(int(row), rank) == rank:
                    entries.append((int(row), rank, position, {key: columns[key][position] for key in keys}))
        entries.sort(key=lambda entry: entry[:3])  # dataset order; an example's entries keep their order
        entries = entries[: _FIGURE_LIMITS.get(row_key, len(entries))]
        if not entries:
            continue
        merged[row_key] = [row for row, *_ in entries]
        for key in keys:
            values = [entry[3][key] for entry in entries]
            merged[key] = [torch.stack(values)] if key in _BATCHED else values
    grid = next((store["pointing_grid_tokens"] for store in stores if store.get("pointing_grid_tokens")), None)
    if grid is not None:
        merged["pointing_grid_tokens"] = list(grid)
    return merged


def _test_only_metric(name: str) -> bool:
    """Pointing descriptors and per-organ breakdowns: in the test metrics, not logged (or drawn) every epoch."""
    descriptor = "chance" in name or name.endswith(("_n", "_grid_tokens")) or "/uses_" in name
    return descriptor or name.startswith(("grounding/pointing_acc/", "grounding/pointing_acc_control_sentence/"))


def _pointing_example(image: Tensor, attention: Tensor, grid: Sequence[int], organ_mask: Tensor, axial_axis: int,
                      sentence: str, organ: str, hit: float) -> dict[str, Any]:
    """The axial slice through a sentence's attention peak, for ``plot_pointing_examples``.

    Shapes:
        image: (X, Y, Z) in [0, 1], attention: (N,), organ_mask: (X, Y, Z) 0 / 1; slices: the volume without
        ``axial_axis``
    """
    peak = attention_peak_voxel(attention, grid, organ_mask.shape)
    index = peak[axial_axis]
    upsampled = upsample_attention(attention, grid, organ_mask.shape)  # (X, Y, Z)
    return {"image": image.detach().float().cpu().select(axial_axis, index).numpy(),
            "attention": upsampled.select(axial_axis, index).numpy(),
            "organ": organ_mask.select(axial_axis, index).numpy(),
            "peak": tuple(p for axis, p in enumerate(peak) if axis != axial_axis), "slice": index,
            "sentence": sentence, "organ_name": organ, "hit": bool(hit)}


def resolve_pointing_source(source: str, weights: Mapping[str, float]) -> str:
    """The pointing method for ``source`` (see ``MedVLPretrainModule``) given the objectives' weights."""
    if source not in POINTING_SOURCES:
        raise ValueError(f"pointing_source={source!r} is not one of {list(POINTING_SOURCES)}")
    if source == "auto":
        return next((name for name in ("word_alignment", "sentence_alignment") if weights[name]), "global_cam")
    if source != "global_cam" and not weights[source]:
        raise ValueError(f"pointing_source={source!r} needs the {source} objective, which this model was trained "
                         f"without (loss_weights.{source}=0); use 'auto' or 'global_cam'")
    return source
