"""Classes as unions of source label ids, and the lookup-table remapping."""
from __future__ import annotations

import json

import pytest
import torch
from monai.data import MetaTensor

from medvl.segmentation.labels import RemapLabelsd, read_source_labels, resolve_class_map

from .conftest import CLASSES, SOURCE_LABELS


def test_names_and_ids_resolve_to_class_indices_in_order():
    assert resolve_class_map(CLASSES, SOURCE_LABELS) == {5: 1, 1: 2, 3: 3, 2: 3}
    assert resolve_class_map({"a": [4, 9], "b": 6}) == {4: 1, 9: 1, 6: 2}


def test_remap_sends_listed_ids_to_their_class_and_everything_else_to_background():
    labels = MetaTensor(torch.tensor([[[[0, 1, 2, 3, 5, 7, 99]]]]), affine=torch.diag(torch.tensor([2.0, 2, 2, 1])))
    out = RemapLabelsd("label", {5: 1, 1: 2, 3: 3, 2: 3})({"label": labels})["label"]
    assert out.tolist() == [[[[0, 2, 3, 3, 1, 0, 0]]]]
    assert out.dtype == torch.int64 and isinstance(out, MetaTensor) and torch.equal(out.affine, labels.affine)
    floats = torch.tensor([[[[0.0, 5.0]]]])  # label maps read as float images
    assert RemapLabelsd("label", {5: 1})({"label": floats})["label"].tolist() == [[[[0, 1]]]]


def test_remap_refuses_images_and_negative_ids():
    with pytest.raises(ValueError, match="non-integer"):
        RemapLabelsd("label", {1: 1})({"label": torch.tensor([0.5])})
    with pytest.raises(ValueError, match="negative"):
        RemapLabelsd("label", {1: 1})({"label": torch.tensor([-1])})


def test_source_labels_read_both_directions(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"1": "spleen", "5": "liver"}))  # TotalSegmentator's layout
    assert read_source_labels(path) == {"spleen": 1, "liver": 5}
    assert read_source_labels({"spleen": 1}) == {"spleen": 1}
    with pytest.raises(ValueError, match="neither"):
        read_source_labels({"spleen": [1]})
    with pytest.raises(FileNotFoundError):
        read_source_labels(tmp_path / "missing.json")


@pytest.mark.parametrize("classes, message", [
    ({}, "classes must map"),
    ({"background": [1]}, "class 0 is always the background"),
    ({"liver": []}, "lists no source labels"),
    ({"liver": ["hepar"]}, "unknown structure name 'hepar'; known names: ['kidney_left'"),
    ({"liver": [5], "other": ["liver"]}, "claimed by classes 'liver' and 'other'"),
    ({"liver": [0]}, "id 0 is the background"),
])
def test_bad_classes(classes, message):
    with pytest.raises(ValueError) as error:
        resolve_class_map(classes, SOURCE_LABELS)
    assert message in str(error.value)
