"""``python -m scene3d.finetune task=grounding|qa [overrides]``: fine-tune the scene3d encoders for a downstream
task; see configs/scene3d_finetune.yaml and docs/scene3d_finetune.md."""
from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from common.lightning.runner import hydra_entry, run


def finetune(cfg: DictConfig) -> dict[str, float]:
    """Fine-tune (and test) from a composed config; returns the final metrics (also in <run dir>/metrics.json).

    The test epoch also writes the benchmark's prediction file under <run dir>/predictions/. ``cfg.num_threads``
    fixes torch's intra-op threads while it runs (as in `scene3d.train.train`).
    """
    previous = torch.get_num_threads()
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    try:
        return run(cfg)
    finally:
        torch.set_num_threads(previous)


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="scene3d_finetune")
def main(cfg: DictConfig) -> None:
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    hydra_entry(cfg)


if __name__ == "__main__":
    main()
