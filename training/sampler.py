"""Place-major batches (GSV-Cities style): P places x K images, deterministic per seed.

The batch sampler yields lists of ``(place, seed)`` items; the dataset draws the K images of a
place and their augmentations from a generator seeded by ``(seed, place)``, so a batch is the
same whatever the number of loader workers. Places of one batch that lie along a route are kept
at least ``min_gap`` indices apart, so two places never share a frame that counts as positive.

Proxy mining (``proxy_group`` > 0): once the model has described every place (one epoch), the
batches are built from neighbourhoods of ``proxy_group`` places that look alike to it, as in
GPM (Ali-bey et al., "Global proxy-based hard mining for visual place recognition", BMVC
2022): the next unused place of the epoch's order and its nearest unused places by proxy
(the L2-normalised mean descriptor the place got in the previous epoch), so most negatives in
a batch are hard ones.
"""
from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from training.augment import TrainTransform
from training.datasets import PlaceSet

# Proxy mining keeps this many candidates per place and group slot, so a neighbourhood can
# still fill when the nearest places already joined earlier neighbourhoods.
CANDIDATES_PER_SLOT = 4


class PlaceBatchSampler(Sampler):
    """Batches of ``places_per_batch`` places for epoch ``set_epoch(e)``.

    ``shuffle`` False keeps the dataset order every epoch (the seeds); True draws a new
    permutation per epoch from ``seed``.
    """

    def __init__(self, places: PlaceSet, places_per_batch: int, shuffle: bool,
                 seed: int = 0, block_frames: int = 0, proxy_group: int = 0) -> None:
        if places_per_batch < 2:
            raise ValueError(f'places_per_batch must be >= 2, got {places_per_batch}')
        if proxy_group < 0:
            raise ValueError(f'proxy_group must be >= 0, got {proxy_group}')
        self.places, self.size, self.shuffle, self.seed = places, places_per_batch, shuffle, seed
        self.block_frames = block_frames if places.centres is not None else 0
        self.proxy_group = proxy_group
        self.neighbours: np.ndarray | None = None
        self.epoch = 0

    def set_proxies(self, proxies: np.ndarray | None) -> None:
        """Mine the next epochs' batches from ``proxies`` [num_places, D] (rows of places
        not yet described are NaN and join no neighbourhood); None returns to plain batches."""
        if proxies is None or not self.proxy_group:
            self.neighbours = None
            return
        self.neighbours = nearest_places(proxies, self.proxy_group * CANDIDATES_PER_SLOT)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and image draws the next iteration gives."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = np.arange(len(self.places))
        if self.shuffle:
            order = rng.permutation(len(self.places))
        if self.shuffle and self.block_frames > 0:
            blocks = self.places.centres[order] // self.block_frames
            rank = rng.permutation(int(blocks.max()) + 1)
            order = order[np.argsort(rank[blocks], kind='stable')]
        if self.neighbours is not None:
            order = self._neighbourhoods(order)
        for batch in self._spaced(order.tolist()):
            yield [(place, int(rng.integers(2 ** 31))) for place in batch]

    def __len__(self) -> int:
        return max(1, len(self.places) // self.size)

    def _neighbourhoods(self, seeds: np.ndarray) -> np.ndarray:
        """Places regrouped: each unused seed (in ``seeds`` order), then its nearest unused
        places up to ``proxy_group`` (fewer when its neighbours are taken)."""
        used = np.zeros(len(self.places), dtype=bool)
        order = []
        for seed in seeds.tolist():
            if used[seed]:
                continue
            group = [seed]
            used[seed] = True
            for other in self.neighbours[seed].tolist():
                if len(group) == self.proxy_group:
                    break
                if other >= 0 and not used[other]:
                    group.append(other)
                    used[other] = True
            order.extend(group)
        return np.asarray(order, dtype=np.int64)

    def _spaced(self, pending: list[int]) -> Iterator[list[int]]:
        """Fill batches in order, skipping places too close to ones already in the batch."""
        centres, gap = self.places.centres, self.places.min_gap
        for _ in range(len(self)):
            batch, rest = [], []
            for place in pending:
                fits = len(batch) < self.size and (
                    centres is None or all(abs(int(centres[place]) - int(centres[other])) >= gap
                                           for other in batch))
                (batch if fits else rest).append(place)
            pending = rest
            if len(batch) >= 2:
                yield batch


def nearest_places(proxies: np.ndarray, count: int, chunk: int = 2048) -> np.ndarray:
    """[N, D] proxies -> [N, count] indices of each place's most similar other places, best
    first (-1 where there are fewer; NaN rows neither have nor are neighbours)."""
    x = torch.as_tensor(np.asarray(proxies, dtype=np.float32))
    valid = ~torch.isnan(x).any(dim=1)
    x = torch.where(valid[:, None], x, torch.zeros_like(x))
    count = min(count, len(x) - 1)
    out = np.full((len(x), max(count, 0)), -1, dtype=np.int64)
    if count <= 0:
        return out
    for start in range(0, len(x), chunk):
        sim = x[start:start + chunk] @ x.T
        sim[:, ~valid] = float('-inf')
        rows = torch.arange(start, min(start + chunk, len(x)))
        sim[rows - start, rows] = float('-inf')
        values, index = torch.topk(sim, count, dim=1)
        index[torch.isinf(values)] = -1
        index[~valid[rows]] = -1
        out[start:start + chunk] = index.numpy()
    return out


class ProxyBank:
    """Running per-place sums of the training descriptors of one epoch -> proxies."""

    def __init__(self, places: PlaceSet) -> None:
        self.index = {int(label): i for i, label in enumerate(places.labels)}
        self.sums: np.ndarray | None = None
        self.counts = np.zeros(len(places.labels), dtype=np.int64)

    def add(self, labels: torch.Tensor, descriptors: torch.Tensor) -> None:
        """Accumulate a batch: ``labels`` [B] place labels, ``descriptors`` [B, D]."""
        x = torch.nn.functional.normalize(descriptors.detach().float(), dim=1).cpu().numpy()
        if self.sums is None:
            self.sums = np.zeros((len(self.counts), x.shape[1]), dtype=np.float64)
        rows = np.array([self.index[int(label)] for label in labels.tolist()])
        np.add.at(self.sums, rows, x)
        np.add.at(self.counts, rows, 1)

    def proxies(self) -> np.ndarray | None:
        """[num_places, D] L2-normalised means; NaN rows for places not seen."""
        if self.sums is None:
            return None
        out = np.full(self.sums.shape, np.nan, dtype=np.float32)
        seen = self.counts > 0
        norms = np.linalg.norm(self.sums[seen], axis=1, keepdims=True)
        out[seen] = self.sums[seen] / np.maximum(norms, 1e-12)
        return out


class PlaceImages(Dataset):
    """Item ``(place, seed)`` -> (images [K, 3, H, W], labels [K], masks [K, 1, h, w] | None).

    The K images are drawn without replacement (with replacement only when a place has fewer);
    for sequences the place's exact frames come first, neighbouring frames fill the rest.
    With ``augment.place_flip`` all K images (and masks) of a drawn place are mirrored.
    """

    def __init__(self, places: PlaceSet, transform: TrainTransform, images_per_place: int,
                 mask_size: tuple[int, int] | None = None) -> None:
        self.places, self.transform, self.k = places, transform, images_per_place
        self.mask_size = mask_size

    def __len__(self) -> int:
        return len(self.places)

    def __getitem__(self, item: tuple[int, int]):
        place, seed = item
        rng = np.random.default_rng([seed, place])
        chosen = self._choose(place, rng)
        files = self.places.places[place]
        # The flip is drawn only when enabled, so runs without it draw what they always drew.
        flip = self.transform.cfg.place_flip > 0 and rng.random() < self.transform.cfg.place_flip
        images = torch.stack([self.transform(self._read(files[i], flip), rng) for i in chosen])
        labels = torch.full((len(chosen),), int(self.places.labels[place]), dtype=torch.int64)
        masks = None
        if self.places.masks is not None and self.mask_size is not None:
            masks = torch.stack([self._mask(self.places.masks[place][i]) for i in chosen])
            masks = masks.flip(-1) if flip else masks
        return images, labels, masks

    def _read(self, path, flip: bool) -> np.ndarray:
        image = self.places.image(path)
        return np.ascontiguousarray(image[:, ::-1]) if flip else image

    def _choose(self, place: int, rng: np.random.Generator) -> list[int]:
        count = len(self.places.places[place])
        if count < self.k:
            return rng.choice(count, size=self.k, replace=True).tolist()
        lead = min(self.places.leading, self.k)
        rest = rng.permutation(np.arange(lead, count))[:self.k - lead]
        return list(range(lead)) + rest.tolist()

    def _mask(self, path) -> torch.Tensor:
        grey = cv2.cvtColor(self.places.image(path), cv2.COLOR_RGB2GRAY)
        height, width = self.mask_size
        small = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(small.astype(np.float32) / 255.0)[None]


def collate_places(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Concatenate place items into one batch: [P*K, 3, H, W], [P*K], masks or None."""
    images = torch.cat([item[0] for item in items])
    labels = torch.cat([item[1] for item in items])
    masks = None if items[0][2] is None else torch.cat([item[2] for item in items])
    return images, labels, masks
