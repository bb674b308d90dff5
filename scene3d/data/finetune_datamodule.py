"""`SceneFinetuneDataModule`: the shared part of the fine-tuning datamodules (grounding, QA).

Dataset folder layout: as for pre-training (`scene3d.data.datamodule`): ``<root>/scans/<scene_id>/``,
``<root>/scannetv2_{train,val[,test]}.txt`` and the task's language files beside them (ScanRefer
``ScanRefer_filtered_<split>.json`` for grounding, ``ScanQA_v1.0_<split>.json`` for QA; the names can be
changed with ``language_files``). ``root: null`` uses the procedural demo set. Without a test split file the
val scenes are also the test scenes (a warning says so; ScanNet has no annotated test split).

A subclass turns a split's language file into queries (`build_queries`) and adds its own model arguments
(`task_kwargs`). Proposals come from the ``proposals`` object (`scene3d.data.proposals`). Only scenes that
have at least one query are used.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning import LightningDataModule
from torch.utils.data import DataLoader

from common.lightning.hparams import plain_container
from common.text.tokenizer import load_tokenizer, tokenizer_to_json, train_wordpiece_tokenizer
from scene3d.data.datamodule import DEMO_SUBDIR, SCANS_DIR, read_scene_list
from scene3d.data.demo import ensure_demo_scenes
from scene3d.data.finetune_dataset import FinetuneDataset, TaskScene, collate_finetune_scenes
from scene3d.data.finetune_scene import FinetuneScene, load_finetune_scene
from scene3d.data.labels import SCANREFER_CLASSES
from scene3d.data.proposals import GTProposals
from scene3d.data.pretrain_scene import class_counts
from scene3d.data.scene_graph import EDGE_GEOMETRY_FEATURES, RELATIONS, SceneGraphConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class SceneFinetuneDataModule(LightningDataModule):
    """Scenes, proposals and task queries for fine-tuning (module docstring).

    Args:
        root: dataset folder; None = the demo set under `<data_dir>/scene3d_demo`.
        data_dir: parent folder of the demo set.
        demo: `ensure_demo_scenes` keyword arguments.
        proposals: a proposal source (`GTProposals()`, `BoxFolderProposals(folder)`); None = GT proposals.
        language_files: {split: file name} overriding the task's default names.
        batch_size: scenes per batch. num_workers, pin_memory: DataLoader options.
        points_per_object: points sampled per proposal. max_stored_points: points kept per object.
        max_queries: queries per training scene (all for evaluation).
        augment: quarter turns / mirroring of training scenes (off by default: mirrors swap left and right).
        graph: `SceneGraphConfig` fields. label_map_path, min_points: reader options.
        tokenizer: {"vocab_size", "min_frequency"} (WordPiece on the training queries) or {"pretrained_dir"};
            a model started from a pre-trained checkpoint uses the checkpoint's tokenizer instead.
        seed: seed of the point subsets and evaluation draws.
    """

    default_language_file = "{split}.json"  # overridden by subclasses

    def __init__(self, root: str | None = None, data_dir: str = "data", demo: Mapping[str, Any] | None = None,
                 proposals: Any = None, language_files: Mapping[str, str] | None = None, batch_size: int = 8,
                 num_workers: int = 0, pin_memory: bool = False, points_per_object: int = 32,
                 max_stored_points: int = 1024, max_queries: int = 16, augment: bool = False,
                 graph: Mapping[str, Any] | None = None, label_map_path: str | None = None, min_points: int = 1,
                 tokenizer: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("points_per_object", points_per_object),
                            ("max_stored_points", max_stored_points), ("max_queries", max_queries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.root = Path(root).expanduser() if root is not None else None
        self.data_dir = Path(data_dir)
        self.demo = dict(plain_container(demo) or {})
        self.proposals = proposals if proposals is not None else GTProposals()
        self.language_files = dict(plain_container(language_files) or {})
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.points_per_object, self.max_stored_points, self.max_queries = points_per_object, max_stored_points, max_queries
        self.augment = augment
        try:
            self.graph_config = SceneGraphConfig(**(plain_container(graph) or {}))
        except TypeError as error:
            raise ValueError(f"graph: {error}; use the fields of scene3d.data.scene_graph.SceneGraphConfig") from None
        self.label_map_path, self.min_points = label_map_path, min_points
        self.tokenizer_options = dict(plain_container(tokenizer) or {"vocab_size": 1000, "min_frequency": 1})
        self.seed = seed
        self.scenes: dict[str, list[TaskScene]] = {}
        self.loaded: dict[str, FinetuneScene] = {}
        self.datasets: dict[str, FinetuneDataset] = {}

    # ------------------------------------------------------------------ to implement
    def build_queries(self, split: str, path: Path, scenes: Mapping[str, FinetuneScene],
                      proposals: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """{scene_id: queries} of a split's language file (`path`); scenes are loaded on demand by `scenes`."""
        raise NotImplementedError

    def task_kwargs(self) -> dict[str, Any]:
        """Task-specific model arguments (plain values)."""
        return {}

    # ------------------------------------------------------------------ reading
    def dataset_root(self) -> Path:
        if self.root is not None:
            return self.root
        return Path(ensure_demo_scenes(self.data_dir / DEMO_SUBDIR, **self.demo))

    def prepare_data(self) -> None:
        if self.root is None:
            self.dataset_root()

    def language_path(self, root: Path, split: str) -> Path:
        return root / self.language_files.get(split, self.default_language_file.format(split=split))

    def _split_ids(self, root: Path) -> dict[str, list[str]]:
        ids = {split: read_scene_list(root / f"scannetv2_{split}.txt") for split in ("train", "val")}
        if (root / "scannetv2_test.txt").is_file() and self.language_path(root, "test").is_file():
            ids["test"] = read_scene_list(root / "scannetv2_test.txt")
        else:
            log.warning("no test split with %s: testing on the val scenes", self.language_path(root, "test").name)
            ids["test"] = ids["val"]
        return ids

    def scene(self, root: Path, scene_id: str) -> FinetuneScene:
        """The prepared scene (read once)."""
        if scene_id not in self.loaded:
            scene_dir = root / SCANS_DIR / scene_id
            if not scene_dir.is_dir():
                raise ValueError(f"{scene_dir}: scene folder of {scene_id} not found")
            self.loaded[scene_id] = load_finetune_scene(scene_dir, scene_id, label_map_path=self.label_map_path,
                                                        min_points=self.min_points,
                                                        max_stored_points=self.max_stored_points, seed=self.seed)
        return self.loaded[scene_id]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        root = self.dataset_root()
        ids = self._split_ids(root)
        for split in SPLITS:
            language_split = "val" if split == "test" and ids["test"] is ids["val"] else split
            path = self.language_path(root, language_split)
            if not path.is_file():
                raise ValueError(f"{path}: language file of the {split} split not found")
            allowed = set(ids[split])
            lazy = _LazyScenes(self, root, allowed, path)
            proposals = _LazyProposals(self, lazy)
            queries = self.build_queries(split, path, lazy, proposals)
            scenes = [TaskScene(scene_id=sid, origin=lazy[sid].origin, proposals=proposals[sid], queries=q)
                      for sid, q in queries.items() if q]
            if not scenes:
                raise ValueError(f"{path}: no query refers to a scene of the {split} split (scannetv2_{split}.txt)")
            self.scenes[split] = scenes
        log.info("fine-tuning splits: %s", {s: (len(v), sum(len(t.queries) for t in v)) for s, v in self.scenes.items()})
        for split in SPLITS:
            train = split == "train"
            self.datasets[split] = FinetuneDataset(self.scenes[split], points_per_object=self.points_per_object,
                                                   train=train, max_queries=self.max_queries,
                                                   graph_config=self.graph_config, augment=self.augment and train,
                                                   seed=self.seed)

    def _require_setup(self) -> None:
        if not self.datasets:
            raise RuntimeError(f"{type(self).__name__}: call setup() first (Lightning's Trainer does it for you)")

    def train_texts(self) -> list[str]:
        self._require_setup()
        return [q["text"] for scene in self.scenes["train"] for q in scene.queries]

    def model_kwargs(self) -> dict[str, Any]:
        """Tokenizer, class names / counts, graph widths (as for pre-training) and `task_kwargs()`."""
        self._require_setup()
        if self.tokenizer_options.get("pretrained_dir"):
            tokenizer = load_tokenizer(self.tokenizer_options["pretrained_dir"])
        else:
            tokenizer = train_wordpiece_tokenizer(self.train_texts(),
                                                  vocab_size=int(self.tokenizer_options.get("vocab_size", 1000)),
                                                  min_frequency=int(self.tokenizer_options.get("min_frequency", 1)))
        train_scenes = [self.loaded[s.scene_id].prepared for s in self.scenes["train"]]
        return {"tokenizer_json": tokenizer_to_json(tokenizer), "class_names": list(SCANREFER_CLASSES),
                "class_counts": class_counts(train_scenes, len(SCANREFER_CLASSES)), "num_relations": len(RELATIONS),
                "edge_geometry_dim": len(EDGE_GEOMETRY_FEATURES), **self.task_kwargs()}

    def _loader(self, split: str) -> DataLoader:
        self._require_setup()
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=split == "train",
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.pin_memory, collate_fn=collate_finetune_scenes)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class _LazyScenes(Mapping):
    """scene_id -> FinetuneScene for the split's scenes, read on first access; other ids raise KeyError."""

    def __init__(self, owner: SceneFinetuneDataModule, root: Path, allowed: set[str], source: Path) -> None:
        self.owner, self.root, self.allowed, self.source = owner, root, allowed, source

    def __getitem__(self, scene_id: str) -> FinetuneScene:
        if scene_id not in self.allowed:
            raise KeyError(scene_id)
        return self.owner.scene(self.root, scene_id)

    def __contains__(self, scene_id: object) -> bool:
        return scene_id in self.allowed

    def __iter__(self):
        return iter(sorted(self.allowed))

    def __len__(self) -> int:
        return len(self.allowed)


class _LazyProposals(Mapping):
    """scene_id -> ProposalSet, computed once per scene."""

    def __init__(self, owner: SceneFinetuneDataModule, scenes: _LazyScenes) -> None:
        self.owner, self.scenes, self.cache = owner, scenes, {}

    def __getitem__(self, scene_id: str):
        if scene_id not in self.cache:
            self.cache[scene_id] = self.owner.proposals(self.scenes[scene_id])
        return self.cache[scene_id]

    def __iter__(self):
        return iter(self.scenes)

    def __len__(self) -> int:
        return len(self.scenes)
