"""TriBERT: hierarchical attention mask, pooling levels, fusion path, MLM head, pretrained loading, errors."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertModel

from common.losses.masked_modeling import MaskedLanguageModelingLoss, mask_tokens
from medvl.models.components.report_tokenization import ReportBatchEncoder
from medvl.models.components.tribert import TriBERT, additive_attention_mask, tribert_attention_mask

HIDDEN = 32
VISION_DIM = 24
MAX_SENTENCES = 10


def _model(vocab_size: int, **overrides) -> TriBERT:
    kwargs = dict(
        hidden_size=HIDDEN,
        num_layers=3,
        num_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        max_sentences=MAX_SENTENCES,
        num_cross_attention_layers=1,  # 2 lower + 1 upper layer
        vision_dim=VISION_DIM,
        dropout=0.1,
    )
    kwargs.update(overrides)
    return TriBERT(vocab_size, **kwargs)


@pytest.fixture(scope="module")
def encoder(report_tokenizer) -> ReportBatchEncoder:
    return ReportBatchEncoder(report_tokenizer, max_length=128, max_sentences=MAX_SENTENCES)


@pytest.fixture()
def model(encoder) -> TriBERT:
    torch.manual_seed(0)
    return _model(encoder.vocab_size, pad_token_id=encoder.pad_token_id).eval()


def _naive_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Reference: the TriBERT mask entry by entry from the spec."""
    b_size, length = batch["input_ids"].shape
    valid, sentence = batch["attention_mask"], batch["sentence_index"]
    sentence_token = torch.zeros_like(valid)
    for b in range(b_size):
        for position, ok in zip(batch["sentence_token_positions"][b], batch["sentence_mask"][b]):
            if ok:
                sentence_token[b, position] = True
    allowed = torch.zeros(b_size, length, length, dtype=torch.bool)
    for b in range(b_size):
        for q in range(length):
            for k in range(length):
                if not valid[b, k]:
                    continue
                if sentence_token[b, q]:
                    allowed[b, q, k] = bool(sentence[b, k] == -1 or sentence[b, k] == sentence[b, q])
                else:
                    allowed[b, q, k] = True
    return allowed


def test_attention_mask_entries_on_a_hand_made_example():
    # tokens: [CLS] [SENT1] a b [SENT2] c [PAD]
    token_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    sentence_index = torch.tensor([[-1, 0, 0, 0, 1, 1, -1]])
    is_sentence = torch.tensor([[0, 1, 0, 0, 1, 0, 0]], dtype=torch.bool)
    everything = [1, 1, 1, 1, 1, 1, 0]
    expected = torch.tensor(
        [
            everything,  # [CLS] sees every valid token
            [1, 1, 1, 1, 0, 0, 0],  # [SENT1]: [CLS], itself, a, b
            everything,  # a
            everything,  # b
            [1, 0, 0, 0, 1, 1, 0],  # [SENT2]: [CLS], itself, c
            everything,  # c
            everything,  # padded query: never empty, never attended
        ],
        dtype=torch.bool,
    )[None]
    allowed = tribert_attention_mask(token_mask, sentence_index, is_sentence)
    assert torch.equal(allowed, expected)
    additive = additive_attention_mask(allowed, torch.float32)
    assert additive.shape == (1, 1, 7, 7)
    assert bool((additive[0, 0][expected[0]] == 0).all())
    assert bool((additive[0, 0][~expected[0]] == torch.finfo(torch.float32).min).all())


def test_model_mask_matches_the_spec_on_real_reports(model, encoder, report_sentences):
    batch = encoder([report_sentences[:2], report_sentences[2:5]])
    out = model.encode_text(batch)
    assert torch.equal(out["attention_mask"], _naive_mask(batch))


def _change_word_in_sentence(batch: dict[str, torch.Tensor], sentence: int, replacement_id: int) -> tuple[dict, int]:
    """Copy of a one-report batch with the first word piece of `sentence` replaced (same length)."""
    position = int(batch["sentence_token_positions"][0, sentence]) + 1
    changed = {key: value.clone() for key, value in batch.items()}
    assert changed["input_ids"][0, position] != replacement_id
    changed["input_ids"][0, position] = replacement_id
    return changed, position


def test_changing_sentence_two_leaves_sentence_one_token_unchanged(model, encoder, report_sentences):
    batch = encoder([report_sentences[:2]])
    replacement = int(encoder.non_special_token_ids[7])
    changed, changed_position = _change_word_in_sentence(batch, 1, replacement)
    before = model.encode_text(batch, output_hidden_states=True)["hidden_states"]
    after = model.encode_text(changed, output_hidden_states=True)["hidden_states"]
    sent1 = int(batch["sentence_token_positions"][0, 0])
    words1 = ((batch["sentence_index"][0] == 0) & (batch["word_index"][0] >= 0)).nonzero().flatten()
    # Layer 1: the sentence-1 token reads only [CLS], itself and its words, whose inputs did not change ...
    assert torch.allclose(before[1][0, sent1], after[1][0, sent1], atol=1e-6, rtol=0)
    # ... while the global [CLS] and the words of sentence 1 (which see everything) do change.
    assert (before[1][0, 0] - after[1][0, 0]).abs().max() > 1e-4
    assert (before[1][0, words1] - after[1][0, words1]).abs().amax(dim=-1).min() > 1e-6
    assert (before[0][0, changed_position] - after[0][0, changed_position]).abs().max() > 1e-4
    # Deeper layers: sentence 2 reaches the sentence-1 token only through the words, as the mask allows.
    assert (before[-1][0, sent1] - after[-1][0, sent1]).abs().max() > 1e-6


def test_every_layer_isolates_sentence_tokens(model, encoder, report_sentences):
    """In every layer of the text-only path, perturbing the layer's input at sentence 2 leaves the output of the
    sentence-1 token unchanged, while [CLS] and the words change."""
    batch = encoder([report_sentences[:2]])
    out = model.encode_text(batch, output_hidden_states=True)
    additive = additive_attention_mask(out["attention_mask"], torch.float32)
    sentence_two = batch["sentence_index"][0] == 1
    sent1 = int(batch["sentence_token_positions"][0, 0])
    words1 = ((batch["sentence_index"][0] == 0) & (batch["word_index"][0] >= 0)).nonzero().flatten()
    generator = torch.Generator().manual_seed(0)
    for index, layer in enumerate(model.layers):
        layer_input = out["hidden_states"][index]
        perturbed = layer_input.clone()
        perturbed[0, sentence_two] += torch.randn(perturbed[0, sentence_two].shape, generator=generator)
        with torch.no_grad():
            reference = layer(layer_input, attention_mask=additive)
            result = layer(perturbed, attention_mask=additive)
        assert torch.allclose(reference, out["hidden_states"][index + 1], atol=1e-6), index
        assert torch.allclose(reference[0, sent1], result[0, sent1], atol=1e-6, rtol=0), f"layer {index}"
        assert (reference[0, 0] - result[0, 0]).abs().max() > 1e-4, f"layer {index}"
        assert (reference[0, words1] - result[0, words1]).abs().amax(dim=-1).min() > 1e-6, f"layer {index}"


def test_levels_pool_as_specified(model, encoder, report_tokenizer):
    batch = encoder([["Trachea and bronchi are open.", "Mediastinal vascular structures are normal."]])
    out = model.encode_text(batch)
    tokens = out["tokens"][0]
    word_index, sentence_index = batch["word_index"][0], batch["sentence_index"][0]
    counts = torch.bincount(word_index[word_index >= 0])
    assert int(counts.max()) >= 2, "the test needs a word split into pieces"
    for word in range(int(batch["word_mask"].sum())):  # words = sum of their pieces
        manual = tokens[word_index == word].sum(dim=0)
        assert torch.allclose(out["words"][0, word], manual, atol=1e-5)
    multi_piece = int(counts.argmax())  # a sum, not a mean, of its pieces
    assert not torch.allclose(out["words"][0, multi_piece], tokens[word_index == multi_piece].mean(dim=0), atol=1e-3)
    for s in range(2):  # sentences = mean of the sentence token and its pieces
        members = sentence_index == s
        assert bool(members[int(batch["sentence_token_positions"][0, s])]) and int(members.sum()) >= 2
        assert torch.allclose(out["sentences"][0, s], tokens[members].mean(dim=0), atol=1e-5)
    assert torch.equal(out["report"][0], tokens[0])  # report = global [CLS]
    assert out["sentences"].shape == (1, 2, HIDDEN) and out["words"].shape == (1, int(batch["word_mask"].sum()), HIDDEN)
    assert torch.equal(out["sentence_mask"], batch["sentence_mask"]) and torch.equal(out["word_mask"], batch["word_mask"])


def test_token_types_are_sentence_numbers(model, encoder, report_sentences):
    assert model.embeddings.token_type_embeddings.num_embeddings == MAX_SENTENCES + 1
    batch = encoder([report_sentences[:3]])
    expected = (batch["sentence_index"] + 1).clamp(min=0)  # sentence s -> s + 1, [CLS] / pad -> 0
    assert torch.equal(batch["token_type_ids"], expected)
    # The embedding uses them: shifting every sentence number changes the states.
    shifted = dict(batch, token_type_ids=torch.where(expected > 0, expected + 1, expected))
    assert not torch.allclose(model.encode_text(batch)["tokens"], model.encode_text(shifted)["tokens"])


def test_padding_does_not_change_valid_outputs(model, encoder, report_sentences):
    short, long = report_sentences[:2], report_sentences[2:6]
    alone = encoder([short])
    paired = encoder([short, long])
    n, s, w = alone["input_ids"].shape[1], alone["sentence_mask"].shape[1], alone["word_mask"].shape[1]
    assert paired["input_ids"].shape[1] > n
    out1, out2 = model.encode_text(alone), model.encode_text(paired)
    for key, size in (("tokens", n), ("lower_tokens", n), ("sentences", s), ("words", w)):
        assert torch.allclose(out1[key][0], out2[key][0, :size], atol=1e-5), key
    assert torch.allclose(out1["report"][0], out2["report"][0], atol=1e-5)

    generator = torch.Generator().manual_seed(1)
    vision = torch.randn(2, 6, VISION_DIM, generator=generator)
    vision_mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])  # sample 0 has 2 padded vision tokens
    fused1 = model.fuse(out1["lower_tokens"], out1["attention_mask"], vision[:1, :4], None)
    fused2 = model.fuse(out2["lower_tokens"], out2["attention_mask"], vision, vision_mask)
    assert torch.allclose(fused1[0], fused2[0, :n], atol=1e-5)


def test_fuse_runs_the_upper_layers_on_the_shared_lower_states(model, encoder, report_sentences):
    batch = encoder([report_sentences[:2], report_sentences[2:4]])
    out = model.encode_text(batch)
    vision = torch.randn(2, 5, VISION_DIM)
    fused = model.fuse(out["lower_tokens"], out["attention_mask"], vision)
    assert fused.shape == out["tokens"].shape
    valid = out["token_mask"]
    assert (fused[valid] - out["tokens"][valid]).abs().max() > 1e-4  # vision changes the states
    other = model.fuse(out["lower_tokens"], out["attention_mask"], vision + 1.0)
    assert (fused[valid] - other[valid]).abs().max() > 1e-4
    # With the cross-attention sub-layers silenced (output projection 0), fuse = the text-only upper layers.
    with torch.no_grad():
        for layer in model.layers[model.num_lower_layers :]:
            layer.crossattention.output.dense.weight.zero_()
            layer.crossattention.output.dense.bias.zero_()
    silent = model.fuse(out["lower_tokens"], out["attention_mask"], vision)
    assert torch.allclose(silent[valid], out["tokens"][valid], atol=1e-4)
    # A (B, L) padding mask is accepted too (plain attention among valid tokens).
    assert model.fuse(out["lower_tokens"], valid, vision).shape == fused.shape


def test_mlm_logits_use_the_tied_word_embeddings(model, encoder, report_sentences):
    hidden = model.encode_text(encoder([report_sentences[:1]]))["tokens"]
    logits = model.mlm_logits(hidden)
    assert logits.shape == (*hidden.shape[:2], encoder.vocab_size)
    manual = model.mlm_transform(hidden) @ model.embeddings.word_embeddings.weight.T + model.mlm_bias
    assert torch.allclose(logits, manual, atol=1e-5)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[5] += 1.0  # the decoder row moves with the embedding row
    assert not torch.allclose(model.mlm_logits(hidden)[..., 5], logits[..., 5])


def test_gradients_reach_every_parameter(encoder, report_sentences):
    torch.manual_seed(0)
    model = _model(encoder.vocab_size, pad_token_id=encoder.pad_token_id).train()
    batch = encoder([report_sentences[:2], report_sentences[2:5]])
    masked_ids, labels = mask_tokens(
        batch["input_ids"],
        special_tokens_mask=batch["special_tokens_mask"],
        attention_mask=batch["attention_mask"],
        mask_token_id=encoder.mask_token_id,
        vocab_size=encoder.vocab_size,
        random_token_ids=encoder.non_special_token_ids,
        generator=torch.Generator().manual_seed(0),
    )
    out = model.encode_text(dict(batch, input_ids=masked_ids))
    vision = torch.randn(2, 5, VISION_DIM)
    fused = model.fuse(out["lower_tokens"], out["attention_mask"], vision, torch.ones(2, 5, dtype=torch.bool))
    mlm = MaskedLanguageModelingLoss()
    loss = (
        mlm(model.mlm_logits(fused), labels)["mlm_loss"]
        + mlm(model.mlm_logits(out["tokens"]), labels)["mlm_loss"]
        + out["report"].pow(2).mean()
        + out["sentences"][out["sentence_mask"]].pow(2).mean()
        + out["words"][out["word_mask"]].pow(2).mean()
    )
    loss.backward()
    assert torch.isfinite(loss)
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_seeded_construction_and_forward_are_deterministic(encoder, report_sentences):
    batch = encoder([report_sentences[:3]])
    torch.manual_seed(0)
    first = _model(encoder.vocab_size)
    torch.manual_seed(0)
    second = _model(encoder.vocab_size)
    torch.manual_seed(1)
    third = _model(encoder.vocab_size)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(first.layers[0].attention.self.query.weight, third.layers[0].attention.self.query.weight)
    torch.manual_seed(5)
    train_a = first.train().encode_text(batch)["tokens"]  # dropout on, same seed -> same draws
    torch.manual_seed(5)
    train_b = second.train().encode_text(batch)["tokens"]
    assert torch.equal(train_a, train_b)
    eval_a, eval_b = first.eval().encode_text(batch)["tokens"], first.encode_text(batch)["tokens"]
    assert torch.equal(eval_a, eval_b) and not torch.allclose(eval_a, train_a)


def test_text_only_model_without_cross_attention(encoder, report_sentences):
    model = _model(encoder.vocab_size, num_cross_attention_layers=0, vision_dim=None).eval()
    out = model.encode_text(encoder([report_sentences[:2]]))
    assert torch.equal(out["tokens"], out["lower_tokens"])
    assert not any("crossattention" in name for name, _ in model.named_parameters())
    with pytest.raises(ValueError, match="num_cross_attention_layers=0"):
        model.fuse(out["lower_tokens"], out["attention_mask"], torch.randn(1, 3, HIDDEN))


# ---------------------------------------------------------------------------------------------- pretrained
def _save_tiny_bert(directory, vocab_size: int = 60, layers: int = 3) -> BertModel:
    torch.manual_seed(3)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
    )
    source = BertModel(config, add_pooling_layer=False).eval()
    source.save_pretrained(directory)
    return source


def test_pretrained_dir_copies_weights(tmp_path):
    source = _save_tiny_bert(tmp_path)
    model = TriBERT(
        61, hidden_size=HIDDEN, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=32,
        max_sentences=MAX_SENTENCES, num_cross_attention_layers=1, pretrained_dir=tmp_path,
    )
    for index in range(2):
        for name, tensor in source.encoder.layer[index].state_dict().items():
            assert torch.equal(model.layers[index].state_dict()[name], tensor), (index, name)
    embeddings = model.embeddings
    assert torch.equal(embeddings.word_embeddings.weight[:60], source.embeddings.word_embeddings.weight)
    assert torch.equal(embeddings.position_embeddings.weight, source.embeddings.position_embeddings.weight[:32])
    assert embeddings.token_type_embeddings.weight.shape == (MAX_SENTENCES + 1, HIDDEN)
    row0 = source.embeddings.token_type_embeddings.weight[0]
    assert bool((embeddings.token_type_embeddings.weight == row0).all())  # every sentence row starts as row 0
    assert torch.equal(embeddings.LayerNorm.weight, source.embeddings.LayerNorm.weight)
    # The text path of a 1-sentence input without the sentence token equals the checkpoint's own forward.
    ids = torch.tensor([[2, 11, 12, 13, 14]])
    batch = {
        "input_ids": ids,
        "token_type_ids": torch.zeros_like(ids),
        "attention_mask": torch.ones_like(ids, dtype=torch.bool),
        "sentence_index": torch.tensor([[-1, 0, 0, 0, 0]]),
        "sentence_token_positions": torch.tensor([[0]]),
        "sentence_mask": torch.tensor([[False]]),  # no sentence token: plain full attention
        "word_index": torch.tensor([[-1, 0, 1, 2, 3]]),
        "word_mask": torch.ones(1, 4, dtype=torch.bool),
    }
    expected = source(input_ids=ids, token_type_ids=torch.zeros_like(ids), output_hidden_states=True).hidden_states[2]
    assert torch.allclose(model.eval().encode_text(batch)["tokens"], expected, atol=1e-5)


def test_pretrained_dir_errors(tmp_path):
    common = dict(hidden_size=HIDDEN, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=32)
    with pytest.raises(ValueError, match="is not a folder"):
        TriBERT(61, pretrained_dir=tmp_path / "absent", **common)
    with pytest.raises(ValueError, match="no config.json"):
        TriBERT(61, pretrained_dir=tmp_path, **common)
    good = tmp_path / "good"
    _save_tiny_bert(good)
    with pytest.raises(ValueError, match=r"hidden_size=48 \(checkpoint: 32\).*set hidden_size=32"):
        TriBERT(61, pretrained_dir=good, **dict(common, hidden_size=48))
    with pytest.raises(ValueError, match="num_layers=4 exceeds"):
        TriBERT(61, pretrained_dir=good, **dict(common, num_layers=4))
    with pytest.raises(ValueError, match="vocab_size=50 is smaller"):
        TriBERT(50, pretrained_dir=good, **common)
    other_type = tmp_path / "roberta"
    other_type.mkdir()
    config = json.loads((good / "config.json").read_text())
    (other_type / "config.json").write_text(json.dumps(dict(config, model_type="roberta")))
    with pytest.raises(ValueError, match="model_type 'roberta'"):
        TriBERT(61, pretrained_dir=other_type, **common)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no weights file"):
        TriBERT(61, pretrained_dir=no_weights, **common)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text(json.dumps(config))
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="could not load BERT weights"):
        TriBERT(61, pretrained_dir=corrupt, **common)
    wrong_shape = tmp_path / "wrong_shape"
    wrong_shape.mkdir()
    (wrong_shape / "config.json").write_text(json.dumps(dict(config, hidden_size=48)))
    (wrong_shape / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="could not load BERT weights"):
        TriBERT(61, pretrained_dir=wrong_shape, **dict(common, hidden_size=48))


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_cross_attention_layers": 4}, "cannot exceed num_layers"),
        ({"num_heads": 5}, "divisible by num_heads"),
        ({"dropout": 1.0}, "dropout"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"vision_dim": -1}, "vision_dim"),
        ({"num_layers": 2.0}, "num_layers"),
        ({"pad_token_id": 300}, "pad_token_id"),
        ({"intermediate_size": 0}, "intermediate_size"),
    ],
)
def test_bad_arguments_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        _model(300, **overrides)


def test_bad_batches_raise(model, encoder, report_sentences, report_tokenizer):
    batch = encoder([report_sentences[:2]])
    with pytest.raises(ValueError, match="missing"):
        model.encode_text({k: v for k, v in batch.items() if k != "word_index"})
    with pytest.raises(ValueError, match="token_type_ids must have shape"):
        model.encode_text(dict(batch, token_type_ids=batch["token_type_ids"][:, :-1]))
    many = ReportBatchEncoder(report_tokenizer, max_sentences=MAX_SENTENCES + 5)(
        [[f"Finding {i} is seen." for i in range(MAX_SENTENCES + 2)]]
    )
    with pytest.raises(ValueError, match="max_sentences=10"):
        model.encode_text(many)
    long = ReportBatchEncoder(report_tokenizer, max_length=512)([report_sentences[:12]])
    assert long["input_ids"].shape[1] > 128
    with pytest.raises(ValueError, match="max_position_embeddings=128"):
        model.encode_text(long)
    with pytest.raises(ValueError, match="vocab_size"):
        model.encode_text(dict(batch, input_ids=batch["input_ids"] + 1000))


def test_bad_fuse_inputs_raise(model, encoder, report_sentences):
    out = model.encode_text(encoder([report_sentences[:2]]))
    lower, mask = out["lower_tokens"], out["attention_mask"]
    with pytest.raises(ValueError, match="vision_tokens must have shape"):
        model.fuse(lower, mask, torch.randn(1, 3, HIDDEN))
    with pytest.raises(ValueError, match="no valid vision token"):
        model.fuse(lower, mask, torch.randn(1, 3, VISION_DIM), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="text_mask must be a bool"):
        model.fuse(lower, mask.float(), torch.randn(1, 3, VISION_DIM))
    with pytest.raises(ValueError, match="vision_mask must be a bool"):
        model.fuse(lower, mask, torch.randn(1, 3, VISION_DIM), torch.ones(1, 3))
    with pytest.raises(ValueError, match="hidden must have shape"):
        model.mlm_logits(torch.randn(1, 4, HIDDEN + 1))
