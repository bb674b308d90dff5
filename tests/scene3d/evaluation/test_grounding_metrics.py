"""Hand-computed cases of the grounding metrics (they fail if a definition changes)."""
import numpy as np

from scene3d.evaluation.box_iou import box_corners, box_iou_matrix, corners_to_box
from scene3d.evaluation.grounding_accuracy import grounding_accuracy, scanrefer_unique_mask
from scene3d.evaluation.multi3drefer_f1 import query_f1
from scene3d.evaluation.nr3d_accuracy import is_view_dependent, nr3d_accuracy

C, S = np.zeros((1, 3)), np.ones((1, 3))


def test_iou_touching_nested_disjoint():
    assert box_iou_matrix(C, S, C + [1, 0, 0], S)[0, 0] == 0.0           # touching faces
    assert abs(box_iou_matrix(C, S, C, S * 0.5)[0, 0] - 0.125) < 1e-12   # nested: 0.125 / 1
    assert box_iou_matrix(C, S, C + [5, 0, 0], S)[0, 0] == 0.0           # disjoint
    assert abs(box_iou_matrix(C, S, C + [0.5, 0, 0], S)[0, 0] - 0.5 / 1.5) < 1e-12


def test_corners_round_trip():
    center, size = corners_to_box(box_corners([1, 2, 3], [2, 4, 6]))
    assert np.allclose(center, [1, 2, 3]) and np.allclose(size, [2, 4, 6])


def test_unique_counts_annotated_objects_and_accuracy_subsets():
    assert scanrefer_unique_mask([("a", 1, "chair"), ("a", 2, "chair"), ("a", 3, "bed")]).tolist() == [False, False, True]
    m = grounding_accuracy([0.6, 0.3, 0.1], [True, False, False])
    assert m["acc@0.25"] == 2 / 3 and m["acc@0.5"] == 1 / 3 and m["acc@0.25/multiple"] == 0.5
    assert m["acc@0.5/multiple"] == 0.0 and m["acc@0.5/unique"] == 1.0
    assert grounding_accuracy([0.5], [True])["acc@0.5"] == 1.0           # IoU >= k counts


def test_nr3d_subsets_and_multi3drefer_f1():
    assert is_view_dependent("the chair on the left") and not is_view_dependent("the leftover chair")
    m = nr3d_accuracy([True, False], [2, 3], [True, False])
    assert m["acc/easy"] == 1.0 and m["acc/hard"] == 0.0
    empty = np.zeros((0, 3))
    assert query_f1(empty, empty, empty, empty, 0.5) == 1.0 and query_f1(C, S, empty, empty, 0.5) == 0.0
    two = np.array([[0, 0, 0], [3, 0, 0]])
    assert query_f1(two, np.ones((2, 3)), C, S, 0.5) == 2 * 1 / 3
