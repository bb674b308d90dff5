"""Build a folder (a demo data set, a cache) exactly once, even when several processes ask at the same time.

Used by the demo sets of every domain: `python -m medvl.train` under DDP starts one process per GPU and
each asks for the demo data; DataLoader workers may too. The first caller builds under an exclusive file lock
into a temporary sibling folder and renames it into place; the others wait for the lock and find the result.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on `path` (created if needed) for the duration of the block (POSIX)."""
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_json_file(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def build_folder_once(root: str | Path, *, build: Callable[[Path], object], is_current: Callable[[Path], bool],
                      is_ours: Callable[[Path], bool], force: bool = False, what: str = "data set") -> Path:
    """Make sure `root` holds a current build; build it with `build(staging_dir)` when it does not.

    Args:
        root: the folder to fill.
        build: writes a complete build into the (new, empty) folder it is given.
        is_current: True when a folder already holds a build made with the wanted arguments and version.
        is_ours: True when a folder holds a build of this kind (so replacing it loses nothing foreign).
        force: rebuild even when `root` is current.
        what: name used in messages.

    Returns:
        `root`, resolved.

    Raises:
        ValueError: `root` exists, is not empty and is not one of ours (it is never deleted).
    """
    root = Path(root).expanduser().resolve()
    if not force and is_current(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root.parent / f".{root.name}.lock"):
        if not force and is_current(root):  # another process built it while we waited
            return root
        if root.exists() and not is_ours(root) and (not root.is_dir() or any(root.iterdir())):
            raise ValueError(f"{root} exists and is not a {what}; refusing to replace it: pass a new or empty folder")
        for stale in [*root.parent.glob(f".{root.name}.building-*"), *root.parent.glob(f".{root.name}.old-*")]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a builder that died; we hold the lock
        staging = root.parent / f".{root.name}.building-{uuid.uuid4().hex[:12]}"
        log.info("building the %s in %s", what, root)
        try:
            build(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if root.exists():  # a directory cannot be atomically replaced by rename: move it aside first
            retired = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(root, retired)
            os.rename(staging, root)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, root)
    return root
