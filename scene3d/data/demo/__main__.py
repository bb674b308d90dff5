"""`python -m scene3d.data.demo OUT_DIR [options]`: build (or reuse) the demo scene set and print a summary."""
from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from scene3d.data.demo.build import INFO_NAME, SPLITS, ensure_demo_scenes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scene3d.data.demo",
        description="Build the synthetic demo scene set (ScanNet scans + ScanRefer / ScanQA / Scan2Cap-style "
        "language) in OUT_DIR. An existing build with the same arguments is reused.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="dataset folder (created)")
    parser.add_argument("--num-scenes", type=int, default=60, help="rooms to generate [60]")
    parser.add_argument("--seed", type=int, default=0, help="random seed [0]")
    parser.add_argument("--points-per-scene", type=int, default=30000,
                        help="vertices of a 20 m^2 room; others scale with sqrt(floor area) [30000]")
    parser.add_argument("--noise-m", type=float, default=0.002, help="vertex noise std in metres [0.002]")
    parser.add_argument("--descriptions-per-kind", type=int, default=1,
                        help="referring expressions per object and kind [1]")
    parser.add_argument("--questions-per-type", type=int, default=5, help="questions per scene and type [5]")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for bad arguments)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        root = ensure_demo_scenes(
            args.out_dir, num_scenes=args.num_scenes, seed=args.seed, points_per_scene=args.points_per_scene,
            noise_m=args.noise_m, descriptions_per_kind=args.descriptions_per_kind,
            questions_per_type=args.questions_per_type, progress=args.progress, force=args.force,
        )
    except ValueError as err:
        parser.error(str(err))  # exits with status 2
    info = json.loads((root / INFO_NAME).read_text())
    table = Table(title=f"demo scenes: {root}")
    table.add_column("")
    for split in SPLITS:
        table.add_column(split, justify="right")
    table.add_row("scenes", *[str(info["split_counts"][s]) for s in SPLITS])
    table.add_row("referring expressions", *[str(info["referring"]["per_split"][s]) for s in SPLITS])
    table.add_row("questions", *[str(info["questions"]["per_split"][s]) for s in SPLITS])
    Console().print(table)
    Console().print(f"referring kinds {info['referring']['kinds']}, {info['referring']['unique_multiple']}; "
                    f"question types {info['questions']['types']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
