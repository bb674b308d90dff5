"""BERT text encoder for scene language (transformers `BertModel`), with a tied masked-language-modelling head.

Random initialisation with the vocabulary of a WordPiece tokenizer trained on the corpus
(`common.text.tokenizer.train_wordpiece_tokenizer`), or a local pretrained BERT folder (`pretrained_dir`, a
`BertModel.save_pretrained` folder such as all-MiniLM-L6-v2's; never downloaded).

    tokens  = BERT(input_ids, attention_mask)                          (T, L, H)
    pooled  = sum_l m_l tokens_l / sum_l m_l                           masked mean over real tokens
    mlm(t)  = LN(GELU(W t + b)) E^T + b_v                              E: the word-embedding matrix (tied)
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BertConfig, BertModel

__all__ = ["SceneTextEncoder"]

log = logging.getLogger(__name__)


def _load_pretrained(path: Path) -> BertModel:
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"pretrained_dir {path} is not a BertModel.save_pretrained folder (no config.json); "
                         "give a local folder, models are never downloaded")
    try:
        return BertModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load a BertModel from pretrained_dir {path}: {error}") from error


class SceneTextEncoder(nn.Module):
    """A BERT encoder of short scene texts (descriptions, noun phrases) with mean pooling and an MLM head.

    Args:
        vocab_size: tokenizer vocabulary size (with added tokens).
        pad_token_id: id of [PAD].
        hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings: BERT architecture
            (intermediate_size None = 4 * hidden_size); ignored with `pretrained_dir`, whose config is used.
        dropout: hidden and attention dropout.
        pretrained_dir: optional local BERT folder; its word-embedding table is enlarged when the tokenizer has
            more tokens.

    Shapes:
        input_ids, attention_mask: (T, L) -> tokens (T, L, H), pooled (T, H); mlm_logits: (T, L, H) -> (T, L, V)

    Raises:
        ValueError: bad arguments, an unreadable `pretrained_dir`, ids outside the vocabulary, an attention mask
            of another shape, or a text without any real token.
    """

    def __init__(self, vocab_size: int, pad_token_id: int = 0, hidden_size: int = 64, num_layers: int = 2,
                 num_heads: int = 2, intermediate_size: int | None = None, max_position_embeddings: int = 128,
                 dropout: float = 0.1, pretrained_dir: str | None = None) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size), ("num_layers", num_layers),
                            ("num_heads", num_heads), ("max_position_embeddings", max_position_embeddings)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0 <= pad_token_id < vocab_size:
            raise ValueError(f"pad_token_id must be in [0, vocab_size={vocab_size}), got {pad_token_id}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if pretrained_dir:
            self.bert = _load_pretrained(Path(pretrained_dir))
            if vocab_size > self.bert.config.vocab_size:
                self.bert.resize_token_embeddings(vocab_size)
            log.info("text encoder from %s (hidden %d, %d layers)", pretrained_dir, self.bert.config.hidden_size,
                     self.bert.config.num_hidden_layers)
        else:
            if hidden_size % num_heads:
                raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
            config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                                num_attention_heads=num_heads, intermediate_size=intermediate_size or 4 * hidden_size,
                                max_position_embeddings=max_position_embeddings, hidden_dropout_prob=dropout,
                                attention_probs_dropout_prob=dropout, pad_token_id=pad_token_id, type_vocab_size=1)
            self.bert = BertModel(config, add_pooling_layer=False)
        config = self.bert.config
        self.hidden_size = config.hidden_size
        self.vocab_size = config.vocab_size
        self.max_length = config.max_position_embeddings
        self.mlm_transform = nn.Sequential(nn.Linear(self.hidden_size, self.hidden_size), nn.GELU(),
                                           nn.LayerNorm(self.hidden_size, eps=config.layer_norm_eps))
        self.mlm_bias = nn.Parameter(torch.zeros(self.vocab_size))

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        """Token states and the mean-pooled text embedding."""
        if input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(
                f"input_ids must be a (T, L) integer tensor, got {input_ids.dtype} {tuple(input_ids.shape)}")
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                             f"got {tuple(attention_mask.shape)}")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {self.vocab_size}); was the tokenizer trained for this model?")
        if input_ids.shape[1] > self.max_length:
            raise ValueError(f"texts of {input_ids.shape[1]} tokens exceed max_position_embeddings={self.max_length}; "
                             "truncate them")
        mask = attention_mask.bool()
        if input_ids.shape[0] and not bool(mask.any(dim=1).all()):
            raise ValueError("a text has no real token in attention_mask; drop empty texts")
        tokens = self.bert(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        weights = mask.to(tokens.dtype)[..., None]  # (T, L, 1)
        pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return {"tokens": tokens, "pooled": pooled}

    def mlm_logits(self, tokens: Tensor) -> Tensor:
        """Vocabulary logits of token states (decoder tied to the word embeddings), (T, L, H) -> (T, L, V)."""
        if tokens.shape[-1] != self.hidden_size:
            raise ValueError(f"tokens must have {self.hidden_size} channels, got {tuple(tokens.shape)}")
        weight = self.bert.embeddings.word_embeddings.weight  # (V, H)
        return F.linear(self.mlm_transform(tokens), weight, self.mlm_bias)
