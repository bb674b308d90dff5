"""Report parsing: the 800 real CT-RATE reports (shared data) and hand-written headed / run-together reports."""
from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import pytest

from medvl.data.reports import EmptyReportError, Report, parse_report, split_sections

# Abbreviations that must never end a sentence (units such as "mm." may: "... is 41 mm. It is wide.").
NEVER_FINAL = re.compile(r"(?i)(?:^|[\s(])(?:e\.g|i\.e|vs|approx|dr|prof|st|cf)\.$")


@pytest.fixture(scope="module")
def ct_rate_reports(shared_data: Path) -> list[str]:
    with (shared_data / "reports" / "ct_rate_reports_train.csv").open(encoding="utf-8", newline="") as handle:
        return [row["report_text"] for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def parsed(ct_rate_reports: list[str]) -> list[Report]:
    return [parse_report(text, source=f"row {i}", max_sentences=1000) for i, text in enumerate(ct_rate_reports)]


def test_all_real_reports_parse_with_findings(ct_rate_reports: list[str], parsed: list[Report]) -> None:
    assert len(parsed) == len(ct_rate_reports) == 800
    assert all(report.findings for report in parsed)


def test_most_real_reports_get_an_impression(parsed: list[Report]) -> None:
    # Measured: 740 / 800 = 92.5 % (719 start at a quote / bullet marker or a CONCLUSION header, 21 at an
    # unpunctuated last sentence); the other 60 have neither and keep an empty impression, not a guess.
    fraction = sum(bool(report.impression) for report in parsed) / len(parsed)
    assert fraction > 0.90


def test_real_impression_starts_at_the_first_marker(ct_rate_reports: list[str]) -> None:
    text = ct_rate_reports[0]  # "... Vertebral corpus heights are preserved. \" Thoracic CT examination ..."
    findings, impression = split_sections(text)
    assert findings.rstrip().endswith("Vertebral corpus heights are preserved.")
    assert impression.lstrip('" ').startswith("Thoracic CT examination within normal limits")
    report = parse_report(text)
    assert report.impression == "Thoracic CT examination within normal limits."
    assert report.sentences[-1] == "Thoracic CT examination within normal limits"


def test_real_sentences_do_not_break_inside_numbers_or_abbreviations(parsed: list[Report]) -> None:
    for report in parsed:
        for before, after in zip(report.sentences, report.sentences[1:]):
            # a decimal cut in two would end in "3." and start the next sentence with "5 mm"
            assert not (re.search(r"\d\.$", before) and re.match(r"\d", after)), (before[-30:], after[:30])
            assert not NEVER_FINAL.search(before), before[-30:]
            assert not after[0].islower(), after[:30]  # "5 mm. in diameter" stays one sentence
        for sentence in report.sentences:
            assert sentence == sentence.strip() and "  " not in sentence
            assert any(ch.isalnum() for ch in sentence)


def test_real_sentence_counts_are_reasonable(parsed: list[Report]) -> None:
    counts = sorted(len(report.sentences) for report in parsed)
    assert counts[0] >= 2  # every report has findings sentences and most an impression
    assert 12 <= counts[len(counts) // 2] <= 30  # measured median 19 for about 276 words a report
    assert counts[-1] <= 100  # measured maximum 79


def test_headed_report_sections_and_sentences() -> None:
    text = (
        "EXAMINATION: CT chest without contrast.\n"
        "COMPARISON: None.\n"
        "FINDINGS:\n"
        "A 3.5 mm nodule in the RUL, e.g. Image 42. No effusion.\n"
        "Impression\n"
        "1. Small RUL nodule.\n"
        "2. No acute process\n"
    )
    report = parse_report(text)
    assert report.findings == "A 3.5 mm nodule in the RUL, e.g. Image 42. No effusion."
    assert report.impression == "Small RUL nodule. No acute process."
    assert report.sentences == [
        "A 3.5 mm nodule in the RUL, e.g. Image 42.",
        "No effusion.",
        "Small RUL nodule.",
        "No acute process",
    ]
    assert report.text == report.findings + "\n\n" + report.impression


def test_inline_headers_without_findings_header() -> None:
    text = "Comparison: CT dated 25.12.2019. Lungs are clear. Heart is normal. conclusion: Normal study."
    report = parse_report(text)
    assert report.findings == "Lungs are clear. Heart is normal."  # the comparison sentence is dropped
    assert report.impression == "Normal study."


def test_header_words_inside_sentences_are_not_headers() -> None:
    text = "Findings within normal limits. As a result: no change. Heart is normal."
    report = parse_report(text)
    assert report.impression == ""
    assert report.sentences == ["Findings within normal limits.", "As a result: no change.", "Heart is normal."]


def test_ct_rate_quote_items_become_sentences() -> None:
    text = (
        'Lungs are clear. Liver is normal. " Hepatosteatosis " Hiatal hernia on the left '
        '" Degenerative changes." “Emphysema in both lungs.”'
    )
    report = parse_report(text)
    assert report.findings == "Lungs are clear. Liver is normal."
    assert report.sentences[2:] == [
        "Hepatosteatosis", "Hiatal hernia on the left", "Degenerative changes.", "Emphysema in both lungs.",
    ]
    assert report.impression == (
        "Hepatosteatosis. Hiatal hernia on the left. Degenerative changes. Emphysema in both lungs."
    )


def test_ct_rate_bullets_and_unpunctuated_last_sentence() -> None:
    bullets = parse_report("Trachea is open. Lungs are clear. • Normal study. • No nodule.")
    assert bullets.findings == "Trachea is open. Lungs are clear."
    assert bullets.impression == "Normal study. No nodule."
    trailing = parse_report("Trachea is open. Bone structures are natural. Nodules smaller than 5 mm in both lungs")
    assert trailing.findings == "Trachea is open. Bone structures are natural."
    assert trailing.impression == "Nodules smaller than 5 mm in both lungs."
    plain = parse_report("Trachea is open. Lungs are clear.")
    assert (plain.findings, plain.impression) == ("Trachea is open. Lungs are clear.", "")


def test_quoted_term_in_findings_is_not_an_impression_marker() -> None:
    text = 'A so-called "tree-in-bud" pattern is seen. Lungs otherwise clear. " Infection.'
    findings, impression = split_sections(text)
    assert findings == 'A so-called "tree-in-bud" pattern is seen. Lungs otherwise clear. '
    assert impression == '" Infection.'


def test_max_sentences_truncates_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(8))
    with caplog.at_level(logging.WARNING, logger="medvl.data.reports"):
        report = parse_report(text, source="case_7.txt", max_sentences=5)
    assert report.sentences == [f"Sentence number {i} is here." for i in range(5)]
    assert "case_7.txt" in caplog.text and "8 sentences" in caplog.text
    assert "Sentence number" not in caplog.text  # no report text in logs
    assert len(report.findings.split(". ")) == 8  # the sections themselves are not truncated


@pytest.mark.parametrize("text", ["", "   \n\t ", "...", None, float("nan"), "FINDINGS:\nIMPRESSION:\n"])
def test_empty_report_raises_naming_the_source(text: object) -> None:
    with pytest.raises(EmptyReportError, match=r"manifest\.jsonl line 3"):
        parse_report(text, source="manifest.jsonl line 3")  # type: ignore[arg-type]
    assert issubclass(EmptyReportError, ValueError)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_sentences"):
        parse_report("Lungs are clear.", max_sentences=0)
    with pytest.raises(TypeError, match="must be a str"):
        parse_report(42)  # type: ignore[arg-type]
