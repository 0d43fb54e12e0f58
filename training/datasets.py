"""Training places: GSV-Cities, index-aligned sequences and VPR-City-Mask.

Every source becomes a :class:`PlaceSet`: a list of places, each a list of image files, with
one integer label per place. Batches are place-major (see ``training.sampler``): P places x K
images, labels = place ids repeated K times.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.config import DataConfig
from vpr_core.errors import ConfigError
from vpr_core.evaluation import list_images, match_masks, parse_utm
from vpr_core.image import load_image_file

logger = logging.getLogger(__name__)

GSV_COLUMNS = ('place_id', 'year', 'month', 'northdeg', 'city_id', 'lat', 'lon', 'panoid')


@dataclass
class PlaceSet:
    """Places for metric learning.

    ``places[i]``: image files of place i; ``labels[i]``: its global place id;
    ``masks[i]``: mask files aligned with ``places[i]`` (VPR-City-Mask) or None;
    ``centres``: [num_places] positions along a route (sequences) for batch spacing, or None;
    ``min_gap``: smallest centre distance of two places in one batch;
    ``leading``: the first ``leading`` files of every place are always drawn (a sequence
    place's exact frames, one per traversal).
    """

    places: list[list[Path]]
    labels: np.ndarray
    masks: list[list[Path]] | None = None
    centres: np.ndarray | None = None
    min_gap: int = 0
    leading: int = 0
    cache: dict | None = None

    def __len__(self) -> int:
        return len(self.places)

    def image(self, path: Path) -> np.ndarray:
        """RGB uint8 [H, W, 3] of one file (kept in memory when caching is on)."""
        if self.cache is None:
            return load_image_file(path)
        if path not in self.cache:
            self.cache[path] = load_image_file(path)
        return self.cache[path]


def gsv_image_name(row: dict) -> str:
    """GSV-Cities file name of a CSV row: city_place_year_month_northdeg_lat_lon_panoid.jpg."""
    place = int(row['place_id']) % 10 ** 5
    return (f"{row['city_id']}_{place:07d}_{int(row['year']):04d}_{int(row['month']):02d}_"
            f"{int(row['northdeg']):03d}_{float(row['lat'])!r}_{float(row['lon'])!r}_"
            f"{row['panoid']}.jpg")


def load_gsv_cities(root: str | Path, cities: tuple[str, ...] = (),
                    min_images_per_place: int = 4, seed: int = 0) -> PlaceSet:
    """``<root>/Dataframes/<city>.csv`` + ``<root>/Images/<city>/``; city k's place ids are
    offset by k x 10^5; places with fewer than ``min_images_per_place`` images are dropped;
    each city's places are shuffled once (seeded), cities stay in list order."""
    root = Path(root)
    frames = root / 'Dataframes'
    if not frames.is_dir():
        raise ConfigError(f'{frames} not found: expected a GSV-Cities tree with Dataframes/ '
                          'and Images/')
    cities = cities or tuple(sorted(p.stem for p in frames.glob('*.csv')))
    rng = np.random.default_rng(seed)
    places, labels = [], []
    for k, city in enumerate(cities):
        groups = _read_city(frames / f'{city}.csv', root / 'Images' / city)
        kept = [pid for pid in sorted(groups) if len(groups[pid]) >= min_images_per_place]
        for pid in rng.permutation(np.array(kept, dtype=np.int64)):
            places.append(groups[int(pid)])
            labels.append(int(pid) + k * 10 ** 5)
    if not places:
        raise ConfigError(f'no place with >= {min_images_per_place} images under {root}')
    logger.info('GSV-Cities: %d places, %d images from %d cities', len(places),
                sum(map(len, places)), len(cities))
    return PlaceSet(places=places, labels=np.array(labels, dtype=np.int64))


def _read_city(csv_path: Path, image_dir: Path) -> dict[int, list[Path]]:
    if not csv_path.is_file():
        raise ConfigError(f'city table not found: {csv_path}')
    groups: dict[int, list[Path]] = {}
    with csv_path.open(newline='') as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in GSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(f'{csv_path} lacks columns {missing} (needs {list(GSV_COLUMNS)})')
        for row in reader:
            groups.setdefault(int(row['place_id']), []).append(image_dir / gsv_image_name(row))
    return groups


def load_sequence_places(root: str | Path, traversals: tuple[str, ...],
                         index_range: tuple[int, int] | None, radius: int,
                         exclude_ranges: tuple[tuple[int, int], ...] = ()) -> PlaceSet:
    """Index-aligned traversals ``root/<t>/``: place i = frames i - radius .. i + radius of
    every traversal (clipped to ``index_range``, without the frames of ``exclude_ranges``);
    the exact frames come first in each list."""
    folders = [list_images(Path(root) / name) for name in traversals]
    count = min(len(files) for files in folders)
    start, stop = index_range if index_range is not None else (0, count)
    if not 0 <= start < stop <= count:
        raise ConfigError(f'index range {start}:{stop} must satisfy 0 <= start < stop <= '
                          f'{count} for {root}')
    kept = np.zeros(count, dtype=bool)
    kept[start:stop] = True
    for first, last in exclude_ranges:
        kept[max(first, 0):max(last, 0)] = False
    places = []
    centres = np.flatnonzero(kept).astype(np.int64)
    if not len(centres):
        raise ConfigError(f'no training frame left in {start}:{stop} after excluding '
                          f'{list(exclude_ranges)}')
    for i in centres:
        exact = [files[i] for files in folders]
        near = [files[j] for j in range(max(start, i - radius), min(stop, i + radius + 1))
                if j != i and kept[j] for files in folders]
        places.append(exact + near)
    return PlaceSet(places=places, labels=centres.copy(), centres=centres,
                    min_gap=2 * radius + 2, leading=len(folders))


def load_city_mask_places(root: str | Path, split: str, radius_m: float,
                          min_images_per_place: int = 2) -> PlaceSet:
    """VPR-City-Mask split: database and query images grouped into places by UTM cells of
    ``radius_m``; each image keeps its mask file."""
    base = Path(root) / 'images' / split
    images, masks = [], []
    for kind in ('database', 'queries'):
        files = tuple(list_images(base / kind))
        images.extend(files)
        masks.extend(match_masks(files, base / kind, base / f'{kind}_mask'))
    cells: dict[tuple[int, int], list[int]] = {}
    for index, path in enumerate(images):
        east, north = parse_utm(path)
        cells.setdefault((int(east // radius_m), int(north // radius_m)), []).append(index)
    groups = [members for _, members in sorted(cells.items())
              if len(members) >= min_images_per_place]
    if not groups:
        raise ConfigError(f'no place with >= {min_images_per_place} images in {base}')
    return PlaceSet(places=[[images[i] for i in g] for g in groups],
                    labels=np.arange(len(groups), dtype=np.int64),
                    masks=[[masks[i] for i in g] for g in groups])


def load_places(cfg: DataConfig, seed: int = 0) -> PlaceSet:
    """The :class:`PlaceSet` described by ``cfg``."""
    if cfg.kind == 'gsv_cities':
        places = load_gsv_cities(cfg.root, cfg.cities, cfg.min_images_per_place, seed)
    elif cfg.kind == 'sequence':
        places = load_sequence_places(cfg.root, cfg.traversals, cfg.index_range,
                                      cfg.place_radius_frames, cfg.exclude_ranges)
    elif cfg.kind == 'city_mask':
        places = load_city_mask_places(cfg.root, cfg.split, cfg.place_radius_m)
    else:
        raise ConfigError(f"unknown data kind {cfg.kind!r} (valid: gsv_cities, sequence, "
                          "city_mask)")
    if cfg.cache_images:
        places.cache = {}
    return places
