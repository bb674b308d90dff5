"""Fixtures for the report-encoder tests: ~50 real report sentences (or a small fallback corpus) and a
WordPiece tokenizer trained on them."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from common.text.sentences import split_sentences
from common.text.tokenizer import train_wordpiece_tokenizer

# Used only where ../shared/data is absent (users' checkouts): enough radiology text for a tiny vocabulary.
FALLBACK_REPORTS = [
    "Trachea and both main bronchi are open. Heart contour and size are normal. No pericardial effusion.",
    "Thoracic aorta diameter is normal. No enlarged lymph nodes were detected in the mediastinum.",
    "A nodule of 5 mm is seen in the right upper lobe. There is mild emphysema in both lungs.",
    "Pleural effusion-thickening was not detected. Upper abdominal organs in the sections are normal.",
    "Bilateral adrenal glands are normal. Bone structures in the study area are natural.",
    "Consolidation is seen in the left lower lobe. Atelectasis is present in the right middle lobe.",
    "Coronary artery wall calcification is present. Cardiomegaly is observed. Hiatal hernia is noted.",
    "Peribronchial thickening and bronchiectasis are seen. Mosaic attenuation pattern is present.",
]


def _report_sentences(shared_data_root: Path | None, limit: int = 50) -> list[str]:
    if shared_data_root is None:
        texts = FALLBACK_REPORTS
    else:
        with open(shared_data_root / "reports" / "ct_rate_reports_train.csv", newline="", encoding="utf-8") as handle:
            texts = [row["report_text"] for _, row in zip(range(12), csv.DictReader(handle))]
    sentences = [sentence for text in texts for sentence in split_sentences(text)]
    return sentences[:limit]


@pytest.fixture(scope="session")
def report_sentences(request: pytest.FixtureRequest) -> list[str]:
    """About 50 real report sentences from ../shared/data, or the fallback corpus when it is absent."""
    try:
        root = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        root = None
    return _report_sentences(root)


@pytest.fixture(scope="session")
def report_tokenizer(report_sentences: list[str]):
    """A small WordPiece tokenizer (with [SENT]) trained on `report_sentences`."""
    return train_wordpiece_tokenizer(report_sentences, vocab_size=300, min_frequency=2)
