"""Domain-free, rule-based sentence splitting.

Why not nltk / spaCy: their sentence models (punkt, en_core_web_*) are separate downloads at run time, which
this project never does, and they split clinical text badly anyway ("5 mm. in diameter", "1. Nodule.").

Rules, in order:
1. Line breaks. A blank line always ends a sentence. A single line break ends one too, unless the next line
   starts with a lowercase letter or the line before ends with `,` or `:` (hard-wrapped text is re-joined).
2. List items. A list marker at the start of a line ("1.", "2)", "a)", "-", "*", "•", "·") starts a new
   sentence and is dropped; so is an inline marker after a sentence end ("... normal. 2. Nodule",
   "... normal. - Nodule"), a "1." after a colon ("Impression: 1. Nodule") and a bullet anywhere ("a · b").
3. Terminal punctuation. `.`, `!` or `?` (with any closing brackets or quotes after it) followed by
   whitespace ends a sentence when the next word starts with an uppercase letter or a digit, except after
   an abbreviation that never ends a sentence ("Dr.", "e.g.", "vs.", "approx.", "St.", ...), or after
   one such as "no." or "Jan." before a digit ("No. 5"). Decimals ("3.5", ".5", "2.2 x 1.4 cm") never end a sentence
   because no whitespace follows their dot; "5 mm. in diameter" continues because "in" is lowercase.
Returned sentences have runs of whitespace collapsed to one space, leading stray punctuation removed, and
sentences without a single letter or digit are dropped.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["DEFAULT_ABBREVIATIONS", "split_sentences"]

# Abbreviations after which a period never ends a sentence, whatever follows (lowercase, no final dot).
DEFAULT_ABBREVIATIONS: frozenset[str] = frozenset(
    {
        "dr", "drs", "mr", "mrs", "prof", "assoc", "assist", "st",
        "e.g", "eg", "i.e", "ie", "cf", "viz", "vs", "approx", "appr", "incl", "fig", "figs",
    }
)
# Abbreviations that can also end a sentence ("No.", "Jan."): they never end one only before a digit.
_NUMBER_ABBREVIATIONS: frozenset[str] = frozenset(
    {
        "no", "nos", "nr", "vol", "vols", "p", "pp", "ref",
        "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    }
)
_BULLETS = "•▪◦‣●∙"  # always list bullets; the middle dot "·" too, unless it sits between two digits
_OPENERS = "([{\"'“‘«"
_LINE_MARKER = re.compile(
    r"^(?:[-*–—+" + _BULLETS + r"·]\s*|(?:\d{1,2}|[A-Za-z])\)\s*|\d{1,2}\.\s+|\d{1,2}\.(?=[A-Za-z]))(?=\S)"
)
_INLINE_BULLET = re.compile(r"[" + _BULLETS + r"]|(?<!\d)·|·(?!\d)")
# "... normal. 2. Nodule" / "IMPRESSION: 1. Nodule" / "... normal. - Nodule": inline list markers.
_INLINE_NUMBER = re.compile(r"(?<=[.!?])\s+\d{1,2}[.)]\s+(?=[^\d\s])|(?<=:)\s+1[.)]\s+(?=[^\d\s])")
_INLINE_DASH = re.compile(r"(?<=[.!?:])\s*[-–—*]\s*(?=[A-Z])")
# A terminal run: one of .!? then any more terminals or closing brackets / quotes, followed by whitespace.
_TERMINAL = re.compile(r"[.!?][.!?)\]}\"'”’»]*(?=\s)")
_SPACES = re.compile(r"\s+")
_LEADING_JUNK = re.compile(r"^(?:[\s,;:!?]|\.(?!\d))+")  # a leading ".5" is a number, not junk


def split_sentences(text: str, *, extra_abbreviations: Iterable[str] = ()) -> list[str]:
    """Split free text into sentences with the rules in the module docstring.

    Args:
        text: any text; line breaks, list markers and runs of spaces are allowed.
        extra_abbreviations: more abbreviations after which a period never ends a sentence, with or
            without the final dot, any case (e.g. ["Pt.", "hx"]).

    Returns:
        The sentences in order: stripped, whitespace-collapsed, each with at least one letter or digit.

    Raises:
        TypeError: when `text` is not a str, or `extra_abbreviations` is a single str instead of a list.
    """
    if not isinstance(text, str):
        raise TypeError(f"split_sentences expects a str, got {type(text).__name__}")
    if isinstance(extra_abbreviations, str):
        raise TypeError(f"extra_abbreviations must be a list of abbreviations, e.g. [{extra_abbreviations!r}]")
    abbreviations = DEFAULT_ABBREVIATIONS | {a.strip().lower().rstrip(".") for a in extra_abbreviations}
    sentences: list[str] = []
    for chunk in _line_chunks(text):
        for item in _inline_items(chunk):
            for sentence in _split_on_terminals(item, abbreviations):
                cleaned = _LEADING_JUNK.sub("", sentence).strip()
                if any(ch.isalnum() for ch in cleaned):
                    sentences.append(cleaned)
    return sentences


def _line_chunks(text: str) -> list[str]:
    """Group lines into chunks that no sentence crosses (rule 1), dropping leading list markers (rule 2)."""
    chunks: list[str] = []
    current: list[str] = []
    for raw_line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw_line.strip()
        if not line:  # blank line: paragraph break
            if current:
                chunks.append(" ".join(current))
                current = []
            continue
        marker = _LINE_MARKER.match(line)
        if marker is not None:
            line = line[marker.end():]
        continues = (
            marker is None
            and current
            and (line[0].islower() or current[-1].endswith((",", ":")))
        )
        if current and not continues:
            chunks.append(" ".join(current))
            current = []
        current.append(line)
    if current:
        chunks.append(" ".join(current))
    return chunks


def _inline_items(chunk: str) -> list[str]:
    """Split a chunk at inline bullets and inline list numbers (rule 2)."""
    chunk = _INLINE_NUMBER.sub("\n", chunk)
    chunk = _INLINE_DASH.sub("\n", chunk)
    chunk = _INLINE_BULLET.sub("\n", chunk)
    return [_SPACES.sub(" ", part).strip() for part in chunk.split("\n") if part.strip()]


def _split_on_terminals(item: str, abbreviations: frozenset[str]) -> list[str]:
    """Split one list item at terminal punctuation (rule 3)."""
    pieces: list[str] = []
    start = 0
    for match in _TERMINAL.finditer(item):
        if _ends_sentence(item, match, abbreviations):
            pieces.append(item[start:match.end()])
            start = match.end()
    pieces.append(item[start:])
    return pieces


def _ends_sentence(item: str, match: re.Match[str], abbreviations: frozenset[str]) -> bool:
    """Whether the terminal run `match` ends a sentence, judged by the word before and the word after."""
    next_char = next((ch for ch in item[match.end():] if ch.isalnum()), None)
    if next_char is None:  # only punctuation follows: the end of the item anyway
        return True
    if next_char.islower():
        return False
    if match.group()[0] != ".":  # "?" or "!" before an uppercase word or a digit
        return True
    word_start = item.rfind(" ", 0, match.start()) + 1
    word = item[word_start:match.start()].lstrip(_OPENERS).lower()
    if word in abbreviations:
        return False
    return not (word in _NUMBER_ABBREVIATIONS and next_char.isdigit())
