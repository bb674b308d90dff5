import multiprocessing as mp
import time
from pathlib import Path

import pytest

from common.build_once import build_folder_once


def _slow_build(staging: Path) -> None:
    staging.mkdir()
    (staging / "marker.txt").write_text("built")
    with open(staging.parent / "builds.log", "a") as log:
        log.write("x\n")
    time.sleep(0.3)


def _ensure(root: str) -> None:
    build_folder_once(root, build=_slow_build, is_current=lambda f: (f / "marker.txt").is_file(),
                      is_ours=lambda f: (f / "marker.txt").is_file())


def test_concurrent_callers_build_once(tmp_path):
    root = tmp_path / "data"
    procs = [mp.get_context("fork").Process(target=_ensure, args=(str(root),)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert (root / "marker.txt").read_text() == "built"
    assert (tmp_path / "builds.log").read_text() == "x\n"
    assert not list(tmp_path.glob(".data.building-*"))


def test_failed_build_leaves_nothing_and_foreign_folders_are_kept(tmp_path):
    def broken(staging: Path) -> None:
        staging.mkdir()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_folder_once(tmp_path / "d", build=broken, is_current=lambda f: False, is_ours=lambda f: True)
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".d.building-*"))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    with pytest.raises(ValueError, match="refusing to replace"):
        build_folder_once(foreign, build=_slow_build, is_current=lambda f: False, is_ours=lambda f: False)
    assert (foreign / "precious.txt").read_text() == "keep"
