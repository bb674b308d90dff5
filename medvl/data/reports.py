"""Radiology report parsing: findings and impression sections, then sentences.

Two layouts are understood:

* Headed reports: section headers such as FINDINGS, IMPRESSION, CONCLUSION, OPINION, TECHNIQUE, COMPARISON,
  any case, followed by a colon at the start of a line or of a sentence, or alone on their own line.
  Impression-like headers (impression, conclusion, opinion, summary, diagnosis, result, recommendation)
  fill `impression`; findings headers fill `findings`; other headers (indication, history, technique,
  comparison, ...) own their first line or sentence, which is dropped. Text outside any findings section
  is the findings only when the report has no findings header.
* CT-RATE style: the findings and the impression run together in one text, and the impression starts at a
  marker: a double quote ("" in the CSV file, or a curly quote) or a bullet (•, ·) after a sentence end.
  The marker also separates the impression's items, many of which carry no final period. Reports with no
  marker whose last sentence has no final punctuation get that sentence as the impression (CT-RATE
  impressions are noun phrases: "... in bone structures. Nodules smaller than 5 mm in both lungs").
  Otherwise the impression stays empty: nothing is guessed. Of the 800 real CT-RATE reports in the shared
  data, 740 (92.5%) get an impression this way (see tests/medvl/data/test_reports.py).
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from common.text.sentences import split_sentences

__all__ = ["EmptyReportError", "Report", "is_blank_report", "parse_report", "split_sections"]

logger = logging.getLogger(__name__)

_FINDINGS_HEADERS = ("findings", "finding")
_IMPRESSION_HEADERS = (
    "impressions", "impression", "conclusions", "conclusion", "opinion", "summary", "diagnosis",
    "results", "result", "recommendations", "recommendation",
)
_OTHER_HEADERS = (
    "clinical indication", "clinical history", "clinical information", "clinical data", "clinical details",
    "indications", "indication", "history", "reason for examination", "reason for exam", "reason for study",
    "technique", "protocol", "comparisons", "comparison", "examination", "exam", "procedure",
)
_HEADER_KIND = {
    **{name: "findings" for name in _FINDINGS_HEADERS},
    **{name: "impression" for name in _IMPRESSION_HEADERS},
    **{name: "other" for name in _OTHER_HEADERS},
}
# Longest names first so "clinical history" wins over "history"; spaces inside a name match any blank run.
_HEADER_NAMES = "|".join(
    re.escape(name).replace(r"\ ", r"[ \t]+") for name in sorted(_HEADER_KIND, key=len, reverse=True)
)
_HEADER_WITH_COLON = re.compile(rf"(?i)\b(?P<name>{_HEADER_NAMES})[ \t]*:")
_HEADER_ALONE = re.compile(rf"(?im)^[ \t]*(?P<name>{_HEADER_NAMES})[ \t]*:?[ \t]*$")
_SENTENCE_END_BEFORE_HEADER = (".", "!", "?", '"', "”", "•", "·")

_QUOTES = "\"“”"
_MARKERS = _QUOTES + "•·"
_TERMINAL = ".!?"


class EmptyReportError(ValueError):
    """A report with no text (empty, whitespace or punctuation only, or missing)."""


@dataclass
class Report:
    """A parsed radiology report.

    Attributes:
        findings: the findings section, cleaned: one space between words, list markers and CT-RATE quote /
            bullet markers removed, sentences separated by one space (each ending in punctuation).
        impression: the impression section, cleaned the same way ("" when the report has none).
        sentences: findings sentences then impression sentences, at most `max_sentences` of them (S).
    """

    findings: str
    impression: str
    sentences: list[str]

    @property
    def text(self) -> str:
        """The whole cleaned report: findings, a blank line, impression (empty parts left out)."""
        return "\n\n".join(part for part in (self.findings, self.impression) if part)


def is_blank_report(text: object) -> bool:
    """Whether `text` holds no report: None, NaN (a missing CSV cell), or a str without letters or digits."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return True
    return isinstance(text, str) and not any(ch.isalnum() for ch in text)


def parse_report(text: str, *, source: str | None = None, max_sentences: int = 50) -> Report:
    """Split a report into findings and impression (see the module docstring) and into sentences.

    Args:
        text: the report text, headed or CT-RATE style.
        source: where the report comes from (a file, "manifest.jsonl line 12"), named in errors and warnings.
        max_sentences: keep at most this many sentences (findings first); a warning says when some are cut.

    Returns:
        The parsed `Report`.

    Raises:
        ValueError: when `max_sentences` < 1.
        EmptyReportError: when the report is missing or has no words (naming `source`).
        TypeError: when `text` is neither a str nor missing.
    """
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
    where = source if source is not None else "<report text>"
    if is_blank_report(text):
        raise EmptyReportError(f"empty report ({where}): it has no words; give the report text or drop the study")
    if not isinstance(text, str):
        raise TypeError(f"report text must be a str, got {type(text).__name__} ({where})")
    findings_text, impression_text = split_sections(text)
    findings_sentences = split_sentences(findings_text)
    impression_sentences = split_sentences(_impression_items(impression_text))
    if not findings_sentences and not impression_sentences:
        raise EmptyReportError(f"empty report ({where}): it has section headers but no findings or impression")
    sentences = findings_sentences + impression_sentences
    if len(sentences) > max_sentences:
        logger.warning(
            "report %s has %d sentences; keeping the first %d (max_sentences)", where, len(sentences), max_sentences
        )
        sentences = sentences[:max_sentences]
    return Report(
        findings=_join_sentences(findings_sentences),
        impression=_join_sentences(impression_sentences),
        sentences=sentences,
    )


def split_sections(text: str) -> tuple[str, str]:
    """Split a report into its raw findings text and raw impression text (see the module docstring).

    Args:
        text: the report text.

    Returns:
        (findings, impression), raw substrings of `text` (joined by blank lines when a section occurs more
        than once); the impression is "" when the report has none.
    """
    headers = _find_headers(text)
    if not headers:
        return _split_run_together(text)
    findings_parts: list[str] = []
    impression_parts: list[str] = []
    unlabelled_before_impression: list[str] = [text[: headers[0][1]]]
    for index, (kind, _, content_start) in enumerate(headers):
        end = headers[index + 1][1] if index + 1 < len(headers) else len(text)
        content = text[content_start:end]
        if kind == "findings":
            findings_parts.append(content)
        elif kind == "impression":
            impression_parts.append(content)
        elif not impression_parts:  # an "other" header owns its first line or sentence only
            unlabelled_before_impression.append(_after_first_line_or_sentence(content))
    findings = "\n\n".join(findings_parts if findings_parts else unlabelled_before_impression)
    impression = "\n\n".join(impression_parts)
    if not any(ch.isalnum() for ch in impression):
        return _split_run_together(findings)
    return findings, impression


def _find_headers(text: str) -> list[tuple[str, int, int]]:
    """Section headers as (kind, header start, content start), in order of appearance."""
    headers: dict[int, tuple[str, int, int]] = {}
    for match in _HEADER_ALONE.finditer(text):
        headers[match.start("name")] = (_kind(match.group("name")), match.start("name"), match.end())
    for match in _HEADER_WITH_COLON.finditer(text):
        before = text[: match.start()].rstrip(" \t")
        at_line_start = before == "" or before.endswith("\n")
        if at_line_start or before.endswith(_SENTENCE_END_BEFORE_HEADER):
            headers.setdefault(match.start(), (_kind(match.group("name")), match.start(), match.end()))
    return [headers[start] for start in sorted(headers)]


def _kind(name: str) -> str:
    return _HEADER_KIND[" ".join(name.lower().split())]


def _after_first_line_or_sentence(content: str) -> str:
    """What follows the first line or the first sentence of `content`, whichever ends first."""
    first_line_end = content.find("\n", len(content) - len(content.lstrip()))
    first_line = content if first_line_end < 0 else content[:first_line_end]
    sentences = split_sentences(first_line)
    if len(sentences) > 1:  # the first line holds more than one sentence: cut after the first
        return content[_locate(sentences[0], content, last=False)[1]:]
    return "" if first_line_end < 0 else content[first_line_end:]


def _split_run_together(text: str) -> tuple[str, str]:
    """CT-RATE style: findings and impression in one text, the impression starting at a marker."""
    marker = _impression_marker(text)
    if marker is not None:
        return text[:marker], text[marker:]
    sentences = split_sentences(text)
    if len(sentences) >= 2 and not _ends_in_punctuation(sentences[-1]):
        # an unpunctuated last sentence: a CT-RATE noun-phrase impression
        start = _locate(sentences[-1], text, last=True)[0]
        return text[:start], text[start:]
    return text, ""


def _locate(sentence: str, text: str, *, last: bool) -> tuple[int, int]:
    """(start, end) in `text` of the first or last occurrence of `sentence`, a split_sentences output.

    split_sentences collapses whitespace, so the words are matched with any whitespace between them.
    """
    pattern = r"\s+".join(re.escape(word) for word in sentence.split())
    matches = list(re.finditer(pattern, text))
    if not matches:  # cannot happen for a sentence taken from `text`
        raise AssertionError(f"sentence not found in its own text ({len(sentence)} characters)")
    match = matches[-1] if last else matches[0]
    return match.start(), match.end()


def _impression_marker(text: str) -> int | None:
    """Index of the first quote or bullet that starts the impression, or None.

    A bullet counts anywhere after some findings text; a quote only after a sentence end (a stray comma
    between is tolerated: "preserved. , \"") and when it does not close a quote opened in the findings.
    """
    inside_quote = False
    for match in re.finditer(rf"[{_MARKERS}]", text):
        char, position = match.group(), match.start()
        before = text[:position]
        if not any(ch.isalnum() for ch in before):
            continue  # the findings must not be empty
        if char == "·" and position + 1 < len(text) and before[-1:].isdigit() and text[position + 1].isdigit():
            continue  # a decimal middle dot: "3·5"
        if char in "•·":
            return position
        if inside_quote:
            inside_quote = False  # the closing quote of a quoted term
            continue
        if before.rstrip(" \t\n,").endswith(tuple(_TERMINAL + ":;")):
            return position
        inside_quote = True
    return None


def _impression_items(impression: str) -> str:
    """Turn CT-RATE quote markers into line breaks so that each item becomes its own sentence.

    A quote separates items when it follows a sentence end or the start, or when an uppercase letter, a
    digit or the end follows it; a quote around a lowercase term ('so-called "tree-in-bud" pattern') stays.
    """

    def replace(match: re.Match[str]) -> str:
        before = impression[: match.start()].rstrip()
        after = impression[match.end():].lstrip()
        if before == "" or before.endswith(tuple(_TERMINAL)) or after == "" or after[0].isupper() or after[0].isdigit():
            return "\n"
        return match.group()

    return re.sub(rf"[{_QUOTES}]", replace, impression)


def _ends_in_punctuation(sentence: str) -> bool:
    return sentence.rstrip(_QUOTES + ")]'’").endswith(tuple(_TERMINAL))


def _join_sentences(sentences: list[str]) -> str:
    """One space between sentences, a period added to those without final punctuation (list items)."""
    return " ".join(s if _ends_in_punctuation(s) else s + "." for s in sentences)
