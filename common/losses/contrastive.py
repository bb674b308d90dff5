"""CLIP-style symmetric InfoNCE between two batches of paired embeddings, exact under data parallelism."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.distributed import gather_rows_with_grad, gather_sizes, world_info


class ClipInfoNCELoss(nn.Module):
    """Symmetric InfoNCE (CLIP) loss with a learnable temperature, gathering negatives from all ranks.

    With L2-normalised features a_i, b_j (i, j over the N rows of the global batch, all ranks together)
    and logit scale s = exp(clamp(log_s, 0, log(max_logit_scale))) = 1 / temperature:

        loss = 1 / (2 N) * sum_i [ CE(s * (a_i . b_1, ..., a_i . b_N), i) + CE(s * (b_i . a_1, ..., b_i . a_N), i) ]
        CE(z, y) = -(1 - eps) * log softmax(z)_y - eps / N * sum_k log softmax(z)_k   (eps = label smoothing)

    Each rank computes only its own rows of the two N-column logit matrices (its rows against the
    gathered columns of every rank, labels `local_offset + arange(B)`: open_clip's "local loss") and
    returns sum(its rows' CE) * world_size / (2 N). Data-parallel training averages gradients over
    ranks, so the gradient of every parameter (encoders and logit scale) equals the gradient of the
    single-process loss on the concatenated batch, even when ranks hold different batch sizes; the mean
    of the per-rank loss values equals that loss too (a rank holding fewer rows reports a proportionally
    smaller value). With equal batch sizes this is the usual per-rank mean over 2B terms. Every rank must
    call forward (it gathers from all of them).

    Args:
        init_temperature: initial temperature (CLIP: 0.07, i.e. logit scale ~14.3); must be > 0 and
            >= 1 / max_logit_scale.
        learnable_temperature: learn log(logit scale) as a parameter; otherwise it is a fixed buffer.
        max_logit_scale: upper clamp of the logit scale (CLIP: 100), applied in every forward; >= 1.
        label_smoothing: eps in [0, 1) of the cross-entropy above.
        gather_distributed: use the rows of all ranks as negatives when torch.distributed is initialised;
            False keeps each rank's loss local to its own batch.
        loss_name: key of the returned loss; must end in "_loss".

    Shapes:
        a, b: (B, C) paired embeddings (row i of `a` matches row i of `b`) -> {loss_name: ()}

    Raises:
        ValueError: bad arguments at construction, or inputs that are not two (B, C) tensors of the same
            shape with B >= 1 and C >= 1.
    """

    def __init__(
        self,
        init_temperature: float = 0.07,
        learnable_temperature: bool = True,
        max_logit_scale: float = 100.0,
        label_smoothing: float = 0.0,
        gather_distributed: bool = True,
        loss_name: str = "contrastive_loss",
    ) -> None:
        super().__init__()
        if not (math.isfinite(max_logit_scale) and max_logit_scale >= 1.0):
            raise ValueError(
                "max_logit_scale must be a finite number >= 1 (the scale is clamped to [1, max]); "
                f"got {max_logit_scale}"
            )
        if not (math.isfinite(init_temperature) and init_temperature > 0.0):
            raise ValueError(f"init_temperature must be a finite number > 0 (CLIP uses 0.07); got {init_temperature}")
        if 1.0 / init_temperature > max_logit_scale:
            raise ValueError(
                f"init_temperature={init_temperature} gives logit scale {1.0 / init_temperature:.4g} above "
                f"max_logit_scale={max_logit_scale}; raise max_logit_scale or use a temperature "
                f">= {1.0 / max_logit_scale:.4g}"
            )
        if not (0.0 <= label_smoothing < 1.0):
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
        if not loss_name.endswith("_loss"):
            raise ValueError(f"loss_name must end in '_loss' so that the trainer sums it; got {loss_name!r}")
        self.max_log_logit_scale = math.log(max_logit_scale)
        self.label_smoothing = float(label_smoothing)
        self.gather_distributed = gather_distributed
        self.loss_name = loss_name
        log_logit_scale = torch.tensor(math.log(1.0 / init_temperature), dtype=torch.float32)
        if learnable_temperature:
            self.log_logit_scale = nn.Parameter(log_logit_scale)
        else:
            self.register_buffer("log_logit_scale", log_logit_scale)

    @property
    def logit_scale(self) -> Tensor:
        """Current logit scale 1 / temperature, clamped to [1, max_logit_scale]: a detached 0-d tensor for logging."""
        return self._clamped_logit_scale().detach()

    def _clamped_logit_scale(self) -> Tensor:
        # clamp of the log in the graph: no gradient pushes the scale further once it sits outside the range
        return self.log_logit_scale.clamp(0.0, self.max_log_logit_scale).exp()

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """Scaled cosine similarities s * cos(a_i, b_j) (e.g. for retrieval, or hard negatives in matching).

        Shapes:
            a: (B_a, C), b: (B_b, C) -> (B_a, B_b)

        Raises:
            ValueError: `a` or `b` is not 2-D, or their channel counts differ.
        """
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
            raise ValueError(
                f"similarity expects a: (B_a, C) and b: (B_b, C); got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        return self._clamped_logit_scale() * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T

    def forward(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        """Return {loss_name: symmetric InfoNCE of the paired rows of `a` and `b`} (see the class docstring)."""
        if a.dim() != 2 or a.shape != b.shape or a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(
                f"{type(self).__name__} expects two (B, C) tensors of the same shape with B >= 1 and C >= 1; "
                f"got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        a = F.normalize(a, dim=-1)
        b = F.normalize(b, dim=-1)
        _, world_size = world_info()
        if self.gather_distributed and world_size > 1:
            sizes = gather_sizes(a)  # a and b have the same rows on every rank: one size exchange serves both
            gathered_a = gather_rows_with_grad(a, sizes=sizes)
            all_a, local_offset = gathered_a.rows, gathered_a.local_offset
            all_b = gather_rows_with_grad(b, sizes=sizes).rows
            rows_per_loss = sum(sizes) / world_size  # N / world_size: see the weighting in the class docstring
        else:
            all_a, all_b, local_offset, rows_per_loss = a, b, 0, float(a.shape[0])
        scale = self._clamped_logit_scale()
        logits_a_to_b = scale * a @ all_b.T  # (B, N): this rank's rows of the a -> b logits
        if all_a is a:  # single process: the b -> a logits are the transpose; skip the second B x B matmul
            logits_b_to_a = logits_a_to_b.T
        else:
            logits_b_to_a = scale * b @ all_a.T  # (B, N)
        labels = torch.arange(a.shape[0], device=a.device) + local_offset
        ce_sum = F.cross_entropy(
            logits_a_to_b, labels, reduction="sum", label_smoothing=self.label_smoothing
        ) + F.cross_entropy(logits_b_to_a, labels, reduction="sum", label_smoothing=self.label_smoothing)
        return {self.loss_name: ce_sum / (2.0 * rows_per_loss)}
