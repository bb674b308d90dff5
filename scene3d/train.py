"""``python -m scene3d.train [overrides]``: pre-train on the demo scenes (default) or a ScanNet-format folder;
see configs/scene3d_train.yaml."""
from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from common.lightning.runner import hydra_entry, run


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (and test) from a composed config; returns the final metrics (also in <run dir>/metrics.json).

    ``cfg.num_threads`` (when set) fixes torch's intra-op threads first: the demo model's operations are so
    small that extra threads mostly add synchronisation, and on a shared CPU they slow training down. The previous
    setting is restored afterwards.
    """
    previous = torch.get_num_threads()
    threads = cfg.get("num_threads")
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return run(cfg)
    finally:
        torch.set_num_threads(previous)


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="scene3d_train")
def main(cfg: DictConfig) -> None:
    threads = cfg.get("num_threads")
    if threads:
        torch.set_num_threads(int(threads))
    hydra_entry(cfg)


if __name__ == "__main__":
    main()
