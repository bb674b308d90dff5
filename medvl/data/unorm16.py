"""16-bit fixed point ("unorm16") for intensities in [0, 1]: the cache's stored image dtype.

q = round(v * 65535) as uint16; decoded v' = q / 65535 in float32. Every decoded value is within
`UNORM16_MAX_ERROR` = 0.5 / 65535 + 2**-24 (about 7.7e-6) of the stored one: half a quantisation step plus one
float32 rounding of the division. With the default HU window of 2000 HU that is 0.015 HU, far below CT noise
(~5-20 HU) and below the 0.5 HU of storing integer HU as int16; float16 would round by up to 2**-12 = 0.49 HU
near 1.0. Half the bytes of float32, so half the disk, page cache and read traffic.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import get_worker_info

UNORM16_SCALE = 65535.0
UNORM16_MAX_ERROR = 0.5 / UNORM16_SCALE + 2.0**-24
_RANGE_TOL = 1e-6  # float32 results of a clipped window may sit a rounding step outside [0, 1]
_CHUNK_VOXELS = 1 << 22  # decode in slabs of ~4 M voxels: a small uint16 working set, float32 written in place
_READ_CHUNK_VOXELS = 1 << 21  # file reads of 4 MB (2 M uint16 values)


def encode_unorm16(values: torch.Tensor) -> torch.Tensor:
    """float tensor in [0, 1] -> uint16 fixed point of the same shape.

    Raises:
        ValueError: a value is NaN or outside [0, 1] (beyond float rounding): it cannot be stored without loss.
    """
    values = values.detach().to(torch.float32)
    if values.numel():
        lo, hi = float(values.min()), float(values.max())
        if not (-_RANGE_TOL <= lo and hi <= 1.0 + _RANGE_TOL):  # also False for NaN
            raise ValueError(f"unorm16 stores values in [0, 1]; got range [{lo}, {hi}]")
    scaled = values.clamp(0.0, 1.0).mul_(UNORM16_SCALE).round_()
    return torch.from_numpy(scaled.numpy().astype(np.uint16))


def decode_unorm16(stored: np.ndarray) -> torch.Tensor:
    """uint16 array (a memory map is fine: it is read slab by slab) -> float32 tensor q / 65535, same shape."""
    out = torch.empty(stored.shape, dtype=torch.float32)
    flat_out = out.view(-1)
    flat_in = stored.reshape(-1)
    for start in range(0, flat_in.size, _CHUNK_VOXELS):
        stop = min(start + _CHUNK_VOXELS, flat_in.size)
        flat_out[start:stop].copy_(torch.from_numpy(np.ascontiguousarray(flat_in[start:stop])))
    return out.div_(UNORM16_SCALE)


def _empty_float32(shape: tuple[int, ...]) -> torch.Tensor:
    """Uninitialised float32 tensor; in shared memory inside a DataLoader worker.

    A worker hands each item to the main process through shared memory: a tensor allocated there from the
    start is sent as is, where an ordinary one is first copied into a new shared block (a second full-size
    buffer in the worker at its peak).
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32)
    numel = int(np.prod(shape, dtype=np.int64))
    storage = torch.UntypedStorage._new_shared(numel * 4)  # as default_collate allocates its batches
    return torch.empty(0, dtype=torch.float32).set_(storage, 0, shape)


def read_unorm16(path: str | Path, offset: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, int]:
    """Decode the uint16 array at byte `offset` of a file into float32 q / 65535, with its CRC-32, in one pass.

    Read with plain `readinto` through one 4 MB buffer (not a memory map): the file's pages are never mapped
    into the process, so its RSS holds the float32 result and that buffer only; the checksum is computed on the
    same bytes as they are decoded (one read of the file, not one for the check and one for the values).

    Shapes:
        returns ((*shape) float32, crc32 of the stored bytes).

    Raises:
        EOFError: the file ends before the array does.
    """
    out = _empty_float32(tuple(shape))
    flat = out.view(-1)
    total = flat.numel()
    buffer = np.empty(min(total, _READ_CHUNK_VOXELS), dtype="<u2")
    crc = 0
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        start = 0
        while start < total:
            n = min(buffer.size, total - start)
            view = memoryview(buffer[:n]).cast("B")
            got = 0
            while got < 2 * n:
                k = f.readinto(view[got:])
                if not k:
                    raise EOFError(f"{path}: ends {2 * (total - start) - got} bytes before its image array")
                got += k
            crc = zlib.crc32(view, crc)
            flat[start:start + n].copy_(torch.from_numpy(buffer[:n]))  # uint16 -> float32
            start += n
    return out.div_(UNORM16_SCALE), crc
