"""WordPiece tokenizer: trained on the 800 real CT-RATE reports (shared data) and on a tiny corpus."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from common.text.tokenizer import load_tokenizer, save_tokenizer, train_wordpiece_tokenizer

TINY_CORPUS = [
    "The lungs are clear. No pleural effusion.",
    "A 3.5 mm nodule in the right upper lobe.",
    "Mild cardiomegaly. No pleural effusion.",
    "Pleural effusion-thickening was not detected.",
] * 3


@pytest.fixture(scope="module")
def reports(shared_data: Path) -> list[str]:
    with (shared_data / "reports" / "ct_rate_reports_train.csv").open(encoding="utf-8", newline="") as handle:
        return [row["report_text"] for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def tokenizer(reports: list[str]) -> PreTrainedTokenizerFast:
    return train_wordpiece_tokenizer(reports, vocab_size=3000)


def test_specials_have_fixed_ids_and_roles(tokenizer: PreTrainedTokenizerFast) -> None:
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert [tokenizer.pad_token, tokenizer.unk_token, tokenizer.cls_token, tokenizer.sep_token, tokenizer.mask_token] \
        == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id, tokenizer.convert_tokens_to_ids("[SENT]")] == [0, 1, 2, 3, 4, 5]
    assert sorted(tokenizer.all_special_tokens) == ["[CLS]", "[MASK]", "[PAD]", "[SENT]", "[SEP]", "[UNK]"]
    assert len(tokenizer) == 3000


def test_encoding_is_bert_style(tokenizer: PreTrainedTokenizerFast) -> None:
    encoded = tokenizer("[SENT] Pleural EFFUSION was not detected. [SENT] Mild cardiomegaly.")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens.count("[SENT]") == 2  # never split, never lowercased
    assert "effusion" in tokens  # lowercased, a whole word of the corpus
    # "##e" is a vocabulary piece, not a special token: typed in a text it is split like any punctuation
    # ("#" is not in the corpus, hence [UNK])
    assert tokenizer.tokenize("x ##e") == ["x", "[UNK]", "[UNK]", "e"]
    assert set(encoded) == {"input_ids", "token_type_ids", "attention_mask"}
    batch = tokenizer(["short", "a much longer sentence here"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape[0] == 2
    assert batch["input_ids"][0, -1].item() == tokenizer.pad_token_id
    assert batch["attention_mask"][0].tolist().count(0) > 0


def test_round_trip_on_the_corpus(tokenizer: PreTrainedTokenizerFast, reports: list[str]) -> None:
    backend = tokenizer.backend_tokenizer
    for report in reports[:50]:
        ids = tokenizer(report, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids  # every corpus character is in the vocabulary
        # the pieces glue back into exactly the lowercased words and punctuation marks of the report
        words = [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(report))]
        glued: list[str] = []
        for piece in tokenizer.convert_ids_to_tokens(ids):
            if piece.startswith("##"):
                glued[-1] += piece[2:]
            else:
                glued.append(piece)
        assert glued == words
        assert tokenizer(tokenizer.decode(ids), add_special_tokens=False)["input_ids"] == ids
    assert tokenizer.decode(tokenizer("the lungs are clear")["input_ids"], skip_special_tokens=True) \
        == "the lungs are clear"


def test_word_ids_group_pieces_of_one_word(tokenizer: PreTrainedTokenizerFast) -> None:
    text = "pneumomediastinum and hepatosplenomegaly"
    encoded = tokenizer(text)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    word_ids = encoded.word_ids()
    assert word_ids[0] is None and word_ids[-1] is None  # [CLS], [SEP]
    assert any(token.startswith("##") for token in tokens)  # some word is cut into pieces
    for position, token in enumerate(tokens):
        if token.startswith("##"):
            assert word_ids[position] == word_ids[position - 1]  # a continuation belongs to the word before
    pieces_by_word: dict[int, str] = {}
    for token, word in zip(tokens, word_ids):
        if word is not None:
            pieces_by_word[word] = pieces_by_word.get(word, "") + token.removeprefix("##")
    assert list(pieces_by_word.values()) == text.split()


def test_training_is_deterministic(reports: list[str]) -> None:
    # The plain tokenizers trainer gives a different vocabulary on 5 of 6 runs on these 50 reports (ties
    # broken by hash-map order); the fixed "##c" ids make every run identical.
    vocabs = [train_wordpiece_tokenizer(reports[:50], vocab_size=400).get_vocab() for _ in range(4)]
    assert all(vocab == vocabs[0] for vocab in vocabs[1:])


def test_save_and_load_round_trip(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    folder = save_tokenizer(tokenizer, tmp_path / "tok")
    loaded = load_tokenizer(folder)
    assert type(loaded) is type(tokenizer)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    text = "[SENT] A 3.5 mm nodule. [SENT] No effusion."
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.all_special_tokens == tokenizer.all_special_tokens
    assert loaded.model_max_length == 512


def test_load_errors(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    folder = save_tokenizer(tokenizer, tmp_path / "tok")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete: missing tokenizer.json"):
        load_tokenizer(folder)
    (folder / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot load"):
        load_tokenizer(folder)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="empty corpus"):
        train_wordpiece_tokenizer(["", "   "])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        train_wordpiece_tokenizer(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="vocab_size >= "):
        train_wordpiece_tokenizer(TINY_CORPUS, vocab_size=10)
    with pytest.raises(ValueError, match="pad, unk, cls, sep, mask"):
        train_wordpiece_tokenizer(TINY_CORPUS, special_tokens=("[PAD]", "[UNK]"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        train_wordpiece_tokenizer(TINY_CORPUS, extra_special_tokens=("[PAD]",))
    with pytest.raises(ValueError, match="min_frequency"):
        train_wordpiece_tokenizer(TINY_CORPUS, min_frequency=0)


def test_cased_tokenizer_keeps_case() -> None:
    tokenizer = train_wordpiece_tokenizer(TINY_CORPUS, vocab_size=200, min_frequency=1, lowercase=False)
    assert "The" in tokenizer.get_vocab()
    assert tokenizer.convert_ids_to_tokens(tokenizer("The")["input_ids"])[1] == "The"
    config = json.loads(json.dumps(tokenizer.init_kwargs, default=str))
    assert config["do_lower_case"] is False


def test_tokenizer_json_round_trip_encodes_identically():
    from common.text.tokenizer import tokenizer_from_json, tokenizer_to_json, train_wordpiece_tokenizer

    texts = ["No pleural effusion was detected.", "A 12 mm hypodense lesion in the liver."] * 5
    tok = train_wordpiece_tokenizer(texts, vocab_size=200, min_frequency=1)
    rebuilt = tokenizer_from_json(tokenizer_to_json(tok))
    sample = "A 12 mm hypodense lesion. [SENT] No effusion."
    assert rebuilt(sample)["input_ids"] == tok(sample)["input_ids"]
    assert rebuilt.convert_tokens_to_ids("[SENT]") == tok.convert_tokens_to_ids("[SENT]")
    assert rebuilt.mask_token_id == tok.mask_token_id and rebuilt.pad_token_id == tok.pad_token_id


def test_tokenizer_from_json_rejects_garbage():
    import pytest

    from common.text.tokenizer import tokenizer_from_json

    with pytest.raises(ValueError, match="not a tokenizer JSON"):
        tokenizer_from_json("{not json")
