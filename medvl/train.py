"""``python -m medvl.train [overrides]``: pre-train on the demo set (default) or a manifest; see configs/medvl_train.yaml."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from common.lightning.runner import hydra_entry, run


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (and test) from a composed config; returns the final metrics (also in <run dir>/metrics.json)."""
    return run(cfg)


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="medvl_train")
def main(cfg: DictConfig) -> None:
    hydra_entry(cfg)


if __name__ == "__main__":
    main()
