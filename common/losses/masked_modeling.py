"""Masked modelling: BERT-style token masking, masked-language-modelling loss, and masked feature / category
prediction for objects, regions or patches."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100  # the label of unselected tokens (PyTorch / transformers convention)
_MASK_SHARE = 0.8  # of the selected tokens: 80% -> [MASK]
_RANDOM_SHARE = 0.1  # 10% -> a random token; the remaining 10% keep their id


def mask_positions(
    valid_mask: Tensor,
    mask_probability: float,
    generator: torch.Generator | None = None,
    min_masked: int = 1,
) -> Tensor:
    """Select each valid position independently with `mask_probability` (objects, regions, patches, tokens).

    Every row with at least one valid position gets at least min(min_masked, number of valid positions)
    selected ones: when the coin flips select fewer, further valid positions are added in random order.
    Invalid positions are never selected. Random numbers come from `generator` (drawn on its device, then
    moved), so a seeded generator gives the same selection on any device.

    Args:
        valid_mask: True where a position may be masked.
        mask_probability: selection probability in (0, 1).
        generator: optional torch.Generator for reproducible draws.
        min_masked: guaranteed selections per row (capped by the row's valid count); >= 0, 0 disables.

    Shapes:
        valid_mask: (B, N) bool -> (B, N) bool, True = selected

    Raises:
        ValueError: probability outside (0, 1), negative min_masked, or valid_mask not a 2-D bool tensor.
    """
    if not (isinstance(mask_probability, (int, float)) and 0.0 < mask_probability < 1.0):
        raise ValueError(f"mask_probability must be in (0, 1) (e.g. 0.15); got {mask_probability!r}")
    if isinstance(min_masked, bool) or not isinstance(min_masked, int) or min_masked < 0:
        raise ValueError(f"min_masked must be an integer >= 0 (0 disables the guarantee); got {min_masked!r}")
    if valid_mask.dim() != 2 or valid_mask.dtype != torch.bool:
        raise ValueError(
            f"valid_mask must be a (B, N) bool tensor (True = may be masked); got shape {tuple(valid_mask.shape)}, "
            f"dtype {valid_mask.dtype}"
        )
    selected = (_uniform(valid_mask.shape, generator, valid_mask.device) < mask_probability) & valid_mask
    if min_masked == 0 or valid_mask.shape[1] == 0:
        return selected
    # Rank the valid positions of each row in a random order (invalid ones last); the first k are forced.
    keys = _uniform(valid_mask.shape, generator, valid_mask.device).masked_fill(~valid_mask, 2.0)  # (B, N)
    order = keys.argsort(dim=1)  # (B, N): position indices, random valid ones first
    positions = torch.arange(valid_mask.shape[1], device=valid_mask.device).expand_as(order)  # (B, N)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # (B, N): rank of each position
    needed = valid_mask.sum(dim=1).clamp(max=min_masked)  # (B,)
    short = selected.sum(dim=1) < needed  # (B,): rows whose coin flips selected too few
    forced = (rank < needed[:, None]) & valid_mask & short[:, None]  # (B, N)
    return selected | forced


def mask_tokens(
    input_ids: Tensor,
    *,
    special_tokens_mask: Tensor,
    attention_mask: Tensor | None,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    random_token_ids: Tensor | None = None,
    generator: torch.Generator | None = None,
    min_masked_per_sequence: int = 1,
) -> tuple[Tensor, Tensor]:
    """BERT masking for masked language modelling (80% [MASK] / 10% random token / 10% unchanged).

    Each maskable token (not special, not padding) is selected with probability `mlm_probability`
    (see `mask_positions`, which also guarantees `min_masked_per_sequence` selections per sequence that has a
    maskable token). Of the selected tokens 80% become `mask_token_id`, 10% a random token (drawn uniformly
    from `random_token_ids` when given, so that special tokens are never inserted; otherwise from
    [0, vocab_size)), 10% stay as they are. Labels hold the original id at selected positions and -100
    elsewhere. `input_ids` is not modified.
    Written here rather than using transformers' DataCollatorForLanguageModeling, which needs a tokenizer
    object and has neither a generator, a random-token pool nor a per-sequence minimum.

    Args:
        input_ids: token ids (integer dtype).
        special_tokens_mask: True (or 1) at special tokens ([CLS], [SEP], sentence tokens, ...), never selected.
        attention_mask: True (or 1) at real tokens, False (0) at padding, never selected; None = no padding.
        mask_token_id: id of [MASK], in [0, vocab_size).
        vocab_size: number of token ids; >= 1.
        mlm_probability: selection probability in (0, 1) (BERT: 0.15).
        random_token_ids: optional 1-D integer tensor of ids to draw random replacements from.
        generator: optional torch.Generator for reproducible draws.
        min_masked_per_sequence: guaranteed selections per sequence (capped by its maskable count); >= 0.

    Shapes:
        input_ids, special_tokens_mask, attention_mask: (B, L) -> masked_input_ids (B, L), labels (B, L) long

    Raises:
        ValueError: bad probability / ids / vocabulary size, masks of another shape or with values other than
            0 / 1, or random_token_ids empty, not 1-D, or outside [0, vocab_size).
    """
    if input_ids.dim() != 2 or input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be a (B, L) integer tensor; got shape {tuple(input_ids.shape)}, dtype {input_ids.dtype}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be an integer >= 1; got {vocab_size!r}")
    if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, int) or not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mask_token_id must be an integer in [0, vocab_size={vocab_size}); got {mask_token_id!r}")
    if not (isinstance(mlm_probability, (int, float)) and 0.0 < mlm_probability < 1.0):
        raise ValueError(f"mlm_probability must be in (0, 1) (BERT uses 0.15); got {mlm_probability!r}")
    maskable = ~_binary_mask(special_tokens_mask, "special_tokens_mask", input_ids)  # (B, L)
    if attention_mask is not None:
        maskable &= _binary_mask(attention_mask, "attention_mask", input_ids)
    if random_token_ids is not None:
        if random_token_ids.dim() != 1 or random_token_ids.numel() == 0 or random_token_ids.is_floating_point():
            raise ValueError(
                f"random_token_ids must be a non-empty 1-D integer tensor; got shape {tuple(random_token_ids.shape)}, "
                f"dtype {random_token_ids.dtype}"
            )
        if bool(((random_token_ids < 0) | (random_token_ids >= vocab_size)).any()):
            raise ValueError(f"random_token_ids must all lie in [0, vocab_size={vocab_size})")

    selected = mask_positions(maskable, mlm_probability, generator=generator, min_masked=min_masked_per_sequence)
    labels = input_ids.long().masked_fill(~selected, IGNORE_INDEX)  # (B, L)
    action = _uniform(input_ids.shape, generator, input_ids.device)  # (B, L): one draw picks mask / random / keep
    to_mask = selected & (action < _MASK_SHARE)
    to_random = selected & (action >= _MASK_SHARE) & (action < _MASK_SHARE + _RANDOM_SHARE)
    if random_token_ids is None:
        random_ids = _randint(vocab_size, input_ids.shape, generator, input_ids.device)  # (B, L)
    else:
        pool = random_token_ids.to(input_ids.device)
        random_ids = pool[_randint(pool.numel(), input_ids.shape, generator, input_ids.device)]  # (B, L)
    masked_input_ids = input_ids.masked_fill(to_mask, mask_token_id)
    masked_input_ids = torch.where(to_random, random_ids.to(input_ids.dtype), masked_input_ids)
    return masked_input_ids, labels


class MaskedLanguageModelingLoss(nn.Module):
    """Cross-entropy over the selected tokens (labels != -100).

        loss = 1 / max(n, 1) * sum_{t: labels_t != -100} -log softmax(logits_t)[labels_t]    (n selected tokens)

    Only the selected rows of `logits` enter the log-softmax (saves memory with large vocabularies). With no
    selected token the loss is an exact 0 that is still attached to `logits` (zero gradient, no NaN).

    Args:
        loss_name: key of the returned loss; must end in "_loss".

    Shapes:
        logits: (B, L, V), labels: (B, L) integer (-100 = not selected) -> {loss_name: ()}

    Raises:
        ValueError: bad loss_name; logits not 3-D, labels of another (B, L), or labels outside [0, V) other
            than -100.
    """

    def __init__(self, loss_name: str = "mlm_loss") -> None:
        super().__init__()
        self.loss_name = _check_loss_name(loss_name)

    def forward(self, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Return {loss_name: mean cross-entropy over the selected tokens}."""
        name = type(self).__name__
        if logits.dim() != 3 or labels.shape != logits.shape[:2]:
            raise ValueError(
                f"{name} expects logits (B, L, V) and labels (B, L); got {tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"{name}: labels must be an integer tensor; got {labels.dtype}")
        selected = labels != IGNORE_INDEX  # (B, L)
        targets = labels[selected]  # (n,)
        if bool(((targets < 0) | (targets >= logits.shape[-1])).any()):
            raise ValueError(f"{name}: labels must be -100 or in [0, V={logits.shape[-1]})")
        ce_sum = F.cross_entropy(logits[selected], targets, reduction="sum")  # logits[selected]: (n, V)
        return {self.loss_name: ce_sum / max(targets.numel(), 1)}


class MaskedFeatureLoss(nn.Module):
    """Regression of the features of masked positions (objects, regions, patches); targets are detached.

    Over the n masked positions p (C channels):
        smooth_l1: 1 / max(n * C, 1) * sum_{p, c} smoothL1_beta=1(pred_pc - target_pc)
        mse:       1 / max(n * C, 1) * sum_{p, c} (pred_pc - target_pc)^2
        cosine:    1 / max(n, 1)     * sum_p (1 - cos(pred_p, target_p))
    With no masked position the loss is an exact 0 still attached to `pred` (zero gradient, no NaN).

    Args:
        loss_name: key of the returned loss; must end in "_loss".
        kind: "smooth_l1", "mse" or "cosine".

    Shapes:
        pred, target: (B, N, C), masked: (B, N) bool, True = masked (scored) -> {loss_name: ()}

    Raises:
        ValueError: bad loss_name or kind; pred / target of different or non-3-D shapes, masked not (B, N) bool.
    """

    KINDS = ("smooth_l1", "mse", "cosine")

    def __init__(self, loss_name: str = "masked_feature_loss", kind: str = "smooth_l1") -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}; got {kind!r}")
        self.loss_name = _check_loss_name(loss_name)
        self.kind = kind

    def forward(self, pred: Tensor, target: Tensor, masked: Tensor) -> dict[str, Tensor]:
        """Return {loss_name: the `kind` loss over the masked positions}."""
        name = type(self).__name__
        if pred.dim() != 3 or pred.shape != target.shape:
            raise ValueError(
                f"{name} expects pred and target of the same (B, N, C) shape; got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        _check_position_mask(masked, pred.shape[:2], name)
        chosen_pred = pred[masked]  # (B, N, C) -> (n, C)
        chosen_target = target.detach()[masked].to(pred.dtype)  # (B, N, C) -> (n, C)
        if self.kind == "cosine":
            total = (1.0 - F.cosine_similarity(chosen_pred, chosen_target, dim=-1)).sum()
            count = chosen_pred.shape[0]
        else:
            elementwise = F.smooth_l1_loss if self.kind == "smooth_l1" else F.mse_loss
            total = elementwise(chosen_pred, chosen_target, reduction="sum")
            count = chosen_pred.numel()
        return {self.loss_name: total / max(count, 1)}


class MaskedCategoryLoss(nn.Module):
    """Classification of masked positions (e.g. the semantic class of masked objects), with accuracy.

        loss = 1 / max(n, 1) * sum_{p masked, classes_p != ignore_index} CE_eps(logits_p, classes_p)
        CE_eps(z, y) = -(1 - eps) * log softmax(z)_y - eps / K * sum_k log softmax(z)_k   (eps = label_smoothing)

    Also returns the detached accuracy over the same n positions under `<loss_name without _loss>_acc`
    (default "masked_category_acc"); it is 0 when n = 0, where the loss is an exact 0 still attached to
    `logits` (zero gradient, no NaN).

    Args:
        loss_name: key of the returned loss; must end in "_loss".
        ignore_index: class value that is never scored (e.g. unknown category).
        label_smoothing: eps in [0, 1).

    Shapes:
        logits: (B, N, K), classes: (B, N) integer, masked: (B, N) bool, True = masked (scored)
        -> {loss_name: (), "<name>_acc": ()}

    Raises:
        ValueError: bad arguments at construction; mismatched shapes, non-integer classes, non-bool mask, or
            scored classes outside [0, K).
    """

    def __init__(
        self, loss_name: str = "masked_category_loss", ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"ignore_index must be an integer; got {ignore_index!r}")
        if not (isinstance(label_smoothing, (int, float)) and 0.0 <= label_smoothing < 1.0):
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing!r}")
        self.loss_name = _check_loss_name(loss_name)
        self.accuracy_name = loss_name[: -len("_loss")] + "_acc"
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Tensor, classes: Tensor, masked: Tensor) -> dict[str, Tensor]:
        """Return {loss_name: CE over masked positions, accuracy_name: detached accuracy}."""
        name = type(self).__name__
        if logits.dim() != 3 or classes.shape != logits.shape[:2]:
            raise ValueError(
                f"{name} expects logits (B, N, K) and classes (B, N); got {tuple(logits.shape)} and {tuple(classes.shape)}"
            )
        if classes.is_floating_point() or classes.dtype == torch.bool:
            raise ValueError(f"{name}: classes must be an integer tensor; got {classes.dtype}")
        _check_position_mask(masked, logits.shape[:2], name)
        scored = masked & (classes != self.ignore_index)  # (B, N)
        targets = classes[scored]  # (n,)
        if bool(((targets < 0) | (targets >= logits.shape[-1])).any()):
            raise ValueError(f"{name}: scored classes must be in [0, K={logits.shape[-1]}) or equal ignore_index")
        chosen_logits = logits[scored]  # (B, N, K) -> (n, K)
        ce_sum = F.cross_entropy(chosen_logits, targets, reduction="sum", label_smoothing=self.label_smoothing)
        count = max(targets.numel(), 1)
        correct = (chosen_logits.detach().argmax(dim=-1) == targets).sum()
        return {self.loss_name: ce_sum / count, self.accuracy_name: correct.to(logits.dtype) / count}


def _uniform(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """U[0, 1) draws on the generator's device (so seeded results do not depend on `device`), moved to `device`."""
    draw_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_device).to(device)


def _randint(high: int, shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Integers uniform in [0, high), drawn like `_uniform`."""
    draw_device = generator.device if generator is not None else device
    return torch.randint(high, shape, generator=generator, device=draw_device).to(device)


def _binary_mask(mask: Tensor, name: str, like: Tensor) -> Tensor:
    """Bool copy of a (B, L) mask given as bool or as 0 / 1 integers (as tokenizers return it)."""
    if mask.shape != like.shape:
        raise ValueError(f"{name} must have the shape of input_ids {tuple(like.shape)}; got {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask.to(like.device)
    if mask.is_floating_point() or bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"{name} must be bool or hold only 0 / 1 integers; got dtype {mask.dtype}")
    return mask.to(device=like.device, dtype=torch.bool)


def _check_position_mask(masked: Tensor, expected: torch.Size, name: str) -> None:
    if masked.dtype != torch.bool or masked.shape != expected:
        raise ValueError(
            f"{name}: masked must be a bool tensor of shape {tuple(expected)} (True = masked); "
            f"got shape {tuple(masked.shape)}, dtype {masked.dtype}"
        )


def _check_loss_name(loss_name: str) -> str:
    if not isinstance(loss_name, str) or not loss_name.endswith("_loss"):
        raise ValueError(f"loss_name must end in '_loss' so that the trainer sums it; got {loss_name!r}")
    return loss_name


__all__ = [
    "IGNORE_INDEX",
    "MaskedCategoryLoss",
    "MaskedFeatureLoss",
    "MaskedLanguageModelingLoss",
    "mask_positions",
    "mask_tokens",
]
