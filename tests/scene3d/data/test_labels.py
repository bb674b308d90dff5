"""ScanNet label maps: tsv parsing, raw -> NYU40 -> ScanRefer mapping, errors, the tsv shipped with open3d."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from scene3d.data import labels
from scene3d.data.labels import (
    NYU40_CLASSES,
    SCANREFER_CLASS_TO_ID,
    SCANREFER_CLASSES,
    SCANREFER_NYU40_ID_TO_CLASS,
    SCANREFER_NYU40_IDS,
    LabelMapError,
    default_label_map_path,
    load_label_map,
    normalize_label,
    scanrefer_class_for_nyu40,
)
from tests.scene3d.data.scannet_factory import LABEL_TSV_COLUMNS, write_label_tsv


def test_scanrefer_classes_follow_scanrefer_order_and_nyu40_ids() -> None:
    assert len(SCANREFER_CLASSES) == 18 and SCANREFER_CLASSES[-1] == "others"
    assert SCANREFER_CLASSES[:4] == ("cabinet", "bed", "chair", "sofa")
    assert SCANREFER_CLASS_TO_ID["shower curtain"] == 13 and SCANREFER_CLASS_TO_ID["others"] == 17
    # The 17 named classes, in order, are the NYU40 classes of ScanRefer's nyu40ids minus 39 (otherfurniture).
    named_ids = [i for i in SCANREFER_NYU40_IDS if i != 39]
    assert [SCANREFER_NYU40_ID_TO_CLASS[i] for i in named_ids] == list(SCANREFER_CLASSES[:-1])
    assert [NYU40_CLASSES[i - 1] for i in named_ids] == list(SCANREFER_CLASSES[:-1])
    assert NYU40_CLASSES[38] == "otherfurniture" and len(NYU40_CLASSES) == 40


@pytest.mark.parametrize(
    "nyu40_id, expected", [(5, "chair"), (28, "shower curtain"), (39, "others"), (1, "others"), (0, "others")]
)
def test_scanrefer_class_for_nyu40(nyu40_id: int, expected: str) -> None:
    assert scanrefer_class_for_nyu40(nyu40_id) == expected


def test_normalize_label() -> None:
    assert normalize_label("  Kitchen_Cabinets ") == "kitchen cabinets"
    assert normalize_label("shower   curtain") == "shower curtain"


def test_load_label_map_reads_rows_and_maps_to_scanrefer(tmp_path: Path) -> None:
    label_map = load_label_map(write_label_tsv(tmp_path / "labels.tsv"))
    assert len(label_map) == 6
    cabinet = label_map.get("kitchen_cabinets")  # ScanRefer's underscored spelling finds the tsv row
    assert cabinet is not None
    assert (cabinet.raw_category, cabinet.nyu40_id, cabinet.nyu40_class, cabinet.scanrefer_class) == (
        "kitchen cabinets", 3, "cabinet", "cabinet")
    assert label_map.get("trash can").scanrefer_class == "others"  # otherfurniture
    assert label_map.get("pillow").scanrefer_class == "others"  # NYU40 pillow is not a ScanRefer class
    assert label_map.get("shower curtain").scanrefer_class == "shower curtain"
    assert label_map.get("spaceship") is None and "spaceship" not in label_map and "Chair" in label_map


def _write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "header, rows, message",
    [
        (["id", "raw_category", "nyu40class"], [["1", "chair", "chair"]], "lacks column(s) ['nyu40id']"),
        (["raw_category", "nyu40id", "nyu40class"], [["chair", "five", "chair"]], "line 2: nyu40id 'five'"),
        (["raw_category", "nyu40id", "nyu40class"], [["chair", "41", "chair"]], "outside 0..40"),
        (["raw_category", "nyu40id", "nyu40class"], [["chair", "5", "chair"], ["Chair", "7", "table"]],
         "line 3: raw category 'Chair' maps to nyu40id 7"),
        (["raw_category", "nyu40id", "nyu40class"], [], "no rows"),
        (["raw_category", "nyu40id", "nyu40class"], [["chair"]], "line 2: 1 columns"),
    ],
)
def test_load_label_map_rejects_bad_files(
    tmp_path: Path, header: list[str], rows: list[list[str]], message: str
) -> None:
    path = _write_rows(tmp_path / "bad.tsv", header, rows)
    with pytest.raises(LabelMapError, match="bad.tsv") as info:
        load_label_map(path)
    assert message in str(info.value)


def test_load_label_map_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(LabelMapError, match="nowhere.tsv: label map not found"):
        load_label_map(tmp_path / "nowhere.tsv")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(LabelMapError, match="empty.tsv: empty label map"):
        load_label_map(tmp_path / "empty.tsv")


def test_load_label_map_without_path_or_open3d_copy_says_what_to_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labels, "default_label_map_path", lambda: None)
    with pytest.raises(LabelMapError, match="pass label_map_path="):
        load_label_map(None)


def test_load_label_map_rereads_an_edited_file(tmp_path: Path) -> None:
    path = write_label_tsv(tmp_path / "labels.tsv")
    assert load_label_map(path).get("chair").nyu40_id == 5
    write_label_tsv(path, rows=[("chair", "chair", 7, "table")])
    assert load_label_map(path).get("chair").nyu40_id == 7


def test_open3d_tsv_loads_and_matches_scanrefer_name_rule() -> None:
    path = default_label_map_path()
    if path is None:
        pytest.skip("this open3d install ships no scannetv2-labels.combined.tsv")
    label_map = load_label_map(None)
    assert label_map.source == path.resolve()
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert tuple(rows[0].keys())[:8] == LABEL_TSV_COLUMNS[:8]
    assert len(label_map) == len({normalize_label(row["raw_category"]) for row in rows}) > 500
    # ScanRefer's _get_raw2label: the class is the row's nyu40class when it is one of the 17 names, else others.
    for row in rows:
        by_name = row["nyu40class"] if row["nyu40class"] in SCANREFER_CLASSES[:-1] else "others"
        assert label_map.get(row["raw_category"]).scanrefer_class == by_name, row["raw_category"]
    office_chair = label_map.get("office chair")
    assert (office_chair.nyu40_id, office_chair.nyu40_class, office_chair.scanrefer_class) == (5, "chair", "chair")
    assert label_map.get("kitchen cabinets").scanrefer_class == "cabinet"
