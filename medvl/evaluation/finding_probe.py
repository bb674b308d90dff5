"""Supervised finding probe: can a volume encoder learn the findings *with labels* in a given step budget?

An upper bound for pre-training: if a randomly initialised encoder cannot tell the findings apart when trained
directly on the finding labels, a contrastive objective with the same budget cannot either. The probe trains
`VolumeEncoder` + one linear layer (BCE on the multi-hot finding labels) on the TRAIN split and prints the
per-finding AUROC on the VAL split every `--eval-every` steps.

    python -m medvl.evaluation.finding_probe --backbone vit --steps 300
    python -m medvl.evaluation.finding_probe --anatomy-variation 0.2 --num-cases 640 --backbone vit
    python -m medvl.evaluation.finding_probe --anatomy-variation 0.2 --lesion-scale 2 --num-cases 640 --backbone cnn

`--backbone cnn` is a yardstick, not a pre-training backbone: a plain 3D CNN (`ReferenceCNN`) that shows what a
conv net with max pooling learns from the same volumes in the same budget.

All splits are read into memory once (64^3 float32: 1 MiB per volume).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from common.metrics.classification import multilabel_auroc
from medvl.data.datamodule import CTReportDataModule
from medvl.models.components.volume_encoder import VolumeEncoder

__all__ = ["FindingProbe", "ReferenceCNN", "train_finding_probe", "main"]

#: Small encoder settings per backbone (the CPU sizes of configs/model/medvl_tiny*.yaml).
BACKBONE_KWARGS = {
    "swin": {"feature_size": 12, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8), "window_size": 7},
    "vit": {"vit_hidden_size": 96, "vit_layers": 12, "vit_heads": 4, "vit_patch_size": 16},
    "unet": {"unet_features": (8, 16, 32, 64, 64)},  # configs/model/medvl_tiny_unet.yaml
    "cnn": {},  # ReferenceCNN
}


class ReferenceCNN(nn.Module):
    """Plain 3D CNN yardstick: four conv3x3-InstanceNorm-GELU blocks (16, 32, 64, `out_dim` channels) with 2x max
    pooling between them.

    Written here rather than taken from MONAI because it is a measuring stick, not a product backbone: MONAI's
    SegResNetDS encoder (init_filters 8, no pooling) took ~3 s per batch of 8 on one core and reached a mean val
    AUROC of only 0.52 in 400 steps, while this net learns the large findings and, with `--lesion-scale 2`, the
    nodules and plaques in that budget (docs/results.md).

    Shapes:
        x: (B, 1, D, H, W) -> (B, D/8 * H/8 * W/8, out_dim) tokens (raster order, floor division).
    """

    def __init__(self, out_dim: int = 64) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.GELU())

        self.layers = nn.Sequential(block(1, 16), nn.MaxPool3d(2), block(16, 32), nn.MaxPool3d(2), block(32, 64),
                                    nn.MaxPool3d(2), block(64, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x).flatten(2).transpose(1, 2)  # (B, E, d, h, w) -> (B, d*h*w, E)


class FindingProbe(nn.Module):
    """VolumeEncoder (or `ReferenceCNN` for backbone "cnn") -> max over last-stage tokens -> Linear: one logit
    per finding.

    Shapes:
        x: (B, 1, D, H, W) -> (B, num_findings)
    """

    def __init__(self, backbone: str, image_size: Sequence[int], num_findings: int, embed_dim: int = 64) -> None:
        super().__init__()
        if backbone == "cnn":
            self.encoder: nn.Module = ReferenceCNN(embed_dim)
        else:
            self.encoder = VolumeEncoder(backbone, image_size=tuple(image_size), out_dim=embed_dim,
                                         pooled_norm="none", **BACKBONE_KWARGS[backbone])
        self.head = nn.Linear(embed_dim, num_findings)

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.encoder, ReferenceCNN):
            tokens = self.encoder(x)  # (B, Nt, E)
        else:
            tokens = self.encoder.encode_volume(x)["pooled_tokens"]  # (B, Nt, E)
        return self.head(tokens.max(dim=1).values)  # max pooling: findings are local


def _stack(dataset) -> tuple[Tensor, Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it["image"] for it in items]).float(), torch.stack([it["labels"] for it in items]).float()


@torch.no_grad()
def _predict(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    was_training = model.training
    model.eval()
    scores = torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return scores


def train_finding_probe(
    model: FindingProbe,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    names: Sequence[str],
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    eval_every: int = 50,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Train with AdamW + BCE on random training batches; evaluate val AUROC every `eval_every` steps.

    Args:
        train, val: (images (N, 1, D, H, W), labels (N, F)) tensors.
        names: the F finding names.

    Returns:
        One row per evaluation: {"step", "train_loss" (mean since the last row), "auroc/<finding>", "auroc/mean"}.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    rows, losses = [], []
    for step in range(1, steps + 1):
        index = torch.randint(len(train[0]), (batch_size,), generator=generator)
        loss = nn.functional.binary_cross_entropy_with_logits(model(train[0][index]), train[1][index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            aurocs = multilabel_auroc(_predict(model, val[0], batch_size), val[1], list(names))
            rows.append({"step": step, "train_loss": sum(losses) / len(losses),
                         **{f"auroc/{k[len('auroc_'):]}": v for k, v in aurocs.items()}})
            losses = []
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medvl.evaluation.finding_probe", description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", help="a manifest with finding labels (default: the demo set)")
    parser.add_argument("--data-dir", default="data", help="where the demo set is built [data]")
    parser.add_argument("--num-cases", type=int, default=160, help="demo cases [160]")
    parser.add_argument("--anatomy-variation", type=float, default=1.0, help="demo anatomy variation [1.0]")
    parser.add_argument("--lesion-scale", type=float, default=1.0, help="demo focal lesion size factor [1.0]")
    parser.add_argument("--backbone", choices=sorted(BACKBONE_KWARGS), default="swin", help="[swin]")
    parser.add_argument("--steps", type=int, default=300, help="training steps [300]")
    parser.add_argument("--batch-size", type=int, default=8, help="[8]")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate [1e-3]")
    parser.add_argument("--eval-every", type=int, default=50, help="steps between evaluations [50]")
    parser.add_argument("--hu-window", type=float, nargs=2, default=(-1000.0, 1000.0), help="[-1000 1000]")
    parser.add_argument("--seed", type=int, default=0, help="[0]")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.eval_every < 1:
        parser.error("--steps, --batch-size and --eval-every must be >= 1")
    torch.manual_seed(args.seed)
    demo = {"num_cases": args.num_cases, "anatomy_variation": args.anatomy_variation,
            "lesion_scale": args.lesion_scale}
    try:
        datamodule = CTReportDataModule(manifest=args.manifest, data_dir=args.data_dir, demo=demo,
                                        cache_dir=f"{args.data_dir}/cache/medvl",
                                        preprocess={"hu_window": list(args.hu_window)})
        datamodule.setup()
    except ValueError as err:
        parser.error(str(err))
    names = datamodule.label_names
    train, val = _stack(datamodule.datasets["train"]), _stack(datamodule.datasets["val"])
    model = FindingProbe(args.backbone, train[0].shape[2:], len(names))
    rows = train_finding_probe(model, train, val, names, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               eval_every=args.eval_every, seed=args.seed)
    source = args.manifest or f"demo, anatomy_variation {args.anatomy_variation}, lesion_scale {args.lesion_scale}"
    table = Table(title=f"finding probe: {args.backbone} on {source}, "
                        f"{len(train[0])} train / {len(val[0])} val volumes (val AUROC)")
    for column in ("step", "train loss", *names, "mean"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["step"]), f"{row['train_loss']:.3f}", *[f"{row[f'auroc/{n}']:.3f}" for n in names],
                      f"{row['auroc/mean']:.3f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
