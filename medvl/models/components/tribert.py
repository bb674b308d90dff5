"""TriBERT (VELVET-Med): a BERT report encoder with word, sentence and report levels, whose upper layers can
also cross-attend to vision tokens.

Input layout (see `ReportBatchEncoder`): [CLS] [SENT] w w ... [SENT] w w ... with the sentence number in
`token_type_ids`. Self-attention uses a hierarchical mask: the global [CLS] and every word piece see every
valid token; a sentence token sees only the global [CLS], itself and its own sentence's pieces. Padding is
never attended.

Layers: `num_layers` BERT layers, the last `num_cross_attention_layers` of which ("upper") also hold a
cross-attention sub-layer. Computation is shared as follows:

    embeddings -> lower layers  (computed once: "lower_tokens")
        -> upper layers, self-attention + feed-forward only   = text-only path ("tokens", encode_text)
        -> upper layers, self-attention + cross-attention to vision + feed-forward = multimodal path (fuse)

so the embeddings and lower layers are shared outright between the uni- and multimodal paths, and the upper
layers share their self-attention and feed-forward weights between the two (their cross-attention weights are
used by `fuse` only).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer, BertPredictionHeadTransform

__all__ = ["TriBERT", "additive_attention_mask", "pool_by_group", "tribert_attention_mask"]

_REQUIRED_KEYS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "sentence_index",
    "sentence_token_positions",
    "sentence_mask",
    "word_index",
    "word_mask",
)
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def tribert_attention_mask(token_mask: Tensor, sentence_index: Tensor, is_sentence_token: Tensor) -> Tensor:
    """Which key each query may attend to under TriBERT's hierarchical mask (True = allowed).

        allowed[q, k] = valid[k] and (not is_sentence_token[q] or sentence_index[k] in {-1, sentence_index[q]})

    i.e. a sentence token of sentence s sees the global [CLS] (sentence index -1), itself and the pieces of
    sentence s; [CLS], word pieces and padded queries see every valid key (padded query rows are never empty,
    so no softmax is taken over nothing; their outputs are meaningless and ignored).

    Args:
        token_mask: True for real tokens.
        sentence_index: sentence of each token, -1 for [CLS] and padding.
        is_sentence_token: True at sentence tokens.

    Shapes:
        token_mask, sentence_index, is_sentence_token: (B, L) -> (B, L, L) bool, [b, query, key]
    """
    same_sentence = sentence_index[:, :, None] == sentence_index[:, None, :]  # (B, L, L)
    key_is_global = (sentence_index == -1)[:, None, :]  # (B, 1, L): [CLS] (padding is removed below)
    sentence_view = same_sentence | key_is_global  # (B, L, L)
    allowed = torch.where(is_sentence_token[:, :, None], sentence_view, torch.ones_like(sentence_view))
    return allowed & token_mask[:, None, :]  # (B, L, L)


def additive_attention_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """Turn a boolean allowed-mask into BERT's additive form: 0 where allowed, the dtype's minimum elsewhere.

    Shapes:
        allowed: (B, L, K) or (B, K) bool (same keys for every query) -> (B, 1, L, K) or (B, 1, 1, K)
    """
    if allowed.dim() == 2:
        allowed = allowed[:, None, :]  # (B, K) -> (B, 1, K)
    additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    additive = additive.masked_fill(~allowed, torch.finfo(dtype).min)
    return additive[:, None]  # (B, L, K) -> (B, 1, L, K): broadcast over heads


class TriBERT(nn.Module):
    """Three-level report encoder (word / sentence / report) with vision cross-attention in its upper layers.

    Levels (text-only path, last layer):
        report    = state of the global [CLS]
        sentences = mean over each sentence's sentence token and its word pieces
        words     = sum of each whole word's WordPiece pieces

    Built from transformers' BERT pieces (`BertEmbeddings`, `BertLayer`, `BertPredictionHeadTransform`).
    The MLM head's decoder is tied to the word embeddings (written here as `F.linear` with the embedding
    matrix, because transformers ties `BertLMPredictionHead` only inside a `PreTrainedModel`).

    Args:
        vocab_size: tokenizer vocabulary size including added tokens such as [SENT].
        hidden_size: channels C.
        num_layers: BERT layers in total.
        num_heads: attention heads; must divide hidden_size.
        intermediate_size: feed-forward width (default 4 * hidden_size, or the checkpoint's).
        max_position_embeddings: longest sequence L.
        max_sentences: most sentences per report; the token type table has max_sentences + 1 rows.
        num_cross_attention_layers: how many of the last layers also cross-attend to vision (0..num_layers;
            0 = text only, `fuse` unavailable).
        vision_dim: channels of the vision tokens; projected to hidden_size by a Linear when different
            (None = hidden_size).
        dropout: dropout on embeddings, attention probabilities and sub-layer outputs.
        pad_token_id: id of [PAD] (its embedding row gets no gradient).
        pretrained_dir: optional folder written by `BertModel.save_pretrained` (config.json + weights), e.g.
            the all-MiniLM-L6-v2 files. Embeddings and the first `num_layers` layers are copied from it;
            hidden_size, num_heads and intermediate_size must match it; num_layers and
            max_position_embeddings may not exceed it; vocab_size may exceed it (extra rows for added tokens
            such as [SENT] are initialised randomly) but ids below its vocabulary size must mean the same
            tokens (use the checkpoint's own vocab.txt). Every token type row starts as the checkpoint's row 0
            (the segment it saw for single-segment inputs). Cross-attention, the vision projection and the MLM
            head start random.

    Shapes:
        batch: the dict of `ReportBatchEncoder` (L tokens, S sentences, W words; extra keys are ignored).
        encode_text -> tokens (B, L, C), lower_tokens (B, L, C), attention_mask (B, L, L) bool,
            token_mask (B, L) bool, report (B, C), sentences (B, S, C), sentence_mask (B, S),
            words (B, W, C), word_mask (B, W) [, hidden_states: tuple of num_layers + 1 tensors (B, L, C)]
        fuse: text_tokens (B, L, C), text_mask (B, L) or (B, L, L) bool, vision_tokens (B, M, vision_dim),
            vision_mask (B, M) bool or None -> (B, L, C)
        mlm_logits: (B, L, C) -> (B, L, vocab_size)

    Raises:
        ValueError: bad constructor arguments; a missing, unreadable or incompatible `pretrained_dir`; a batch
            with missing keys, wrong shapes, or ids beyond the model's tables.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: int | None = None,
        max_position_embeddings: int = 512,
        max_sentences: int = 50,
        num_cross_attention_layers: int = 2,
        vision_dim: int | None = None,
        dropout: float = 0.1,
        pad_token_id: int = 0,
        pretrained_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("max_position_embeddings", max_position_embeddings),
            ("max_sentences", max_sentences),
        ):
            _check_int(name, value, minimum=1)
        if intermediate_size is not None:
            _check_int("intermediate_size", intermediate_size, minimum=1)
        if vision_dim is not None:
            _check_int("vision_dim", vision_dim, minimum=1)
        _check_int("num_cross_attention_layers", num_cross_attention_layers, minimum=0)
        if num_cross_attention_layers > num_layers:
            raise ValueError(
                f"num_cross_attention_layers ({num_cross_attention_layers}) cannot exceed num_layers ({num_layers}); "
                "it counts the upper layers that also cross-attend to vision"
            )
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        _check_int("pad_token_id", pad_token_id, minimum=0)
        if pad_token_id >= vocab_size:
            raise ValueError(f"pad_token_id ({pad_token_id}) must be < vocab_size ({vocab_size})")

        pretrained = _load_pretrained_bert(Path(pretrained_dir)) if pretrained_dir is not None else None
        if pretrained is not None:
            source = pretrained.config
            _check_matches_checkpoint(
                pretrained_dir,
                hidden_size=(hidden_size, source.hidden_size),
                num_heads=(num_heads, source.num_attention_heads),
                intermediate_size=(intermediate_size or source.intermediate_size, source.intermediate_size),
            )
            for name, value, limit in (
                ("num_layers", num_layers, source.num_hidden_layers),
                ("max_position_embeddings", max_position_embeddings, source.max_position_embeddings),
            ):
                if value > limit:
                    raise ValueError(f"{name}={value} exceeds the checkpoint's {limit} in {pretrained_dir}; lower it")
            if vocab_size < source.vocab_size:
                raise ValueError(
                    f"vocab_size={vocab_size} is smaller than the checkpoint's {source.vocab_size} in {pretrained_dir}; "
                    "use the checkpoint's own vocab.txt (plus added tokens such as [SENT]) for the tokenizer"
                )
            hidden_act, layer_norm_eps, initializer_range = source.hidden_act, source.layer_norm_eps, source.initializer_range
            intermediate_size = intermediate_size or source.intermediate_size
        else:
            hidden_act, layer_norm_eps, initializer_range = "gelu", 1e-12, 0.02
            intermediate_size = intermediate_size or 4 * hidden_size

        self.config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            hidden_act=hidden_act,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            max_position_embeddings=max_position_embeddings,
            type_vocab_size=max_sentences + 1,
            layer_norm_eps=layer_norm_eps,
            initializer_range=initializer_range,
            pad_token_id=pad_token_id,
        )
        # SDPA takes the 4-D additive mask directly and picks a fused kernel where one exists.
        self.config._attn_implementation = "sdpa"
        # transformers' BertLayer only builds its cross-attention sub-layer for decoders (is_decoder=True), which
        # also marks its self-attention causal. The upper layers get a decoder config for the sub-layer, and their
        # self-attention is switched back to bidirectional below; a full 4-D mask is always passed in any case.
        cross_config = copy.deepcopy(self.config)
        cross_config.is_decoder = True
        cross_config.add_cross_attention = True

        self.num_layers = num_layers
        self.num_lower_layers = num_layers - num_cross_attention_layers
        self.num_cross_attention_layers = num_cross_attention_layers
        self.max_sentences = max_sentences
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.vision_dim = hidden_size if vision_dim is None else vision_dim

        self.embeddings = BertEmbeddings(self.config)
        self.layers = nn.ModuleList()
        for index in range(num_layers):
            is_upper = index >= self.num_lower_layers
            layer = BertLayer(cross_config if is_upper else self.config, layer_idx=index)
            if is_upper:
                layer.attention.self.is_causal = False
            self.layers.append(layer)
        self.vision_projection = (
            nn.Linear(self.vision_dim, hidden_size) if self.vision_dim != hidden_size else nn.Identity()
        )
        self.mlm_transform = BertPredictionHeadTransform(self.config)
        self.mlm_bias = nn.Parameter(torch.zeros(vocab_size))
        # transformers' `_init_weights` is a PreTrainedModel method needing the whole model; this is its BERT rule.
        self.apply(lambda module: _init_bert_weights(module, initializer_range))
        if pretrained is not None:
            self._copy_pretrained(pretrained)

    # --------------------------------------------------------------------------------------------- encoding
    def forward(self, batch: dict[str, Tensor], output_hidden_states: bool = False) -> dict[str, Tensor]:
        """Same as `encode_text`."""
        return self.encode_text(batch, output_hidden_states=output_hidden_states)

    def encode_text(self, batch: dict[str, Tensor], output_hidden_states: bool = False) -> dict[str, Tensor]:
        """Text-only path: every layer with the hierarchical mask, the upper ones without cross-attention.

        Returns "tokens" (last layer), "lower_tokens" (after the lower layers: the input of `fuse`),
        "attention_mask" (the hierarchical (B, L, L) mask: pass it to `fuse` as text_mask), "token_mask",
        "report", "sentences", "sentence_mask", "words", "word_mask" and, if `output_hidden_states`,
        "hidden_states" = (embeddings, layer 1, ..., layer num_layers).
        """
        self._check_batch(batch)
        device = self.embeddings.word_embeddings.weight.device
        batch = {key: batch[key].to(device) for key in _REQUIRED_KEYS}
        token_mask = batch["attention_mask"].bool()  # (B, L)
        allowed = tribert_attention_mask(token_mask, batch["sentence_index"], self._sentence_token_mask(batch))
        hidden = self.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])  # (B, L, C)
        additive = additive_attention_mask(allowed, hidden.dtype)  # (B, 1, L, L)

        states = [hidden]
        for layer in self.layers[: self.num_lower_layers]:
            hidden = layer(hidden, attention_mask=additive)
            states.append(hidden)
        lower_tokens = hidden
        for layer in self.layers[self.num_lower_layers :]:
            hidden = layer(hidden, attention_mask=additive)  # no encoder_hidden_states: cross-attention skipped
            states.append(hidden)

        sentence_mask = batch["sentence_mask"].bool()
        word_mask = batch["word_mask"].bool()
        out = {
            "tokens": hidden,
            "lower_tokens": lower_tokens,
            "attention_mask": allowed,
            "token_mask": token_mask,
            "report": hidden[:, 0],
            "sentences": pool_by_group(hidden, batch["sentence_index"], sentence_mask.shape[1], mean=True),
            "sentence_mask": sentence_mask,
            "words": pool_by_group(hidden, batch["word_index"], word_mask.shape[1], mean=False),
            "word_mask": word_mask,
        }
        if output_hidden_states:
            out["hidden_states"] = tuple(states)
        return out

    def fuse(
        self,
        text_tokens: Tensor,
        text_mask: Tensor,
        vision_tokens: Tensor,
        vision_mask: Tensor | None = None,
    ) -> Tensor:
        """Multimodal path: run only the upper layers (self-attention, cross-attention to vision, feed-forward).

        Args:
            text_tokens: `encode_text(...)["lower_tokens"]` (or any states after the lower layers).
            text_mask: `encode_text(...)["attention_mask"]` (B, L, L) to keep the hierarchical mask, or a (B, L)
                bool padding mask for plain attention among valid tokens.
            vision_tokens: vision features (projected to hidden_size when vision_dim differs).
            vision_mask: True for valid vision tokens; None = all valid.

        Raises:
            ValueError: no cross-attention layers; wrong shapes or dtypes; a sample without any valid text or
                vision token.
        """
        if self.num_cross_attention_layers == 0:
            raise ValueError("this TriBERT has num_cross_attention_layers=0; build it with >= 1 to use fuse")
        batch, length = self._check_fuse_inputs(text_tokens, text_mask, vision_tokens, vision_mask)
        context = self.vision_projection(vision_tokens)  # (B, M, vision_dim) -> (B, M, C)
        self_mask = additive_attention_mask(text_mask, text_tokens.dtype)  # (B, 1, L or 1, L)
        cross_mask = None
        if vision_mask is not None:
            cross_mask = additive_attention_mask(vision_mask, text_tokens.dtype)  # (B, 1, 1, M)
        hidden = text_tokens
        for layer in self.layers[self.num_lower_layers :]:
            hidden = layer(
                hidden, attention_mask=self_mask, encoder_hidden_states=context, encoder_attention_mask=cross_mask
            )
        return hidden

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """Masked-language-modelling logits: transform (dense, activation, LayerNorm), then the tied decoder.

        Shapes:
            hidden: (B, L, C) -> (B, L, vocab_size)
        """
        if hidden.dim() != 3 or hidden.shape[-1] != self.hidden_size:
            raise ValueError(f"hidden must have shape (B, L, {self.hidden_size}), got {tuple(hidden.shape)}")
        return F.linear(self.mlm_transform(hidden), self.embeddings.word_embeddings.weight, self.mlm_bias)

    # ------------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _sentence_token_mask(batch: dict[str, Tensor]) -> Tensor:
        """(B, L) bool, True at the sentence tokens named by `sentence_token_positions` / `sentence_mask`."""
        token_mask = batch["attention_mask"]
        is_sentence = torch.zeros(token_mask.shape, dtype=torch.bool, device=token_mask.device)
        return is_sentence.scatter(1, batch["sentence_token_positions"], batch["sentence_mask"].bool())

    def _check_batch(self, batch: dict[str, Tensor]) -> None:
        missing = [key for key in _REQUIRED_KEYS if key not in batch]
        if missing:
            raise ValueError(f"TriBERT batch is missing {missing}; build it with ReportBatchEncoder")
        if batch["input_ids"].dim() != 2:
            raise ValueError(f"input_ids must be (B, L), got shape {tuple(batch['input_ids'].shape)}")
        b, length = batch["input_ids"].shape
        for key in ("token_type_ids", "attention_mask", "sentence_index", "word_index"):
            if tuple(batch[key].shape) != (b, length):
                raise ValueError(f"{key} must have shape (B, L) = ({b}, {length}), got {tuple(batch[key].shape)}")
        for key in ("sentence_token_positions", "sentence_mask", "word_mask"):
            if batch[key].dim() != 2 or batch[key].shape[0] != b:
                raise ValueError(f"{key} must have shape (B, *) with B = {b}, got {tuple(batch[key].shape)}")
        if batch["sentence_token_positions"].shape != batch["sentence_mask"].shape:
            raise ValueError("sentence_token_positions and sentence_mask must have the same (B, S) shape")
        if length > self.config.max_position_embeddings:
            raise ValueError(
                f"sequences have {length} tokens but max_position_embeddings={self.config.max_position_embeddings}; "
                "build ReportBatchEncoder with a max_length no larger"
            )
        ids, types = batch["input_ids"], batch["token_type_ids"]
        if bool(((ids < 0) | (ids >= self.vocab_size)).any()):
            raise ValueError(f"input_ids must lie in [0, vocab_size={self.vocab_size}); the tokenizer does not match")
        if bool(((types < 0) | (types > self.max_sentences)).any()):
            raise ValueError(
                f"token_type_ids (sentence numbers) must lie in [0, max_sentences={self.max_sentences}]; "
                "build ReportBatchEncoder with a max_sentences no larger"
            )
        empty = (~batch["attention_mask"].bool().any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"samples {empty} have no valid token; drop them from the batch")
        positions = batch["sentence_token_positions"]
        if bool(((positions < 0) | (positions >= length)).any()):
            raise ValueError(f"sentence_token_positions must lie in [0, L={length})")
        for key, size in (("sentence_index", batch["sentence_mask"].shape[1]), ("word_index", batch["word_mask"].shape[1])):
            index = batch[key]
            if bool(((index < -1) | (index >= size)).any()):
                raise ValueError(f"{key} must lie in [-1, {size}) to match its mask")

    def _check_fuse_inputs(
        self, text_tokens: Tensor, text_mask: Tensor, vision_tokens: Tensor, vision_mask: Tensor | None
    ) -> tuple[int, int]:
        if text_tokens.dim() != 3 or text_tokens.shape[-1] != self.hidden_size:
            raise ValueError(f"text_tokens must have shape (B, L, {self.hidden_size}), got {tuple(text_tokens.shape)}")
        batch, length, _ = text_tokens.shape
        if vision_tokens.dim() != 3 or vision_tokens.shape[0] != batch or vision_tokens.shape[-1] != self.vision_dim:
            raise ValueError(
                f"vision_tokens must have shape (B={batch}, M, vision_dim={self.vision_dim}), got {tuple(vision_tokens.shape)}"
            )
        if text_mask.dtype != torch.bool or tuple(text_mask.shape) not in ((batch, length), (batch, length, length)):
            raise ValueError(
                f"text_mask must be a bool tensor of shape (B, L) = ({batch}, {length}) or (B, L, L) (encode_text's "
                f"'attention_mask'), got {tuple(text_mask.shape)} {text_mask.dtype}"
            )
        if text_mask.dim() == 2:
            empty = (~text_mask.any(dim=1)).nonzero().flatten().tolist()
            if empty:
                raise ValueError(f"samples {empty} have no valid text token in text_mask; drop them from the batch")
        if vision_mask is not None:
            if vision_mask.dtype != torch.bool or tuple(vision_mask.shape) != tuple(vision_tokens.shape[:2]):
                raise ValueError(
                    f"vision_mask must be a bool tensor of shape (B, M) = {tuple(vision_tokens.shape[:2])} "
                    f"(True = valid), got {tuple(vision_mask.shape)} {vision_mask.dtype}"
                )
            empty = (~vision_mask.any(dim=1)).nonzero().flatten().tolist()
            if empty:
                raise ValueError(f"samples {empty} have no valid vision token in vision_mask; drop them or add one")
        return batch, length

    @torch.no_grad()
    def _copy_pretrained(self, source: BertModel) -> None:
        """Copy embeddings and the first num_layers layers from a loaded BertModel (see the class docstring)."""
        src, dst = source.embeddings, self.embeddings
        dst.word_embeddings.weight[: src.word_embeddings.num_embeddings].copy_(src.word_embeddings.weight)
        dst.position_embeddings.weight.copy_(src.position_embeddings.weight[: dst.position_embeddings.num_embeddings])
        dst.token_type_embeddings.weight.copy_(src.token_type_embeddings.weight[0].expand_as(dst.token_type_embeddings.weight))
        dst.LayerNorm.load_state_dict(src.LayerNorm.state_dict())
        for index, layer in enumerate(self.layers):
            result = layer.load_state_dict(source.encoder.layer[index].state_dict(), strict=False)
            unexpected_missing = [key for key in result.missing_keys if not key.startswith("crossattention.")]
            if unexpected_missing or result.unexpected_keys:
                raise ValueError(
                    f"layer {index} of the checkpoint does not fit a BERT layer: missing {unexpected_missing}, "
                    f"unexpected {result.unexpected_keys}"
                )


def pool_by_group(hidden: Tensor, index: Tensor, size: int, *, mean: bool) -> Tensor:
    """Sum (or average) token states into `size` groups given each token's group (-1 = none).

    Shapes:
        hidden: (B, L, C), index: (B, L) long in [-1, size) -> (B, size, C); empty groups are 0.
    """
    batch, _, channels = hidden.shape
    slot = torch.where(index < 0, torch.full_like(index, size), index)  # (B, L): -1 -> a discard slot `size`
    scatter_index = slot[:, :, None].expand(-1, -1, channels)  # (B, L) -> (B, L, C)
    sums = hidden.new_zeros(batch, size + 1, channels).scatter_add(1, scatter_index, hidden)[:, :size]  # (B, size, C)
    if not mean:
        return sums
    counts = hidden.new_zeros(batch, size + 1).scatter_add(1, slot, torch.ones_like(slot, dtype=hidden.dtype))
    return sums / counts[:, :size, None].clamp(min=1)  # (B, size, C) / (B, size, 1)


def _init_bert_weights(module: nn.Module, std: float) -> None:
    """BERT initialisation: N(0, std) for Linear / Embedding weights, zero biases and padding rows, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _load_pretrained_bert(path: Path) -> BertModel:
    """Load a BertModel saved with `save_pretrained`, with clear errors for a missing or incompatible folder."""
    if not path.is_dir():
        raise ValueError(
            f"pretrained_dir {path} is not a folder; give a folder written by BertModel.save_pretrained "
            "(config.json + model.safetensors)"
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"pretrained_dir {path} has no config.json; it must be a BertModel.save_pretrained folder")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise ValueError(f"{config_file} is not a valid JSON config: {error}") from error
    if model_type != "bert":
        raise ValueError(
            f"{config_file} describes model_type {model_type!r}; TriBERT initialises only from BERT checkpoints "
            "(model_type 'bert', e.g. all-MiniLM-L6-v2)"
        )
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        raise ValueError(f"pretrained_dir {path} holds no weights file (expected one of {list(_WEIGHT_FILES)})")
    try:
        model, info = BertModel.from_pretrained(
            path, local_files_only=True, add_pooling_layer=False, output_loading_info=True
        )
    except Exception as error:  # torch, safetensors and transformers each raise their own types for bad files
        raise ValueError(f"could not load BERT weights from {path}: {error}") from error
    missing = [key for key in info.get("missing_keys", []) if not key.startswith("pooler.")]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        raise ValueError(
            f"the weights in {path} do not fit its config.json: missing {sorted(missing)[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, mismatched {list(mismatched)[:5]}"
        )
    return model


def _check_matches_checkpoint(pretrained_dir: str | Path, **pairs: tuple[int, int]) -> None:
    wrong = {name: (given, expected) for name, (given, expected) in pairs.items() if given != expected}
    if wrong:
        details = ", ".join(f"{name}={given} (checkpoint: {expected})" for name, (given, expected) in wrong.items())
        fix = ", ".join(f"{name}={expected}" for name, (_, expected) in wrong.items())
        raise ValueError(f"TriBERT arguments do not match the checkpoint in {pretrained_dir}: {details}; set {fix}")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
