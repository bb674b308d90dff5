"""ReportBatchEncoder: layout, sentence / word bookkeeping, padding, truncation and errors."""
from __future__ import annotations

import warnings

import pytest
import torch

from common.losses.masked_modeling import mask_tokens
from common.text.tokenizer import train_wordpiece_tokenizer
from medvl.models.components.report_tokenization import ReportBatchEncoder


def _pieces(tokenizer, sentence: str) -> tuple[list[int], list[int]]:
    """Reference: the sentence's piece ids and word ids through the transformers API."""
    encoding = tokenizer(sentence, add_special_tokens=False)
    return encoding["input_ids"], encoding.word_ids()


def _reference_sequence(tokenizer, sentences: list[str]) -> tuple[list[int], list[int], list[int]]:
    """Reference: input ids, token type ids and word index of one report, built naively."""
    cls_id, sent_id = tokenizer.cls_token_id, tokenizer.convert_tokens_to_ids("[SENT]")
    ids, types, words = [cls_id], [0], [-1]
    next_word = 0
    for number, sentence in enumerate(sentences, start=1):
        piece_ids, word_ids = _pieces(tokenizer, sentence)
        ids += [sent_id] + piece_ids
        types += [number] * (1 + len(piece_ids))
        words += [-1] + [next_word + w for w in word_ids]
        next_word += max(word_ids) + 1
    return ids, types, words


def test_layout_matches_a_naive_reference(report_tokenizer, report_sentences):
    encoder = ReportBatchEncoder(report_tokenizer, max_length=512, max_sentences=50)
    report = report_sentences[:3]
    batch = encoder([report])
    ids, types, words = _reference_sequence(report_tokenizer, report)
    assert batch["input_ids"][0].tolist() == ids
    assert batch["token_type_ids"][0].tolist() == types  # token type = sentence number, 0 for the global [CLS]
    assert batch["word_index"][0].tolist() == words
    assert batch["attention_mask"].dtype == torch.bool and bool(batch["attention_mask"].all())
    sent_id = report_tokenizer.convert_tokens_to_ids("[SENT]")
    positions = [i for i, token in enumerate(ids) if token == sent_id]
    assert batch["sentence_token_positions"][0].tolist() == positions
    assert batch["sentence_mask"][0].tolist() == [True] * 3
    assert batch["sentence_index"][0].tolist() == [t - 1 for t in types]  # -1 for [CLS]
    special = [token in (report_tokenizer.cls_token_id, sent_id) for token in ids]
    assert batch["special_tokens_mask"][0].tolist() == special
    # word_sentence: the sentence of each whole word, in word order
    words_per_sentence = [max(_pieces(report_tokenizer, sentence)[1]) + 1 for sentence in report]
    expected_word_sentence = [s for s, count in enumerate(words_per_sentence) for _ in range(count)]
    assert batch["word_sentence"][0].tolist() == expected_word_sentence
    assert batch["word_mask"].shape == (1, len(expected_word_sentence)) and bool(batch["word_mask"].all())


def test_pieces_of_one_word_share_a_word_index(report_tokenizer):
    encoder = ReportBatchEncoder(report_tokenizer)
    batch = encoder([["Pleural effusion-thickening was not detected.", "Trachea is open."]])
    tokens = report_tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    word_index = batch["word_index"][0].tolist()
    # Every "##" continuation piece belongs to the same word as the piece before it, and only those do.
    for position in range(2, len(tokens)):
        if word_index[position] < 0 or word_index[position - 1] < 0:
            continue
        continues = tokens[position].startswith("##")
        assert (word_index[position] == word_index[position - 1]) == continues, tokens[position - 1 : position + 1]
    assert any(token.startswith("##") for token in tokens), "the test needs a word split into pieces"
    # "effusion-thickening" is three words for a BERT pre-tokenizer: effusion, -, thickening
    first_sentence_words = batch["word_index"][0][batch["sentence_index"][0] == 0]
    assert first_sentence_words.max().item() + 1 == 8  # pleural effusion - thickening was not detected .


def test_padding_of_a_shorter_report(report_tokenizer, report_sentences):
    encoder = ReportBatchEncoder(report_tokenizer)
    short, long = report_sentences[:1], report_sentences[1:5]
    batch = encoder([short, long])
    alone = encoder([short])
    n = alone["input_ids"].shape[1]
    length = batch["input_ids"].shape[1]
    assert length > n
    for key in ("input_ids", "token_type_ids", "attention_mask", "sentence_index", "word_index", "special_tokens_mask"):
        assert torch.equal(batch[key][0, :n], alone[key][0]), key
    assert bool((batch["input_ids"][0, n:] == report_tokenizer.pad_token_id).all())
    assert not bool(batch["attention_mask"][0, n:].any())
    assert bool(batch["special_tokens_mask"][0, n:].all())  # padding is never masked for MLM
    assert bool((batch["token_type_ids"][0, n:] == 0).all())
    assert bool((batch["sentence_index"][0, n:] == -1).all()) and bool((batch["word_index"][0, n:] == -1).all())
    assert batch["sentence_mask"].tolist() == [[True, False, False, False], [True] * 4]
    words_short = int(alone["word_mask"].sum())
    assert batch["word_mask"][0].tolist() == [True] * words_short + [False] * (batch["word_mask"].shape[1] - words_short)
    assert bool((batch["word_sentence"][0, words_short:] == -1).all())
    assert batch["sentence_token_positions"][0].tolist() == [1, 0, 0, 0]


def test_max_length_drops_whole_trailing_sentences_and_warns_once(report_tokenizer, report_sentences):
    report = report_sentences[:4]
    full = ReportBatchEncoder(report_tokenizer)([report])
    positions = full["sentence_token_positions"][0].tolist()
    # Room for exactly the first two sentences plus one token of the third.
    max_length = positions[2] + 1
    encoder = ReportBatchEncoder(report_tokenizer, max_length=max_length)
    with pytest.warns(UserWarning, match="max_length"):
        batch = encoder([report])
    expected = ReportBatchEncoder(report_tokenizer)([report[:2]])
    assert batch["input_ids"].shape[1] <= max_length
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second truncation does not warn again
        encoder([report])


def test_a_first_sentence_longer_than_max_length_is_cut_at_a_word_boundary(report_tokenizer):
    sentence = "Trachea bronchi pleural effusion thickening mediastinal vascular structures are normal."
    full = ReportBatchEncoder(report_tokenizer)([[sentence, "Heart is normal."]])
    full_words = full["word_index"][0].tolist()
    for max_length in range(4, 14):
        with pytest.warns(UserWarning):
            batch = ReportBatchEncoder(report_tokenizer, max_length=max_length)([[sentence, "Heart is normal."]])
        n = batch["input_ids"].shape[1]
        assert n <= max_length
        assert batch["sentence_mask"].tolist() == [[True]]  # the second sentence is dropped
        assert torch.equal(batch["input_ids"][0], full["input_ids"][0, :n])  # a prefix of the full encoding
        if full_words[n - 1] >= 0 and full_words[n] == full_words[n - 1] and full_words[2] != full_words[n - 1]:
            pytest.fail(f"max_length={max_length}: the cut falls inside a word that is not the first")


def test_max_sentences_and_max_words_per_sentence(report_tokenizer, report_sentences):
    report = report_sentences[:5]
    with pytest.warns(UserWarning, match="max_sentences=2"):
        batch = ReportBatchEncoder(report_tokenizer, max_sentences=2)([report])
    expected = ReportBatchEncoder(report_tokenizer)([report[:2]])
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert int(batch["token_type_ids"].max()) == 2

    with pytest.warns(UserWarning, match="max_words_per_sentence=3"):
        capped = ReportBatchEncoder(report_tokenizer, max_words_per_sentence=3)([report[:2]])
    reference = ReportBatchEncoder(report_tokenizer)([report[:2]])
    for s in range(2):
        in_reference = (reference["sentence_index"][0] == s) & (reference["word_index"][0] >= 0)
        reference_words = reference["word_index"][0][in_reference]
        assert int(reference_words.max() - reference_words.min()) + 1 > 3, "the test needs sentences of > 3 words"
        first_three = reference["input_ids"][0][in_reference][reference_words - reference_words.min() < 3]
        in_capped = (capped["sentence_index"][0] == s) & (capped["word_index"][0] >= 0)
        assert capped["input_ids"][0][in_capped].tolist() == first_three.tolist()
        assert int((capped["word_sentence"][0] == s).sum()) == 3


def test_a_plain_tokenizers_backend_gives_the_same_batch(report_tokenizer, report_sentences):
    reports = [report_sentences[:2], report_sentences[2:5]]
    from_transformers = ReportBatchEncoder(report_tokenizer)(reports)
    from_backend = ReportBatchEncoder(report_tokenizer.backend_tokenizer)(reports)
    for key in from_transformers:
        assert torch.equal(from_transformers[key], from_backend[key]), key


def test_special_token_ids_and_mlm_pool(report_tokenizer):
    encoder = ReportBatchEncoder(report_tokenizer)
    assert encoder.sentence_token_id == report_tokenizer.convert_tokens_to_ids("[SENT]")
    assert encoder.cls_token_id == report_tokenizer.cls_token_id
    assert encoder.pad_token_id == report_tokenizer.pad_token_id
    assert encoder.mask_token_id == report_tokenizer.mask_token_id
    assert encoder.vocab_size == len(report_tokenizer)
    pool = set(encoder.non_special_token_ids.tolist())
    specials = {report_tokenizer.convert_tokens_to_ids(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[SENT]")}
    assert not pool & specials and len(pool) == encoder.vocab_size - len(specials)


def test_mlm_masking_never_touches_cls_sentence_tokens_or_padding(report_tokenizer, report_sentences):
    encoder = ReportBatchEncoder(report_tokenizer)
    batch = encoder([report_sentences[:1], report_sentences[1:4]])
    _, labels = mask_tokens(
        batch["input_ids"],
        special_tokens_mask=batch["special_tokens_mask"],
        attention_mask=batch["attention_mask"],
        mask_token_id=encoder.mask_token_id,
        vocab_size=encoder.vocab_size,
        mlm_probability=0.9,
        random_token_ids=encoder.non_special_token_ids,
        generator=torch.Generator().manual_seed(0),
    )
    selected = labels != -100
    assert bool(selected.any())
    assert not bool((selected & batch["special_tokens_mask"]).any())


@pytest.mark.parametrize(
    ("reports", "match"),
    [
        ([["Heart is normal."], []], "batch position 1 has no sentences"),
        (["Heart is normal."], "batch position 0 must be a list of sentences"),
        ([["Heart is normal.", "   "]], "batch position 0: sentence 1 is empty"),
        ([["Heart is normal.", 3]], "sentence 1 must be a str"),
        ([], "non-empty list"),
    ],
)
def test_bad_reports_raise(report_tokenizer, reports, match):
    with pytest.raises(ValueError, match=match):
        ReportBatchEncoder(report_tokenizer)(reports)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_length": 2}, {"max_sentences": 0}, {"max_words_per_sentence": 0}, {"max_length": 12.5}, {"max_sentences": True}],
)
def test_bad_arguments_raise(report_tokenizer, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ReportBatchEncoder(report_tokenizer, **kwargs)


def test_a_tokenizer_without_sentence_token_or_of_the_wrong_type_raises(report_sentences):
    no_sent = train_wordpiece_tokenizer(report_sentences, vocab_size=300, extra_special_tokens=())
    with pytest.raises(ValueError, match=r"\[SENT\]"):
        ReportBatchEncoder(no_sent)
    with pytest.raises(ValueError, match="tokenizers.Tokenizer"):
        ReportBatchEncoder(object())
