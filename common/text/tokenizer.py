"""WordPiece tokenizer training, saving and loading (BERT-style, offline).

The vocabulary is learnt with the `tokenizers` library (BERT normaliser, BERT pre-tokeniser, WordPiece
trainer), and the BERT pipeline around it (WordPiece decoder, "[CLS] $A [SEP]" template) is wrapped in
`transformers.BertTokenizerFast` (a `PreTrainedTokenizerFast`; in transformers 5 the same class as
`BertTokenizer`): padding, `word_ids()`, `save_pretrained` / `from_pretrained` behave as for any BERT
checkpoint, offline.

Determinism: the tokenizers trainer numbers the "##c" continuation pieces in the order it meets them while
iterating a hash map, which changes between processes, and merge ties are broken by those numbers, so two
runs on one corpus can give different vocabularies. Registering every "##c" of the corpus alphabet, sorted,
as an initial token fixes their numbers and makes training reproducible.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import WordPiece
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast

__all__ = ["load_tokenizer", "save_tokenizer", "train_wordpiece_tokenizer"]

logger = logging.getLogger(__name__)

_CONTINUATION_PREFIX = "##"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def train_wordpiece_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = True,
    special_tokens: tuple[str, str, str, str, str] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
    extra_special_tokens: tuple[str, ...] = ("[SENT]",),
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Learn a WordPiece vocabulary on `texts` and return a BERT-style fast tokenizer.

    Ids: the five special tokens get ids 0-4 in the order given, the extra special tokens the next ids,
    then the corpus characters and the learnt pieces. Same corpus and arguments -> same vocabulary and ids.

    Args:
        texts: the training corpus, one document (e.g. one report) per item; read once into memory.
        vocab_size: the largest vocabulary (a small corpus may give fewer pieces).
        min_frequency: pieces seen fewer times than this are not merged into the vocabulary.
        lowercase: lowercase and strip accents before splitting (uncased BERT).
        special_tokens: the (pad, unk, cls, sep, mask) tokens, in this order.
        extra_special_tokens: more special tokens that are never split (e.g. the per-sentence "[SENT]").
        model_max_length: the longest input in tokens, used by truncation.

    Returns:
        A `transformers.BertTokenizerFast` (a `PreTrainedTokenizerFast`) with pad / unk / cls / sep / mask set.

    Raises:
        ValueError: on an empty corpus, a bad argument, or a `vocab_size` too small for the corpus alphabet.
        TypeError: when an item of `texts` is not a str.
    """
    if len(special_tokens) != 5:
        raise ValueError(f"special_tokens must be (pad, unk, cls, sep, mask), got {len(special_tokens)} tokens")
    all_specials = list(special_tokens) + list(extra_special_tokens)
    if len(set(all_specials)) != len(all_specials) or not all(isinstance(t, str) and t for t in all_specials):
        raise ValueError(f"special tokens must be distinct non-empty strings, got {all_specials}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    if model_max_length < 2:
        raise ValueError(f"model_max_length must be >= 2 (room for [CLS] and [SEP]), got {model_max_length}")

    corpus: list[str] = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is a {type(text).__name__}, expected str")
        if text.strip():
            corpus.append(text)
    if not corpus:
        raise ValueError("cannot train a tokenizer on an empty corpus: give at least one non-empty text")

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    alphabet = sorted({ch for text in corpus for ch in normalizer.normalize_str(text) if not ch.isspace()})
    continuation_pieces = [_CONTINUATION_PREFIX + ch for ch in alphabet]
    smallest = len(all_specials) + 2 * len(alphabet)
    if vocab_size < smallest:
        raise ValueError(
            f"vocab_size={vocab_size} cannot hold the {len(all_specials)} special tokens and the {len(alphabet)} "
            f"characters of the corpus (each alone and as a '##' continuation): use vocab_size >= {smallest}"
        )

    pad, unk, cls, sep, mask = special_tokens
    trainer_backend = Tokenizer(WordPiece(unk_token=unk, continuing_subword_prefix=_CONTINUATION_PREFIX))
    trainer_backend.normalizer = normalizer
    trainer_backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=all_specials + continuation_pieces,  # fixed ids for "##c": see the module docstring
        continuing_subword_prefix=_CONTINUATION_PREFIX,
        show_progress=False,
    )
    trainer_backend.train_from_iterator(corpus, trainer=trainer)
    vocab = trainer_backend.get_vocab(with_added_tokens=False)

    # A fresh pipeline around the learnt vocabulary, so that the "##c" pieces are plain vocabulary entries
    # (the trainer registered them as special tokens, which would match them literally in any text).
    backend = Tokenizer(WordPiece(vocab=vocab, unk_token=unk, continuing_subword_prefix=_CONTINUATION_PREFIX))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix=_CONTINUATION_PREFIX)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    tokenizer = BertTokenizerFast(
        tokenizer_object=backend,
        do_lower_case=lowercase,
        unk_token=unk,
        sep_token=sep,
        pad_token=pad,
        cls_token=cls,
        mask_token=mask,
        # the transformers 4 name; transformers 5 renames it extra_special_tokens on the way in
        additional_special_tokens=list(extra_special_tokens),
        model_max_length=model_max_length,
    )
    logger.info("trained a WordPiece tokenizer: %d tokens from %d texts", len(tokenizer), len(corpus))
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> Path:
    """Save `tokenizer` into `directory` (created if needed) with `save_pretrained`.

    Args:
        tokenizer: a fast tokenizer, e.g. from `train_wordpiece_tokenizer`.
        directory: the output folder.

    Returns:
        The folder, as a Path.

    Raises:
        TypeError: when `tokenizer` is not a `PreTrainedTokenizerFast`.
    """
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise TypeError(f"expected a transformers PreTrainedTokenizerFast, got {type(tokenizer).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by `save_tokenizer` (or any local `save_pretrained` folder), offline.

    Args:
        directory: the folder holding tokenizer.json and tokenizer_config.json.

    Returns:
        The fast tokenizer (a `BertTokenizerFast` for folders written by `save_tokenizer`).

    Raises:
        FileNotFoundError: when the folder or one of its files is missing.
        ValueError: when the files do not load, or the tokenizer lacks a pad, unk, cls, sep or mask token.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"tokenizer folder {directory} does not exist: train one with train_wordpiece_tokenizer and "
            "save it with save_tokenizer"
        )
    missing = [name for name in _TOKENIZER_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"tokenizer folder {directory} is incomplete: missing {', '.join(missing)} "
            "(save it again with save_tokenizer)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"cannot load the tokenizer in {directory}: {error}") from error
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ValueError(f"{directory} holds a slow tokenizer ({type(tokenizer).__name__}); a fast one is needed")
    unset = [name for name in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
             if getattr(tokenizer, name) is None]
    if unset:
        raise ValueError(f"the tokenizer in {directory} has no {', '.join(unset)}: retrain it with "
                         "train_wordpiece_tokenizer")
    return tokenizer


def tokenizer_to_json(tokenizer: PreTrainedTokenizerFast) -> str:
    """The whole tokenizer (vocabulary, normaliser, special tokens) as one JSON string.

    Stored inside checkpoints so a checkpoint alone rebuilds its model (no side folder to lose).
    """
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise TypeError(f"expected a transformers PreTrainedTokenizerFast, got {type(tokenizer).__name__}")
    return tokenizer.backend_tokenizer.to_str()


def tokenizer_from_json(text: str) -> BertTokenizerFast:
    """Rebuild a tokenizer written by :func:`tokenizer_to_json` (as a `BertTokenizerFast`).

    Raises:
        ValueError: when the string is not a tokenizer JSON, or lacks one of the BERT special tokens.
    """
    try:
        backend = Tokenizer.from_str(text)
        lowercase = bool((json.loads(text).get("normalizer") or {}).get("lowercase", True))
    except Exception as error:  # tokenizers raises its own Exception type
        raise ValueError(f"not a tokenizer JSON string: {error}") from error
    vocab = backend.get_vocab(with_added_tokens=True)
    required = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    missing = [token for token in required if token not in vocab]
    if missing:
        raise ValueError(f"the tokenizer JSON lacks the special tokens {missing}")
    extra = [token for token in ("[SENT]",) if token in vocab]
    return BertTokenizerFast(tokenizer_object=backend, do_lower_case=lowercase, unk_token="[UNK]",
                             sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
                             additional_special_tokens=extra)
