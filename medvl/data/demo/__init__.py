"""Demo CT + report dataset: procedural chest-abdomen phantoms (or a real CT) with inserted findings,
ground-truth labels and matching reports, written as NIfTI + manifest.jsonl (the real-data format).

    from medvl.data.demo import ensure_demo_dataset
    manifest = ensure_demo_dataset("data/demo_ct")      # builds once, then reuses the build

Command line: `python -m medvl.data.demo OUT_DIR [--num-cases N --size S --spacing-mm MM --seed K
--real-ct CT --real-mask MASK --real-labels JSON]`.
"""
from medvl.data.demo.build import DEMO_VERSION, build_demo_dataset, ensure_demo_dataset
from medvl.data.demo.findings import FINDING_NAMES
from medvl.data.demo.phantom import ORGAN_LABELS

__all__ = ["DEMO_VERSION", "FINDING_NAMES", "ORGAN_LABELS", "build_demo_dataset", "ensure_demo_dataset"]
