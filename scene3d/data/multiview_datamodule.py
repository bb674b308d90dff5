"""`MultiViewPretrainDataModule`: the pre-training scenes plus, per object, crops of its best 2D views and an
appearance phrase (``experiment=multiview``).

Frames: ``<frames_root>/<scene_id>/`` in the SensReader export layout (`scene3d.data.frames`), read with the
scene's axisAlignment so that cameras and points share one frame. With the demo set (``root: null``) and
``frames_root: null`` the demo rooms are rendered first (`scene3d.data.demo_frames.ensure_demo_frames`, with the
``demo_frames`` arguments) into ``<demo set>/frames``. A scene without a frame folder gets no views (counted in
the log); its objects then take part in the 3D objectives only.

Per object (`scene3d.data.view_selection`, options ``views``): the k best views by visible share x IoSA, and a
crop of the object in each. Results are cached per scene under ``cache_dir`` (default ``<frames_root>/.views_cache``).

Appearance phrases: ``phrases_file`` (JSON {scene_id: {objectId: phrase}}; default
``<frames_root>/object_phrases.json`` when it exists, which the demo writes: "striped red chair"), else the noun
phrase of the object's first description. Objects with neither get "" (no text term for them).

Batches are those of `ScenePretrainDataModule` plus ``view_crops`` (N, k, S, S, 3) uint8, ``view_valid``
(N, k) bool and ``view_phrases`` (N strings), N = all objects of the batch in graph node order.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch.utils.data import DataLoader, Dataset

from common.lightning.hparams import plain_container
from scene3d.data.datamodule import SCANS_DIR, ScenePretrainDataModule
from scene3d.data.demo_frames import ensure_demo_frames
from scene3d.data.frames import FramesReadError, read_scannet_frames
from scene3d.data.pretrain_collate import collate_pretrain_scenes
from scene3d.data.pretrain_language import read_pretrain_descriptions
from scene3d.data.pretrain_scene import PretrainScene, prepare_pretrain_scene, summarize_stats
from scene3d.data.scannet import read_scannet_scene
from scene3d.data.view_selection import ViewSelectionConfig, scene_views_cached

__all__ = ["MultiViewPretrainDataModule", "MultiViewSceneDataset", "collate_multiview_scenes"]

log = logging.getLogger(__name__)


class MultiViewSceneDataset(Dataset):
    """A `ScenePretrainDataset` whose items also carry the scene's per-object view crops and phrases.

    Args:
        base: the scene dataset. views: per scene of `base`, {"crops": (N, k, S, S, 3) uint8, "valid": (N, k)
            bool, "phrases": N strings}.
    """

    def __init__(self, base: Dataset, views: Sequence[Mapping[str, Any]]) -> None:
        if len(base) != len(views):
            raise ValueError(f"{len(views)} view entries for {len(base)} scenes")
        self.base, self.views = base, list(views)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.base[index])
        views = self.views[index]
        item["view_crops"] = torch.from_numpy(views["crops"])
        item["view_valid"] = torch.from_numpy(views["valid"])
        item["view_phrases"] = list(views["phrases"])
        return item


def collate_multiview_scenes(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`collate_pretrain_scenes` plus view_crops (N, k, S, S, 3), view_valid (N, k), view_phrases (N,) in node order.

    Raises:
        ValueError: an item without views, or views not matching its graph's node count.
    """
    for index, sample in enumerate(samples):
        if "view_crops" not in sample:
            raise ValueError(f"sample {index} lacks view_crops; items must come from MultiViewSceneDataset")
        if sample["view_crops"].shape[0] != sample["graph"].num_nodes:
            raise ValueError(f"sample {index} ({sample['scene_id']}): {sample['view_crops'].shape[0]} view rows for "
                             f"{sample['graph'].num_nodes} objects")
    batch = collate_pretrain_scenes(samples)
    batch["view_crops"] = torch.cat([s["view_crops"] for s in samples])
    batch["view_valid"] = torch.cat([s["view_valid"] for s in samples])
    batch["view_phrases"] = [p for s in samples for p in s["view_phrases"]]
    return batch


class MultiViewPretrainDataModule(ScenePretrainDataModule):
    """`ScenePretrainDataModule` with per-object views (see the module docstring).

    Args:
        frames_root: folder of per-scene frame folders; None: the demo frames (demo set only).
        demo_frames: `ensure_demo_frames` render arguments (frames_per_scene, color_size, depth_size, ...).
        views: `ViewSelectionConfig` fields (views_per_object, crop_size, min_depth, ...).
        frame_skip: use every k-th frame.
        cache_dir: where per-scene view selections are cached (None: ``<frames_root>/.views_cache``).
        phrases_file: appearance phrases JSON (see the module docstring).
        **kwargs: `ScenePretrainDataModule` arguments.

    Raises:
        ValueError: unknown view options; ``frames_root: null`` with a real dataset root; a phrases file that
            is not {scene_id: {objectId: phrase}}.
    """

    def __init__(self, frames_root: str | None = None, demo_frames: Mapping[str, Any] | None = None,
                 views: Mapping[str, Any] | None = None, frame_skip: int = 1, cache_dir: str | None = None,
                 phrases_file: str | None = None, **kwargs: Any) -> None:
        # plain values before Lightning's save_hyperparameters reads this frame (checkpoints load weights_only)
        views, demo_frames = plain_container(views), plain_container(demo_frames)
        kwargs = {key: plain_container(value) for key, value in kwargs.items()}
        super().__init__(**kwargs)
        try:
            self.view_config = ViewSelectionConfig(**(plain_container(views) or {}))
        except TypeError as error:
            raise ValueError(f"views: {error}; use the fields of scene3d.data.view_selection.ViewSelectionConfig") from None
        if frames_root is None and self.root is not None:
            raise ValueError("data.frames_root is required with data.root (a folder of <scene_id>/ SensReader "
                             "exports); only the demo set renders its own frames")
        self.frames_root = Path(frames_root).expanduser() if frames_root is not None else None
        self.demo_frames = dict(plain_container(demo_frames) or {})
        self.frame_skip = int(frame_skip)
        self.cache_dir = cache_dir
        self.phrases_file = phrases_file
        self.scene_views: dict[str, list[dict[str, Any]]] = {}

    def frames_folder(self) -> Path:
        """The frames root (the demo frames are rendered on first call)."""
        if self.frames_root is not None:
            return self.frames_root
        return Path(ensure_demo_frames(self.dataset_root(), progress=False, **self.demo_frames))

    def prepare_data(self) -> None:
        super().prepare_data()
        if self.root is None:
            self.frames_folder()

    def _phrases(self, frames_root: Path) -> dict[str, dict[str, str]]:
        path = Path(self.phrases_file) if self.phrases_file else frames_root / "object_phrases.json"
        if not path.is_file():
            if self.phrases_file:
                raise ValueError(f"{path}: phrases_file not found")
            return {}
        try:
            table = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise ValueError(f"{path}: must be {{scene_id: {{objectId: phrase}}}}")
        return table

    def _read_split(self, root: Path, split: str, scene_ids: list[str], progress: Progress) -> list[PretrainScene]:
        """The parent's scenes, plus the views of each (kept in `scene_views[split]`)."""
        language_file = root / f"ScanRefer_filtered_{split}.json"
        meta_file = root / f"ScanRefer_filtered_{split}_meta.json"
        language = (read_pretrain_descriptions(language_file, meta_file if meta_file.is_file() else None)
                    if language_file.is_file() else {})
        frames_root = self.frames_folder()
        phrases = self._phrases(frames_root)
        cache = Path(self.cache_dir) if self.cache_dir else frames_root / ".views_cache"
        k, size = self.view_config.views_per_object, self.view_config.crop_size
        scenes, views, no_frames, skipped_poses = [], [], 0, 0
        task = progress.add_task(f"reading {split} scenes and views", total=len(scene_ids))
        for scene_id in scene_ids:
            scene_dir = root / SCANS_DIR / scene_id
            if not scene_dir.is_dir():
                raise ValueError(f"{scene_dir}: scene folder of {split} scene {scene_id} not found")
            scene = read_scannet_scene(scene_dir, scene_id=scene_id, label_map_path=self.label_map_path,
                                       min_points=self.min_points)
            prepared = prepare_pretrain_scene(scene, language.get(scene_id), max_stored_points=self.max_stored_points,
                                              structure_classes=self.structure_classes, seed=self.seed)
            scenes.append(prepared)
            n = len(scene.objects)
            entry = {"crops": np.zeros((n, k, size, size, 3), np.uint8), "valid": np.zeros((n, k), bool)}
            folder = frames_root / scene_id
            if folder.is_dir():
                try:
                    frames = read_scannet_frames(folder, axis_alignment=scene.axis_alignment, frame_skip=self.frame_skip)
                except FramesReadError as error:
                    raise ValueError(f"scene {scene_id}: {error}") from None
                skipped_poses += frames.skipped_invalid_poses
                selected = scene_views_cached(cache, scene_id, [o.points for o in scene.objects],
                                              [o.object_id for o in scene.objects], frames, self.view_config)
                entry = {"crops": selected.crops, "valid": selected.crop_valid}
            else:
                no_frames += 1
            first_phrase = {}
            for description in prepared.descriptions:
                first_phrase.setdefault(description.node, description.phrase)
            table = phrases.get(scene_id, {})
            entry["phrases"] = [table.get(str(o.object_id), first_phrase.get(i, "")) for i, o in enumerate(scene.objects)]
            views.append(entry)
            progress.advance(task)
        if no_frames:
            log.warning("%s: %d of %d scenes have no frame folder under %s (no views)", split, no_frames,
                        len(scene_ids), frames_root)
        if skipped_poses:
            log.warning("%s: %d frames skipped for a non-finite pose", split, skipped_poses)
        stats = summarize_stats(scenes)
        if any(stats.values()):
            log.warning("%s: %s", split, stats)
        with_view = sum(int(v["valid"].any(1).sum()) for v in views)
        total = sum(len(v["valid"]) for v in views)
        log.info("%s: %d of %d objects have at least one view", split, with_view, total)
        self.scene_views[split] = views
        return scenes

    def setup(self, stage: str | None = None) -> None:
        if self.datasets and all(isinstance(d, MultiViewSceneDataset) for d in self.datasets.values()):
            return
        super().setup(stage)
        for split, dataset in list(self.datasets.items()):
            self.datasets[split] = MultiViewSceneDataset(dataset, self.scene_views[split])

    def _loader(self, split: str) -> DataLoader:
        self._require_setup()
        train = split == "train"
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=train, drop_last=False,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.pin_memory, collate_fn=collate_multiview_scenes)
