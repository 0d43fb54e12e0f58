"""Training places from recorded sessions: rosbag2 files and image folders, read by the map
builder's own sources (:mod:`vpr_core.mapdb.source`), so ``vpr adapt`` takes exactly what
``vpr build-map`` takes.

Posed sessions (a bag with a pose topic, a folder with a poses CSV or VG-benchmark names):
place centres are frames at least ``place_spacing_m`` apart; a place holds every frame of any
session within ``positive_radius_m`` of its centre whose heading differs by at most
``heading_limit_deg`` (when the poses carry a heading). Two places share a batch only when
their centres are ``negative_radius_m + 2 x positive_radius_m`` apart, so every image of one
is beyond ``negative_radius_m`` of every image of the other: the negatives are true ones.
Several sessions of one area combine through their common pose frame (NavSatFix tracks are
moved to the first session's geodetic origin).

Unposed sessions (an image folder or a bag without poses) are index-aligned sequences, as in
``vpr build-map``: frame i sits at i "metres"; a place is the frames within
``window_frames`` of its centre frame, and places of one batch are
``negative_frames + 2 x window_frames`` frames apart. Several unposed sessions are aligned
by index (frame i of each is the same place).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from training.datasets import PlaceSet
from training.sampler import PlaceBatchSampler
from vpr_core.errors import ConfigError
from vpr_core.mapdb import (BagSource, FrameSource, FrameTable, geodetic_to_enu, ImageFolderSource,
                            yaw_from_quaternions)

logger = logging.getLogger(__name__)
_CHUNK = 256


@dataclass(frozen=True)
class MiningConfig:
    """How places are mined from poses (posed sessions) or frame indices (unposed ones).

    ``place_spacing_m`` None: the positive radius. ``heading_limit_deg`` None: no heading
    test. ``min_images_per_place``: places with fewer images are dropped (1 with
    ``window_frames`` 0: every frame is its own place, its K images are augmented copies).
    """

    positive_radius_m: float = 5.0
    heading_limit_deg: float | None = 45.0
    negative_radius_m: float = 25.0
    place_spacing_m: float | None = None
    window_frames: int = 1
    negative_frames: int = 3
    min_images_per_place: int = 2

    def check(self) -> None:
        """Raise :class:`ConfigError` for radii that cannot give positives and negatives."""
        if not 0 < self.positive_radius_m < self.negative_radius_m:
            raise ConfigError('mining needs 0 < positive_radius_m < negative_radius_m, got '
                              f'{self.positive_radius_m} and {self.negative_radius_m}')
        if self.window_frames < 0 or self.negative_frames <= self.window_frames:
            raise ConfigError('mining needs 0 <= window_frames < negative_frames, got '
                              f'{self.window_frames} and {self.negative_frames}')
        if self.min_images_per_place < 1:
            raise ConfigError(f'min_images_per_place must be >= 1, got '
                              f'{self.min_images_per_place}')


@dataclass(frozen=True)
class SessionSpec:
    """One recorded session: a bag (``image_topic``, optional ``pose_topic``) or an image
    folder (optional ``poses`` CSV); the arguments of ``vpr build-map``."""

    bag: str | None = None
    images: str | None = None
    poses: str | None = None
    image_topic: str | None = None
    pose_topic: str | None = None
    layout: str = 'auto'
    pose_tolerance_s: float = 0.5

    def source(self) -> FrameSource:
        """The map builder's source for this session."""
        if (self.bag is None) == (self.images is None):
            raise ConfigError('a session is either a bag or an image folder')
        if self.images is not None:
            return ImageFolderSource(self.images, self.poses, self.layout)
        if not self.image_topic:
            raise ConfigError(f'bag {self.bag}: give its image topic (--image-topic)')
        return BagSource(self.bag, self.image_topic, self.pose_topic, self.pose_tolerance_s)

    @property
    def name(self) -> str:
        return str(self.bag if self.bag is not None else self.images)


@dataclass
class Session:
    """The usable frames of one session: poses (valid ones only) and decoded images."""

    name: str
    table: FrameTable
    indices: np.ndarray
    images: list[np.ndarray]

    @property
    def posed(self) -> bool:
        return not self.table.synthetic_poses


def read_session(spec: SessionSpec, size: tuple[int, int] | None = None) -> Session:
    """Decode every frame of ``spec`` that has a pose, resized to ``size`` (H, W) when given
    (training resizes to the model's size first anyway); undecodable frames are skipped."""
    source = spec.source()
    table = source.table()
    wanted = np.flatnonzero(table.valid)
    if not len(wanted):
        raise ConfigError(f'{spec.name}: none of its {len(table.valid)} images has a pose '
                          '(check the pose topic, its stamps and --pose-tolerance)')
    kept, images, failed = [], [], 0
    for index, image in _decoded(source, wanted):
        if image is None:
            failed += 1
            continue
        if size is not None and image.shape[:2] != tuple(size):
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        kept.append(index)
        images.append(image)
    if failed:
        logger.warning('%s: %d undecodable images skipped', spec.name, failed)
    logger.info('%s: %d frames (%s poses)', spec.name, len(kept),
                'synthetic' if table.synthetic_poses else table.info.get('pose_type', 'file'))
    return Session(spec.name, table, np.asarray(kept, dtype=np.int64), images)


def _decoded(source: FrameSource, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    for index, image, _error in source.frames(indices.tolist()):
        yield int(index), image


def combined_poses(sessions: Sequence[Session]) -> tuple[np.ndarray, np.ndarray | None]:
    """[N, 3] positions and [N] yaw (None when any session has no heading) of every kept
    frame, sessions in order, in the first session's frame."""
    if not sessions:
        raise ConfigError('no session to train on')
    posed = {s.posed for s in sessions}
    if len(posed) > 1:
        raise ConfigError('sessions mix measured poses and unposed sequences; give only '
                          'posed sessions (bags with --pose-topic, folders with --poses) or '
                          'only unposed ones')
    frames = {s.table.frame_id for s in sessions}
    if len(frames) > 1:
        logger.warning('sessions have different pose frames %s: they are combined as if they '
                       'were one', sorted(frames))
    origin = sessions[0].table.geo_origin
    positions, yaws = [], []
    for session in sessions:
        table, rows = session.table, session.indices
        offset = np.zeros(3)
        if origin is not None and table.geo_origin is not None:
            offset = geodetic_to_enu(*[np.array([v]) for v in table.geo_origin], origin)[0]
        positions.append(table.positions[rows] + offset)
        yaws.append(yaw_from_quaternions(table.orientations[rows]))
    headed = all(s.table.orientation_source != 'none' for s in sessions)
    return np.concatenate(positions), np.concatenate(yaws) if headed else None


def choose_centres(positions: np.ndarray, yaw: np.ndarray | None, spacing: float,
                   heading_limit_rad: float | None) -> np.ndarray:
    """Indices of place centres: greedy in frame order, a frame becomes a centre when no
    earlier centre lies within ``spacing`` with a heading inside the limit."""
    chosen: list[int] = []
    for i in range(len(positions)):
        if chosen:
            near = np.linalg.norm(positions[chosen] - positions[i], axis=1) < spacing
            if yaw is not None and heading_limit_rad is not None:
                near &= heading_difference(yaw[chosen], yaw[i]) <= heading_limit_rad
            if near.any():
                continue
        chosen.append(i)
    return np.asarray(chosen, dtype=np.int64)


def heading_difference(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """Absolute angle between headings in radians, in [0, pi]."""
    return np.abs(np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b)))))


def place_members(positions: np.ndarray, yaw: np.ndarray | None, centres: np.ndarray,
                  radius: float, heading_limit_rad: float | None) -> list[np.ndarray]:
    """For each centre, the frames within ``radius`` (and the heading limit), centre first."""
    members = []
    for start in range(0, len(centres), _CHUNK):
        block = centres[start:start + _CHUNK]
        close = _distances(positions[block], positions) <= radius
        if yaw is not None and heading_limit_rad is not None:
            close &= heading_difference(yaw[block][:, None], yaw[None, :]) <= heading_limit_rad
        for centre, row in zip(block.tolist(), close):
            others = np.flatnonzero(row)
            members.append(np.concatenate([[centre], others[others != centre]]))
    return members


def conflicting_places(centres_xyz: np.ndarray, min_distance: float) -> list[np.ndarray]:
    """For each place, the other places whose centre is closer than ``min_distance``."""
    out = []
    for start in range(0, len(centres_xyz), _CHUNK):
        near = _distances(centres_xyz[start:start + _CHUNK], centres_xyz) < min_distance
        for offset, row in enumerate(near):
            others = np.flatnonzero(row)
            out.append(others[others != start + offset])
    return out


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, 3], [m, 3] -> [n, m] Euclidean distances (no [n, m, 3] intermediate)."""
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


@dataclass
class MinedPlaces:
    """A :class:`PlaceSet` (images kept in memory) and, per place, the places it must not
    share a batch with."""

    places: PlaceSet
    conflicts: list[np.ndarray]
    frames: int
    posed: bool


def mine_places(sessions: Sequence[Session], cfg: MiningConfig) -> MinedPlaces:
    """Places of ``sessions`` (see the module docstring)."""
    cfg.check()
    positions, yaw = combined_poses(sessions)
    posed = sessions[0].posed
    if posed:
        radius, spacing = cfg.positive_radius_m, cfg.place_spacing_m or cfg.positive_radius_m
        gap = cfg.negative_radius_m + 2 * radius
        limit = None if cfg.heading_limit_deg is None else np.radians(cfg.heading_limit_deg)
    else:
        radius, spacing, limit = float(cfg.window_frames), 1.0, None
        gap = float(cfg.negative_frames + 2 * cfg.window_frames)
        counts = {len(s.indices) for s in sessions}
        if len(counts) > 1:
            logger.warning('unposed sessions of %s frames are aligned by index', sorted(counts))
    centres = choose_centres(positions, yaw, spacing, limit)
    members = place_members(positions, yaw, centres, radius, limit)
    keep = [i for i, m in enumerate(members) if len(m) >= cfg.min_images_per_place]
    if not keep:
        raise ConfigError(f'no place has {cfg.min_images_per_place} or more images within '
                          f'{radius:g} {"m" if posed else "frames"} of each other; record '
                          'denser frames or raise the positive radius')
    keys = [(name, int(i)) for s, name in zip(sessions, session_keys(sessions))
            for i in s.indices]
    cache = {Path(f'{name}#{i}'): image for (name, i), image
             in zip(keys, (im for s in sessions for im in s.images))}
    if len(cache) != len(keys):
        raise ConfigError(f'{len(keys) - len(cache)} frames share a session name and index; '
                          'give each session a distinct name')
    files = list(cache)
    centres, members = centres[keep], [members[i] for i in keep]
    places = PlaceSet(places=[[files[j] for j in m] for m in members],
                      labels=np.arange(len(members), dtype=np.int64), leading=1, cache=cache)
    conflicts = conflicting_places(positions[centres], gap)
    logger.info('%d places from %d frames of %d sessions (%.1f images per place)',
                len(members), len(files), len(sessions), np.mean([len(m) for m in members]))
    return MinedPlaces(places, conflicts, len(files), posed)


def session_keys(sessions: Sequence[Session]) -> list[str]:
    """Each session's name in the image cache keys (``name#index``): its name, with
    ``@position`` added where another session has the same name (one path given twice), so
    no two frames share a key."""
    counts = Counter(s.name for s in sessions)
    return [s.name if counts[s.name] == 1 else f'{s.name}@{k}' for k, s in enumerate(sessions)]


class SpacedBatchSampler(PlaceBatchSampler):
    """The place-major P x K sampler, with batches whose places are never in ``conflicts``
    of each other (positions in 2-D or 3-D, not along one route)."""

    def __init__(self, mined: MinedPlaces, places_per_batch: int, seed: int = 0) -> None:
        super().__init__(mined.places, places_per_batch, shuffle=True, seed=seed)
        self.conflicts = [set(c.tolist()) for c in mined.conflicts]

    def _spaced(self, pending: list[int]) -> Iterator[list[int]]:
        for _ in range(len(self)):
            batch, blocked, rest = [], set(), []
            for place in pending:
                if len(batch) < self.size and place not in blocked:
                    batch.append(place)
                    blocked |= self.conflicts[place]
                else:
                    rest.append(place)
            pending = rest
            if len(batch) >= 2:
                yield batch
