"""Persistent on-disk cache of preprocessed CT volumes, keyed by file CONTENT and preprocessing config.

Why not `monai.data.PersistentDataset`: it keys entries by a hash of the data dict (i.e. the file
PATH; the transforms only with `hash_transform`), so a volume replaced in place keeps serving the
stale entry; it stores pickles (`torch.save`); it notices an entry that fails to unpickle but has no
checksum, so damaged tensor bytes load silently; and it writes the temporary file in the system
temp folder, so the final `shutil.move` is a copy (not atomic) when the cache is on another disk.
Here:

- key = sha256 of {cache format version, MONAI version, `PreprocessConfig.to_dict()`, sha256 of the
  image's bytes (of every file of a DICOM folder, sorted by relative path), same for the organ mask};
- file content digests are memoised per path on (size, mtime_ns), in memory and on disk, so an
  unchanged file is hashed once, not every epoch;
- one entry = one `.safetensors` file (no pickle); its header metadata holds a small JSON with the
  affine, spacing, shapes, the image encoding and a CRC-32 of every stored array (no patient identifiers,
  no paths);
- the image is stored as 16-bit fixed point of its [0, 1] intensities (`medvl.data.unorm16`: every value
  read back is within 7.7e-6 = 0.015 HU of a 2000 HU window of what was computed) and read in one pass
  of 4 MB plain reads that checksum and decode into the float32 result (allocated in shared memory inside
  a DataLoader worker, so it travels to the main process without a copy): half the bytes of float32 on
  disk and in the page cache, no second full-size buffer and no mapped file pages per read. A miss returns the entry as read back, so the first and
  every later epoch see the same values;
- writes go to a temporary file in the same folder and are published with `os.replace`, which is
  atomic: concurrent DataLoader workers or processes never see half-written entries;
- an entry that cannot be read, whose size or checksums do not match its header, or that was written by
  another format version (e.g. the float32 entries of format 1) is logged as a warning, deleted and
  rebuilt, never trusted. CRC-32 rather than sha256: it detects damaged bytes (the purpose; entries are
  not a security boundary) at about 2 GB/s instead of 0.9, which matters at one check per read.

Layout: `<cache_dir>/v<version>/<key[:2]>/<key>.safetensors` and
`<cache_dir>/fingerprints/<sha256(path)[:2]>/<sha256(path)>.json`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import monai
import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import convert_to_tensor
from monai.utils.enums import MetaKeys
from safetensors.torch import save_file

from medvl.data.transforms import PreprocessConfig
from medvl.data.unorm16 import decode_unorm16, encode_unorm16, read_unorm16


logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2  # 1: float32 image, sha256 checksums; 2: unorm16 image, CRC-32 checksums
IMAGE_ENCODING = "unorm16"
_METADATA_KEY = "medvl_cache"
_MAX_HEADER_BYTES = 1 << 20
# safetensors dtype codes read (format 2 image: U16; organ_mask: the smallest integer type; floats: so that an
# entry of format 1 or another encoding is refused by its version / encoding check, with that message)
_NUMPY_DTYPES = {"U8": np.uint8, "U16": np.uint16, "I16": np.int16, "I32": np.int32, "I64": np.int64,
                 "F16": np.float16, "F32": np.float32, "F64": np.float64}
_HASH_CHUNK_BYTES = 1 << 20
_STALE_TMP_SECONDS = 3600.0


@dataclass
class PreprocessedVolume:
    """One preprocessed study, as stored in the cache.

    Args:
        image: intensities in [0, 1] after preprocessing.
        affine: (4, 4) float64, voxel index of `image` -> world mm (after orientation / resampling / crop).
        original_affine: (4, 4) float64, the loaded volume's voxel -> world mm (before preprocessing).
        organ_mask: label map on the grid of `image`, or None.

    Shapes:
        image: (1, D, H, W) float32; organ_mask: (1, D, H, W) int64.
    """

    image: torch.Tensor
    affine: np.ndarray
    original_affine: np.ndarray
    organ_mask: torch.Tensor | None = None

    @classmethod
    def from_meta_tensors(cls, image: MetaTensor, organ_mask: torch.Tensor | None = None) -> PreprocessedVolume:
        """From the outputs of `build_preprocessing` (the image's MetaTensor carries both affines)."""
        return cls(
            image=image.as_tensor(),
            affine=image.affine.numpy().astype(np.float64),
            original_affine=np.asarray(image.meta[MetaKeys.ORIGINAL_AFFINE], dtype=np.float64),
            organ_mask=convert_to_tensor(organ_mask, track_meta=False) if organ_mask is not None else None,
        )

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (column norms of the affine's 3x3 block)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


class CacheEntryError(ValueError):
    """A cache entry is unreadable, truncated, from another format version, or fails its checksums."""


def _sha256_file(path: Path, digest: hashlib._Hash) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)


def _files_of(path: Path) -> list[Path]:
    """The file itself, or every regular file under a folder sorted by relative POSIX path."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
    raise FileNotFoundError(f"cannot fingerprint {path}: no such file or folder")


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `target`, fsync it, then `os.replace` it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ContentFingerprinter:
    """sha256 of a file's bytes, or of all files of a DICOM folder, memoised on (size, mtime_ns).

    For a folder the digest covers each file's relative path and bytes, in sorted path order. The
    memo signature is every file's (relative path, size, mtime_ns); a file rewritten with the same
    size inside one mtime tick would go unnoticed (the usual make-style trade-off).

    Args:
        memo_dir: folder for the on-disk memo (shared by processes), or None for an in-memory memo only.
            Memo files are named by sha256 of the absolute path and hold only hashes: no paths.

    Raises:
        FileNotFoundError: the path does not exist.
    """

    def __init__(self, memo_dir: str | Path | None = None) -> None:
        self.memo_dir = Path(memo_dir) if memo_dir is not None else None
        self._memo: dict[str, tuple[str, str]] = {}  # absolute path -> (signature hash, content digest)
        self.files_hashed = 0  # number of files whose bytes were read (for tests and diagnostics)

    @staticmethod
    def _signature(path: Path, files: list[Path]) -> str:
        entries = []
        for p in files:
            st = p.stat()
            rel = p.relative_to(path).as_posix() if p != path else ""
            entries.append([rel, st.st_size, st.st_mtime_ns])
        return hashlib.sha256(json.dumps(entries).encode()).hexdigest()

    def _memo_file(self, abs_path: str) -> Path | None:
        if self.memo_dir is None:
            return None
        name = hashlib.sha256(abs_path.encode()).hexdigest()
        return self.memo_dir / name[:2] / f"{name}.json"

    def __call__(self, path: str | Path) -> str:
        path = Path(path).resolve()
        abs_path = str(path)
        files = _files_of(path)
        signature = self._signature(path, files)
        memo = self._memo.get(abs_path)
        if memo is not None and memo[0] == signature:
            return memo[1]
        memo_file = self._memo_file(abs_path)
        if memo_file is not None and memo_file.is_file():
            try:
                stored = json.loads(memo_file.read_text())
                if stored["signature"] == signature:
                    self._memo[abs_path] = (signature, stored["digest"])
                    return stored["digest"]
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable memo: recompute and overwrite below
        digest = hashlib.sha256()
        for p in files:
            if p != path:
                digest.update(p.relative_to(path).as_posix().encode() + b"\0")
            _sha256_file(p, digest)
            self.files_hashed += 1
        content = digest.hexdigest()
        self._memo[abs_path] = (signature, content)
        if memo_file is not None:
            _atomic_write_bytes(memo_file, json.dumps({"signature": signature, "digest": content}).encode())
        return content


def _crc32(array: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B")) if array.size else 0


def _read_safetensors(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Header metadata and copy-on-write memory maps of every array of a .safetensors file.

    The format is 8 bytes little-endian header length N, N bytes of JSON header, then the arrays' bytes at
    the header's `data_offsets`. Read here directly (not with `safe_open(...).get_tensor`, which copies every
    array into memory) so that the image is decoded from the page cache slab by slab.

    Raises:
        CacheEntryError: the header is unreadable, an array's extent does not match its shape and dtype,
            or the file size does not match the header (truncated or extended).
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or not 0 < n <= min(_MAX_HEADER_BYTES, size - 8):
            raise CacheEntryError(f"{path}: not a cache entry (header length {n} for a file of {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise CacheEntryError(f"{path}: unreadable entry header ({exc})") from exc
    if not isinstance(header, dict):
        raise CacheEntryError(f"{path}: unreadable entry header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    data_start, data_end = 8 + n, 8 + n
    arrays: dict[str, np.ndarray] = {}
    for name, info in header.items():
        try:
            dtype = np.dtype(_NUMPY_DTYPES[info["dtype"]])
            shape = tuple(int(v) for v in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CacheEntryError(f"{path}: array '{name}' has an unexpected header entry {info!r}") from exc
        if end - begin != math.prod(shape) * dtype.itemsize or begin < 0:
            raise CacheEntryError(f"{path}: array '{name}' extent {begin}..{end} does not hold {shape} {dtype}")
        data_end = max(data_end, data_start + end)
        if data_start + end > size:
            raise CacheEntryError(f"{path}: truncated ({size} bytes, array '{name}' ends at {data_start + end})")
        arrays[name] = (np.memmap(path, dtype=dtype, mode="c", offset=data_start + begin, shape=shape)
                        if end > begin else np.zeros(shape, dtype=dtype))
    if data_end != size:
        raise CacheEntryError(f"{path}: {size} bytes but its header describes {data_end}")
    return metadata, arrays


def _mask_storage_dtype(mask: torch.Tensor) -> torch.dtype:
    """Smallest integer dtype holding the label map (labels are small; int64 on disk wastes 4-8x)."""
    lo, hi = (int(mask.min()), int(mask.max())) if mask.numel() else (0, 0)
    for dtype in (torch.uint8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return torch.int64


class PreprocessedVolumeCache:
    """Content-addressed store of `PreprocessedVolume`s for one preprocessing config.

    Args:
        cache_dir: root folder of the cache (created if needed); may be shared by several configs,
            processes and machines on a shared file system.
        config: the preprocessing config; part of every key.

    Raises:
        ValueError: `cache_dir` exists and is not a folder.
    """

    def __init__(self, cache_dir: str | Path, config: PreprocessConfig) -> None:
        self.cache_dir = Path(cache_dir)
        if self.cache_dir.exists() and not self.cache_dir.is_dir():
            raise ValueError(f"cache_dir {self.cache_dir} exists and is not a folder; pick another path")
        self.config = config
        self.entries_dir = self.cache_dir / f"v{CACHE_FORMAT_VERSION}"
        self.fingerprint = ContentFingerprinter(self.cache_dir / "fingerprints")
        self._config_json = json.dumps(config.to_dict(), sort_keys=True)
        older = sorted(p.name for p in self.cache_dir.glob("v*") if p.is_dir() and p != self.entries_dir)
        if older:
            logger.info("%s holds entries of other cache formats (%s), which format %d never reads; delete them "
                        "to free the space", self.cache_dir, ", ".join(older), CACHE_FORMAT_VERSION)

    def key(self, volume_path: str | Path, organ_mask_path: str | Path | None = None) -> str:
        """sha256 hex key from the format version, MONAI version, config and the files' contents."""
        payload = {
            "format_version": CACHE_FORMAT_VERSION,
            # Resampling / interpolation details change between MONAI releases: never mix their outputs.
            "monai_version": monai.__version__,
            "config": self._config_json,
            "image": self.fingerprint(volume_path),
            "organ_mask": self.fingerprint(organ_mask_path) if organ_mask_path is not None else None,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def entry_path(self, key: str) -> Path:
        """Where the entry of `key` lives (whether or not it exists)."""
        return self.entries_dir / key[:2] / f"{key}.safetensors"

    def load(self, key: str) -> PreprocessedVolume | None:
        """The stored entry, or None when absent.

        Raises:
            CacheEntryError: the entry exists but is unreadable, truncated, of another format version or
                image encoding, or fails its checksums.
        """
        path = self.entry_path(key)
        if not path.is_file():
            return None
        try:
            header, arrays = _read_safetensors(path)
            meta = json.loads(header[_METADATA_KEY])
            if not isinstance(meta, dict):
                raise TypeError("metadata is not a JSON object")
        except CacheEntryError:
            raise
        except Exception as exc:  # missing key, bad JSON, unreadable file: all mean a damaged entry
            raise CacheEntryError(f"{path}: unreadable cache entry ({type(exc).__name__}: {exc})") from exc
        if meta.get("format_version") != CACHE_FORMAT_VERSION:
            raise CacheEntryError(f"{path}: format version {meta.get('format_version')!r} != {CACHE_FORMAT_VERSION}")
        if meta.get("image_encoding") != IMAGE_ENCODING or arrays.get("image", np.empty(0)).dtype != np.uint16:
            raise CacheEntryError(f"{path}: image encoding {meta.get('image_encoding')!r} is not {IMAGE_ENCODING!r}")
        checksums = meta.get("crc32", {})
        if set(checksums) != set(arrays):
            raise CacheEntryError(
                f"{path}: stored arrays {sorted(arrays)} do not match its header {sorted(checksums)}"
            )
        stored_image = arrays["image"]
        if isinstance(stored_image, np.memmap):
            # one pass of plain reads: checksum and decode together, no file pages mapped into the process
            try:
                image, image_crc = read_unorm16(path, stored_image.offset, stored_image.shape)
            except (OSError, EOFError) as exc:
                raise CacheEntryError(f"{path}: unreadable image array ({type(exc).__name__}: {exc})") from exc
        else:  # an empty image
            image, image_crc = decode_unorm16(stored_image), _crc32(stored_image)
        for name, array in arrays.items():
            if (image_crc if name == "image" else _crc32(array)) != checksums[name]:
                raise CacheEntryError(f"{path}: checksum mismatch for '{name}' (damaged file)")
        mask = arrays.get("organ_mask")
        return PreprocessedVolume(
            image=image,
            affine=np.asarray(meta["affine"], dtype=np.float64),
            original_affine=np.asarray(meta["original_affine"], dtype=np.float64),
            organ_mask=torch.from_numpy(mask.astype(np.int64)) if mask is not None else None,
        )

    def save(self, key: str, volume: PreprocessedVolume) -> Path:
        """Store `volume` under `key` atomically (image as unorm16); returns the entry path.

        Raises:
            ValueError: the image holds values outside [0, 1] or NaN (unorm16 cannot store them).
        """
        try:
            tensors = {"image": encode_unorm16(volume.image.cpu()).contiguous()}
        except ValueError as exc:
            raise ValueError(f"cache entry {key}: {exc}; preprocessing must window intensities to [0, 1]") from exc
        if volume.organ_mask is not None:
            mask = volume.organ_mask.detach().cpu()
            tensors["organ_mask"] = mask.to(_mask_storage_dtype(mask)).contiguous()
        meta = {
            "format_version": CACHE_FORMAT_VERSION,
            "image_encoding": IMAGE_ENCODING,
            "config": self.config.to_dict(),
            "affine": np.asarray(volume.affine, dtype=np.float64).tolist(),
            "original_affine": np.asarray(volume.original_affine, dtype=np.float64).tolist(),
            "spacing": list(volume.spacing),
            "shape": list(volume.image.shape),
            "crc32": {name: _crc32(t.numpy()) for name, t in tensors.items()},
        }
        path = self.entry_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={_METADATA_KEY: json.dumps(meta)})
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def get_or_create(
        self,
        volume_path: str | Path,
        organ_mask_path: str | Path | None,
        create: Callable[[], PreprocessedVolume],
    ) -> PreprocessedVolume:
        """Return the cached entry for these files, or run `create()`, store and return its result.

        A damaged entry is logged as a warning, deleted and rebuilt.
        """
        key = self.key(volume_path, organ_mask_path)
        try:
            cached = self.load(key)
        except CacheEntryError as exc:
            logger.warning("%s; rebuilding it", exc)
            self.entry_path(key).unlink(missing_ok=True)
            cached = None
        if cached is not None:
            return cached
        self.save(key, create())
        stored = self.load(key)  # what every later read returns (unorm16-rounded), checked once after writing
        assert stored is not None, f"{self.entry_path(key)} vanished right after it was written"
        return stored

    @staticmethod
    def _remove_stale_tmp(folder: Path) -> None:
        """Delete temporary files left by writers that died more than an hour ago."""
        now = time.time()
        for tmp in folder.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                    tmp.unlink()
            except OSError:
                pass  # another process removed or replaced it meanwhile
