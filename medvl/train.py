"""``python -m medvl.train [overrides]``: pre-train on the demo set (default) or a manifest; see configs/medvl_train.yaml."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from common.lightning.run_folder import remove_unused_run_folder
from common.lightning.runner import hydra_entry, run
from medvl.data.datamodule import DataSetupError, check_manifest_file
from medvl.data.manifest import ManifestError


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (and test) from a composed config; returns the final metrics (also in <run dir>/metrics.json).

    Raises:
        DataSetupError: ``data.manifest`` is not a file (checked before anything is written), or a split
            the run needs is empty (all rows ``split=train``: pass ``test=false`` to skip the test).
    """
    _check_data(cfg)
    return run(cfg)


def _check_data(cfg: DictConfig) -> None:
    """Checks that need no data loaded: the manifest file exists."""
    data = cfg.get("data")
    if data is not None and data.get("manifest") is not None:
        check_manifest_file(data.manifest)


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="medvl_train")
def main(cfg: DictConfig) -> None:
    try:
        _check_data(cfg)
        hydra_entry(cfg)
    except (DataSetupError, ManifestError) as exc:  # bad data: one line, exit 2, no empty run folder left
        remove_unused_run_folder(Path(cfg.paths.output_dir))
        print(f"medvl.train: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
