"""K-fold comparison of report labelers against the TF-IDF + logistic-regression yardstick, on one report table.

    python -m medvl.evaluation.report_labeler_cv ../shared/data/reports/ct_rate_reports_train.csv \\
        --folds 5 --variants tfidf tiny_random minilm_frozen --out outputs/report_labeler_cv.json

Variants (each scored on the same folds, per-finding AUROC averaged over folds):

* ``tfidf``: TF-IDF of word 1-2 grams (sublinear tf, min_df 2) + one L2 logistic regression per finding
  (scikit-learn; C = 10), the baseline every labeler number is printed beside;
* ``tiny_random``: the labeler (`ReportLabelerModule`, sentence-evidence head) with a small random-init TriBERT and
  a WordPiece vocabulary trained on the fold's training reports, fully fine-tuned;
* ``minilm_frozen``: the labeler from the all-MiniLM-L6-v2 start with the encoder frozen (`FrozenEncoder`) and the
  sentence-evidence head trained. A frozen encoder in eval mode gives the same outputs every epoch, so its outputs
  are computed once per report and the head is trained on them: the same model as ``model/finetuning=frozen``,
  without re-running six frozen layers every epoch;
* ``minilm_full``: the labeler from the MiniLM start, fully fine-tuned (slow on a CPU: hours for 5 folds).

Within each training fold 20% is held out for early stopping (best epoch by validation AUROC). Prints a table
(finding x variant) and the mean, and writes it as JSON.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvl.data.report_label_datamodule import report_sentences
from medvl.data.report_table import read_report_table
from medvl.models.report_labeler import ReportLabelerModule, finding_metrics

__all__ = ["main", "tfidf_scores"]

VARIANTS = ("tfidf", "tiny_random", "minilm_frozen", "minilm_full")


def tfidf_scores(train_texts: list[str], train_labels: np.ndarray, test_texts: list[str]) -> np.ndarray:
    """TF-IDF (1-2 grams) + per-finding logistic regression; (N_test, K) probabilities (0.5 for a constant label)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    train_x, test_x = vectorizer.fit_transform(train_texts), vectorizer.transform(test_texts)
    out = np.full((len(test_texts), train_labels.shape[1]), 0.5)
    for k in range(train_labels.shape[1]):
        known = ~np.isnan(train_labels[:, k])
        y = train_labels[known, k]
        if 0 < y.sum() < len(y):
            out[:, k] = LogisticRegression(C=10.0, max_iter=2000).fit(train_x[known], y).predict_proba(test_x)[:, 1]
    return out


def _split_validation(indices: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(indices)
    held = max(1, round(0.2 * len(order)))
    return order[held:], order[:held]


def _train_head_on_features(features: list[dict[str, torch.Tensor]], labels: np.ndarray, train: np.ndarray,
                            val: np.ndarray, test: np.ndarray, hidden: int, epochs: int, seed: int) -> np.ndarray:
    """Sentence-evidence head trained on cached frozen-encoder outputs; test probabilities at the best val epoch."""
    from medvl.models.components.finding_heads import SentenceEvidenceHead

    torch.manual_seed(seed)
    head = SentenceEvidenceHead(hidden, labels.shape[1], dropout=0.1)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    y = torch.tensor(labels, dtype=torch.float32)

    def batch(ids: np.ndarray) -> dict[str, torch.Tensor]:
        longest = max(features[i]["sentences"].shape[0] for i in ids)
        sentences = torch.zeros(len(ids), longest, hidden)
        mask = torch.zeros(len(ids), longest, dtype=torch.bool)
        for row, i in enumerate(ids):
            s = features[i]["sentences"]
            sentences[row, : s.shape[0]], mask[row, : s.shape[0]] = s, True
        return {"sentences": sentences, "sentence_mask": mask}

    def predict(ids: np.ndarray) -> np.ndarray:
        head.eval()
        with torch.no_grad():
            return torch.sigmoid(head(batch(ids))["logits"]).numpy()

    rng = np.random.default_rng(seed)
    best, best_state = -1.0, None
    for _ in range(epochs):
        head.train()
        for chunk in np.array_split(rng.permutation(train), max(1, len(train) // 16)):
            loss = ReportLabelerModule.masked_bce(head(batch(chunk))["logits"], y[chunk])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        score = finding_metrics(predict(val), labels[val], [str(k) for k in range(labels.shape[1])])["auroc_mean"]
        if score > best:
            best, best_state = score, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return predict(test)


def _encode_frozen(model: ReportLabelerModule, sentences: list[list[str]], batch_size: int = 8) -> list[dict]:
    """Per report: its (S, C) sentence vectors from the frozen encoder (eval mode, no gradient)."""
    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            chunk = sentences[start:start + batch_size]
            encoded = model.text_encoder.encode_text(model.report_batcher(chunk))
            for row in range(len(chunk)):
                count = int(encoded["sentence_mask"][row].sum())
                out.append({"sentences": encoded["sentences"][row, :count].clone()})
    return out


def _fit_labeler(variant: str, sentences: list[list[str]], labels: np.ndarray, names: list[str], train: np.ndarray,
                 val: np.ndarray, test: np.ndarray, epochs: int, seed: int, minilm_dir: str | None) -> np.ndarray:
    """Fine-tune `ReportLabelerModule` with Lightning on the fold; test probabilities from the best val epoch."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from common.text.tokenizer import load_tokenizer, tokenizer_to_json, train_wordpiece_tokenizer
    from medvl.data.report_label_datamodule import collate_reports

    L.seed_everything(seed, workers=True)
    if variant == "tiny_random":
        tokenizer = train_wordpiece_tokenizer([s for i in train for s in sentences[i]], vocab_size=4000)
        kwargs = {"text_encoder": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 256},
                  "lr": 1e-3, "encoder_lr": 1e-3, "max_length": 256}
    else:
        tokenizer = load_tokenizer(minilm_dir)
        kwargs = {"text_encoder": {"hidden_size": 384, "num_layers": 6, "num_heads": 12, "intermediate_size": 1536,
                                   "pretrained_dir": minilm_dir}, "lr": 1e-3, "encoder_lr": 3e-5}
    model = ReportLabelerModule(tokenizer_json=tokenizer_to_json(tokenizer), label_names=names, **kwargs)
    items = [(sentences[i], torch.tensor(labels[i], dtype=torch.float32)) for i in range(len(sentences))]
    loader = lambda ids, shuffle: torch.utils.data.DataLoader(  # noqa: E731
        [items[i] for i in ids], batch_size=16, shuffle=shuffle, collate_fn=collate_reports)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = ModelCheckpoint(dirpath=folder, monitor="val/auroc_mean", mode="max", save_top_k=1)
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, callbacks=[checkpoint],
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(model, loader(train, True), loader(val, False))
        best = ReportLabelerModule(**torch.load(checkpoint.best_model_path, weights_only=True)["hyper_parameters"])
        best.load_state_dict(torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"])
    best.eval()
    return np.concatenate([best.predict_probabilities([sentences[i] for i in chunk]).numpy()
                           for chunk in np.array_split(test, max(1, len(test) // 16))])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m medvl.evaluation.report_labeler_cv", description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", help="report table with finding columns (CSV / JSONL / .txt folder)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=["tfidf", "tiny_random", "minilm_frozen"], choices=VARIANTS)
    parser.add_argument("--epochs", type=int, default=8, help="labeler epochs per fold (best by validation AUROC)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minilm-dir", default="data/text_encoders/all-MiniLM-L6-v2",
                        help="prepared MiniLM folder (made from the installed package if missing)")
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)

    from sklearn.model_selection import KFold

    table = read_report_table(args.reports, require_labels=True)
    names = list(table.label_names)
    texts = [row.text for row in table.rows]
    sentences = [report_sentences(row.text, row.source) for row in table.rows]
    labels = np.array([[row.labels[n] for n in names] for row in table.rows], dtype=np.float64)
    minilm_dir = None
    if any(v.startswith("minilm") for v in args.variants):
        from medvl.models.prepare_text_encoder import prepare_text_encoder

        minilm_dir = args.minilm_dir
        if not (Path(minilm_dir) / "config.json").is_file():
            prepare_text_encoder(minilm_dir)

    folds = list(KFold(args.folds, shuffle=True, random_state=args.seed).split(texts))
    frozen_features = None
    results: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for variant in args.variants:
        started = time.perf_counter()
        per_fold = []
        for fold, (train_all, test) in enumerate(folds):
            if variant == "tfidf":
                scores = tfidf_scores([texts[i] for i in train_all], labels[train_all], [texts[i] for i in test])
            else:
                train, val = _split_validation(train_all, args.seed + fold)
                if variant == "minilm_frozen":
                    if frozen_features is None:
                        from common.text.tokenizer import load_tokenizer, tokenizer_to_json

                        encoder = ReportLabelerModule(
                            tokenizer_json=tokenizer_to_json(load_tokenizer(minilm_dir)), label_names=names,
                            finetuning={"_target_": "common.finetuning.FrozenEncoder"},
                            text_encoder={"hidden_size": 384, "num_layers": 6, "num_heads": 12,
                                          "intermediate_size": 1536, "pretrained_dir": minilm_dir})
                        frozen_features = _encode_frozen(encoder, sentences)
                    scores = _train_head_on_features(frozen_features, labels, train, val, test, 384,
                                                     epochs=max(args.epochs, 40), seed=args.seed + fold)
                else:
                    scores = _fit_labeler(variant, sentences, labels, names, train, val, test, args.epochs,
                                          args.seed + fold, minilm_dir)
            per_fold.append(finding_metrics(scores, labels[test], names))
            print(f"{variant} fold {fold + 1}/{args.folds}: mean AUROC {per_fold[-1]['auroc_mean']:.3f}", flush=True)
        results[variant] = {name: float(np.nanmean([m[f"auroc/{name}"] for m in per_fold])) for name in names}
        results[variant]["mean"] = float(np.mean([results[variant][n] for n in names]))
        seconds[variant] = time.perf_counter() - started

    width = max(len(n) for n in names) + 2
    print("\nAUROC, mean over folds" + "".join(f"{v:>15}" for v in args.variants))
    for name in [*names, "mean"]:
        print(f"{name:<{width}}" + "".join(f"{results[v][name]:>15.3f}" for v in args.variants))
    print(f"{'seconds':<{width}}" + "".join(f"{seconds[v]:>15.0f}" for v in args.variants))
    report = {"reports": str(args.reports), "folds": args.folds, "seed": args.seed, "auroc": results,
              "seconds": seconds, "n": len(texts)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
