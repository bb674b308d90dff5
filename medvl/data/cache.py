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
  affine, spacing, shapes and a sha256 of every stored array (no patient identifiers, no paths);
- writes go to a temporary file in the same folder and are published with `os.replace`, which is
  atomic: concurrent DataLoader workers or processes never see half-written entries;
- an entry that cannot be read or whose checksums do not match is logged as a warning, deleted
  and rebuilt, never trusted.

Layout: `<cache_dir>/v<version>/<key[:2]>/<key>.safetensors` and
`<cache_dir>/fingerprints/<sha256(path)[:2]>/<sha256(path)>.json`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import monai
import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import convert_to_tensor
from monai.utils.enums import MetaKeys
from safetensors import safe_open
from safetensors.torch import save_file

from medvl.data.transforms import PreprocessConfig

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
_METADATA_KEY = "medvl_cache"
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


def _array_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(np.ascontiguousarray(tensor.numpy()).data).hexdigest()


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
            CacheEntryError: the entry exists but is unreadable, truncated or fails its checksums.
        """
        path = self.entry_path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            meta = json.loads(header[_METADATA_KEY])
        except Exception as exc:  # safetensors raises several error types for damaged files
            raise CacheEntryError(f"{path}: unreadable cache entry ({type(exc).__name__}: {exc})") from exc
        if meta.get("format_version") != CACHE_FORMAT_VERSION:
            raise CacheEntryError(f"{path}: format version {meta.get('format_version')!r} != {CACHE_FORMAT_VERSION}")
        checksums = meta.get("sha256", {})
        if set(checksums) != set(tensors) or "image" not in tensors:
            raise CacheEntryError(
                f"{path}: stored arrays {sorted(tensors)} do not match its header {sorted(checksums)}"
            )
        for name, tensor in tensors.items():
            if _array_sha256(tensor) != checksums[name]:
                raise CacheEntryError(f"{path}: checksum mismatch for '{name}' (damaged file)")
        mask = tensors.get("organ_mask")
        return PreprocessedVolume(
            image=tensors["image"],
            affine=np.asarray(meta["affine"], dtype=np.float64),
            original_affine=np.asarray(meta["original_affine"], dtype=np.float64),
            organ_mask=mask.to(torch.int64) if mask is not None else None,
        )

    def save(self, key: str, volume: PreprocessedVolume) -> Path:
        """Store `volume` under `key` atomically; returns the entry path."""
        tensors = {"image": volume.image.detach().to(torch.float32).contiguous().cpu()}
        if volume.organ_mask is not None:
            mask = volume.organ_mask.detach().cpu()
            tensors["organ_mask"] = mask.to(_mask_storage_dtype(mask)).contiguous()
        meta = {
            "format_version": CACHE_FORMAT_VERSION,
            "config": self.config.to_dict(),
            "affine": np.asarray(volume.affine, dtype=np.float64).tolist(),
            "original_affine": np.asarray(volume.original_affine, dtype=np.float64).tolist(),
            "spacing": list(volume.spacing),
            "shape": list(volume.image.shape),
            "sha256": {name: _array_sha256(t) for name, t in tensors.items()},
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
        volume = create()
        self.save(key, volume)
        return volume

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
