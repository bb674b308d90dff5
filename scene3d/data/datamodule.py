"""`ScenePretrainDataModule`: ScanNet-format scenes + ScanRefer language -> pre-training DataLoaders.

Dataset folder layout (the demo set, `scene3d.data.demo`, is written this way; real ScanNet + ScanRefer files
can be arranged the same way, with links):

    <root>/scans/<scene_id>/...                   ScanNet scan folders (see `scene3d.data.scannet`)
    <root>/scannetv2_{train,val,test}.txt         scene ids of each split, one per line
    <root>/ScanRefer_filtered_{split}.json         descriptions (optional per split: scenes without language
                                                  still serve masked object modelling)
    <root>/ScanRefer_filtered_{split}_meta.json    optional: noun phrases and stated relations (demo set)

ScanNet releases no test annotations: when `scannetv2_test.txt` is missing, the val scenes are also the test
scenes (a warning says so).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning import LightningDataModule
from rich.progress import Progress
from torch.utils.data import DataLoader

from common.lightning.hparams import plain_container
from common.text.tokenizer import load_tokenizer, tokenizer_to_json, train_wordpiece_tokenizer
from scene3d.data.demo import ensure_demo_scenes
from scene3d.data.labels import SCANREFER_CLASSES
from scene3d.data.pretrain_collate import collate_pretrain_scenes
from scene3d.data.pretrain_dataset import ScenePretrainDataset
from scene3d.data.pretrain_language import read_pretrain_descriptions
from scene3d.data.pretrain_scene import (
    STRUCTURE_CLASSES,
    PretrainScene,
    class_counts,
    prepare_pretrain_scene,
    summarize_stats,
)
from scene3d.data.scannet import read_scannet_scene
from scene3d.data.scene_graph import EDGE_GEOMETRY_FEATURES, RELATIONS, SceneGraphConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEMO_SUBDIR = "scene3d_demo"
SCANS_DIR = "scans"
_TOKENIZER_OPTIONS = {"vocab_size", "min_frequency", "pretrained_dir"}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def read_scene_list(path: Path) -> list[str]:
    """Scene ids of a ScanNet split file (one per line; blank lines ignored).

    Raises:
        ValueError: the file is missing or lists no scene.
    """
    if not path.is_file():
        raise ValueError(f"{path}: split file not found (one scene id per line, e.g. scene0000_00)")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{path}: the split lists no scene")
    return ids


class ScenePretrainDataModule(LightningDataModule):
    """Scenes with their descriptions for scene-language pre-training (see the module docstring for the layout).

    Args:
        root: the dataset folder; None = the demo set, built on first use under `<data_dir>/scene3d_demo`.
        data_dir: parent folder of the demo set.
        demo: keyword arguments of `ensure_demo_scenes` (num_scenes, seed, points_per_scene, ...).
        batch_size: scenes per batch.
        num_workers: DataLoader worker processes (0 = load in the main process).
        pin_memory: DataLoader pin_memory (GPU servers).
        points_per_object: P, points sampled per object at every access.
        max_stored_points: points kept in memory per object (a seeded subset; bounds memory on real scans).
        max_descriptions: descriptions per training scene (all are used for evaluation).
        mom_mask_ratio: share of eligible objects masked per training scene (at least one).
        augment: random quarter turns about z and x-mirroring of training scenes.
        graph: `SceneGraphConfig` fields (k, near_threshold, ...); None = defaults.
        label_map_path: ScanNet label map for the reader (None: the one inside the open3d wheel).
        min_points: objects with fewer points are skipped by the reader.
        structure_classes: NYU40 classes never masked (room structure).
        tokenizer: {"vocab_size", "min_frequency"} trains WordPiece on the training descriptions and phrases;
            {"pretrained_dir": path} loads a saved tokenizer (e.g. a local BERT's).
        seed: seed of the stored point subsets and of the evaluation draws.

    Raises:
        ValueError: bad sizes, ratios or options (at construction); a missing split file or scene folder
            (at setup, naming it).
    """

    def __init__(
        self,
        root: str | None = None,
        data_dir: str = "data",
        demo: Mapping[str, Any] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        points_per_object: int = 64,
        max_stored_points: int = 2048,
        max_descriptions: int = 8,
        mom_mask_ratio: float = 0.2,
        augment: bool = True,
        graph: Mapping[str, Any] | None = None,
        label_map_path: str | None = None,
        min_points: int = 1,
        structure_classes: tuple[str, ...] | list[str] = STRUCTURE_CLASSES,
        tokenizer: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("points_per_object", points_per_object),
                            ("max_stored_points", max_stored_points), ("max_descriptions", max_descriptions),
                            ("min_points", min_points)):
            _positive_int(name, value)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if not (isinstance(mom_mask_ratio, (int, float)) and 0.0 < mom_mask_ratio < 1.0):
            raise ValueError(f"mom_mask_ratio must be in (0, 1), got {mom_mask_ratio!r}")
        demo, graph, tokenizer = plain_container(demo), plain_container(graph), plain_container(tokenizer)
        structure_classes = tuple(plain_container(structure_classes))
        if demo is not None and not isinstance(demo, Mapping):
            raise ValueError(f"demo must be a mapping of ensure_demo_scenes arguments, got {type(demo).__name__}")
        try:
            self.graph_config = SceneGraphConfig(**(graph or {}))
        except TypeError as error:
            raise ValueError(f"graph: {error}; use the fields of scene3d.data.scene_graph.SceneGraphConfig") from None
        self.tokenizer_options = dict(tokenizer or {"vocab_size": 1000, "min_frequency": 1})
        unknown = set(self.tokenizer_options) - _TOKENIZER_OPTIONS
        if unknown:
            raise ValueError(f"unknown tokenizer options {sorted(unknown)}; use vocab_size, min_frequency or "
                             "pretrained_dir")
        self.save_hyperparameters()
        self.root = Path(root).expanduser() if root is not None else None
        self.data_dir = Path(data_dir)
        self.demo = dict(demo or {})
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.points_per_object = points_per_object
        self.max_stored_points = max_stored_points
        self.max_descriptions = max_descriptions
        self.mom_mask_ratio = float(mom_mask_ratio)
        self.augment = augment
        self.label_map_path = label_map_path
        self.min_points = min_points
        self.structure_classes = structure_classes
        self.seed = seed
        self.scenes: dict[str, list[PretrainScene]] = {}
        self.datasets: dict[str, ScenePretrainDataset] = {}

    def dataset_root(self) -> Path:
        """The dataset folder: `root`, or the demo set (built on first call; safe across processes)."""
        if self.root is not None:
            return self.root
        return Path(ensure_demo_scenes(self.data_dir / DEMO_SUBDIR, **self.demo))

    def prepare_data(self) -> None:
        """Build the demo set if it is in use and absent (Lightning calls this on one process)."""
        if self.root is None:
            self.dataset_root()

    def _split_ids(self, root: Path) -> dict[str, list[str]]:
        ids = {split: read_scene_list(root / f"scannetv2_{split}.txt") for split in ("train", "val")}
        test_list = root / "scannetv2_test.txt"
        if test_list.is_file():
            ids["test"] = read_scene_list(test_list)
        else:
            log.warning("%s not found: testing on the val scenes (ScanNet has no annotated test split)", test_list)
            ids["test"] = ids["val"]
        return ids

    def _read_split(self, root: Path, split: str, scene_ids: list[str], progress: Progress) -> list[PretrainScene]:
        language_file = root / f"ScanRefer_filtered_{split}.json"
        meta_file = root / f"ScanRefer_filtered_{split}_meta.json"
        if language_file.is_file():
            language = read_pretrain_descriptions(language_file, meta_file if meta_file.is_file() else None)
        else:
            log.warning("%s not found: the %s scenes have no descriptions (masked object modelling only)",
                        language_file, split)
            language = {}
        scenes = []
        task = progress.add_task(f"reading {split} scenes", total=len(scene_ids))
        for scene_id in scene_ids:
            scene_dir = root / SCANS_DIR / scene_id
            if not scene_dir.is_dir():
                raise ValueError(f"{scene_dir}: scene folder of {split} scene {scene_id} not found")
            scene = read_scannet_scene(scene_dir, scene_id=scene_id, label_map_path=self.label_map_path,
                                       min_points=self.min_points)
            scenes.append(prepare_pretrain_scene(
                scene, language.get(scene_id), max_stored_points=self.max_stored_points,
                structure_classes=self.structure_classes, seed=self.seed))
            progress.advance(task)
        stats = summarize_stats(scenes)
        if any(stats.values()):
            log.warning("%s: %s", split, stats)
        return scenes

    def setup(self, stage: str | None = None) -> None:
        """Read the scenes of every split (once) and build the datasets."""
        if self.datasets:
            return
        root = self.dataset_root()
        ids = self._split_ids(root)
        with Progress(transient=True) as progress:
            for split in SPLITS:
                self.scenes[split] = self._read_split(root, split, ids[split], progress)
        log.info("scene splits: %s", {split: len(scenes) for split, scenes in self.scenes.items()})
        for split in SPLITS:
            train = split == "train"
            self.datasets[split] = ScenePretrainDataset(
                self.scenes[split], points_per_object=self.points_per_object, train=train,
                mom_mask_ratio=self.mom_mask_ratio, max_descriptions=self.max_descriptions,
                graph_config=self.graph_config, augment=self.augment and train, seed=self.seed,
            )

    def _require_setup(self) -> None:
        if not self.datasets:
            raise RuntimeError("ScenePretrainDataModule: call setup() first (Lightning's Trainer does it for you)")

    def train_texts(self) -> list[str]:
        """Descriptions and phrases of the TRAIN split (tokenizer corpus; no val / test text leaks in)."""
        self._require_setup()
        return [text for scene in self.scenes["train"] for d in scene.descriptions for text in (d.text, d.phrase)]

    def model_kwargs(self) -> dict[str, Any]:
        """What the model needs from the data, as plain Python values (stored in checkpoints).

        Returns:
            tokenizer_json: the tokenizer (trained on `train_texts()`, or loaded) as JSON; class_names: the 18
            ScanRefer classes; class_counts: masked-object targets per class in the TRAIN split (the majority
            baseline); num_relations, edge_geometry_dim: widths of the graphs' edge_attr and edge_geom.

        Raises:
            ValueError: no training text to train a tokenizer on (give tokenizer.pretrained_dir instead).
        """
        self._require_setup()
        if self.tokenizer_options.get("pretrained_dir"):
            tokenizer = load_tokenizer(self.tokenizer_options["pretrained_dir"])
        else:
            texts = self.train_texts()
            if not texts:
                raise ValueError("the train split has no descriptions to train a tokenizer on; add "
                                 "ScanRefer_filtered_train.json or set data.tokenizer.pretrained_dir")
            tokenizer = train_wordpiece_tokenizer(texts, vocab_size=int(self.tokenizer_options.get("vocab_size", 1000)),
                                                  min_frequency=int(self.tokenizer_options.get("min_frequency", 1)))
        return {
            "tokenizer_json": tokenizer_to_json(tokenizer),
            "class_names": list(SCANREFER_CLASSES),
            "class_counts": class_counts(self.scenes["train"], len(SCANREFER_CLASSES)),
            "num_relations": len(RELATIONS),
            "edge_geometry_dim": len(EDGE_GEOMETRY_FEATURES),
        }

    def _loader(self, split: str) -> DataLoader:
        self._require_setup()
        train = split == "train"
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=train, drop_last=False,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.pin_memory, collate_fn=collate_pretrain_scenes)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
