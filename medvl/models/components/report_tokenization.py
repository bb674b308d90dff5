"""Turn a batch of reports (each a list of sentences) into TriBERT inputs: one global [CLS], then per sentence
a sentence token followed by the sentence's WordPiece pieces, with sentence and whole-word bookkeeping.

    [CLS] [SENT] w1 w2 ... [SENT] w1 w2 ... [PAD] ...
      0     1    1  1        2    2  2        0        <- token_type_ids (sentence number, 0 = global / pad)
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import Tensor

__all__ = ["ReportBatchEncoder"]


class ReportBatchEncoder:
    """Tokenise reports given as lists of sentences into padded TriBERT batches.

    Sequence layout per report: [CLS], then for each kept sentence s (1-based number n = s + 1):
    the sentence token ([SENT], type id n) followed by the sentence's WordPiece pieces (type id n).
    Whole words come from the tokenizer's `word_ids` (its pre-tokenizer's words: for BERT-style
    tokenizers, runs of letters / digits and single punctuation marks), so all pieces of one word share
    one `word_index`. Words are numbered 0..W-1 across the whole report.

    Truncation, in this order (a `UserWarning` is issued once per encoder the first time it happens):
      1. more than `max_sentences` sentences: the trailing ones are dropped;
      2. `max_words_per_sentence` (if set): each sentence keeps its first that many whole words;
      3. longer than `max_length` tokens: whole trailing sentences are dropped until it fits; only when
         the first sentence alone does not fit are its trailing words cut (whole words; pieces of a single
         word longer than the whole budget are cut as a last resort).

    Args:
        tokenizer: a `tokenizers.Tokenizer` or a transformers fast tokenizer (e.g. from
            `common.text.tokenizer.load_tokenizer`); it must know `cls_token`, `sentence_token`,
            `pad_token` and `mask_token`. Its own truncation / padding settings are ignored.
        max_length: maximum tokens per report including [CLS] (>= 3; TriBERT's position table size).
        max_sentences: maximum sentences per report (the model's token type table has max_sentences + 1 rows).
        max_words_per_sentence: optional cap on whole words per sentence (None = no cap).
        cls_token, sentence_token, pad_token, mask_token: the special token strings.

    Shapes (returned by `__call__`; L = longest kept sequence, S = most kept sentences, W = most kept words):
        input_ids (B, L) long; token_type_ids (B, L) long (0 for [CLS] / pad, n = s + 1 for sentence s);
        attention_mask (B, L) bool (True = real token); special_tokens_mask (B, L) bool (True at [CLS],
        sentence tokens and padding: never masked for MLM); sentence_index (B, L) long (s for the sentence
        token and pieces of sentence s, -1 for [CLS] / pad); sentence_token_positions (B, S) long (position of
        each sentence token, 0 for padded sentences); sentence_mask (B, S) bool; word_index (B, L) long
        (0..W-1, -1 for special tokens / pad); word_mask (B, W) bool; word_sentence (B, W) long (sentence of
        each word, -1 for padded words).

    Raises:
        ValueError: bad constructor arguments or a tokenizer lacking a special token; a report that is not a
            list of strings, an empty report, or an empty sentence (the message names the batch position).
    """

    def __init__(
        self,
        tokenizer: Any,
        max_length: int = 512,
        max_sentences: int = 50,
        max_words_per_sentence: int | None = None,
        *,
        cls_token: str = "[CLS]",
        sentence_token: str = "[SENT]",
        pad_token: str = "[PAD]",
        mask_token: str = "[MASK]",
    ) -> None:
        _check_int("max_length", max_length, minimum=3, hint="room for [CLS], one sentence token and one piece")
        _check_int("max_sentences", max_sentences, minimum=1, hint="TriBERT's default is 50")
        if max_words_per_sentence is not None:
            _check_int("max_words_per_sentence", max_words_per_sentence, minimum=1, hint="or None for no cap")
        self.max_length = max_length
        self.max_sentences = max_sentences
        self.max_words_per_sentence = max_words_per_sentence
        self._tokenizer = _plain_backend(tokenizer)

        ids = {}
        for role, token in (("cls", cls_token), ("sentence", sentence_token), ("pad", pad_token), ("mask", mask_token)):
            token_id = self._tokenizer.token_to_id(token)
            if token_id is None:
                raise ValueError(
                    f"the tokenizer has no {role} token {token!r}; train it with "
                    "common.text.tokenizer.train_wordpiece_tokenizer (which adds [SENT]) or add the token with "
                    f"tokenizer.add_special_tokens([{token!r}])"
                )
            ids[role] = token_id
        self.cls_token_id: int = ids["cls"]
        self.sentence_token_id: int = ids["sentence"]
        self.pad_token_id: int = ids["pad"]
        self.mask_token_id: int = ids["mask"]
        self.vocab_size: int = self._tokenizer.get_vocab_size(with_added_tokens=True)
        special_ids = {i for i, added in self._tokenizer.get_added_tokens_decoder().items() if added.special}
        special_ids |= set(ids.values())
        # The pool for MLM's 10% random replacements (`mask_tokens(random_token_ids=...)`): never a special token.
        self.non_special_token_ids: Tensor = torch.tensor(
            [i for i in range(self.vocab_size) if i not in special_ids], dtype=torch.long
        )
        self._warned: set[str] = set()

    def __call__(self, reports: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        """Encode a batch of reports; see the class docstring for the returned keys and shapes."""
        if isinstance(reports, str) or not isinstance(reports, Sequence) or len(reports) == 0:
            raise ValueError(
                "reports must be a non-empty list of reports, each a list of sentences "
                "(split a text with common.text.sentences.split_sentences)"
            )
        kept_reports = []
        for position, report in enumerate(reports):  # a loop, not a comprehension: warnings point at the caller
            kept_reports.append(self._check_report(position, report))

        # Tokenise every sentence of the batch in one call (the Rust tokenizer parallelises it).
        flat = [sentence for report in kept_reports for sentence in report]
        encodings = self._tokenizer.encode_batch(flat, add_special_tokens=False)
        samples: list[list[tuple[list[int], list[int]]]] = []
        cursor = 0
        for position, report in enumerate(kept_reports):
            sentences = []
            for sentence_number in range(len(report)):
                encoding = encodings[cursor]
                cursor += 1
                if len(encoding.ids) == 0:
                    raise ValueError(
                        f"report at batch position {position}: sentence {sentence_number} "
                        f"({report[sentence_number]!r}) gives no tokens; remove it"
                    )
                sentences.append(self._cap_words(list(encoding.ids), _whole_word_numbers(encoding.word_ids)))
            samples.append(self._fit_length(sentences))
        return self._pad(samples)

    # ------------------------------------------------------------------------------------------------ checks
    def _check_report(self, position: int, report: Any) -> list[str]:
        if isinstance(report, str) or not isinstance(report, Sequence):
            raise ValueError(
                f"report at batch position {position} must be a list of sentences, got {type(report).__name__}; "
                "split the text with common.text.sentences.split_sentences first"
            )
        if len(report) == 0:
            raise ValueError(f"report at batch position {position} has no sentences; drop it from the batch")
        for index, sentence in enumerate(report):
            if not isinstance(sentence, str):
                raise ValueError(
                    f"report at batch position {position}: sentence {index} must be a str, got {type(sentence).__name__}"
                )
            if not sentence.strip():
                raise ValueError(f"report at batch position {position}: sentence {index} is empty; remove it")
        if len(report) > self.max_sentences:
            self._warn_once(
                "sentences",
                f"a report has {len(report)} sentences; keeping the first max_sentences={self.max_sentences}",
            )
            return list(report[: self.max_sentences])
        return list(report)

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(f"ReportBatchEncoder: {message} (warned once per encoder)", UserWarning, stacklevel=4)

    # ------------------------------------------------------------------------------------------- truncation
    def _cap_words(self, ids: list[int], word_ids: list[int]) -> tuple[list[int], list[int]]:
        """Keep the first `max_words_per_sentence` whole words of one sentence."""
        cap = self.max_words_per_sentence
        if cap is None or word_ids[-1] < cap:  # word ids are 0-based and ascending within a sentence
            return ids, word_ids
        self._warn_once("words", f"a sentence has more than max_words_per_sentence={cap} words; cutting it")
        keep = sum(1 for w in word_ids if w < cap)
        return ids[:keep], word_ids[:keep]

    def _fit_length(self, sentences: list[tuple[list[int], list[int]]]) -> list[tuple[list[int], list[int]]]:
        """Drop whole trailing sentences (or, for a too-long first sentence, its trailing words) to fit max_length."""
        budget = self.max_length - 1  # [CLS]
        kept: list[tuple[list[int], list[int]]] = []
        for ids, word_ids in sentences:
            cost = 1 + len(ids)  # sentence token + pieces
            if cost <= budget:
                kept.append((ids, word_ids))
                budget -= cost
                continue
            if not kept:  # the first sentence alone is too long: cut its words
                room = budget - 1
                keep = room
                if word_ids[room] == word_ids[room - 1]:  # the cut falls inside a word: drop that whole word
                    first_of_word = word_ids.index(word_ids[room - 1])
                    keep = first_of_word if first_of_word > 0 else room  # one word longer than the budget
                kept.append((ids[:keep], word_ids[:keep]))
            self._warn_once(
                "length",
                f"a report is longer than max_length={self.max_length} tokens; trailing sentences are dropped "
                "(a first sentence that alone is too long loses its trailing words)",
            )
            break
        return kept

    # ---------------------------------------------------------------------------------------------- padding
    def _pad(self, samples: list[list[tuple[list[int], list[int]]]]) -> dict[str, Tensor]:
        batch = len(samples)
        length = max(1 + sum(1 + len(ids) for ids, _ in sample) for sample in samples)
        num_sentences = max(len(sample) for sample in samples)
        num_words = max(sum(word_ids[-1] + 1 for _, word_ids in sample) for sample in samples)

        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros((batch, length), dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.bool)
        special_tokens_mask = torch.ones((batch, length), dtype=torch.bool)
        sentence_index = torch.full((batch, length), -1, dtype=torch.long)
        word_index = torch.full((batch, length), -1, dtype=torch.long)
        sentence_token_positions = torch.zeros((batch, num_sentences), dtype=torch.long)
        sentence_mask = torch.zeros((batch, num_sentences), dtype=torch.bool)
        word_mask = torch.zeros((batch, num_words), dtype=torch.bool)
        word_sentence = torch.full((batch, num_words), -1, dtype=torch.long)

        for b, sample in enumerate(samples):
            input_ids[b, 0] = self.cls_token_id
            attention_mask[b, 0] = True
            position = 1
            first_word = 0
            for s, (ids, word_ids) in enumerate(sample):
                n = len(ids)
                sentence_token_positions[b, s] = position
                sentence_mask[b, s] = True
                span = slice(position, position + 1 + n)  # the sentence token and its pieces
                input_ids[b, position] = self.sentence_token_id
                input_ids[b, position + 1 : position + 1 + n] = torch.tensor(ids, dtype=torch.long)
                token_type_ids[b, span] = s + 1
                attention_mask[b, span] = True
                sentence_index[b, span] = s
                special_tokens_mask[b, position + 1 : position + 1 + n] = False
                word_index[b, position + 1 : position + 1 + n] = first_word + torch.tensor(word_ids, dtype=torch.long)
                words_here = word_ids[-1] + 1
                word_mask[b, first_word : first_word + words_here] = True
                word_sentence[b, first_word : first_word + words_here] = s
                first_word += words_here
                position += 1 + n

        return {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
            "special_tokens_mask": special_tokens_mask,
            "sentence_index": sentence_index,
            "sentence_token_positions": sentence_token_positions,
            "sentence_mask": sentence_mask,
            "word_index": word_index,
            "word_mask": word_mask,
            "word_sentence": word_sentence,
        }


def _whole_word_numbers(word_ids: Sequence[int | None]) -> list[int]:
    """Renumber a sentence's word ids 0, 1, ... in order; a piece without a word id (an added token typed
    inside the text) is a word of its own."""
    numbers: list[int] = []
    previous: int | None = None
    for word_id in word_ids:
        if not numbers:
            numbers.append(0)
        elif word_id is None or word_id != previous:
            numbers.append(numbers[-1] + 1)
        else:
            numbers.append(numbers[-1])
        previous = word_id
    return numbers


def _plain_backend(tokenizer: Any) -> Tokenizer:
    """A private `tokenizers.Tokenizer` copy with truncation and padding switched off.

    Accepts a `tokenizers.Tokenizer` or a transformers fast tokenizer (its `backend_tokenizer`); the copy keeps
    the caller's object untouched while guaranteeing unpadded, untruncated per-sentence encodings.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not isinstance(backend, Tokenizer):
        raise ValueError(
            f"tokenizer must be a tokenizers.Tokenizer or a transformers fast tokenizer, got {type(tokenizer).__name__}; "
            "load one with common.text.tokenizer.load_tokenizer"
        )
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _check_int(name: str, value: Any, *, minimum: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} ({hint}), got {value!r}")
