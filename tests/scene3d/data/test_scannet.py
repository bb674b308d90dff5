"""ScanNet scene reader / writer: per-object points, boxes, labels, axis alignment, PLY round trips, errors."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from scene3d.data.labels import default_label_map_path
from scene3d.data.scannet import (
    SceneObject,
    SceneReadError,
    SkippedObjectWarning,
    UnmatchedSegmentWarning,
    read_ply_vertices,
    read_scannet_scene,
    write_ply_mesh,
    write_scannet_scene,
)
from tests.scene3d.data.scannet_factory import (
    OBJECT_VERTICES,
    RGB,
    SCENE_ID,
    SEG_GROUPS,
    SEG_INDICES,
    XYZ,
    write_label_tsv,
    write_tiny_scene,
)

# 90 degrees about z, then a translation: (x, y, z) -> (1 - y, 2 + x, 3 + z).
ROTATION_TRANSLATION = np.array([
    [0.0, -1.0, 0.0, 1.0],
    [1.0, 0.0, 0.0, 2.0],
    [0.0, 0.0, 1.0, 3.0],
    [0.0, 0.0, 0.0, 1.0],
])


@pytest.fixture
def label_tsv(tmp_path: Path) -> Path:
    return write_label_tsv(tmp_path / "labels.tsv")


@pytest.fixture
def scene_dir(tmp_path: Path) -> Path:
    return write_tiny_scene(tmp_path / "scans")


def test_writer_creates_scannet_files_with_scannet_keys(scene_dir: Path) -> None:
    assert scene_dir.name == SCENE_ID
    assert sorted(p.name for p in scene_dir.iterdir()) == sorted([
        f"{SCENE_ID}_vh_clean_2.ply", f"{SCENE_ID}_vh_clean_2.0.010000.segs.json", f"{SCENE_ID}.aggregation.json",
    ])
    segs = json.loads((scene_dir / f"{SCENE_ID}_vh_clean_2.0.010000.segs.json").read_text())
    assert segs["segIndices"] == SEG_INDICES.tolist()
    aggregation = json.loads((scene_dir / f"{SCENE_ID}.aggregation.json").read_text())
    assert [{k: g[k] for k in ("objectId", "label", "segments")} for g in aggregation["segGroups"]] == SEG_GROUPS
    # A folder already named after the scene is used as it is.
    again = write_tiny_scene(scene_dir)
    assert again == scene_dir and not (scene_dir / SCENE_ID).exists()


def test_read_scene_objects_points_colours_boxes_and_classes(scene_dir: Path, label_tsv: Path) -> None:
    scene = read_scannet_scene(scene_dir, label_map_path=label_tsv)
    assert scene.scene_id == SCENE_ID
    assert [o.object_id for o in scene.objects] == [0, 1, 2]
    for obj in scene.objects:
        vertices = OBJECT_VERTICES[obj.object_id]
        np.testing.assert_array_equal(obj.points, XYZ[vertices])  # mesh order
        np.testing.assert_allclose(obj.colors, RGB[vertices] / 255.0, atol=1e-7)
        assert obj.points.dtype == np.float32 and obj.colors.dtype == np.float32
    chair, cabinet, wall = scene.objects
    np.testing.assert_array_equal(chair.box_min, [0, 0, 0])
    np.testing.assert_array_equal(chair.box_max, [1, 2, 3])
    np.testing.assert_array_equal(chair.center, [0.5, 1, 1.5])
    np.testing.assert_array_equal(chair.size, [1, 2, 3])
    np.testing.assert_array_equal(cabinet.center, [5.5, 6, 5])
    np.testing.assert_array_equal(cabinet.size, [1, 2, 0])
    assert [(o.label, o.nyu40_id, o.nyu40_class, o.scanrefer_class) for o in scene.objects] == [
        ("chair", 5, "chair", "chair"),
        ("kitchen cabinets", 3, "cabinet", "cabinet"),
        ("wall", 1, "wall", "others"),
    ]
    np.testing.assert_array_equal(scene.axis_alignment, np.eye(4))
    assert scene.get_object(1) is cabinet and scene.get_object(7) is None
    meta = scene.meta
    assert meta["n_vertices"] == 10 and meta["n_objects"] == 3
    assert meta["n_unassigned_vertices"] == 1 and meta["n_shared_vertices"] == 0
    assert meta["axis_alignment_source"] == "identity: no <scene>.txt"
    assert meta["unknown_label_counts"] == {} and meta["skipped_objects"] == [] and meta["unmatched_segments"] == {}
    assert meta["files"]["alignment"] is None
    json.dumps(meta)  # JSON-serialisable


def test_axis_alignment_is_applied(tmp_path: Path, label_tsv: Path) -> None:
    scene_dir = write_tiny_scene(tmp_path, axis_alignment=ROTATION_TRANSLATION)
    scene = read_scannet_scene(scene_dir, label_map_path=label_tsv)
    np.testing.assert_array_equal(scene.axis_alignment, ROTATION_TRANSLATION)
    assert scene.meta["axis_alignment_source"] == f"{SCENE_ID}.txt"
    chair = scene.objects[0]
    # Chair vertices (0,0,0) (1,0,0) (0,2,0) (0,0,3) (1,1,1) -> (1,2,3) (1,3,3) (-1,2,3) (1,2,6) (0,3,4).
    np.testing.assert_allclose(chair.points, [[1, 2, 3], [1, 3, 3], [-1, 2, 3], [1, 2, 6], [0, 3, 4]])
    np.testing.assert_allclose(chair.box_min, [-1, 2, 3])
    np.testing.assert_allclose(chair.box_max, [1, 3, 6])
    np.testing.assert_allclose(scene.objects[1].box_min, [-6, 7, 8])  # (5,5,5), (6,7,5) -> (-4,7,8), (-6,8,8)
    np.testing.assert_allclose(scene.objects[1].box_max, [-4, 8, 8])


def test_txt_without_axis_alignment_line_means_identity(scene_dir: Path, label_tsv: Path) -> None:
    (scene_dir / f"{SCENE_ID}.txt").write_text("colorHeight = 968\nsceneType = Bedroom / Hotel\n")
    scene = read_scannet_scene(scene_dir, label_map_path=label_tsv)
    np.testing.assert_array_equal(scene.axis_alignment, np.eye(4))
    assert scene.meta["axis_alignment_source"] == f"identity: no axisAlignment line in {SCENE_ID}.txt"
    np.testing.assert_array_equal(scene.objects[0].points, XYZ[OBJECT_VERTICES[0]])


def test_reads_the_vh_clean_aggregation_spelling_and_explicit_scene_id(tmp_path: Path, label_tsv: Path) -> None:
    scene_dir = write_tiny_scene(tmp_path).rename(tmp_path / "renamed_folder")
    (scene_dir / f"{SCENE_ID}.aggregation.json").rename(scene_dir / f"{SCENE_ID}_vh_clean.aggregation.json")
    scene = read_scannet_scene(scene_dir, scene_id=SCENE_ID, label_map_path=label_tsv)
    assert scene.scene_id == SCENE_ID and len(scene.objects) == 3
    assert scene.meta["files"]["aggregation"] == f"{SCENE_ID}_vh_clean.aggregation.json"


def test_unknown_labels_map_to_others_with_counts(tmp_path: Path, label_tsv: Path, caplog) -> None:
    groups = SEG_GROUPS[:1] + [
        {"objectId": 1, "label": "flux capacitor", "segments": [2]},
        {"objectId": 2, "label": "flux capacitor", "segments": [3]},
    ]
    scene_dir = write_tiny_scene(tmp_path, seg_groups=groups)
    with caplog.at_level(logging.WARNING, logger="scene3d.data.scannet"):
        scene = read_scannet_scene(scene_dir, label_map_path=label_tsv)
    assert [(o.nyu40_id, o.nyu40_class, o.scanrefer_class) for o in scene.objects[1:]] == [(0, "unknown", "others")] * 2
    assert scene.meta["unknown_label_counts"] == {"flux capacitor": 2}
    assert "2 object(s)" in caplog.text and "flux capacitor" in caplog.text


def test_objects_without_points_are_skipped_with_a_warning(tmp_path: Path, label_tsv: Path) -> None:
    groups = SEG_GROUPS + [{"objectId": 3, "label": "pillow", "segments": [77, 78]}]
    scene_dir = write_tiny_scene(tmp_path, seg_groups=groups)
    with pytest.warns(SkippedObjectWarning, match=r"aggregation.json: object 3 \('pillow'\) skipped: no points"), \
            pytest.warns(UnmatchedSegmentWarning, match="object 3 .* does not have: 77, 78"):
        scene = read_scannet_scene(scene_dir, label_map_path=label_tsv, allow_unmatched_segments=True)
    assert [o.object_id for o in scene.objects] == [0, 1, 2]
    assert scene.meta["skipped_objects"] == [{"object_id": 3, "label": "pillow", "n_points": 0, "reason": "no points"}]
    assert scene.meta["unmatched_segments"] == {3: 2}


def test_segment_id_absent_from_the_mesh_is_an_error_naming_file_object_and_segment(
    tmp_path: Path, label_tsv: Path
) -> None:
    groups = [*SEG_GROUPS[:1], {**SEG_GROUPS[1], "segments": [*SEG_GROUPS[1]["segments"], 4242]}, *SEG_GROUPS[2:]]
    scene_dir = write_tiny_scene(tmp_path, seg_groups=groups)
    with pytest.raises(SceneReadError) as error:
        read_scannet_scene(scene_dir, label_map_path=label_tsv)
    message = str(error.value)
    assert message.startswith(f"{scene_dir / (SCENE_ID + '.aggregation.json')}: object {SEG_GROUPS[1]['objectId']} ")
    assert "segs.json does not have: 4242" in message and "allow_unmatched_segments=True" in message


def test_min_points_skips_or_raises(scene_dir: Path, label_tsv: Path) -> None:
    with pytest.warns(SkippedObjectWarning, match="2 points < min_points=3"):
        scene = read_scannet_scene(scene_dir, label_map_path=label_tsv, min_points=3)
    assert [o.object_id for o in scene.objects] == [0]
    assert [s["object_id"] for s in scene.meta["skipped_objects"]] == [1, 2]
    with pytest.raises(SceneReadError, match=rf"{SCENE_ID}.aggregation.json: object 1 .* 2 points < min_points=3"):
        read_scannet_scene(scene_dir, label_map_path=label_tsv, min_points=3, on_too_few_points="error")
    with pytest.warns(SkippedObjectWarning), pytest.raises(SceneReadError, match="aggregation.json: no object of 3"):
        read_scannet_scene(scene_dir, label_map_path=label_tsv, min_points=6)


def test_shared_segments_give_points_to_both_objects(tmp_path: Path, label_tsv: Path) -> None:
    groups = SEG_GROUPS + [{"objectId": 5, "label": "chair", "segments": [1, 1, 2]}]  # duplicated segment id
    scene = read_scannet_scene(write_tiny_scene(tmp_path, seg_groups=groups), label_map_path=label_tsv)
    np.testing.assert_array_equal(scene.get_object(5).points, XYZ[[1, 3, 4, 5]])
    assert scene.meta["n_shared_vertices"] == 4


def test_grouping_matches_naive_reference(tmp_path: Path, label_tsv: Path) -> None:
    rng = np.random.default_rng(0)
    n_vertices, n_segments = 3000, 200
    xyz = rng.normal(size=(n_vertices, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(n_vertices, 3))
    seg_indices = rng.integers(0, n_segments, size=n_vertices) * 7  # sparse, unsorted segment ids
    groups = [
        {"objectId": i, "label": "chair",
         "segments": (rng.choice(n_segments + 20, size=12, replace=False) * 7).tolist()}  # some absent ids
        for i in range(25)
    ]
    scene_dir = write_scannet_scene(tmp_path, "scene0001_00", xyz, rgb, seg_indices, groups)
    with pytest.warns(UnmatchedSegmentWarning):
        scene = read_scannet_scene(scene_dir, label_map_path=label_tsv, allow_unmatched_segments=True)
    membership = np.zeros(n_vertices, dtype=int)
    for group, obj in zip(groups, scene.objects):
        mask = np.array([s in set(group["segments"]) for s in seg_indices])
        membership += mask
        np.testing.assert_array_equal(obj.points, xyz[mask])
        np.testing.assert_allclose(obj.colors, rgb[mask] / 255.0, atol=1e-7)
        n_absent = len(set(group["segments"]) - set(seg_indices.tolist()))
        assert scene.meta["unmatched_segments"].get(group["objectId"], 0) == n_absent
    assert scene.meta["n_shared_vertices"] == int((membership > 1).sum())
    assert scene.meta["n_unassigned_vertices"] == int((membership == 0).sum())


def test_real_open3d_label_map_is_the_default(scene_dir: Path) -> None:
    if default_label_map_path() is None:
        pytest.skip("this open3d install ships no scannetv2-labels.combined.tsv")
    scene = read_scannet_scene(scene_dir)
    assert [(o.nyu40_id, o.nyu40_class, o.scanrefer_class) for o in scene.objects] == [
        (5, "chair", "chair"), (3, "cabinet", "cabinet"), (1, "wall", "others"),
    ]
    assert scene.meta["label_map"].endswith("scannetv2-labels.combined.tsv")


# ---------------------------------------------------------------- PLY


def test_ply_round_trip_keeps_positions_colours_and_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(50, 3)).astype(np.uint8)
    faces = rng.integers(0, 50, size=(7, 3))
    path = write_ply_mesh(tmp_path / "mesh.ply", xyz, rgb, faces)
    read_xyz, read_rgb = read_ply_vertices(path)
    np.testing.assert_array_equal(read_xyz, xyz)
    np.testing.assert_array_equal(read_rgb, rgb)
    raw = path.read_bytes()
    header, body = raw.split(b"end_header\n", 1)
    assert b"property uchar alpha" in header and b"format binary_little_endian 1.0" in header
    # 50 vertices of 16 bytes (3 float + 4 uchar), then 7 faces of 13 bytes (uchar count + 3 int).
    assert len(body) == 50 * 16 + 7 * 13
    vertices = np.frombuffer(body[: 50 * 16], dtype=[("xyz", "<f4", 3), ("rgba", "u1", 4)])
    assert (vertices["rgba"][:, 3] == 255).all()
    face_records = np.frombuffer(body[50 * 16:], dtype=[("n", "u1"), ("idx", "<i4", 3)])
    np.testing.assert_array_equal(face_records["idx"], faces)


def test_open3d_reads_the_written_ply_identically(tmp_path: Path) -> None:
    o3d = pytest.importorskip("open3d")
    path = write_tiny_scene(tmp_path) / f"{SCENE_ID}_vh_clean_2.ply"
    mesh = o3d.io.read_triangle_mesh(str(path))
    np.testing.assert_array_equal(np.asarray(mesh.vertices).astype(np.float32), XYZ)
    np.testing.assert_array_equal(np.round(np.asarray(mesh.vertex_colors) * 255).astype(np.uint8), RGB)
    np.testing.assert_array_equal(np.asarray(mesh.triangles), [[0, 1, 2], [4, 5, 9]])


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_read_ply_binary_with_extra_properties_and_preceding_element(tmp_path: Path, byte_order: str) -> None:
    fmt = {"<": "binary_little_endian", ">": "binary_big_endian"}[byte_order]
    header = (
        f"ply\nformat {fmt} 1.0\ncomment made by hand\nelement camera 2\nproperty double f\n"
        "element vertex 3\nproperty double x\nproperty double y\nproperty double z\nproperty float nx\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    camera = np.array([1.5, 2.5], dtype=byte_order + "f8")
    vertex = np.zeros(3, dtype=[(n, byte_order + t) for n, t in
                                [("x", "f8"), ("y", "f8"), ("z", "f8"), ("nx", "f4"), ("red", "u1"),
                                 ("green", "u1"), ("blue", "u1")]])
    vertex["x"], vertex["y"], vertex["z"] = [1, 2, 3], [4, 5, 6], [7, 8, 9]
    vertex["red"], vertex["green"], vertex["blue"] = [10, 20, 30], [40, 50, 60], [70, 80, 90]
    path = tmp_path / "hand.ply"
    path.write_bytes(header.encode() + camera.tobytes() + vertex.tobytes())
    xyz, rgb = read_ply_vertices(path)
    np.testing.assert_array_equal(xyz, [[1, 4, 7], [2, 5, 8], [3, 6, 9]])
    np.testing.assert_array_equal(rgb, [[10, 40, 70], [20, 50, 80], [30, 60, 90]])


def test_read_ascii_ply(tmp_path: Path) -> None:
    path = tmp_path / "ascii.ply"
    path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\n"
        "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
        "0.5 1 2 255 0 7 255\n-3 4.25 5 1 2 3 255\n3 0 1 1\n"
    )
    xyz, rgb = read_ply_vertices(path)
    np.testing.assert_array_equal(xyz, [[0.5, 1, 2], [-3, 4.25, 5]])
    np.testing.assert_array_equal(rgb, [[255, 0, 7], [1, 2, 3]])
    assert rgb.dtype == np.uint8


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello world", "not a PLY file"),
        (b"ply\nelement vertex 1\nproperty float x\nend_header\n", "no 'format' line"),
        (b"ply\nformat binary_little_endian 1.0\nelement face 0\nend_header\n", "no 'vertex' element"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
         b"property float z\nend_header\n", "lack properties ['red', 'green', 'blue']"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
         b"property float z\nproperty float red\nproperty float green\nproperty float blue\nend_header\n",
         "must be uchar"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nproperty float y\n"
         b"property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n\x00\x00",
         "truncated PLY: 10 vertices need"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty quaternion x\nend_header\n",
         "cannot parse PLY header line"),
    ],
)
def test_read_ply_rejects_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(SceneReadError, match="bad.ply") as info:
        read_ply_vertices(path)
    assert message in str(info.value)


# ---------------------------------------------------------------- errors naming the file


def test_missing_folder_and_files_are_listed(tmp_path: Path, scene_dir: Path, label_tsv: Path) -> None:
    with pytest.raises(SceneReadError, match="scene folder not found"):
        read_scannet_scene(tmp_path / "nope", label_map_path=label_tsv)
    (scene_dir / f"{SCENE_ID}_vh_clean_2.ply").unlink()
    (scene_dir / f"{SCENE_ID}.aggregation.json").unlink()
    with pytest.raises(SceneReadError) as info:
        read_scannet_scene(scene_dir, label_map_path=label_tsv)
    message = str(info.value)
    assert str(scene_dir) in message
    assert f"missing {SCENE_ID}_vh_clean_2.ply, {SCENE_ID}.aggregation.json or " \
           f"{SCENE_ID}_vh_clean.aggregation.json" in message
    assert f"{SCENE_ID}_vh_clean_2.0.010000.segs.json" in message and f"{SCENE_ID}.txt" in message


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_seg_indices_length_mismatch_names_the_file(scene_dir: Path, label_tsv: Path) -> None:
    segs = scene_dir / f"{SCENE_ID}_vh_clean_2.0.010000.segs.json"
    _edit_json(segs, lambda d: d["segIndices"].pop())
    with pytest.raises(SceneReadError, match=rf"{segs.name}: segIndices has 9 entries but the mesh .* has 10 vertices"):
        read_scannet_scene(scene_dir, label_map_path=label_tsv)


@pytest.mark.parametrize(
    "file_suffix, edit, message",
    [
        ("_vh_clean_2.0.010000.segs.json", lambda d: d.pop("segIndices"), "list 'segIndices'"),
        ("_vh_clean_2.0.010000.segs.json", lambda d: d.update(segIndices=[0.5] * 10), "flat list of integers"),
        ("_vh_clean_2.0.010000.segs.json", lambda d: d.update(segIndices=[[0], [1, 2]] * 5), "flat list of integers"),
        (".aggregation.json", lambda d: d.pop("segGroups"), "list 'segGroups'"),
        (".aggregation.json", lambda d: d["segGroups"][1].update(objectId="one"), r"segGroups\[1\]: 'objectId'"),
        (".aggregation.json", lambda d: d["segGroups"][2].update(label=None), r"segGroups\[2\]: 'label'"),
        (".aggregation.json", lambda d: d["segGroups"][0].update(segments=[0, "1"]), r"segGroups\[0\]: 'segments'"),
        (".aggregation.json", lambda d: d["segGroups"][2].update(objectId=0),
         r"segGroups\[2\]: objectId 0 already used by segGroups\[0\]"),
        (".aggregation.json", lambda d: d.update(segGroups=[]), "segGroups is empty, the scene has no objects"),
    ],
)
def test_bad_json_contents_name_the_file(
    scene_dir: Path, label_tsv: Path, file_suffix: str, edit, message: str
) -> None:
    path = scene_dir / f"{SCENE_ID}{file_suffix}"
    _edit_json(path, edit)
    with pytest.raises(SceneReadError, match=message) as info:
        read_scannet_scene(scene_dir, label_map_path=label_tsv)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("file_suffix", ["_vh_clean_2.0.010000.segs.json", ".aggregation.json"])
def test_malformed_json_names_the_file(scene_dir: Path, label_tsv: Path, file_suffix: str) -> None:
    path = scene_dir / f"{SCENE_ID}{file_suffix}"
    path.write_text('{"segIndices": [0, 1,')
    with pytest.raises(SceneReadError, match=rf"{path.name}: invalid JSON .* line 1"):
        read_scannet_scene(scene_dir, label_map_path=label_tsv)


@pytest.mark.parametrize(
    "line, message",
    [
        ("axisAlignment = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0", "16 finite numbers, got 15"),
        ("axisAlignment = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 one", "not a number"),
        ("axisAlignment = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 nan", "16 finite numbers"),
        ("axisAlignment = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 1 1", "last row must be 0 0 0 1"),
    ],
)
def test_bad_axis_alignment_names_the_file(scene_dir: Path, label_tsv: Path, line: str, message: str) -> None:
    (scene_dir / f"{SCENE_ID}.txt").write_text(f"sceneType = Office\n{line}\n")
    with pytest.raises(SceneReadError, match=rf"{SCENE_ID}.txt: axisAlignment.*{message}"):
        read_scannet_scene(scene_dir, label_map_path=label_tsv)


def test_truncated_mesh_names_the_file(scene_dir: Path, label_tsv: Path) -> None:
    mesh = scene_dir / f"{SCENE_ID}_vh_clean_2.ply"
    mesh.write_bytes(mesh.read_bytes()[:300])
    with pytest.raises(SceneReadError, match=rf"{mesh.name}: truncated PLY"):
        read_scannet_scene(scene_dir, label_map_path=label_tsv)


def test_missing_label_map_names_the_file(scene_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SceneReadError, match="missing.tsv: label map not found"):
        read_scannet_scene(scene_dir, label_map_path=tmp_path / "missing.tsv")


@pytest.mark.parametrize("kwargs", [{"min_points": 0}, {"min_points": 1.5}, {"on_too_few_points": "drop"}])
def test_reader_rejects_bad_arguments(scene_dir: Path, label_tsv: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        read_scannet_scene(scene_dir, label_map_path=label_tsv, **kwargs)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"xyz": XYZ[:, :2]}, "xyz must be a numeric"),
        ({"xyz": np.where(XYZ == 9, np.nan, XYZ)}, "NaN"),
        ({"rgb": RGB / 255.0}, "rgb must hold integers in 0..255"),
        ({"rgb": RGB.astype(int) + 200}, "rgb must hold integers in 0..255"),
        ({"seg_indices": SEG_INDICES[:5]}, "seg_indices must be an integer array of shape"),
        ({"seg_groups": [{"objectId": 0, "segments": [0]}]}, r"seg_groups\[0\] must be a dict"),
        ({"faces": np.array([[0, 1, 10]])}, "faces index vertices outside 0..9"),
        ({"axis_alignment": np.eye(3)}, "axis_alignment must be a finite"),
        ({"scene_id": "a/b"}, "scene_id must be"),
    ],
)
def test_writer_rejects_bad_arguments(tmp_path: Path, change: dict, message: str) -> None:
    arguments = {"out_dir": tmp_path, "scene_id": SCENE_ID, "xyz": XYZ, "rgb": RGB, "seg_indices": SEG_INDICES,
                 "seg_groups": SEG_GROUPS, **change}
    with pytest.raises(ValueError, match=message):
        write_scannet_scene(**arguments)


def test_scene_object_checks_its_arrays() -> None:
    with pytest.raises(ValueError, match="points must be"):
        SceneObject(0, "chair", 5, "chair", "chair", np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="3 points but 2 colours"):
        SceneObject(0, "chair", 5, "chair", "chair", np.zeros((3, 3)), np.zeros((2, 3)))


def test_100k_vertex_scene_reads_every_object(tmp_path: Path, label_tsv: Path) -> None:
    """A ScanNet-sized scene goes through the vectorised path (its speed is measured in benchmarks/, not here)."""
    rng = np.random.default_rng(0)
    n_vertices = 100_000
    seg_indices = rng.integers(0, 3000, size=n_vertices)
    groups = [{"objectId": i, "label": "chair", "segments": list(range(i * 50, (i + 1) * 50))} for i in range(60)]
    scene_dir = write_scannet_scene(tmp_path, "scene0002_00", rng.normal(size=(n_vertices, 3)),
                                    rng.integers(0, 256, size=(n_vertices, 3)), seg_indices, groups,
                                    axis_alignment=ROTATION_TRANSLATION)
    scene = read_scannet_scene(scene_dir, label_map_path=label_tsv)
    assert len(scene.objects) == 60
    expected = np.isin(seg_indices, np.arange(0, 60 * 50)).sum()
    assert sum(len(o.points) for o in scene.objects) == expected


def _poison_vertex(scene_dir: Path, vertex: int, value: float) -> None:
    """Overwrite vertex `vertex`'s x in the binary PLY (float32 x y z + uchar r g b a = 16 bytes a vertex)."""
    ply = scene_dir / f"{SCENE_ID}_vh_clean_2.ply"
    raw = bytearray(ply.read_bytes())
    start = raw.index(b"end_header\n") + len(b"end_header\n") + 16 * vertex
    raw[start:start + 4] = np.array([value], dtype="<f4").tobytes()
    ply.write_bytes(bytes(raw))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_vertices_are_an_error_naming_scene_file_and_object(
    tmp_path: Path, label_tsv: Path, value: float
) -> None:
    scene_dir = write_tiny_scene(tmp_path)
    _poison_vertex(scene_dir, 4, value)  # vertex 4 belongs to object 1 ('kitchen cabinets')
    with pytest.raises(SceneReadError) as error:
        read_scannet_scene(scene_dir, label_map_path=label_tsv)
    message = str(error.value)
    assert message.startswith(f"{scene_dir / (SCENE_ID + '_vh_clean_2.ply')}: scene {SCENE_ID}: 1 of 10 vertices")
    assert "NaN or infinite" in message and "[4]" in message and "1 ('kitchen cabinets')" in message


def test_scene_object_and_pretraining_refuse_nan_points_naming_object_and_scene(scene_dir: Path, label_tsv) -> None:
    from scene3d.data.pretrain_scene import prepare_pretrain_scene
    from scene3d.data.scene_graph import build_scene_graph_for_scene

    with pytest.raises(ValueError, match=r"SceneObject 7: 1 of its points have NaN"):
        SceneObject(7, "chair", 5, "chair", "chair", np.array([[0, 0, np.nan], [1, 1, 1]]), np.zeros((2, 3)))
    scene = read_scannet_scene(scene_dir, label_map_path=label_tsv)
    scene.objects[1].points[0, 0] = np.nan  # changed after reading
    with pytest.raises(ValueError, match=rf"scene {SCENE_ID}: objects \[1\] have NaN or infinite"):
        prepare_pretrain_scene(scene)
    with pytest.raises(ValueError, match=rf"scene {SCENE_ID}: objects \[1\] have NaN or infinite"):
        build_scene_graph_for_scene(scene)
