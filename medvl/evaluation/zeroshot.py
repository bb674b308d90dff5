"""Zero-shot finding classification from positive vs negative text prompts (CT-CLIP style)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


ZEROSHOT_TEMPLATE_KEYS = ("positive", "negative", "context", "phrases")


def resolve_zeroshot_templates(templates: Mapping[str, Any] | None, label_names: Sequence[str],
                               base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validated zero-shot prompt settings: the given keys over ``base`` (or over the defaults).

    Keys: "positive" / "negative" (templates with ``{finding}``), "context" (sentences encoded before every prompt)
    and "phrases" ({label name: phrase or list of phrases} put into the templates instead of the label name,
    e.g. {"calc_aorta": "aortic wall calcification"}; several phrases are averaged like several templates).

    Raises:
        ValueError: an unknown key, no template, a phrase for a label the data does not have, or an empty phrase.
    """
    templates = dict(templates or {})
    unknown = sorted(set(templates) - set(ZEROSHOT_TEMPLATE_KEYS))
    if unknown:
        raise ValueError(f"unknown zeroshot_templates key(s) {unknown}; valid keys are {sorted(ZEROSHOT_TEMPLATE_KEYS)}")
    merged = {"positive": list(DEFAULT_POSITIVE_TEMPLATES), "negative": list(DEFAULT_NEGATIVE_TEMPLATES),
              "context": [], "phrases": {}, **dict(base or {}), **templates}
    phrases = {}
    for label, given in dict(merged["phrases"] or {}).items():
        # phrases kept from `base` may name labels of the data a checkpoint was trained on; they are unused then
        if "phrases" in templates and label not in label_names:
            raise ValueError(f"zeroshot_templates.phrases names {label!r}, which is not a finding label of this "
                             f"data; labels: {list(label_names)}")
        given = [given] if isinstance(given, str) else list(given)
        if not given or not all(isinstance(g, str) and g.strip() for g in given):
            raise ValueError(f"zeroshot_templates.phrases[{label!r}] must be a non-empty phrase or list of phrases; "
                             f"got {given!r}")
        phrases[str(label)] = [g.strip() for g in given]
    for key in ("positive", "negative"):
        if not merged[key]:
            raise ValueError(f"zeroshot_templates.{key} needs at least one template")
    if len(merged["positive"]) != len(merged["negative"]):
        raise ValueError(f"zeroshot_templates.positive and .negative are paired and must be equally many; got "
                         f"{len(merged['positive'])} and {len(merged['negative'])}")
    return {"positive": [str(t) for t in merged["positive"]], "negative": [str(t) for t in merged["negative"]],
            "context": [str(c) for c in merged["context"] or []], "phrases": phrases}


def finding_prompts(label: str, templates: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Positive and negative prompts of one finding label (templates as ``resolve_zeroshot_templates`` gives).

    Each phrase of the label (the label itself without "phrases") fills every template, so both lists have
    len(phrases) x len(templates) prompts, the pairs at equal positions.
    """
    phrases = dict(templates.get("phrases") or {}).get(label, [label])
    positive = [p for phrase in phrases for p in build_prompts(phrase, templates["positive"])]
    negative = [p for phrase in phrases for p in build_prompts(phrase, templates["negative"])]
    return positive, negative


def zero_shot_probabilities(volume_emb: Tensor, positive_emb: Tensor | Sequence[Tensor],
                            negative_emb: Tensor | Sequence[Tensor], logit_scale: float | Tensor) -> Tensor:
    """Probability of each finding per volume, averaged over its prompt pairs.

        p(k | v) = mean_p softmax(s * [cos(v, pos_kp), cos(v, neg_kp)])_0

    Shapes:
        volume_emb: (N, C); positive_emb, negative_emb: (K, P, C) (K findings, P prompt pairs), or K tensors of
        (P_k, C) when findings have different numbers of prompts (zero-shot "phrases") -> (N, K)

    Raises:
        ValueError: shapes that do not match.
    """
    if volume_emb.dim() != 2 or len(positive_emb) != len(negative_emb) or any(
            p.dim() != 2 or p.shape != n.shape or p.shape[-1] != volume_emb.shape[-1]
            for p, n in zip(positive_emb, negative_emb)):
        shapes = [tuple(p.shape) for p in positive_emb], [tuple(n.shape) for n in negative_emb]
        raise ValueError(f"expected volume_emb (N, C) and K pairs of prompt embeddings (P_k, C) of equal shape; got "
                         f"{tuple(volume_emb.shape)}, {shapes[0]}, {shapes[1]}")
    v = F.normalize(volume_emb.float(), dim=-1)
    columns = []
    for positive, negative in zip(positive_emb, negative_emb):
        pos = v @ F.normalize(positive.float(), dim=-1).T  # (N, P_k)
        neg = v @ F.normalize(negative.float(), dim=-1).T  # (N, P_k)
        pair = torch.stack([pos, neg], dim=-1) * float(logit_scale)  # (N, P_k, 2)
        columns.append(pair.softmax(dim=-1)[..., 0].mean(dim=-1))  # (N,)
    return torch.stack(columns, dim=1) if columns else v.new_zeros(len(v), 0)  # (N, K)
