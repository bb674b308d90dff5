"""Tests of medvl.data.cache: content keys, hits without reloading, corruption recovery, concurrency."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from medvl.data.cache import (
    CacheEntryError,
    ContentFingerprinter,
    PreprocessedVolume,
    PreprocessedVolumeCache,
)
from medvl.data.transforms import PreprocessConfig, build_preprocessing
from medvl.data.unorm16 import UNORM16_MAX_ERROR, decode_unorm16, encode_unorm16
from tests.medvl.data.nifti_helpers import CountingLoader, diag_affine, save_nifti

CONFIG = PreprocessConfig(spacing=(4.0, 4.0, 4.0), spatial_size=(8, 8, 8))


def _write_case(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 1000, size=(10, 9, 7)).astype(np.int16)
    labels = (hu > 500).astype(np.int16) * 7
    affine = diag_affine(-3.0, 3.0, 4.0)
    image = save_nifti(folder / f"ct{seed}.nii.gz", hu, affine)
    return image, save_nifti(folder / f"mask{seed}.nii.gz", labels, affine)


def _creator(config: PreprocessConfig, loader, image: Path, mask: Path | None):
    pipeline = build_preprocessing(config, loader=loader, invertible=False)  # as CTReportDataset

    def create() -> PreprocessedVolume:
        data = {"image": image} if mask is None else {"image": image, "organ_mask": mask}
        out = pipeline(data)
        return PreprocessedVolume.from_meta_tensors(out["image"], out.get("organ_mask"))

    return create


def _assert_same(a: PreprocessedVolume, b: PreprocessedVolume) -> None:
    assert torch.equal(a.image, b.image) and a.image.dtype == b.image.dtype == torch.float32
    assert torch.equal(a.organ_mask, b.organ_mask) and b.organ_mask.dtype == torch.int64
    np.testing.assert_array_equal(a.affine, b.affine)
    np.testing.assert_array_equal(a.original_affine, b.original_affine)


def test_hit_returns_identical_tensors_without_loading_again(tmp_path):
    image, mask = _write_case(tmp_path)
    loader = CountingLoader()
    cache = PreprocessedVolumeCache(tmp_path / "cache", CONFIG)
    first = cache.get_or_create(image, mask, _creator(CONFIG, loader, image, mask))
    assert loader.calls == 2  # image + mask
    second = cache.get_or_create(image, mask, _creator(CONFIG, loader, image, mask))
    # A fresh cache object (another process or epoch) hits the same entry too.
    third = PreprocessedVolumeCache(tmp_path / "cache", CONFIG).get_or_create(
        image, mask, _creator(CONFIG, loader, image, mask)
    )
    assert loader.calls == 2
    _assert_same(first, second)
    _assert_same(first, third)
    assert first.image.shape == (1, 8, 8, 8)


def test_key_changes_with_content_not_with_touch(tmp_path):
    image, mask = _write_case(tmp_path)
    cache = PreprocessedVolumeCache(tmp_path / "cache", CONFIG)
    key = cache.key(image, mask)
    assert cache.key(image, mask) == key
    assert cache.key(image, None) != key

    os.utime(image, ns=(1, 1))  # same bytes, new mtime: rehashed, same key
    assert cache.key(image, mask) == key
    (tmp_path / "other").mkdir()
    other, _ = _write_case(tmp_path / "other", seed=1)
    image.write_bytes(other.read_bytes())  # same path, new content
    assert cache.key(image, mask) != key


def test_key_changes_with_config(tmp_path):
    image, mask = _write_case(tmp_path)
    keys = {
        PreprocessedVolumeCache(tmp_path / "cache", config).key(image, mask)
        for config in (CONFIG, PreprocessConfig(spacing=(4.0, 4.0, 5.0), spatial_size=(8, 8, 8)),
                       PreprocessConfig(spacing=(4.0, 4.0, 4.0), spatial_size=(8, 8, 8), hu_window=(-1000, 400)))
    }
    assert len(keys) == 3


def test_fingerprint_memo_avoids_rehashing(tmp_path):
    image, _ = _write_case(tmp_path)
    memo_dir = tmp_path / "memo"
    fingerprint = ContentFingerprinter(memo_dir)
    digest = fingerprint(image)
    assert fingerprint(image) == digest and fingerprint.files_hashed == 1
    other_process = ContentFingerprinter(memo_dir)  # reads the on-disk memo
    assert other_process(image) == digest and other_process.files_hashed == 0
    memo_text = "".join(p.read_text() for p in memo_dir.rglob("*.json"))
    assert str(tmp_path) not in memo_text and image.name not in memo_text  # hashes only, no paths


def test_folder_fingerprint_covers_every_file_and_its_name(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    for i in range(3):
        (series / f"slice{i}.dcm").write_bytes(bytes([i]) * 100)
    fingerprint = ContentFingerprinter(None)
    digest = fingerprint(series)
    assert fingerprint.files_hashed == 3
    (series / "slice1.dcm").write_bytes(bytes([9]) * 100)
    changed = fingerprint(series)
    assert changed != digest
    (series / "slice1.dcm").rename(series / "slice9.dcm")
    assert fingerprint(series) not in (digest, changed)
    with pytest.raises(FileNotFoundError):
        fingerprint(tmp_path / "missing")


def _damage_truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # inside the tensor data: only the checksum can notice
    path.write_bytes(bytes(data))


def _damage_header(path: Path) -> None:
    path.write_bytes(b"\xff" * 8 + path.read_bytes()[8:])


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_flip_last_byte, _damage_header])
def test_damaged_entry_is_detected_logged_and_rebuilt(tmp_path, caplog, damage):
    image, mask = _write_case(tmp_path)
    loader = CountingLoader()
    cache = PreprocessedVolumeCache(tmp_path / "cache", CONFIG)
    original = cache.get_or_create(image, mask, _creator(CONFIG, loader, image, mask))
    key = cache.key(image, mask)
    damage(cache.entry_path(key))
    with pytest.raises(CacheEntryError):
        cache.load(key)

    with caplog.at_level(logging.WARNING, logger="medvl.data.cache"):
        rebuilt = cache.get_or_create(image, mask, _creator(CONFIG, loader, image, mask))
    assert loader.calls == 4  # rebuilt from the files
    assert any("rebuilding" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    _assert_same(original, rebuilt)
    _assert_same(original, cache.load(key))  # the entry on disk is valid again


def test_entry_holds_no_paths_and_small_mask_dtype(tmp_path):
    image, mask = _write_case(tmp_path)
    cache = PreprocessedVolumeCache(tmp_path / "cache", CONFIG)
    cache.get_or_create(image, mask, _creator(CONFIG, CountingLoader(), image, mask))
    entry = cache.entry_path(cache.key(image, mask))
    raw = entry.read_bytes()
    assert str(tmp_path).encode() not in raw and image.name.encode() not in raw
    with safe_open(str(entry), framework="pt") as f:
        meta = json.loads(f.metadata()["medvl_cache"])
        assert f.get_tensor("organ_mask").dtype == torch.uint8
    assert meta["spacing"] == [4.0, 4.0, 4.0] and meta["shape"] == [1, 8, 8, 8]
    assert not list(entry.parent.glob("*.tmp"))


def test_large_label_values_round_trip(tmp_path):
    cache = PreprocessedVolumeCache(tmp_path / "cache", CONFIG)
    mask = torch.tensor([0, 300, 70000]).reshape(1, 3, 1, 1)
    volume = PreprocessedVolume(torch.zeros(1, 3, 1, 1), np.eye(4), np.eye(4), organ_mask=mask)
    cache.save("ab" * 32, volume)
    assert torch.equal(cache.load("ab" * 32).organ_mask, mask)


def _fill_worker(cache_dir: str, cases: list[tuple[str, str]], barrier) -> None:
    # As torch's DataLoader workers do: a forked child that reuses the parent's OpenMP pool can hang.
    torch.set_num_threads(1)
    cache = PreprocessedVolumeCache(cache_dir, CONFIG)
    barrier.wait()  # both processes miss, compute and publish the same entries at the same time
    for image, mask in cases:
        cache.get_or_create(image, mask, _creator(CONFIG, None, Path(image), Path(mask)))


def test_two_processes_filling_one_cache_leave_valid_entries(tmp_path):
    cases = [tuple(map(str, _write_case(tmp_path, seed))) for seed in range(3)]
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    ctx = multiprocessing.get_context(method)
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_fill_worker, args=(str(tmp_path / "cache"), cases, barrier)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    hung = [w for w in workers if w.exitcode is None]
    for w in hung:
        w.kill()
    assert not hung, "a cache-filling worker did not finish within 120 s"
    assert [w.exitcode for w in workers] == [0, 0]

    cache = PreprocessedVolumeCache(tmp_path / "cache", CONFIG)
    for image, mask in cases:
        stored = cache.load(cache.key(image, mask))  # raises CacheEntryError if damaged
        assert stored is not None
        fresh = _creator(CONFIG, None, Path(image), Path(mask))()
        assert (fresh.image - stored.image).abs().max() <= UNORM16_MAX_ERROR
        assert torch.equal(fresh.organ_mask, stored.organ_mask)
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_cache_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        PreprocessedVolumeCache(tmp_path / "file", CONFIG)


def test_unorm16_rounding_stays_within_its_documented_bound():
    values = torch.cat([torch.rand(100_000, generator=torch.Generator().manual_seed(0)), torch.tensor([0.0, 1.0])])
    decoded = decode_unorm16(encode_unorm16(values).numpy())
    error = (decoded - values).abs().max()
    assert 0 < error <= UNORM16_MAX_ERROR and decoded[-2] == 0.0 and decoded[-1] == 1.0
    assert UNORM16_MAX_ERROR * 2000 < 0.016  # HU over the default 2000 HU window, as the docs say
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode_unorm16(torch.tensor([0.5, 1.01]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode_unorm16(torch.tensor([float("nan")]))


def test_entry_is_unorm16_and_an_old_format_entry_is_rebuilt(tmp_path, caplog):
    image, mask = _write_case(tmp_path)
    loader = CountingLoader()
    cache = PreprocessedVolumeCache(tmp_path / "cache", CONFIG)
    first = cache.get_or_create(image, mask, _creator(CONFIG, loader, image, mask))
    key = cache.key(image, mask)
    path = cache.entry_path(key)
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("image").dtype == torch.uint16
    # A format-1 entry (float32 image, sha256 checksums) at this path must never be read as format 2.
    old_meta = {"format_version": 1, "affine": np.eye(4).tolist(), "original_affine": np.eye(4).tolist(),
                "sha256": {"image": "0" * 64}}
    save_file({"image": first.image.float()}, str(path), metadata={"medvl_cache": json.dumps(old_meta)})
    with pytest.raises(CacheEntryError, match="format version 1"):
        cache.load(key)
    # Same version number but another image encoding (e.g. a float16 experiment): refused as well.
    new_meta = {**old_meta, "format_version": 2, "image_encoding": "float16", "crc32": {"image": 0}}
    save_file({"image": first.image.half()}, str(path), metadata={"medvl_cache": json.dumps(new_meta)})
    with pytest.raises(CacheEntryError, match="encoding"):
        cache.load(key)
    with caplog.at_level(logging.WARNING, logger="medvl.data.cache"):
        rebuilt = cache.get_or_create(image, mask, _creator(CONFIG, loader, image, mask))
    assert loader.calls == 4 and any("rebuilding" in r.getMessage() for r in caplog.records)
    _assert_same(first, rebuilt)


def test_out_of_range_image_is_refused_not_clipped(tmp_path):
    cache = PreprocessedVolumeCache(tmp_path / "cache", CONFIG)
    volume = PreprocessedVolume(torch.full((1, 2, 2, 2), 3.0), np.eye(4), np.eye(4))
    with pytest.raises(ValueError, match=r"cache entry .*\[0, 1\]"):
        cache.save("cd" * 32, volume)
    assert not cache.entry_path("cd" * 32).exists()
