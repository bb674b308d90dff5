"""Remove a run folder that an entry point created but never used (the run was refused before it started)."""
from __future__ import annotations

import shutil
from pathlib import Path

# What a refused run leaves: Hydra's .hydra/ (config, overrides) and log file, and the runner's config.yaml.
_SETUP_ONLY = frozenset({".hydra", "config.yaml"})


def remove_unused_run_folder(folder: str | Path) -> bool:
    """Delete `folder` when it holds only setup files (`.hydra/`, `config.yaml`, `*.log`); keep it otherwise.

    A folder with anything else (checkpoints, metrics, a CSV log, a user's file) is never touched.

    Returns:
        True when the folder was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    if any(entry.name not in _SETUP_ONLY and not (entry.is_file() and entry.suffix == ".log") for entry in entries):
        return False
    shutil.rmtree(folder)
    return True
