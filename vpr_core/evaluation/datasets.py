"""Evaluation sets: database images, query images and the positives of every query.

Layouts:

- VG-benchmark (VPR-datasets-downloader): ``<root>/images/{train,val,test}/{database,queries}``,
  UTM east / north in ``@``-separated file names; positives lie within 25 m (inclusive); queries
  without a positive stay in the set (they count as failures).
- Index-aligned sequences (Nordland and most robot datasets): two traversals of one route in two
  folders, sorted file names give the index; positives are the frames within ``tolerance``.
- VPR-City-Mask (HAM-VPR): the VG-benchmark layout plus ``database_mask`` / ``queries_mask``
  folders holding one mask per image (same relative path, any image extension).

A traversal may also be a rosbag2 directory (``metadata.yaml`` inside): its image messages, in
bag order, are the frames (:class:`BagFrame`).

:func:`list_images` (from :mod:`vpr_core.image`) and :func:`parse_utm` (from
:mod:`vpr_core.mapdb.source`) are re-exported here for the evaluation and training code.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vpr_core.bags import IMAGE_TYPES, list_topics
from vpr_core.errors import ConfigError
from vpr_core.image import IMAGE_SUFFIXES, list_images
from vpr_core.mapdb.source import BagSource, parse_utm

__all__ = ['BagFrame', 'EvalSet', 'Frame', 'IMAGE_SUFFIXES', 'is_bag', 'list_frames',
           'list_images', 'load_bag_poses', 'load_city_mask', 'load_index_aligned',
           'load_vg_benchmark', 'match_masks', 'parse_utm', 'positives_within']

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BagFrame:
    """Image message ``index`` (bag order) of ``topic`` in the rosbag2 at ``bag``."""

    bag: Path
    topic: str
    index: int

    @property
    def name(self) -> str:
        return f'{self.bag.name}{self.topic}#{self.index}'


Frame = Path | BagFrame


@dataclass(frozen=True)
class EvalSet:
    """What an evaluation needs: image paths and ground truth.

    ``positives``: one int64 array of database indices per query. ``sequential``: queries and
    database are ordered along a route, so sequence matching is meaningful.
    ``database_masks`` / ``query_masks``: mask image paths (VPR-City-Mask), else None.
    """

    name: str
    database: tuple[Frame, ...]
    queries: tuple[Frame, ...]
    positives: tuple[np.ndarray, ...]
    sequential: bool = False
    database_masks: tuple[Path, ...] | None = None
    query_masks: tuple[Path, ...] | None = None

    @property
    def has_positive(self) -> np.ndarray:
        """[Q] bool: the query has at least one positive in the database."""
        return np.array([len(p) > 0 for p in self.positives], dtype=bool)


def is_bag(path: str | Path) -> bool:
    """True for a rosbag2 directory (it holds ``metadata.yaml``)."""
    return (Path(path) / 'metadata.yaml').is_file()


def list_frames(source: str | Path, image_topic: str | None = None) -> list[Frame]:
    """Frames of one traversal: sorted image files of a folder, or a bag's image messages.

    ``image_topic`` None picks the bag's only image topic (an error lists them if several).
    """
    if not is_bag(source):
        return list_images(source)
    topics = {t: n for t, (kind, n) in list_topics(source).items() if kind in IMAGE_TYPES}
    if image_topic is None:
        if len(topics) != 1:
            raise ConfigError(f'bag {source} has image topics {sorted(topics) or "none"}; '
                              'choose one with --image-topic')
        image_topic = next(iter(topics))
    if image_topic not in topics:
        raise ConfigError(f"bag {source} has no image topic '{image_topic}' (image topics: "
                          f'{sorted(topics)})')
    return [BagFrame(Path(source), image_topic, i) for i in range(topics[image_topic])]


def positives_within(database_utm: np.ndarray, query_utm: np.ndarray,
                     radius_m: float) -> tuple[np.ndarray, ...]:
    """Database indices within ``radius_m`` (inclusive, Euclidean) of every query.

    ``database_utm``: [N, 2]; ``query_utm``: [Q, 2] (east, north) in metres.
    """
    database_utm = np.asarray(database_utm, dtype=np.float64).reshape(-1, 2)
    query_utm = np.asarray(query_utm, dtype=np.float64).reshape(-1, 2)
    result = []
    for start in range(0, len(query_utm), 1024):
        chunk = query_utm[start:start + 1024]
        distance = np.sqrt(((chunk[:, None, :] - database_utm[None, :, :]) ** 2).sum(-1))
        result.extend(np.flatnonzero(row <= radius_m).astype(np.int64) for row in distance)
    return tuple(result)


def load_vg_benchmark(root: str | Path, split: str = 'test', radius_m: float = 25.0) -> EvalSet:
    """A VG-benchmark split: ``<root>/images/<split>/{database,queries}``."""
    base = _split_dir(root, split)
    database = list_images(base / 'database')
    queries = list_images(base / 'queries')
    _require_images(database, base / 'database')
    _require_images(queries, base / 'queries')
    positives = positives_within(np.array([parse_utm(p) for p in database]),
                                 np.array([parse_utm(p) for p in queries]), radius_m)
    missing = sum(len(p) == 0 for p in positives)
    if missing:
        logger.info('%d of %d queries have no positive within %.1f m (kept as failures)',
                    missing, len(queries), radius_m)
    return EvalSet(name=f'{Path(root).name}/{split}', database=tuple(database),
                   queries=tuple(queries), positives=positives)


def load_index_aligned(database_dir: str | Path, queries_dir: str | Path, tolerance: int,
                       index_range: tuple[int, int] | None = None,
                       database_range: tuple[int, int] | None = None,
                       image_topic: str | None = None) -> EvalSet:
    """Two index-aligned traversals; query i matches database j when ``|i - j| <= tolerance``.

    Each traversal is an image folder or a rosbag2 (``image_topic``). ``index_range`` =
    (start, stop) keeps that slice of the queries (and of the database unless
    ``database_range`` gives the database its own slice); indices stay global for matching.
    """
    if tolerance < 0:
        raise ConfigError(f'tolerance must be >= 0 frames, got {tolerance}')
    database = list_frames(database_dir, image_topic)
    queries = list_frames(queries_dir, image_topic)
    _require_images(database, database_dir)
    _require_images(queries, queries_dir)
    if len(database) != len(queries):
        logger.warning('index-aligned folders differ in length: %d database, %d queries',
                       len(database), len(queries))
    q_start, q_stop = _check_range(index_range or (0, len(queries)), len(queries))
    d_start, d_stop = _check_range(database_range or index_range or (0, len(database)),
                                   len(database))
    positives = tuple(np.arange(max(d_start, i - tolerance), min(d_stop, i + tolerance + 1),
                                dtype=np.int64) - d_start for i in range(q_start, q_stop))
    name = f'{Path(queries_dir).name}-vs-{Path(database_dir).name}'
    return EvalSet(name=name, database=tuple(database[d_start:d_stop]),
                   queries=tuple(queries[q_start:q_stop]), positives=positives,
                   sequential=True)


def load_bag_poses(database_bag: str | Path, queries_bag: str | Path, pose_topic: str,
                   radius_m: float = 25.0, image_topic: str | None = None,
                   tolerance_s: float = 0.5) -> EvalSet:
    """Two rosbag2 recordings posed by ``pose_topic`` (interpolated to the image stamps, as the
    map builder does); positives lie within ``radius_m`` (inclusive). Both pose tracks must be
    in one frame; a query without a pose within ``tolerance_s`` keeps no positive.
    """
    frames, tables = [], []
    for bag in (database_bag, queries_bag):
        frames.append(list_frames(bag, image_topic))
        tables.append(BagSource(bag, frames[-1][0].topic, pose_topic, tolerance_s).table())
    if tables[0].frame_id != tables[1].frame_id:
        raise ConfigError(f"pose frames differ: database '{tables[0].frame_id}', queries "
                          f"'{tables[1].frame_id}'; positives need poses in one frame")
    db_xy, q_xy = (np.where(t.valid[:, None], t.positions[:, :2], np.nan) for t in tables)
    positives = positives_within(db_xy, q_xy, radius_m)
    return EvalSet(name=f'{Path(queries_bag).name}-vs-{Path(database_bag).name}',
                   database=tuple(frames[0]), queries=tuple(frames[1]), positives=positives,
                   sequential=True)


def load_city_mask(root: str | Path, split: str = 'test', radius_m: float = 25.0) -> EvalSet:
    """VPR-City-Mask: the VG-benchmark split plus its ``*_mask`` folders (one mask per image)."""
    plain = load_vg_benchmark(root, split, radius_m)
    base = _split_dir(root, split)
    return EvalSet(name=plain.name, database=plain.database, queries=plain.queries,
                   positives=plain.positives,
                   database_masks=match_masks(plain.database, base / 'database',
                                              base / 'database_mask'),
                   query_masks=match_masks(plain.queries, base / 'queries', base / 'queries_mask'))


def match_masks(images: tuple[Path, ...], image_dir: Path, mask_dir: Path) -> tuple[Path, ...]:
    """The mask of every image: same relative path under ``mask_dir``, any image suffix."""
    by_stem = {p.relative_to(mask_dir).with_suffix('').as_posix(): p
               for p in list_images(mask_dir)}
    masks = []
    for image in images:
        key = image.relative_to(image_dir).with_suffix('').as_posix()
        if key not in by_stem:
            raise ConfigError(f'no mask for {image.name} in {mask_dir} (expected {key}.<ext>)')
        masks.append(by_stem[key])
    return tuple(masks)


def _split_dir(root: str | Path, split: str) -> Path:
    base = Path(root) / 'images' / split
    if not base.is_dir():
        splits = sorted(p.name for p in (Path(root) / 'images').glob('*') if p.is_dir())
        raise ConfigError(f'{base} not found: expected <root>/images/<split>/{{database,queries}}'
                          f' (splits present: {splits or "none"})')
    return base


def _require_images(files: list[Path], folder: str | Path) -> None:
    if not files:
        raise ConfigError(f'no images ({", ".join(IMAGE_SUFFIXES)}) found under {folder}')


def _check_range(index_range: tuple[int, int], count: int) -> tuple[int, int]:
    start, stop = int(index_range[0]), int(index_range[1])
    if not 0 <= start < stop <= count:
        raise ConfigError(f'index range {start}:{stop} must satisfy 0 <= start < stop <= {count}')
    return start, stop
