"""`python -m medvl.models.prepare_text_encoder`: a stock BERT folder becomes a TriBERT starting point."""
from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from common.text.tokenizer import load_tokenizer, train_wordpiece_tokenizer
from medvl.models.components.report_tokenization import ReportBatchEncoder
from medvl.models.components.tribert import TriBERT
from medvl.models.prepare_text_encoder import SENTENCE_TOKEN, main, prepare_text_encoder

CORPUS = ["No pleural effusion.", "A 12 mm lesion in the liver.", "The spleen is enlarged."] * 4


@pytest.fixture()
def stock_bert(tmp_path):
    """A BERT folder as published: weights, config and a tokenizer WITHOUT [SENT]."""
    folder = tmp_path / "stock"
    tokenizer = train_wordpiece_tokenizer(CORPUS, vocab_size=80, min_frequency=1, extra_special_tokens=())
    assert SENTENCE_TOKEN not in tokenizer.get_vocab()
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(str(folder))
    return folder, len(tokenizer)


def test_prepared_folder_adds_the_sentence_token_and_seeds_tribert(stock_bert, tmp_path):
    source, stock_vocab = stock_bert
    out = prepare_text_encoder(tmp_path / "prepared", source)
    tokenizer = load_tokenizer(out)
    assert len(tokenizer) == stock_vocab + 1 and tokenizer.convert_tokens_to_ids(SENTENCE_TOKEN) == stock_vocab
    assert tokenizer.tokenize("[SENT] No effusion")[0] == SENTENCE_TOKEN  # never split
    assert load_tokenizer(source).get_vocab() == {k: v for k, v in tokenizer.get_vocab().items() if v < stock_vocab}
    model = TriBERT(len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                    max_position_embeddings=64, num_cross_attention_layers=0, pretrained_dir=out)
    stock = BertModel.from_pretrained(str(source))
    assert torch.equal(model.embeddings.word_embeddings.weight[:stock_vocab], stock.embeddings.word_embeddings.weight)
    batch = ReportBatchEncoder(tokenizer)([["No pleural effusion.", "The spleen is enlarged."]])
    assert model.eval().encode_text(batch)["report"].shape == (1, 32)


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main([str(tmp_path / "out"), "--source", str(tmp_path / "absent")]) == 2
    assert "absent does not exist" in capsys.readouterr().err
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text("{}")
    assert main([str(tmp_path / "out"), "--source", str(tmp_path / "no_weights")]) == 2
    assert "no weights file" in capsys.readouterr().err
