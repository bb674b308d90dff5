import json

from common.io import atomic_write_json


def test_atomic_write_json_handles_nan_and_leaves_no_temp(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"a": float("nan"), "b": 1.5, "c": [float("inf")]})
    assert json.loads(path.read_text()) == {"a": None, "b": 1.5, "c": [None]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os
    import stat

    from common.io import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
