"""Sentence splitting: hand-written tricky cases with their exact expected splits."""
from __future__ import annotations

import pytest

from common.text.sentences import split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # decimals, with and without a leading digit
        ("A 3.5 mm nodule is seen. The liver is normal.", ["A 3.5 mm nodule is seen.", "The liver is normal."]),
        ("It measures .5 cm. No effusion.", ["It measures .5 cm.", "No effusion."]),
        ("A 3 mm nodule. .5 cm cyst.", ["A 3 mm nodule.", ".5 cm cyst."]),
        ("Ratio of 1:1. The end.", ["Ratio of 1:1.", "The end."]),
        # measurements
        (
            "A 22x14 mm mass and a 2.2 x 1.4 cm node. Lungs are clear.",
            ["A 22x14 mm mass and a 2.2 x 1.4 cm node.", "Lungs are clear."],
        ),
        # abbreviations that never end a sentence, even before an uppercase word
        (
            "Small lesions, e.g. Cysts, i.e. Benign ones. Next.",
            ["Small lesions, e.g. Cysts, i.e. Benign ones.", "Next."],
        ),
        (
            "Approx. 5 mm nodule vs. Cyst. Read by Dr. Smith at St. Mary hospital.",
            ["Approx. 5 mm nodule vs. Cyst.", "Read by Dr. Smith at St. Mary hospital."],
        ),
        # units mid-sentence (lowercase next) versus at a sentence end (uppercase next)
        (
            "A 5 mm. nodule and a 2 cm. mass. It is 4 mm. The end.",
            ["A 5 mm. nodule and a 2 cm. mass.", "It is 4 mm.", "The end."],
        ),
        # "no." before a number, and "No." as a word
        ("Lesion no. 5 is stable. No. It is not.", ["Lesion no. 5 is stable.", "No.", "It is not."]),
        # numbered and bulleted lists on their own lines; the markers are dropped
        (
            "1. First item\n2) Second item\n- third item\n* Fourth item\n• fifth",
            ["First item", "Second item", "third item", "Fourth item", "fifth"],
        ),
        # inline numbered list after a colon and after sentence ends
        (
            "IMPRESSION: 1. Nodule in RUL. 2. Small effusion. 3) Cardiomegaly",
            ["IMPRESSION:", "Nodule in RUL.", "Small effusion.", "Cardiomegaly"],
        ),
        # inline bullets (the decimal middle dot stays) and a dash bullet after a sentence end
        ("Steatosis · Renal cysts •Gallstones", ["Steatosis", "Renal cysts", "Gallstones"]),
        ("It measures 3·5 mm.", ["It measures 3·5 mm."]),
        ("Seen before. -Focal ground glass", ["Seen before.", "Focal ground glass"]),
        # line breaks: a new line ends a sentence; a wrapped line (lowercase start) continues it
        (
            "The lungs are clear\nHeart is normal\n\nThe line is\nwrapped here.",
            ["The lungs are clear", "Heart is normal", "The line is wrapped here."],
        ),
        # multiple spaces and tabs collapse
        ("Multiple    spaces\there.   Next  one.", ["Multiple spaces here.", "Next one."]),
        # question marks, brackets after the terminal, dates
        (
            "Cyst? There is a lesion (cyst?) in the liver. Node (IMA: 72). Dated 05.08.2017. Fine.",
            ["Cyst?", "There is a lesion (cyst?) in the liver.", "Node (IMA: 72).", "Dated 05.08.2017.", "Fine."],
        ),
        # stray punctuation-only pieces are dropped, leading stray marks removed
        ("Bone structures are normal. ?. Mosaic pattern.", ["Bone structures are normal.", "Mosaic pattern."]),
        ("", []),
        ("  \n\n ... ", []),
    ],
)
def test_split_sentences_exact(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_extra_abbreviations_prevent_a_split() -> None:
    text = "Seen on Pt. Smith's scan. Normal."
    assert split_sentences(text) == ["Seen on Pt.", "Smith's scan.", "Normal."]
    assert split_sentences(text, extra_abbreviations=["pt."]) == ["Seen on Pt. Smith's scan.", "Normal."]


def test_sentences_are_stripped_and_non_empty() -> None:
    sentences = split_sentences("  First one.   \n\n  - second one  \n 3) Third.  ")
    assert sentences == ["First one.", "second one", "Third."]
    assert all(s == s.strip() and s for s in sentences)


def test_rejects_non_string() -> None:
    with pytest.raises(TypeError, match="expects a str"):
        split_sentences(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list of abbreviations"):
        split_sentences("Pt. Smith.", extra_abbreviations="pt.")
