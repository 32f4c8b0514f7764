"""The training data: a torch ``Dataset`` of SketchEdit samples and a reproducible DataLoader.

One sample (docs/method.md section 4) is a random crop ``y`` of a photo, its locally warped copy
``x`` (:mod:`sketchedit.data.warp`), the changed region ``D``, the partial sketch ``c`` (edges
of ``y`` inside ``dilate(D)``), the full edge map ``E(y)`` and a random hole for the joint-
inpainting mode (:mod:`sketchedit.data.masks`). ``__getitem__(i)`` returns a dict of float32
tensors, all ``(C, S, S)`` with ``S = size``:

=============  ===  ==========  ==================================================================
key            C    values      meaning
=============  ===  ==========  ==================================================================
``"target"``   3    [-1, 1]     y, the crop
``"input"``    3    [-1, 1]     x: y warped inside D, bitwise equal to y outside D
``"sketch"``   1    {0, 1}      c = E(y) inside dilate(D), 1 = stroke
``"edges"``    1    {0, 1}      E(y), the full edge map (joint inpainting uses edges * hole)
``"changed"``  1    {0, 1}      D, where x differs from y (plus the warped region R)
``"hole"``     1    {0, 1}      a random hole (strokes + blob/square), 1 = hole
=============  ===  ==========  ==================================================================

Reproducibility: each sample's random numbers come from ``np.random.default_rng((seed,
epoch, index))``, never from a worker's state, so the same seed gives the same samples with
any ``num_workers``; :func:`make_dataloader` seeds the shuffling with ``seed``. Call
:meth:`SketchEditDataset.set_epoch` to draw new crops each epoch (the loader's workers are
re-created per epoch and pick it up).

Speed: each photo is decoded once per process and cached downscaled (longer side
``cache_max_side``), so a crop costs a resize of a few hundred pixels, not a JPEG decode.
Measured on this 2-core CPU with one thread (CPU time per ``dataset[i]``, photos cached; the
machine was shared, wall time was about twice that): ``canny`` 11 ms at 64 px and 43 ms at
256 px; ``xdog`` 10 / 44 ms; ``hed`` 50 ms at 256 px after a one-off HED pass per photo (about
2 s of CPU per 512 px photo). :func:`benchmark_dataset` measures it on your machine.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sketchedit.data.crops import DEFAULT_SCALE, MIN_SIDE, crop_resize, random_crop_box
from sketchedit.data.edges import (
    EDGE_METHODS,
    HED_INSTALL_HINT,
    extract_edges,
    hed_available,
    hed_probability,
    lines_from_probability,
)
from sketchedit.data.masks import random_hole
from sketchedit.data.photos import Photo
from sketchedit.data.visible import synthesize_visible_pair
from sketchedit.data.warp import WarpConfig, synthesize_warp_pair

SAMPLE_KEYS = ("target", "input", "sketch", "edges", "changed", "hole")


class SketchEditDataset(Dataset):
    """SketchEdit training samples from any list of :class:`~sketchedit.data.photos.Photo`.

    Args:
        photos: the source photos (e.g. ``bundled_photos()`` or ``folder_photos(root)``).
        size: side ``S`` of the square samples (the paper trains at 256 [code]).
        samples_per_photo: the dataset has ``len(photos) * samples_per_photo`` items; item
            ``i`` is cut from photo ``i % len(photos)``.
        balance_sources: [ours] give every photo *source* (``Photo.source``) the same share
            of the items instead of every photo: item ``i`` comes from source
            ``i % n_sources``. Without it the 400 ORL faces drown the 13 scene photos, so it is
            on by default; a single folder is one source, where it changes nothing.
        edge_method: ``"canny"`` (default), ``"xdog"`` or ``"hed"``; ``edge_kwargs`` go to it.
            [ours] With ``"hed"`` the edge *probability* is computed once per photo (at the
            cached size) and cropped like the photo; thresholding and thinning happen per
            crop. HED per crop would cost about a second per sample.
        crop_scale: crop side as a fraction of the photo's shorter side (see
            :mod:`sketchedit.data.crops`).
        flip: mirror half of the crops left-right [ours: cheap augmentation; faces and
            scenes are both left-right symmetric in distribution].
        warp: the :class:`~sketchedit.data.warp.WarpConfig` of the warp pairs.
        visible_fraction: [ours] share of the samples that are *visible* edits (a shifted or
            removed structure, :mod:`sketchedit.data.visible`) instead of mild warps; 0 keeps
            the warp pairs only (and the exact sample stream of earlier versions).
        p_blob: probability that the hole uses a blob rather than a square.
        cache_max_side: longer side of the cached photos (``None`` = full size).
        cache_size: how many decoded photos one process keeps (least recently used are
            dropped; ``None`` = all). [ours] 1024 photos at 512 px take about 0.6 GiB.
        max_crop_tries: crops tried when the warp of a crop changes nothing (a flat crop).
        seed: the base seed of every random choice.
    """

    def __init__(
        self,
        photos: Sequence[Photo],
        size: int = 64,
        *,
        samples_per_photo: int = 16,
        balance_sources: bool = True,
        edge_method: str = "canny",
        edge_kwargs: dict | None = None,
        crop_scale: tuple[float, float] = DEFAULT_SCALE,
        flip: bool = True,
        warp: WarpConfig | None = None,
        visible_fraction: float = 0.0,
        p_blob: float = 0.5,
        cache_max_side: int | None = 512,
        cache_size: int | None = 1024,
        max_crop_tries: int = 3,
        seed: int = 0,
    ):
        photos = list(photos)
        if not photos:
            raise ValueError("SketchEditDataset needs at least one photo, got none")
        bad = [type(p).__name__ for p in photos if not isinstance(p, Photo)]
        if bad:
            raise TypeError(f"photos must be sketchedit.data.photos.Photo objects, got {bad[0]}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an integer >= 8, got {size!r}")
        if samples_per_photo < 1:
            raise ValueError(f"samples_per_photo must be >= 1, got {samples_per_photo}")
        if edge_method not in EDGE_METHODS:
            raise ValueError(f"unknown edge method {edge_method!r}; choose one of {EDGE_METHODS}")
        if edge_method == "hed" and "weights" not in (edge_kwargs or {}) and not hed_available():
            raise ModuleNotFoundError(HED_INSTALL_HINT)
        if max_crop_tries < 1:
            raise ValueError(f"max_crop_tries must be >= 1, got {max_crop_tries}")
        self.photos = photos
        self.size = size
        self.samples_per_photo = int(samples_per_photo)
        self.balance_sources = bool(balance_sources)
        self._by_source: list[list[int]] = []  # photo indices of each source, first-seen order
        order: dict[str, int] = {}
        for k, p in enumerate(photos):
            if p.source not in order:
                order[p.source] = len(self._by_source)
                self._by_source.append([])
            self._by_source[order[p.source]].append(k)
        self.edge_method = edge_method
        self.edge_kwargs = dict(edge_kwargs or {})
        self.crop_scale = tuple(crop_scale)
        self.flip = flip
        self.warp = warp or WarpConfig()
        if not 0.0 <= visible_fraction <= 1.0:  # also rejects NaN
            raise ValueError(f"visible_fraction must lie in [0, 1], got {visible_fraction!r}")
        self.visible_fraction = float(visible_fraction)
        self.p_blob = p_blob
        self.cache_max_side = cache_max_side
        self.cache_size = cache_size
        self.max_crop_tries = max_crop_tries
        self.seed = int(seed)
        self.epoch = 0
        self._cache: OrderedDict[int, tuple[Image.Image, np.ndarray | None]] = OrderedDict()

    # ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.photos) * self.samples_per_photo

    def set_epoch(self, epoch: int) -> None:
        """Draw different crops, warps and holes for each epoch (same seed, same epochs)."""
        self.epoch = int(epoch)

    def sample_rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index``: a function of ``(seed, epoch, index)`` only."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def photo_index(self, index: int) -> int:
        """Index into ``photos`` of the photo that sample ``index`` is cut from."""
        if not self.balance_sources:
            return index % len(self.photos)
        n = len(self._by_source)
        group = self._by_source[index % n]
        return group[(index // n) % len(group)]

    def photo_of(self, index: int) -> Photo:
        """The photo that sample ``index`` is cut from."""
        return self.photos[self.photo_index(index)]

    # ----------------------------------------------------------------------------------------
    def _cached(self, k: int) -> tuple[Image.Image, np.ndarray | None]:
        """Photo ``k`` decoded (downscaled), plus its HED probability when HED is used."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        photo = self.photos[k]
        img = photo.load(self.cache_max_side)
        if min(img.size) < MIN_SIDE:
            raise ValueError(
                f"photo {photo.key} ({photo.path}) is {img.width}x{img.height} px: too small "
                f"to crop (the shorter side must be at least {MIN_SIDE} px)"
            )
        prob = None
        if self.edge_method == "hed":
            kw = {k2: v for k2, v in self.edge_kwargs.items() if k2 in ("weights", "min_side")}
            prob = hed_probability(img, **kw)
        self._cache[k] = (img, prob)
        if self.cache_size is not None:
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return self._cache[k]

    def preload(self) -> None:
        """Decode every photo now (e.g. before starting DataLoader workers, which then share
        the decoded photos copy-on-write instead of decoding them again)."""
        for k in range(
            len(self.photos) if self.cache_size is None else min(len(self.photos), self.cache_size)
        ):
            self._cached(k)

    def _edges(self, crop: Image.Image, prob_crop: np.ndarray | None) -> np.ndarray:
        if prob_crop is not None:
            kw = {
                k: v for k, v in self.edge_kwargs.items() if k in ("threshold", "nms", "min_size")
            }
            return lines_from_probability(prob_crop, **kw)
        return extract_edges(crop, self.edge_method, **self.edge_kwargs)

    def _crop(self, k: int, rng: np.random.Generator):
        """A random crop of photo ``k`` (and of its HED probability): PIL, array or None."""
        img, prob = self._cached(k)
        box = random_crop_box(img.width, img.height, rng, self.crop_scale)
        crop = crop_resize(img, box, self.size)
        prob_crop = None
        if prob is not None:
            p = Image.fromarray(prob, mode="F").resize(
                (self.size, self.size), Image.Resampling.BILINEAR, box=box
            )
            prob_crop = np.asarray(p, dtype=np.float32)
        if self.flip and rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            prob_crop = None if prob_crop is None else prob_crop[:, ::-1].copy()
        return crop, prob_crop

    def _input_edges(self, image: np.ndarray) -> np.ndarray:
        """Edges of a ``(H, W, 3)`` image in [-1, 1] with the target's detector (HED falls
        back to Canny here: a HED pass per try would cost about a second)."""
        method = "canny" if self.edge_method == "hed" else self.edge_method
        kw = {} if self.edge_method == "hed" else self.edge_kwargs
        return extract_edges(np.clip((image + 1.0) / 2.0, 0.0, 1.0), method, **kw)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        index = index % len(self)
        rng = self.sample_rng(index)
        k = self.photo_index(index)
        for _ in range(self.max_crop_tries):
            crop, prob_crop = self._crop(k, rng)
            target = np.asarray(crop, dtype=np.float32) / 127.5 - 1.0
            edges = self._edges(crop, prob_crop)
            # Drawn only when visible pairs are on, so the warp-only stream stays as it was.
            if self.visible_fraction > 0 and rng.random() < self.visible_fraction:
                pair, kind, _ = synthesize_visible_pair(target, edges, rng, self._input_edges)
                if kind == "erase":  # the target is the filled photo: its own edges
                    edges = self._input_edges(pair.target).astype(edges.dtype)
            else:
                pair = synthesize_warp_pair(target, edges, rng, self.warp)
            if pair.ok:
                break
        hole = random_hole(self.size, self.size, rng, p_blob=self.p_blob)

        def image(a):  # (S, S, 3) -> (3, S, S)
            return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))

        def plane(a):  # (S, S) -> (1, S, S) float32 in {0, 1}
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]

        return {
            "target": image(pair.target),
            "input": image(pair.input),
            "sketch": plane(pair.sketch),
            "edges": plane(edges),
            "changed": plane(pair.changed),
            "hole": plane(hole),
        }


def _worker_init(worker_id: int) -> None:
    # One thread per worker: the workers already run in parallel, and oversubscribing a
    # small CPU makes everything slower. Samples do not use worker-level randomness.
    torch.set_num_threads(1)


def make_dataloader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = True,
    sampler=None,
) -> DataLoader:
    """A DataLoader whose batches depend only on ``seed`` (and the dataset's own seed/epoch).

    The shuffle order comes from a ``torch.Generator`` seeded with ``seed``; samples come from
    per-index generators (see :class:`SketchEditDataset`), so ``num_workers=0`` and
    ``num_workers=2`` give identical batches. A ``sampler`` replaces shuffling.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if drop_last and sampler is None and len(dataset) < batch_size:
        raise ValueError(
            f"the dataset has {len(dataset)} samples, fewer than one batch of {batch_size} "
            "(drop_last=True would yield nothing): raise samples_per_photo or lower batch_size"
        )
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=_worker_init if num_workers > 0 else None,
    )


def benchmark_dataset(dataset: SketchEditDataset, n: int = 20) -> float:
    """Mean seconds per ``dataset[i]`` over ``n`` samples, photos already cached."""
    for i in range(min(n, len(dataset.photos))):
        dataset._cached(i)
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return (time.perf_counter() - start) / n
