"""Tests for token / position masking and the masked-modelling losses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from common.losses.masked_modeling import (
    MaskedCategoryLoss,
    MaskedFeatureLoss,
    MaskedLanguageModelingLoss,
    mask_positions,
    mask_tokens,
)

PAD, CLS, SEP, UNK, MASK = 0, 1, 2, 3, 4
VOCAB = 1000
WORD_IDS = torch.arange(5, VOCAB)  # non-special ids: the pool of random replacements


def _batch(batch: int, length: int, seed: int):
    """Token ids with [CLS] first, [SEP] at the end of each sequence, then padding (variable lengths)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, length), generator=g)
    lengths = torch.randint(2, length + 1, (batch,), generator=g)
    positions = torch.arange(length)[None, :]
    attention = positions < lengths[:, None]
    ids[:, 0] = CLS
    ids[torch.arange(batch), lengths - 1] = SEP
    ids[~attention] = PAD
    special = (ids == CLS) | (ids == SEP) | (ids == PAD)
    return ids, special, attention


def _mask(ids, special, attention, seed=0, **kwargs):
    kwargs.setdefault("random_token_ids", WORD_IDS)
    return mask_tokens(
        ids, special_tokens_mask=special, attention_mask=attention, mask_token_id=MASK, vocab_size=VOCAB,
        generator=torch.Generator().manual_seed(seed), **kwargs,
    )


def test_selection_rate_and_80_10_10_split():
    ids, special, attention = _batch(256, 128, seed=0)
    maskable = ~special & attention
    masked_ids, labels = _mask(ids, special, attention, min_masked_per_sequence=0)
    selected = labels != -100
    rate = selected.sum() / maskable.sum()
    assert abs(float(rate) - 0.15) < 0.01  # ~16k maskable tokens: std ~0.003
    n = int(selected.sum())
    to_mask = (masked_ids == MASK) & selected
    changed = (masked_ids != ids) & selected & ~to_mask
    unchanged = (masked_ids == ids) & selected
    assert abs(int(to_mask.sum()) / n - 0.8) < 0.03
    assert abs(int(changed.sum()) / n - 0.1) < 0.025
    assert abs(int(unchanged.sum()) / n - 0.1) < 0.025  # includes the ~0.1% random draws equal to the original


def test_specials_and_padding_are_never_selected_or_inserted():
    for seed in range(40):
        ids, special, attention = _batch(8, 16, seed=seed)
        masked_ids, labels = _mask(ids, special, attention, seed=seed, mlm_probability=0.6)
        keep = special | ~attention
        assert (labels[keep] == -100).all()
        assert torch.equal(masked_ids[keep], ids[keep])
        inserted = masked_ids[masked_ids != ids]
        assert ((inserted == MASK) | (inserted >= 5)).all()  # only [MASK] or word ids are ever written


def test_padding_is_excluded_by_attention_mask_alone():
    ids, special, attention = _batch(16, 12, seed=1)
    only_cls_sep = (ids == CLS) | (ids == SEP)  # padding not marked special: attention_mask must exclude it
    for seed in range(20):
        _, labels = _mask(ids, only_cls_sep, attention.long(), seed=seed, mlm_probability=0.7)
        assert (labels[~attention] == -100).all()


def test_labels_hold_original_ids_exactly_at_selected_positions():
    ids, special, attention = _batch(32, 24, seed=2)
    original = ids.clone()
    masked_ids, labels = _mask(ids, special, attention)
    selected = labels != -100
    assert torch.equal(ids, original)  # input is not modified
    assert labels.dtype == torch.long
    assert torch.equal(labels[selected], ids[selected])
    assert not ((masked_ids != ids) & ~selected).any()


def test_seeded_generator_is_deterministic():
    ids, special, attention = _batch(16, 20, seed=3)
    first, second, other = (_mask(ids, special, attention, seed=s) for s in (7, 7, 8))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])


def test_random_tokens_without_a_pool_come_from_the_vocabulary():
    ids, special, attention = _batch(64, 32, seed=4)
    masked_ids, labels = _mask(ids, special, attention, random_token_ids=None, mlm_probability=0.5)
    assert ((masked_ids >= 0) & (masked_ids < VOCAB)).all()
    assert ((masked_ids != ids) & (masked_ids != MASK)).any()


def test_min_masked_per_sequence_guarantee():
    ids = torch.tensor([[CLS, 10, SEP, PAD], [CLS, 11, 12, SEP], [CLS, SEP, PAD, PAD]])
    special = (ids == CLS) | (ids == SEP) | (ids == PAD)
    for seed in range(30):
        _, labels = _mask(ids, special, None, seed=seed, mlm_probability=0.01)
        counts = (labels != -100).sum(1)
        assert counts[0] == 1 and counts[1] >= 1 and counts[2] == 0
        _, labels = _mask(ids, special, None, seed=seed, mlm_probability=0.01, min_masked_per_sequence=3)
        assert (labels != -100).sum(1).tolist() == [1, 2, 0]  # capped by the maskable count


def test_mask_positions_rate_validity_and_minimum():
    g = torch.Generator().manual_seed(0)
    valid = torch.rand(200, 50, generator=g) < 0.7
    valid[0] = False
    valid[1] = False
    valid[1, 3] = True
    chosen = mask_positions(valid, 0.3, generator=torch.Generator().manual_seed(1), min_masked=0)
    assert chosen.dtype == torch.bool and chosen.shape == valid.shape
    assert not (chosen & ~valid).any()
    assert abs(float(chosen.sum() / valid.sum()) - 0.3) < 0.02
    for seed in range(20):
        chosen = mask_positions(valid, 0.01, generator=torch.Generator().manual_seed(seed), min_masked=2)
        counts = chosen.sum(1)
        assert counts[0] == 0 and counts[1] == 1 and (counts[2:] >= 2).all() and not (chosen & ~valid).any()
    again = mask_positions(valid, 0.01, generator=torch.Generator().manual_seed(19), min_masked=2)
    assert torch.equal(chosen, again)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mlm_probability": 0.0}, "mlm_probability"),
        ({"mlm_probability": 1.0}, "mlm_probability"),
        ({"mask_token_id": VOCAB}, "mask_token_id"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"special_tokens_mask": torch.zeros(2, 3, dtype=torch.bool)}, "special_tokens_mask"),
        ({"attention_mask": torch.full((2, 4), 2)}, "attention_mask"),
        ({"random_token_ids": torch.tensor([], dtype=torch.long)}, "random_token_ids"),
        ({"random_token_ids": torch.tensor([5, VOCAB])}, "random_token_ids"),
        ({"input_ids": torch.zeros(2, 4)}, "input_ids"),
        ({"min_masked_per_sequence": -1}, "min_masked"),
    ],
)
def test_mask_tokens_bad_arguments_raise(kwargs, match):
    arguments = dict(
        input_ids=torch.full((2, 4), 7), special_tokens_mask=torch.zeros(2, 4, dtype=torch.bool), attention_mask=None,
        mask_token_id=MASK, vocab_size=VOCAB,
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        mask_tokens(**arguments)


@pytest.mark.parametrize("probability, min_masked", [(0.0, 1), (1.2, 1), (0.2, -1)])
def test_mask_positions_bad_arguments_raise(probability, min_masked):
    with pytest.raises(ValueError):
        mask_positions(torch.ones(2, 3, dtype=torch.bool), probability, min_masked=min_masked)
    with pytest.raises(ValueError, match="valid_mask"):
        mask_positions(torch.ones(2, 3), 0.2)


def test_mlm_loss_known_value_and_gradients():
    logits = torch.tensor([[[1.0, 2.0, 0.0], [0.5, 0.5, 3.0], [2.0, -1.0, 0.0]]], requires_grad=True)
    labels = torch.tensor([[-100, 2, 0]])
    value = MaskedLanguageModelingLoss()(logits, labels)["mlm_loss"]
    expected = 0.5 * (
        -3.0 + math.log(math.exp(0.5) * 2 + math.exp(3.0)) - 2.0 + math.log(math.exp(2.0) + math.exp(-1.0) + 1.0)
    )
    assert value.item() == pytest.approx(expected, rel=1e-6)
    value.backward()
    assert (logits.grad[0, 0] == 0).all() and (logits.grad[0, 1:].abs().sum(-1) > 0).all()


def test_mlm_loss_with_nothing_selected_is_zero_with_a_graph():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    value = MaskedLanguageModelingLoss(loss_name="text_mlm_loss")(logits, torch.full((2, 3), -100))["text_mlm_loss"]
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert (logits.grad == 0).all()


def test_mlm_loss_bad_inputs_raise():
    module = MaskedLanguageModelingLoss()
    with pytest.raises(ValueError, match="expects logits"):
        module(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be -100 or in"):
        module(torch.randn(2, 3, 5), torch.tensor([[0, 5, -100], [1, 1, 1]]))
    with pytest.raises(ValueError, match="integer"):
        module(torch.randn(2, 3, 5), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="_loss"):
        MaskedLanguageModelingLoss(loss_name="mlm")


@pytest.mark.parametrize(
    "kind, expected",
    [
        # masked positions 0 and 2; differences (0.5, -2.0) and (1.0, 0.0)
        ("smooth_l1", (0.5 * 0.25 + 1.5 + 0.5 + 0.0) / 4),
        ("mse", (0.25 + 4.0 + 1.0 + 0.0) / 4),
        # cos((1.5, 0), (1, 2)) = 1.5 / (1.5 * sqrt 5); cos((1, 1), (0, 1)) = 1 / sqrt 2
        ("cosine", ((1 - 1 / math.sqrt(5)) + (1 - 1 / math.sqrt(2))) / 2),
    ],
)
def test_masked_feature_loss_known_values(kind, expected):
    pred = torch.tensor([[[1.5, 0.0], [9.0, 9.0], [1.0, 1.0]]], requires_grad=True)
    target = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    masked = torch.tensor([[True, False, True]])
    value = MaskedFeatureLoss(kind=kind)(pred, target, masked)["masked_feature_loss"]
    assert value.item() == pytest.approx(expected, rel=1e-6)
    value.backward()
    assert target.grad is None  # the target is detached
    assert (pred.grad[0, 1] == 0).all() and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("kind", ["smooth_l1", "mse", "cosine"])
def test_masked_feature_loss_with_nothing_masked_is_zero_with_a_graph(kind):
    pred = torch.randn(2, 3, 4, requires_grad=True)
    value = MaskedFeatureLoss(kind=kind)(pred, torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool))
    value = value["masked_feature_loss"]
    assert value.item() == 0.0
    value.backward()
    assert (pred.grad == 0).all()


def test_masked_feature_loss_bad_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        MaskedFeatureLoss(kind="l1")
    module = MaskedFeatureLoss()
    with pytest.raises(ValueError, match="same"):
        module(torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="masked"):
        module(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="masked"):
        module(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))


def test_masked_category_loss_known_value_accuracy_and_ignore_index():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 1.0, 0.0], [3.0, 0.0, 0.0]]], requires_grad=True)
    classes = torch.tensor([[0, 2, 0, -100]])
    masked = torch.tensor([[True, False, True, True]])  # position 3 is masked but ignored
    out = MaskedCategoryLoss()(logits, classes, masked)
    log_z0 = math.log(math.exp(2.0) + 2.0)
    log_z2 = math.log(math.exp(1.0) + 2.0)
    assert out["masked_category_loss"].item() == pytest.approx(((log_z0 - 2.0) + log_z2) / 2, rel=1e-6)
    assert out["masked_category_acc"].item() == pytest.approx(0.5)
    assert not out["masked_category_acc"].requires_grad
    out["masked_category_loss"].backward()
    assert (logits.grad[0, [1, 3]] == 0).all() and (logits.grad[0, [0, 2]].abs().sum(-1) > 0).all()


def test_masked_category_loss_label_smoothing_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, generator=g)
    classes = torch.randint(0, 4, (2, 5), generator=g)
    masked = torch.rand(2, 5, generator=g) < 0.6
    masked[0, 0] = True
    out = MaskedCategoryLoss(loss_name="object_class_loss", label_smoothing=0.2)(logits, classes, masked)
    expected = F.cross_entropy(logits[masked], classes[masked], label_smoothing=0.2)
    torch.testing.assert_close(out["object_class_loss"], expected)
    assert "object_class_acc" in out


def test_masked_category_loss_with_nothing_masked_is_zero_with_a_graph():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    out = MaskedCategoryLoss()(logits, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.bool))
    assert out["masked_category_loss"].item() == 0.0 and out["masked_category_acc"].item() == 0.0
    out["masked_category_loss"].backward()
    assert (logits.grad == 0).all()


def test_masked_category_loss_bad_arguments_raise():
    with pytest.raises(ValueError, match="label_smoothing"):
        MaskedCategoryLoss(label_smoothing=1.0)
    with pytest.raises(ValueError, match="_loss"):
        MaskedCategoryLoss(loss_name="category")
    module = MaskedCategoryLoss()
    with pytest.raises(ValueError, match="expects logits"):
        module(torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[0, K=4\)"):
        module(torch.randn(2, 3, 4), torch.full((2, 3), 4), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="integer"):
        module(torch.randn(2, 3, 4), torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))
