"""Pointing accuracy and zero-shot scoring on hand-made maps and embeddings."""
from __future__ import annotations

import pytest
import torch

from medvl.evaluation.pointing import (
    attention_peak_voxel,
    find_sentence,
    organ_fraction,
    pointing_hit,
    pointing_summary,
)
from medvl.evaluation.figures import slice_axes
from medvl.evaluation.zeroshot import (
    build_prompts,
    finding_prompts,
    resolve_zeroshot_templates,
    zero_shot_probabilities,
)


def test_peak_of_a_fine_map_is_the_peak_token_position():
    attention = torch.zeros(4 * 4 * 4)
    attention[1 * 16 + 2 * 4 + 1] = 1.0  # token (1, 2, 1) of a 4^3 grid over a 16^3 volume: voxels 4-7, 8-11, 4-7
    d, h, w = attention_peak_voxel(attention, (4, 4, 4), (16, 16, 16))
    assert 4 <= d <= 7 and 8 <= h <= 11 and 4 <= w <= 7


def test_plateau_peak_of_a_coarse_map_is_the_middle_of_its_block_not_a_volume_corner():
    attention = torch.full((8,), 0.1)
    attention[0] = 0.3  # token (0, 0, 0) of a 2^3 grid: upsampled, flat over voxels 0-7 of each axis
    d, h, w = attention_peak_voxel(attention, (2, 2, 2), (32, 32, 32))
    assert all(2 <= x <= 5 for x in (d, h, w)), (d, h, w)  # the plateau's middle, not the corner (0, 0, 0)
    organ = torch.zeros(32, 32, 32, dtype=torch.long)
    organ[2:12, 2:12, 2:12] = 3  # an organ in that octant that does not reach the volume's corner
    assert pointing_hit(attention, (2, 2, 2), organ, 3)
    assert not pointing_hit(attention, (2, 2, 2), organ, 1)
    assert organ_fraction(organ, 3) == (10 ** 3) / 32 ** 3


def test_find_sentence_matches_case_and_spacing_then_containment():
    sentences = ["No pleural effusion.", "A 12 mm  lesion is seen in the LIVER.", "Normal spleen."]
    assert find_sentence(sentences, "a 12 mm lesion is seen in the liver") == 1
    assert find_sentence(sentences, "Normal spleen. Nothing else.") == 2
    assert find_sentence(sentences, "kidney cyst") is None


def test_zero_shot_probability_follows_the_closer_prompt():
    assert build_prompts("pleural effusion", ["There is {finding}.", "{Finding} is seen."]) == [
        "There is pleural effusion.", "Pleural effusion is seen."]
    positive = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (K=2 findings, P=1 prompt, E=2)
    negative = -positive
    volumes = torch.tensor([[1.0, 0.1], [-1.0, 0.1], [0.1, -1.0]])  # finding 0 yes / no; finding 1 no
    probabilities = zero_shot_probabilities(volumes, positive, negative, torch.tensor(10.0))
    assert probabilities.shape == (3, 2)
    assert probabilities[0, 0] > 0.9 and probabilities[1, 0] < 0.1 and probabilities[2, 1] < 0.1


def test_zero_shot_probability_averages_each_findings_own_number_of_prompt_pairs():
    volumes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # finding 0: two pairs, one pointing each way (mean 0.5 for any volume); finding 1: one pair along axis 1
    positive = [torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    negative = [-p for p in positive]
    probabilities = zero_shot_probabilities(volumes, positive, negative, 10.0)
    assert probabilities.shape == (2, 2)
    torch.testing.assert_close(probabilities[:, 0], torch.tensor([0.5, 0.5]))
    assert probabilities[1, 1] > 0.99 and probabilities[0, 1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="equal shape"):
        zero_shot_probabilities(volumes, positive, [negative[0][:1], negative[1]], 10.0)


def test_finding_prompts_put_each_phrase_into_every_template():
    templates = resolve_zeroshot_templates(
        {"positive": ["There is {finding}."], "negative": ["No {finding}."],
         "phrases": {"arterial wall calcification": ["aortic calcification", "calcified plaque"]}},
        ["arterial wall calcification", "splenomegaly"])
    assert finding_prompts("arterial wall calcification", templates) == (
        ["There is aortic calcification.", "There is calcified plaque."],
        ["No aortic calcification.", "No calcified plaque."])
    assert finding_prompts("splenomegaly", templates) == (["There is splenomegaly."], ["No splenomegaly."])
    with pytest.raises(ValueError, match="unknown zeroshot_templates key"):
        resolve_zeroshot_templates({"phrase": {}}, ["splenomegaly"])


def test_pointing_summary_rejects_lists_of_different_lengths():
    with pytest.raises(ValueError, match="one entry per finding sentence"):
        pointing_summary([1.0], ["liver", "lung"], [0.1])
    with pytest.raises(ValueError, match="at least one"):
        pointing_summary([], [], [])


def test_pointing_summary_averages_controls_over_the_reports_that_have_one():
    summary = pointing_summary([1.0, 0.0, 1.0], ["liver", "liver", "lung"], [0.1, 0.1, 0.3],
                               [float("nan"), 1.0, 0.0])
    assert summary["pointing_acc/liver"] == 0.5 and summary["pointing_acc/lung"] == 1.0
    assert summary["pointing_acc_control_sentence"] == 0.5  # the NaN (no control sentence) is left out
    assert summary["pointing_acc_control_sentence/liver"] == 1.0
    assert summary["pointing_chance"] == pytest.approx(0.5 / 3)
    assert "pointing_acc_control_sentence" not in pointing_summary([1.0], ["liver"], [0.1])


def test_slice_axes_follow_the_orientation_code():
    assert slice_axes("RAS") == (2, 1) and slice_axes("lps") == (2, 1) and slice_axes("SAR") == (0, 1)
    with pytest.raises(ValueError, match="I/S"):
        slice_axes("RLS")
