"""A resumed run that equals the uninterrupted one: random numbers and data order as functions of the position.

Saving the generators' states is not enough with Lightning: between a checkpoint and the next training step the
uninterrupted run has already prefetched the next batch (drawing augmentation randomness) and created its data
iterator (drawing the shuffle seed), while a resumed run creates a new iterator and runs other start-up code; the
streams drift apart at the first draw. So this callback makes every random draw a function of where it happens,
not of what ran before:

- each training batch starts with torch / numpy / Python seeded from ``(seed, rank, epoch, batch index)``, each
  validation / test epoch from ``(seed, rank, global step)``;
- the training DataLoader is rebuilt (same dataset, batch size, collate function, workers) with a
  ``ResumableSampler`` whose order is a permutation seeded by ``(seed, epoch)``, and with each sample loaded under
  generators seeded by ``(seed, epoch, index)`` (MONAI-style transforms with ``set_random_state`` included), in the
  main process or any worker alike;
- the checkpoint stores the epoch and the number of batches done in it; on resume the sampler skips exactly those
  samples of the same permutation. The generators' states are stored too and restored on load (for draws before
  the first step).

With that, a run killed at any checkpoint (epoch end, mid-epoch, after validation) and resumed with ``resume=true``
gives the same weights and metrics on CPU as the uninterrupted run (tests/test_kill_and_resume.py). Limits: under
multi-process DDP Lightning's ``DistributedSampler`` keeps the order (seeded by epoch) but a mid-epoch resume
restarts that epoch's data from its first batch (Lightning warns); GPU kernels may be non-deterministic unless
``trainer.deterministic=true``.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

log = logging.getLogger(__name__)

_TRAIN, _VAL, _TEST, _SAMPLE, _ORDER, _TRANSFORM = 1, 2, 3, 4, 5, 6


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from non-negative integers (numpy's SeedSequence: nearby inputs give unrelated seeds)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seed_all(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    """The global generators' states as tensors / plain values (loadable with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states = {"torch": torch.get_rng_state(), "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                                                        "has_gauss": int(has_gauss), "gauss": float(gauss)},
              "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumableSampler(Sampler):
    """Yields ``(index, sample seed)`` keys of one epoch: a permutation seeded by ``(seed, epoch)`` (or 0..n-1),
    from the position ``plan()`` says. ``plan() -> (epoch, samples to skip)`` is asked once per iteration."""

    def __init__(self, num_samples: int, shuffle: bool, seed: int, plan: Callable[[], tuple[int, int]]) -> None:
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.plan = plan

    def __len__(self) -> int:  # the full epoch: Lightning counts batches from its own restored progress
        return self.num_samples

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, _ORDER, epoch))
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = self.plan()
        for index in self.order(epoch)[skip:]:
            yield index, derive_seed(self.seed, _SAMPLE, epoch, index)


class SeededSamples(Dataset):
    """``dataset[index]`` loaded with every generator seeded by the key's sample seed, then restored: the sample's
    randomness (augmentation, point subsets) depends on the sample alone, not on the process or what ran before.

    Objects inside ``dataset`` with a ``set_random_state(seed=...)`` method (MONAI's random transforms keep their
    own generators) are found once and re-seeded per sample too.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._randomizable = _find_randomizable(dataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            seed_all(seed)
            for i, obj in enumerate(self._randomizable):
                obj.set_random_state(seed=derive_seed(seed, _TRANSFORM, i) % 2**32)
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def _find_randomizable(root: Any, depth: int = 6) -> list[Any]:
    """Objects with ``set_random_state`` reachable through attributes / short containers (not descending further)."""
    found: list[Any] = []
    seen: set[int] = set()

    def walk(obj: Any, level: int) -> None:
        if level > depth or id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, torch.Tensor, np.ndarray)):
            return
        seen.add(id(obj))
        if obj is not root and callable(getattr(obj, "set_random_state", None)):
            found.append(obj)
            return
        if isinstance(obj, dict):
            children = list(obj.values()) if len(obj) <= 64 else []
        elif isinstance(obj, (list, tuple)):
            children = list(obj) if len(obj) <= 64 else []
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            children = list(vars(obj).values())
        else:
            children = []
        for child in children:
            walk(child, level + 1)

    walk(root, 0)
    return found


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position ``ReproducibleResume`` saves and restores; its ``state_dict`` interface tells
    Lightning so (no "dataloader is not resumable" warning). The position itself lives in the callback's state."""

    def state_dict(self) -> dict[str, Any]:
        return {"position": "in the ReproducibleResume callback state"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class ReproducibleResume(L.Callback):
    """Seeds by position and makes the training data order resumable (see module docstring).

    Args:
        seed: the run's seed (``${seed}``).
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._pending: tuple[int, int] | None = None
        self._trainer: L.Trainer | None = None
        self._restore: tuple[Any, str, Any] | None = None
        self._batch_size = 1
        self._pass_epoch = 0  # the epoch whose order the current pass over the training data follows

    # ------------------------------------------------------------------ data order
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._trainer = trainer
        source = trainer.datamodule if trainer.datamodule is not None else pl_module
        original = getattr(source, "train_dataloader", None)
        if original is None:
            return
        callback = self

        def train_dataloader() -> Any:
            return callback.make_resumable(original())

        self._restore = (source, "train_dataloader", source.__dict__.get("train_dataloader"))
        source.train_dataloader = train_dataloader  # instance attribute: Lightning calls it when it needs the loader

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._restore is not None:
            source, name, previous = self._restore
            if previous is None:
                source.__dict__.pop(name, None)
            else:
                setattr(source, name, previous)
            self._restore = None

    def make_resumable(self, loader: Any) -> Any:
        """The same DataLoader with a ``ResumableSampler`` and per-sample seeding; other loaders as they are."""
        trainer = self._trainer
        if not isinstance(loader, DataLoader) or (trainer is not None and trainer.world_size > 1):
            return loader
        if isinstance(loader.dataset, torch.utils.data.IterableDataset) or loader.batch_size is None:
            log.warning("reproducible resume: the training loader is iterable or has its own batch sampler; "
                        "a mid-epoch resume restarts its epoch")
            return loader
        if not isinstance(loader.batch_sampler, BatchSampler) or type(loader.sampler) not in (RandomSampler,
                                                                                               SequentialSampler):
            log.warning("reproducible resume: custom sampler %s kept; a mid-epoch resume restarts its epoch",
                        type(loader.sampler).__name__)
            return loader
        if isinstance(loader.sampler, RandomSampler) and (loader.sampler.replacement or
                                                          loader.sampler._num_samples is not None):
            return loader
        self._batch_size = int(loader.batch_size)
        sampler = ResumableSampler(len(loader.dataset), isinstance(loader.sampler, RandomSampler), self.seed,
                                   self._next_iteration)
        workers = loader.num_workers
        return ResumableDataLoader(
            SeededSamples(loader.dataset), batch_size=loader.batch_size, sampler=sampler,
            num_workers=workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
            drop_last=loader.drop_last, timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context if workers else None,
            prefetch_factor=loader.prefetch_factor if workers else None,
            persistent_workers=loader.persistent_workers if workers else False,
        )

    def _next_iteration(self) -> tuple[int, int]:
        """(epoch, samples to skip) for a new pass over the training data."""
        if self._pending is not None:
            plan, self._pending = self._pending, None
        else:
            plan = ((self._trainer.current_epoch if self._trainer is not None else 0), 0)
        self._pass_epoch = plan[0]
        return plan

    # ------------------------------------------------------------------ random numbers by position
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        seed_all(derive_seed(self.seed, _TRAIN, trainer.global_rank, trainer.current_epoch, batch_idx))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed_all(derive_seed(self.seed, _VAL, trainer.global_rank, trainer.global_step))

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed_all(derive_seed(self.seed, _TEST, trainer.global_rank, trainer.global_step))

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        if trainer is None:
            return {"seed": self.seed}
        return {
            "seed": self.seed,
            "epoch": int(self._pass_epoch),
            "batches_done": int(trainer.fit_loop.epoch_loop.batch_progress.current.processed),
            "num_batches": int(trainer.num_training_batches) if trainer.num_training_batches != float("inf") else -1,
            "batch_size": self._batch_size,
            "rng": rng_states(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if int(state_dict.get("seed", self.seed)) != self.seed:
            log.warning("resuming with seed=%s, the checkpoint was written with seed=%s: the resumed run will not "
                        "equal the uninterrupted one", self.seed, state_dict.get("seed"))
        if "epoch" not in state_dict:
            return
        epoch, done, total = state_dict["epoch"], state_dict["batches_done"], state_dict["num_batches"]
        if total >= 0 and done >= total:  # the epoch was finished: the next pass is the next epoch's
            self._pending = (epoch + 1, 0)
        else:
            self._pending = (epoch, done * int(state_dict.get("batch_size", self._batch_size)))
        if "rng" in state_dict:
            set_rng_states(state_dict["rng"])
