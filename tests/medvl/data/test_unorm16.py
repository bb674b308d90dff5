"""read_unorm16: one-pass read + CRC-32 + decode equals the in-memory decode; shared memory inside workers."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from medvl.data import unorm16
from medvl.data.unorm16 import UNORM16_SCALE, decode_unorm16, read_unorm16


def _write(path, values: np.ndarray, offset: int) -> None:
    path.write_bytes(b"x" * offset + values.astype("<u2").tobytes())


@pytest.mark.parametrize("chunk", [7, 1 << 21])  # several reads with a ragged last one / one read
def test_read_unorm16_equals_decode_and_crc(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(unorm16, "_READ_CHUNK_VOXELS", chunk)
    stored = np.random.default_rng(0).integers(0, 65536, size=(3, 5, 4)).astype(np.uint16)
    path = tmp_path / "entry.bin"
    _write(path, stored, offset=13)
    image, crc = read_unorm16(path, 13, stored.shape)
    assert image.dtype == torch.float32 and tuple(image.shape) == stored.shape
    assert torch.equal(image, decode_unorm16(stored))
    assert crc == zlib.crc32(stored.tobytes())
    assert float(image.max()) <= 1.0 and abs(float(image.flatten()[0]) - stored.flat[0] / UNORM16_SCALE) < 1e-7


def test_read_unorm16_truncated_file_raises(tmp_path):
    path = tmp_path / "short.bin"
    _write(path, np.zeros(10, dtype=np.uint16), offset=0)
    with pytest.raises(EOFError, match="before its image array"):
        read_unorm16(path, 0, (4, 4))


class _Reads(Dataset):
    def __init__(self, path, shape):
        self.path, self.shape = path, shape

    def __len__(self):
        return 1

    def __getitem__(self, i):
        image, _ = read_unorm16(self.path, 0, self.shape)
        return image, image.is_shared()


def test_read_unorm16_allocates_in_shared_memory_in_a_worker(tmp_path):
    stored = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    path = tmp_path / "entry.bin"
    _write(path, stored, offset=0)
    image, _ = read_unorm16(path, 0, stored.shape)
    assert not image.is_shared()  # main process: an ordinary tensor
    (worker_image, shared_in_worker), = DataLoader(_Reads(path, stored.shape), batch_size=None, num_workers=1)
    assert bool(shared_in_worker) and torch.equal(worker_image, image)
