"""`python -m medvl.data.demo OUT_DIR [options]`: build (or reuse) the demo CT dataset and print a summary."""
from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from medvl.data.demo.build import ensure_demo_dataset
from medvl.data.demo.findings import FINDING_NAMES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medvl.data.demo",
        description="Build the synthetic demo CT + report dataset (NIfTI + manifest.jsonl) in OUT_DIR. "
        "An existing build with the same arguments is reused.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="dataset folder (created)")
    parser.add_argument("--num-cases", type=int, default=160, help="studies (or real-CT variants) [160]")
    parser.add_argument("--size", type=int, default=64, help="phantom voxels per axis [64]")
    parser.add_argument("--spacing-mm", type=float, default=5.0, help="phantom voxel size in mm [5.0]")
    parser.add_argument("--seed", type=int, default=0, help="random seed [0]")
    parser.add_argument("--no-holdout-phrasings", dest="holdout_phrasings", action="store_false",
                        help="let the test split use the training phrasings too")
    parser.add_argument("--anatomy-variation", type=float, default=1.0,
                        help="phantom anatomy variation in [0, 1]: 1 = full per-case variation, 0 = one anatomy [1.0]")
    parser.add_argument("--lesion-scale", type=float, default=1.0,
                        help="multiplies the diameters of liver lesions, kidney cysts, lung nodules and calcified "
                        "plaques, in [0.25, 4] [1.0]")
    parser.add_argument("--real-ct", help="real-anatomy mode: a NIfTI CT to insert findings into")
    parser.add_argument("--real-mask", help="real-anatomy mode: its multilabel organ mask (NIfTI)")
    parser.add_argument("--real-labels", help="real-anatomy mode: JSON {label id: structure name}")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for bad arguments)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        manifest = ensure_demo_dataset(
            args.out_dir, num_cases=args.num_cases, size=args.size, spacing_mm=args.spacing_mm, seed=args.seed,
            holdout_phrasings=args.holdout_phrasings, anatomy_variation=args.anatomy_variation,
            lesion_scale=args.lesion_scale, real_ct=args.real_ct, real_mask=args.real_mask,
            real_labels=args.real_labels, progress=args.progress, force=args.force,
        )
    except ValueError as err:
        parser.error(str(err))  # exits with status 2
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    splits = ("train", "val", "test")
    table = Table(title=f"demo dataset: {manifest}")
    table.add_column("finding")
    for split in splits:
        table.add_column(f"{split} ({sum(r['split'] == split for r in rows)})", justify="right")
    for name in FINDING_NAMES:
        cells = [str(sum(r["labels"].get(name, 0) for r in rows if r["split"] == split)) for split in splits]
        table.add_row(name, *cells)
    table.add_row("normal", *[str(sum(not any(r["labels"].values()) for r in rows if r["split"] == split))
                              for split in splits])
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
