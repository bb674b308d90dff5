"""Tests of `python -m scene3d.data.inspect` on a hand-made three-object scene (a lamp on a table, a chair)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scene3d.data.inspect import class_counts, main, relation_counts
from scene3d.data.scannet import read_scannet_scene, write_scannet_scene
from scene3d.data.scene_graph import build_scene_graph_for_scene
from tests.scene3d.data.scannet_factory import write_label_tsv

REPO_ROOT = Path(__file__).resolve().parents[3]
SCENE_ID = "scene0007_00"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# raw label -> (box min, box max): the lamp stands on the table's top (z = 0.75); the chair is 0.2 m beside it.
BOXES = {
    "table": ((-0.6, -0.4, 0.0), (0.6, 0.4, 0.75)),
    "lamp": ((-0.1, -0.1, 0.75), (0.1, 0.1, 1.15)),
    "chair": ((0.8, -0.25, 0.0), (1.3, 0.25, 0.9)),
}
LABEL_ROWS = (("table", "table", 7, "table"), ("lamp", "lamp", 35, "lamp"), ("chair", "chair", 5, "chair"))


def _box_points(low, high, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` points in the box, its two extreme corners included so that the fitted box is exactly [low, high]."""
    low, high = np.asarray(low), np.asarray(high)
    return np.vstack([low, high, rng.uniform(low, high, size=(count - 2, 3))])


@pytest.fixture
def scene_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    xyz = np.vstack([_box_points(low, high, 100, rng) for low, high in BOXES.values()])
    seg_indices = np.repeat(np.arange(len(BOXES)), 100)
    groups = [{"objectId": i, "label": label, "segments": [i]} for i, label in enumerate(BOXES)]
    rgb = rng.integers(0, 256, size=xyz.shape, dtype=np.uint8)
    return write_scannet_scene(tmp_path / "scans", SCENE_ID, xyz, rgb, seg_indices, groups)


@pytest.fixture
def label_map(tmp_path: Path) -> Path:
    return write_label_tsv(tmp_path / "labels.tsv", LABEL_ROWS)


def test_counts_on_hand_made_scene(scene_dir: Path, label_map: Path) -> None:
    scene = read_scannet_scene(scene_dir, label_map_path=label_map)
    counts = relation_counts(build_scene_graph_for_scene(scene))
    # lamp on table and its inverse; near / next_to both ways between table and chair (gap 0.2 m < 0.5 m).
    assert counts["on"] == 1 and counts["supports"] == 1
    assert counts["next_to"] == 2
    assert counts["view_left_of"] == 0  # no viewpoint given
    assert class_counts(scene) == {"table": 1, "chair": 1, "others": 1}  # lamp (NYU40 35) is not a ScanRefer class


def test_main_prints_tables_and_writes_png(scene_dir: Path, label_map: Path, capsys) -> None:
    assert main([str(scene_dir), "--label-map", str(label_map)]) == 0
    printed = capsys.readouterr().out
    for text in ("table", "chair", "lamp", "others", "supports", "next_to"):
        assert text in printed
    png = scene_dir / f"{SCENE_ID}_topdown.png"  # the default path
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_k_limits_edges(scene_dir: Path, label_map: Path, tmp_path: Path, capsys) -> None:
    assert main([str(scene_dir), "--label-map", str(label_map), "--k", "1", "--out", str(tmp_path / "k1.png")]) == 0
    assert "4 directed edges" in capsys.readouterr().out  # each node keeps its nearest: table-lamp, table-chair
    assert main([str(scene_dir), "--label-map", str(label_map), "--k", "0", "--out", str(tmp_path / "all.png")]) == 0
    assert "6 directed edges" in capsys.readouterr().out  # all 3 * 2 ordered pairs


def test_subprocess_run(scene_dir: Path, label_map: Path, tmp_path: Path) -> None:
    out = tmp_path / "picture.png"
    result = subprocess.run(
        [sys.executable, "-m", "scene3d.data.inspect", str(scene_dir), "--label-map", str(label_map),
         "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "chair" in result.stdout and "supports" in result.stdout
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_missing_folder_exits_2_naming_it(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no_such_scene"
    assert main([str(missing)]) == 2
    error = capsys.readouterr().err
    assert str(missing) in error and "Traceback" not in error and error.count("\n") == 1


def test_folder_without_scene_files_exits_2(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "scene0001_00"
    empty.mkdir()
    assert main([str(empty)]) == 2
    error = capsys.readouterr().err
    assert str(empty) in error and "_vh_clean_2.ply" in error


def test_negative_k_is_a_usage_error(scene_dir: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(scene_dir), "--k", "-1"])
    assert exit_info.value.code == 2
