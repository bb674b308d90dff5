"""Captioning metrics through pycocoevalcap (the COCO caption evaluation every 3D captioning / QA paper uses).

BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap's `Cider` is CIDEr-D: Gaussian length penalty sigma 6,
clipped counts, x10, IDF from the references of the scored set). No score is written by hand here.

Tokenisation is pycocoevalcap's `PTBTokenizer` (Stanford PTB tokenizer, lower case, punctuation tokens dropped).
It and METEOR run a Java program. Without a `java` executable on PATH:
- METEOR is skipped (left out of the result) with a warning saying so;
- tokenisation falls back to `simple_tokenize` (lower case, words and punctuation split by a regular expression,
  punctuation dropped like PTBTokenizer does), with a warning that the numbers may differ slightly from
  published ones. Install a Java runtime (`install.sh` does: Debian `default-jre-headless`) for comparable numbers.
"""
from __future__ import annotations

import logging
import re
import shutil
import string
from collections.abc import Mapping, Sequence

__all__ = ["CAPTION_METRICS", "caption_scores", "java_available", "simple_tokenize"]

log = logging.getLogger(__name__)

CAPTION_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def java_available() -> bool:
    """True when a `java` executable is on PATH (PTBTokenizer and METEOR need it)."""
    return shutil.which("java") is not None


def simple_tokenize(text: str) -> str:
    """The no-Java stand-in for PTBTokenizer: lower-cased word tokens, punctuation dropped, joined by spaces."""
    return " ".join(t for t in _TOKEN.findall(text.lower()) if t not in string.punctuation)


def _tokenize(texts: Mapping[str, Sequence[str]], use_java: bool) -> dict[str, list[str]]:
    if use_java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize({key: [{"caption": t} for t in values] for key, values in texts.items()})
    return {key: [simple_tokenize(t) for t in values] for key, values in texts.items()}


def caption_scores(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]],
                   per_item: bool = False) -> dict[str, float] | tuple[dict[str, float], dict[str, list[float]]]:
    """Corpus-level caption metrics of one candidate per key against that key's references.

    Args:
        candidates: key -> the candidate text (a caption, or a top-1 answer).
        references: key -> the reference texts (at least one each); the same keys as `candidates`.
        per_item: also return every metric per key (same order as `references`' keys), e.g. for Scan2Cap's
            m@kIoU, which averages per-object scores.

    Returns:
        {"bleu1".."bleu4", "meteor" (absent without Java), "rouge_l", "cider"} as pycocoevalcap returns them
        (BLEU is corpus-level, ROUGE-L / METEOR / CIDEr the mean over keys; fractions, not percentages); with
        `per_item`, also {metric: [score per key]}.

    Raises:
        ValueError: no key, keys that differ, or a key without references.
    """
    keys = list(references)
    if not keys:
        raise ValueError("no caption to score")
    if set(keys) != set(candidates):
        missing, extra = sorted(set(keys) - set(candidates))[:5], sorted(set(candidates) - set(keys))[:5]
        raise ValueError(f"candidates and references must have the same keys; missing candidates {missing}, "
                         f"candidates without references {extra}")
    empty = [key for key in keys if not references[key]]
    if empty:
        raise ValueError(f"keys without any reference text: {empty[:5]}")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    use_java = java_available()
    if not use_java:
        log.warning("no java executable on PATH: METEOR is skipped and captions are tokenised with a regular "
                    "expression instead of the PTB tokenizer (install a Java runtime, e.g. Debian "
                    "default-jre-headless, for numbers comparable to published ones)")
    refs = _tokenize({key: list(references[key]) for key in keys}, use_java)
    cands = _tokenize({key: [candidates[key]] for key in keys}, use_java)
    scores: dict[str, float] = {}
    items: dict[str, list[float]] = {}
    bleu, bleu_items = Bleu(4).compute_score(refs, cands, verbose=0)
    for n in range(4):
        scores[f"bleu{n + 1}"] = float(bleu[n])
        items[f"bleu{n + 1}"] = [float(v) for v in bleu_items[n]]
    if use_java:
        from pycocoevalcap.meteor.meteor import Meteor

        # METEOR's Java scorer stalls on an empty hypothesis line; such a candidate scores 0 anyway.
        nonempty = [key for key in keys if cands[key][0].strip()]
        by_key = dict.fromkeys(keys, 0.0)
        if nonempty:
            meteor = Meteor()  # starts the Java scorer; its __del__ stops it
            _, meteor_items = meteor.compute_score({k: refs[k] for k in nonempty}, {k: cands[k] for k in nonempty})
            del meteor
            by_key.update({k: float(v) for k, v in zip(nonempty, meteor_items)})
        items["meteor"] = [by_key[k] for k in keys]
        scores["meteor"] = sum(items["meteor"]) / len(keys)
    rouge, rouge_items = Rouge().compute_score(refs, cands)
    scores["rouge_l"], items["rouge_l"] = float(rouge), [float(v) for v in rouge_items]
    cider, cider_items = Cider().compute_score(refs, cands)
    scores["cider"], items["cider"] = float(cider), [float(v) for v in cider_items]
    return (scores, items) if per_item else scores
