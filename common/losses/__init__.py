"""Domain-free VLP losses; each returns a dict of ``*_loss`` terms."""
from common.losses.contrastive import ClipInfoNCELoss
from common.losses.local_alignment import LocalAlignmentLoss
from common.losses.masked_modeling import (
    IGNORE_INDEX,
    MaskedCategoryLoss,
    MaskedFeatureLoss,
    MaskedLanguageModelingLoss,
    mask_positions,
    mask_tokens,
)
from common.losses.matching import ImageTextMatchingLoss, MatchingHead, sample_hard_negatives

__all__ = [
    "ClipInfoNCELoss", "LocalAlignmentLoss", "MaskedLanguageModelingLoss", "MaskedFeatureLoss",
    "MaskedCategoryLoss", "mask_tokens", "mask_positions", "IGNORE_INDEX", "ImageTextMatchingLoss",
    "MatchingHead", "sample_hard_negatives",
]
