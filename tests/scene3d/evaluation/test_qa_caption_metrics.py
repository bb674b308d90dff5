"""Hand-computed cases of the QA exact match, the pycocoevalcap caption scores and Scan2Cap's m@kIoU."""
import logging

import numpy as np
import pytest

from common.metrics import caption_scores as caption_module
from common.metrics.caption_scores import caption_scores, simple_tokenize
from scene3d.evaluation.dense_caption_scores import CaptionTarget, SceneCaptionPredictions, dense_caption_scores
from scene3d.evaluation.qa_exact_match import normalize_answer, qa_exact_match

needs_java = pytest.mark.skipif(not caption_module.java_available(), reason="no java runtime (install.sh installs one)")


def test_exact_match_is_exact_and_refined_is_normalised():
    m = qa_exact_match([["The chair.", "table"], ["two", "2"], ["bed"]], [["the chair"], ["2"], ["sofa"]])
    assert m["em@1"] == 0.0                      # "The chair." != "the chair", "two" != "2": no normalisation
    assert m["em@10"] == 1 / 3                   # "2" is in the top-10 of question 2
    assert m["refined_em@1"] == 2 / 3            # lower case, punctuation, articles, number words
    assert m["refined_em@10"] == 2 / 3 and m["n"] == 3
    assert normalize_answer("The Two chairs, left!") == "2 chairs left"


def test_exact_match_bad_inputs():
    with pytest.raises(ValueError, match="no reference answer"):
        qa_exact_match([["a"]], [[]])
    with pytest.raises(ValueError, match="one ranked answer list"):
        qa_exact_match([["a"]], [["a"], ["b"]])
    with pytest.raises(ValueError, match="single string"):
        qa_exact_match(["chair"], [["chair"]])


@needs_java
def test_caption_scores_hand_computed():
    scores, items = caption_scores({"a": "the chair is brown", "b": "a black table"},
                                   {"a": ["The chair is brown."], "b": ["a white table"]}, per_item=True)
    assert items["bleu1"][1] == pytest.approx(2 / 3, abs=1e-6)     # 2 of 3 unigrams match, no brevity penalty
    assert items["rouge_l"] == pytest.approx([1.0, 2 / 3], abs=1e-6)  # LCS 2 of 3: P = R = 2/3
    assert items["cider"][0] == pytest.approx(10.0)                # identical tf-idf vectors: cos 1, x10
    assert items["meteor"][0] == pytest.approx(1.0) and items["meteor"][1] < 1.0
    assert scores["bleu1"] == pytest.approx(6 / 7, abs=1e-6)       # corpus: 6 of 7 unigrams


def test_caption_scores_without_java_skip_meteor(monkeypatch, caplog):
    monkeypatch.setattr(caption_module.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING):
        scores = caption_scores({"a": "a black table", "b": "x"}, {"a": ["a white table"], "b": ["x"]})
    assert "meteor" not in scores and "METEOR is skipped" in caplog.text
    assert scores["rouge_l"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-6)
    assert simple_tokenize("The chair, isn't it?") == "the chair isn t it"
    with pytest.raises(ValueError, match="same keys"):
        caption_scores({"a": "x"}, {"b": ["x"]})


def test_dense_caption_threshold_is_inclusive_and_misses_score_zero(monkeypatch):
    monkeypatch.setattr(caption_module.shutil, "which", lambda name: None)  # fast: no JVM needed for this rule
    unit = np.ones(3)
    targets = [CaptionTarget("s0", 1, "chair", np.zeros(3), unit, ("a brown chair",)),
               CaptionTarget("s0", 2, "table", np.array([5.0, 0, 0]), unit, ("a white table",)),
               CaptionTarget("s1", 3, "bed", np.zeros(3), unit, ("a big bed",))]
    predictions = {
        # chair: exact box, right caption; table: half of it along x (IoU exactly 0.5), right caption
        "s0": SceneCaptionPredictions(np.array([[0, 0, 0], [5.25, 0, 0]]), np.array([[1, 1, 1], [0.5, 1, 1]]),
                                      ["a brown chair", "a white table"]),
        # bed: shifted by half its size, IoU 0.5 / 1.5 = 1/3 (below 0.5, above 0.25), right caption
        "s1": SceneCaptionPredictions(np.array([[0.5, 0, 0]]), np.array([[1, 1, 1]]), ["a big bed"]),
    }
    m = dense_caption_scores(targets, predictions)
    assert m["rouge_l@0.5"] == pytest.approx(2 / 3)      # bed missed at 0.5: it scores 0, still counted in N = 3
    # CIDEr-D of an identical 3-word caption: cosine 1 for n = 1..3, no 4-gram (0): 10 * 3/4 = 7.5 per object
    assert m["cider@0.5"] == pytest.approx(2 / 3 * 7.5) and m["n"] == 3
    assert m["rouge_l@0.25"] == pytest.approx(1.0)       # IoU >= k counts: the table's 0.5 at 0.5, the bed's 1/3 at 0.25
    with pytest.raises(ValueError, match="no predictions for scene s1"):
        dense_caption_scores(targets, {"s0": predictions["s0"]})
