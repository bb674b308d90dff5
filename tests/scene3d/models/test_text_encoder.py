"""SceneTextEncoder: shapes, padding-invariant pooling, tied MLM head, local pretrained folder, bad inputs."""
from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from scene3d.models.components.text_encoder import SceneTextEncoder


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return SceneTextEncoder(vocab_size=30, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                            max_position_embeddings=16).eval()


def test_shapes_and_padding_does_not_change_the_pooled_embedding(encoder):
    ids = torch.tensor([[2, 7, 8, 9, 3]])
    out = encoder(ids, torch.ones_like(ids))
    assert out["tokens"].shape == (1, 5, 16) and out["pooled"].shape == (1, 16)
    padded = torch.tensor([[2, 7, 8, 9, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    torch.testing.assert_close(encoder(padded, mask)["pooled"], out["pooled"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["pooled"], out["tokens"].mean(dim=1))


def test_mlm_head_is_tied_to_the_word_embeddings(encoder):
    tokens = encoder(torch.tensor([[2, 5, 3]]), torch.ones(1, 3, dtype=torch.long))["tokens"]
    logits = encoder.mlm_logits(tokens)
    assert logits.shape == (1, 3, 30)
    with torch.no_grad():
        encoder.bert.embeddings.word_embeddings.weight[4] += torch.linspace(-1, 1, 16)  # (a constant would vanish: LN)
    assert not torch.allclose(encoder.mlm_logits(tokens)[..., 4], logits[..., 4])


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    encoder = SceneTextEncoder(vocab_size=12, hidden_size=8, num_layers=1, num_heads=2, dropout=0.0)
    ids = torch.arange(12).reshape(2, 6)
    out = encoder(ids, torch.ones_like(ids))
    (out["pooled"].square().sum() + encoder.mlm_logits(out["tokens"]).square().mean()).backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_pretrained_folder_is_loaded_and_enlarged(tmp_path):
    torch.manual_seed(0)
    source = BertModel(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=32), add_pooling_layer=False)
    source.save_pretrained(tmp_path / "bert")
    encoder = SceneTextEncoder(vocab_size=22, pretrained_dir=str(tmp_path / "bert"))
    assert encoder.hidden_size == 8 and encoder.vocab_size == 22
    torch.testing.assert_close(encoder.bert.embeddings.word_embeddings.weight[:20],
                               source.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="config.json"):
        SceneTextEncoder(vocab_size=22, pretrained_dir=str(tmp_path / "missing"))


def test_bad_arguments_and_inputs(encoder):
    with pytest.raises(ValueError, match="divisible"):
        SceneTextEncoder(vocab_size=30, hidden_size=10, num_heads=4)
    with pytest.raises(ValueError, match="pad_token_id"):
        SceneTextEncoder(vocab_size=5, pad_token_id=5)
    ids = torch.tensor([[2, 40]])
    with pytest.raises(ValueError, match="input_ids must lie"):
        encoder(ids, torch.ones_like(ids))
    ids = torch.tensor([[2, 3], [2, 0]])
    with pytest.raises(ValueError, match="no real token"):
        encoder(ids, torch.tensor([[1, 1], [0, 0]]))
    with pytest.raises(ValueError, match="exceed"):
        encoder(torch.ones(1, 20, dtype=torch.long), torch.ones(1, 20, dtype=torch.long))
