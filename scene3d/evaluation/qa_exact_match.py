"""ScanQA answer accuracy: EM@1 / EM@10 by exact string match, and the separately named "refined" EM.

Definitions:
- ``em@1`` / ``em@10`` (ScanQA, Azuma et al. 2022, its benchmark's scoring): a question counts when its top-1
  answer / any of its top-10 answers is, as a string, one of the reference answers. The strings are compared
  exactly as given: no lower-casing, no stripping of punctuation or articles. This is the number of the ScanQA
  paper and leaderboard tables.
- ``refined_em@1`` / ``refined_em@10`` (a later convention of LLM-based 3D QA work): the same, after
  `normalize_answer` on both sides: lower case, punctuation removed (an apostrophe too), the articles a / an /
  the dropped, number words zero..twenty written as digits, whitespace collapsed. Some later papers also accept
  a prediction that contains a reference (or the reverse); that is NOT done here: refined EM here is exact match
  of the normalised strings. Both are reported under their own names so one is never read as the other.
"""
from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["NUMBER_WORDS", "normalize_answer", "qa_exact_match"]

NUMBER_WORDS = {word: str(value) for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(answer: str) -> str:
    """The "refined" form of an answer (module docstring): "The Two chairs." -> "2 chairs"."""
    text = _PUNCTUATION.sub(" ", answer.lower())
    words = [NUMBER_WORDS.get(word, word) for word in text.split() if word not in _ARTICLES]
    return " ".join(words)


def _check(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"one ranked answer list and one reference list per question, and at least one question; "
                         f"got {len(predictions)} predictions for {len(references)} questions")
    for index, (ranked, refs) in enumerate(zip(predictions, references)):
        if isinstance(ranked, str) or isinstance(refs, str):
            raise ValueError(f"question {index}: answers must be lists of strings, not a single string")
        if not ranked:
            raise ValueError(f"question {index}: no predicted answer (give at least the top-1 answer)")
        if not refs:
            raise ValueError(f"question {index}: no reference answer; a question without answers cannot be scored "
                             "(ScanQA test files have none: score on val)")


def qa_exact_match(predictions: Sequence[Sequence[str]], references: Sequence[Iterable[str]]) -> dict[str, float]:
    """EM@1 / EM@10 and refined EM@1 / EM@10 (module docstring), each the share of questions that count.

    Args:
        predictions: per question, the answers ranked best first (at least 1; only the first 10 are used).
        references: per question, the accepted answers.

    Returns:
        {"em@1", "em@10", "refined_em@1", "refined_em@10", "n"}.

    Raises:
        ValueError: different lengths, no question, a question with no prediction or no reference.
    """
    references = [list(refs) for refs in references]
    _check(predictions, references)
    exact1, exact10, refined1, refined10 = [], [], [], []
    for ranked, refs in zip(predictions, references):
        top10, accepted = list(ranked)[:10], set(refs)
        exact1.append(top10[0] in accepted)
        exact10.append(any(answer in accepted for answer in top10))
        normalised = {normalize_answer(r) for r in refs}
        refined1.append(normalize_answer(top10[0]) in normalised)
        refined10.append(any(normalize_answer(answer) in normalised for answer in top10))
    return {"em@1": float(np.mean(exact1)), "em@10": float(np.mean(exact10)),
            "refined_em@1": float(np.mean(refined1)), "refined_em@10": float(np.mean(refined10)),
            "n": float(len(predictions))}
