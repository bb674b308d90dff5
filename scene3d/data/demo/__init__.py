"""Demo 3D scene set: procedural rooms written as ScanNet scans, with ScanRefer / ScanQA / Scan2Cap-style
language generated from their scene graphs (every referring expression identifies its object).

    from scene3d.data.demo import ensure_demo_scenes
    root = ensure_demo_scenes("data/demo_scenes")   # builds once, then reuses the build
    scene = read_scannet_scene(root / "scans" / "scene0000_00")

Command line: `python -m scene3d.data.demo OUT_DIR [--num-scenes N --seed K --points-per-scene P --noise-m M
--descriptions-per-kind D --questions-per-type Q --force --no-progress]`.
"""
from scene3d.data.demo.build import DEMO_VERSION, build_demo_scenes, demo_build_args, ensure_demo_scenes, file_names
from scene3d.data.demo.language import QUESTION_TYPES, REFERRING_KINDS
from scene3d.data.demo.rooms import ROOM_TYPES

__all__ = [
    "DEMO_VERSION", "QUESTION_TYPES", "REFERRING_KINDS", "ROOM_TYPES", "build_demo_scenes", "demo_build_args",
    "ensure_demo_scenes", "file_names",
]
