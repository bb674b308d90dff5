"""Image-text matching (ITM) with hard negatives sampled from contrastive similarities (ALBEF / BLIP style).

"Image" is whatever the visual side is (a CT volume's tokens, a 3D scene's object tokens); "text" is a
report or a description. A fusion model sees (text, visual) pairs and a 2-way head says match / no match.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FuseFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""fuse(text_tokens (B', L, C), text_mask (B', L), visual_tokens (B', M, C), visual_mask (B', M)) -> (B', C_f)."""


def _check_no_empty_rows(invalid: Tensor, what: str) -> None:
    empty = invalid.all(dim=1).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"no valid hard negative {what} {empty[:10]}{'...' if len(empty) > 10 else ''} of a batch of "
            f"{invalid.shape[0]}: every candidate is the sample itself or marked in positive_mask; matching needs a "
            "batch size >= 2 with at least one non-positive partner per sample (larger batches, or skip the ITM loss)"
        )


@torch.no_grad()
def sample_hard_negatives(
    similarity: Tensor, positive_mask: Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Sample one hard negative text per image and one hard negative image per text.

    For image i, negative text j != i is drawn with probability softmax_j(similarity[i, j]) over the valid
    candidates (not j == i, not positive_mask[i, j]); for text j, negative image i likewise from column j.
    Pass the scaled logits (e.g. `ClipInfoNCELoss.similarity`) so that the temperature shapes the sampling.
    No gradient flows through the sampling.

    Args:
        similarity: image-text similarities; rows are images, columns texts, row i pairs with column i.
        positive_mask: True where image i and text j also match (e.g. duplicate or identical reports), so
            they are never used as negatives; the diagonal is always excluded.
        generator: torch random generator for reproducible sampling (on similarity's device).

    Shapes:
        similarity: (B, B), positive_mask: (B, B) bool -> neg_text_for_image: (B,) long, neg_image_for_text: (B,) long

    Raises:
        ValueError: `similarity` is not square 2-D or not finite, `positive_mask` has another shape or is not
            bool, or some image or text has no valid negative (e.g. B == 1).
    """
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1] or similarity.shape[0] < 1:
        raise ValueError(f"similarity must be a square (B, B) matrix with B >= 1; got shape {tuple(similarity.shape)}")
    if not torch.isfinite(similarity).all():
        raise ValueError("similarity contains NaN or infinite values; cannot sample hard negatives from it")
    batch = similarity.shape[0]
    invalid = torch.eye(batch, dtype=torch.bool, device=similarity.device)
    if positive_mask is not None:
        if positive_mask.shape != similarity.shape or positive_mask.dtype != torch.bool:
            raise ValueError(
                f"positive_mask must be a bool tensor of shape {tuple(similarity.shape)}; "
                f"got {positive_mask.dtype} of shape {tuple(positive_mask.shape)}"
            )
        invalid = invalid | positive_mask.to(similarity.device)
    _check_no_empty_rows(invalid, "text for images")
    _check_no_empty_rows(invalid.T, "image for texts")
    similarity = similarity.float()

    def draw(scores: Tensor, excluded: Tensor) -> Tensor:
        # softmax over the valid candidates only; every row has one, so no row is all -inf
        weights = scores.masked_fill(excluded, float("-inf")).softmax(dim=1)
        return torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (B, 1) -> (B,)

    return draw(similarity, invalid), draw(similarity.T, invalid.T)


class MatchingHead(nn.Module):
    """Two-way classifier (no match / match) on a pooled fused feature.

    Args:
        dim: channels of the fused feature.

    Shapes:
        fused: (B, C) -> logits (B, 2); class 1 = the pair matches.

    Raises:
        ValueError: dim < 1, or the input is not (B, dim).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1 (channels of the fused feature); got {dim}")
        self.dim = dim
        self.classifier = nn.Linear(dim, 2)

    def forward(self, fused: Tensor) -> Tensor:
        if fused.dim() != 2 or fused.shape[1] != self.dim:
            raise ValueError(f"MatchingHead expects a (B, {self.dim}) fused feature; got {tuple(fused.shape)}")
        return self.classifier(fused)


class ImageTextMatchingLoss(nn.Module):
    """ITM loss: classify B positive pairs and 2B hard-negative pairs with one fusion pass (ALBEF / BLIP).

    Pairs: (image i, text i) with label 1; (image i, text t_i) and (image v_j, text j) with label 0, where
    t, v = `sample_hard_negatives(similarity, positive_mask)`. With p = softmax(head(fuse(pair))):

        loss = -1 / (3B) * sum over the 3B pairs of log p[label]

    Args:
        dim: channels of the fused feature returned by `fuse`.
        loss_name: key of the loss, must end in "_loss"; the accuracy is logged under the same stem with
            "_acc" (default "matching_acc"), which the trainer logs but does not add to the total loss.

    Shapes (forward):
        visual_tokens: (B, M, C), visual_mask: (B, M) bool (True = valid) or None (all valid),
        text_tokens: (B, L, C), text_mask: (B, L) bool (True = valid) or (B, L, L) per-query attention mask
            (e.g. TriBERT's sentence-restricted mask),
        similarity: (B, B) image-text scaled logits of this rank's batch, positive_mask: (B, B) bool,
        fuse(...) on the 3B pairs -> (3B, dim)
        -> {loss_name: (), "<stem>_acc": () detached}

    Raises:
        ValueError: bad `loss_name` or `dim`; inputs whose shapes disagree, masks that are not bool, a
            `fuse` output that is not (3B, dim), or a batch without valid negatives (e.g. B == 1).
    """

    def __init__(self, dim: int, loss_name: str = "matching_loss") -> None:
        super().__init__()
        if not loss_name.endswith("_loss"):
            raise ValueError(f"loss_name must end in '_loss' so that the trainer sums it; got {loss_name!r}")
        self.loss_name = loss_name
        self.accuracy_name = loss_name[: -len("_loss")] + "_acc"
        self.head = MatchingHead(dim)

    def forward(
        self,
        fuse: FuseFn,
        visual_tokens: Tensor,
        visual_mask: Tensor | None,
        text_tokens: Tensor,
        text_mask: Tensor,
        similarity: Tensor,
        positive_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Return {loss_name: ITM cross-entropy, "<stem>_acc": share of the 3B pairs classified right}."""
        self._check_inputs(visual_tokens, visual_mask, text_tokens, text_mask, similarity)
        if visual_mask is None:  # every visual token valid
            visual_mask = torch.ones(visual_tokens.shape[:2], dtype=torch.bool, device=visual_tokens.device)
        batch = visual_tokens.shape[0]
        neg_text, neg_visual = sample_hard_negatives(similarity, positive_mask, generator=generator)
        # 3 x (B, ...) -> (3B, ...): [positive pairs; (image i, hard text); (hard image, text j)]
        pair_text = torch.cat([text_tokens, text_tokens[neg_text], text_tokens], dim=0)
        pair_text_mask = torch.cat([text_mask, text_mask[neg_text], text_mask], dim=0)
        pair_visual = torch.cat([visual_tokens, visual_tokens, visual_tokens[neg_visual]], dim=0)
        pair_visual_mask = torch.cat([visual_mask, visual_mask, visual_mask[neg_visual]], dim=0)
        fused = fuse(pair_text, pair_text_mask, pair_visual, pair_visual_mask)
        if not isinstance(fused, Tensor) or fused.shape != (3 * batch, self.head.dim):
            got = tuple(fused.shape) if isinstance(fused, Tensor) else type(fused).__name__
            raise ValueError(
                f"fuse must return one pooled feature per pair, shape ({3 * batch}, {self.head.dim}); got {got}"
            )
        logits = self.head(fused)  # (3B, 2)
        labels = torch.cat(
            [torch.ones(batch, dtype=torch.long), torch.zeros(2 * batch, dtype=torch.long)]
        ).to(logits.device)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return {self.loss_name: loss, self.accuracy_name: accuracy}

    @staticmethod
    def _check_inputs(
        visual_tokens: Tensor, visual_mask: Tensor | None, text_tokens: Tensor, text_mask: Tensor, similarity: Tensor
    ) -> None:
        problems = []
        if visual_tokens.dim() != 3:
            problems.append(f"visual_tokens must be (B, M, C), got {tuple(visual_tokens.shape)}")
        if text_tokens.dim() != 3:
            problems.append(f"text_tokens must be (B, L, C), got {tuple(text_tokens.shape)}")
        if not problems:
            batch = visual_tokens.shape[0]
            if text_tokens.shape[0] != batch:
                problems.append(f"visual_tokens has {batch} samples but text_tokens has {text_tokens.shape[0]}")
            if visual_mask is not None and (visual_mask.shape != visual_tokens.shape[:2]
                                            or visual_mask.dtype != torch.bool):
                problems.append(
                    f"visual_mask must be bool of shape {tuple(visual_tokens.shape[:2])} (True = valid), "
                    f"got {visual_mask.dtype} {tuple(visual_mask.shape)}"
                )
            length = text_tokens.shape[1]
            if text_mask.shape not in (text_tokens.shape[:2], (batch, length, length)) or text_mask.dtype != torch.bool:
                problems.append(
                    f"text_mask must be bool of shape {tuple(text_tokens.shape[:2])} (True = valid) or a per-query "
                    f"attention mask ({batch}, {length}, {length}), "
                    f"got {text_mask.dtype} {tuple(text_mask.shape)}"
                )
            if similarity.shape != (batch, batch):
                problems.append(f"similarity must be ({batch}, {batch}), got {tuple(similarity.shape)}")
        if problems:
            raise ValueError("ImageTextMatchingLoss got bad inputs: " + "; ".join(problems))
