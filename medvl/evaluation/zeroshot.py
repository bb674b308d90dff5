"""Zero-shot finding classification from positive vs negative text prompts (CT-CLIP style)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_POSITIVE_TEMPLATES = (
    "There is {finding}.",
    "{Finding} is seen.",
    "Findings are consistent with {finding}.",
)
DEFAULT_NEGATIVE_TEMPLATES = (
    "There is no {finding}.",
    "No {finding} is seen.",
    "No evidence of {finding}.",
)


def build_prompts(finding: str, templates: Sequence[str]) -> list[str]:
    """Fill `{finding}` / `{Finding}` (capitalised) in each template.

    Raises:
        ValueError: empty finding name or no template.
    """
    finding = finding.strip()
    if not finding:
        raise ValueError("finding name must not be empty")
    if not templates:
        raise ValueError("at least one prompt template is needed")
    capitalised = finding[0].upper() + finding[1:]
    return [t.format(finding=finding, Finding=capitalised) for t in templates]


def zero_shot_probabilities(volume_emb: Tensor, positive_emb: Tensor, negative_emb: Tensor,
                            logit_scale: float | Tensor) -> Tensor:
    """Probability of each finding per volume, averaged over prompt pairs.

        p(k | v) = mean_p softmax(s * [cos(v, pos_kp), cos(v, neg_kp)])_0

    Shapes:
        volume_emb: (N, C); positive_emb, negative_emb: (K, P, C) (K findings, P prompt pairs) -> (N, K)

    Raises:
        ValueError: shapes that do not match.
    """
    if volume_emb.dim() != 2 or positive_emb.dim() != 3 or positive_emb.shape != negative_emb.shape \
            or positive_emb.shape[-1] != volume_emb.shape[-1]:
        raise ValueError(f"expected volume_emb (N, C) and prompt embeddings (K, P, C) of equal shape; got "
                         f"{tuple(volume_emb.shape)}, {tuple(positive_emb.shape)}, {tuple(negative_emb.shape)}")
    v = F.normalize(volume_emb.float(), dim=-1)
    pos = torch.einsum("nc,kpc->nkp", v, F.normalize(positive_emb.float(), dim=-1))  # (N, K, P)
    neg = torch.einsum("nc,kpc->nkp", v, F.normalize(negative_emb.float(), dim=-1))  # (N, K, P)
    pair = torch.stack([pos, neg], dim=-1) * float(logit_scale)  # (N, K, P, 2)
    return pair.softmax(dim=-1)[..., 0].mean(dim=-1)  # (N, K, P, 2) -> (N, K)
