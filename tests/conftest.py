"""Project-wide pytest fixtures: offline mode, single-threaded torch, and the shared real-data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# No network at test time: transformers / huggingface_hub must never try a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the repository root; skips the test cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (only developers and CI have it)")
    return SHARED_DATA
