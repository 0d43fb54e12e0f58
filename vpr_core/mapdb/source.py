"""Where map frames come from: a rosbag2, an image folder (with a poses CSV, in the
VG-benchmark layout, or as an index-aligned sequence without poses).

A source first lists its frames (stamps and poses, no pixels), so keyframes are chosen before
any image is decoded; then it yields the images of the chosen frames only.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np

from vpr_core import bags
from vpr_core.errors import ConfigError, UnsupportedImageError
from vpr_core.image import list_images, load_image_file
from vpr_core.mapdb.pose import (interpolate_poses, normalise_quaternions, quaternions_from_yaw)

logger = logging.getLogger(__name__)

LAYOUTS = ('auto', 'csv', 'vg', 'sequence')
_NAME_COLUMNS = ('name', 'image', 'file', 'filename', 'path')
# (frame index, RGB image or None, why it could not be decoded or None)
DecodedFrame = tuple[int, np.ndarray | None, UnsupportedImageError | None]


@dataclass(frozen=True)
class FrameTable:
    """The frames of a source, in recording order.

    ``stamps_ns`` [N] int64; ``positions`` [N, 3] and ``orientations`` [N, 4] (x, y, z, w) of
    the base (or of the camera when the source knows nothing else) in ``frame_id``; ``valid``
    [N] bool: a pose is known; ``keyframing``: False when every frame is a distinct place.
    """

    stamps_ns: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray
    valid: np.ndarray
    names: np.ndarray
    frame_id: str
    synthetic_poses: bool = False
    orientation_source: str = 'pose'
    geo_origin: tuple[float, float, float] | None = None
    keyframing: bool = True
    info: dict = field(default_factory=dict)


class FrameSource(Protocol):
    """What the map builder reads frames from.

    A source may also offer ``frames(indices) -> Iterator[DecodedFrame]``: like ``images``,
    but an undecodable frame is yielded with its error (image None) instead of raising, so a
    build can skip it and go on (both sources here do).
    """

    def table(self) -> FrameTable:
        """All frames with stamps and poses (no pixels)."""

    def images(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        """RGB [H, W, 3] uint8 images of ``indices`` (ascending), in that order."""


def synthetic_table(names: Sequence[str], frame_id: str = 'map', info: dict | None = None
                    ) -> FrameTable:
    """Index-aligned frames without poses: frame i sits 1 m along x, 1 s after frame i - 1."""
    count = len(names)
    positions = np.zeros((count, 3))
    positions[:, 0] = np.arange(count)
    return FrameTable(np.arange(count, dtype=np.int64) * 1_000_000_000, positions,
                      quaternions_from_yaw(np.zeros(count)), np.ones(count, dtype=bool),
                      np.asarray(names, dtype=str), frame_id, synthetic_poses=True,
                      orientation_source='none', keyframing=False, info=info or {})


class ImageFolderSource:
    """Images under a folder (recursive, sorted by relative path).

    ``layout``: ``csv`` (poses from ``poses_csv``), ``vg`` (UTM east / north in the
    ``@``-separated names), ``sequence`` (no poses: the index is the place) or ``auto`` (csv
    when a CSV is given, vg when every name parses, else sequence).
    """

    def __init__(self, folder: str | Path, poses_csv: str | Path | None = None,
                 layout: str = 'auto') -> None:
        if layout not in LAYOUTS:
            raise ConfigError(f"unknown image layout '{layout}' (valid: {', '.join(LAYOUTS)})")
        self.folder = Path(folder)
        self.files = list_images(self.folder)
        if not self.files:
            raise ConfigError(f'no images found under {self.folder}')
        self.poses_csv = None if poses_csv is None else Path(poses_csv)
        if layout == 'auto':
            layout = 'csv' if poses_csv is not None else 'vg' if _all_utm(self.files) else \
                'sequence'
        if layout == 'csv' and self.poses_csv is None:
            raise ConfigError("layout 'csv' needs a poses CSV (--poses)")
        self.layout = layout

    def table(self) -> FrameTable:
        names = [p.relative_to(self.folder).as_posix() for p in self.files]
        info = {'kind': 'images', 'layout': self.layout, 'path': str(self.folder)}
        if self.layout == 'sequence':
            return synthetic_table(names, info=info)
        if self.layout == 'vg':
            return _vg_table(self.files, names, info)
        info['poses'] = str(self.poses_csv)
        return _csv_table(self.poses_csv, names, info)

    def images(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        for i in indices:
            yield load_image_file(self.files[int(i)])

    def frames(self, indices: Sequence[int]) -> Iterator[DecodedFrame]:
        for i in indices:
            try:
                image = load_image_file(self.files[int(i)])
            except UnsupportedImageError as exc:
                yield int(i), None, exc
            else:
                yield int(i), image, None


class BagSource:
    """Images of ``image_topic`` in a rosbag2, posed by ``pose_topic`` interpolated to the image
    stamps (frames with no pose within ``tolerance_s`` are skipped and counted). Without a pose
    topic the bag is an index-aligned sequence."""

    def __init__(self, path: str | Path, image_topic: str, pose_topic: str | None = None,
                 tolerance_s: float = 0.5) -> None:
        self.path = Path(path)
        self.image_topic = image_topic
        self.pose_topic = pose_topic or None
        self.tolerance_s = tolerance_s

    def table(self) -> FrameTable:
        stamps = bags.read_image_stamps(self.path, self.image_topic)
        names = [f'{self.image_topic}#{i}' for i in range(len(stamps))]
        info = {'kind': 'bag', 'path': str(self.path), 'image_topic': self.image_topic,
                'pose_topic': self.pose_topic or ''}
        if self.pose_topic is None:
            table = synthetic_table(names, info=info)
            return FrameTable(stamps, table.positions, table.orientations, table.valid,
                              table.names, table.frame_id, True, 'none', None, False, info)
        track = bags.read_pose_track(self.path, self.pose_topic)
        positions, orientations, valid = interpolate_poses(
            track.stamps_ns, track.positions, track.orientations, stamps, self.tolerance_s)
        info.update(pose_type=track.msgtype, pose_messages=len(track.stamps_ns),
                    pose_messages_skipped=track.skipped, pose_tolerance_s=self.tolerance_s)
        return FrameTable(stamps, positions, orientations, valid, np.asarray(names, str),
                          track.frame_id, False, track.orientation_source, track.geo_origin,
                          True, info)

    def images(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        for _, image in bags.iter_images(self.path, self.image_topic, indices):
            yield image

    def frames(self, indices: Sequence[int]) -> Iterator[DecodedFrame]:
        for frame in bags.iter_image_frames(self.path, self.image_topic, indices):
            yield frame.index, frame.image, frame.error


def parse_utm(path: str | Path) -> tuple[float, float]:
    """UTM (east, north) in metres from a VG-benchmark name ``@east@north@zone@...``."""
    fields = Path(path).name.split('@')
    try:
        return float(fields[1]), float(fields[2])
    except (IndexError, ValueError) as exc:
        raise ConfigError(f"file name {Path(path).name!r} does not follow the VG-benchmark "
                          "convention '@UTM_east@UTM_north@zone@letter@lat@lon@...'") from exc


def _all_utm(files: Sequence[Path]) -> bool:
    try:
        for path in files:
            parse_utm(path)
    except ConfigError:
        return False
    return True


def _vg_table(files: Sequence[Path], names: Sequence[str], info: dict) -> FrameTable:
    utm = np.array([parse_utm(p) for p in files], dtype=np.float64)
    positions = np.zeros((len(files), 3))
    positions[:, :2] = utm
    headings = [_vg_heading(p) for p in files]
    known = all(h is not None for h in headings)
    yaw = np.array([np.pi / 2 - np.radians(h) if known else 0.0 for h in headings])
    return FrameTable(np.arange(len(files), dtype=np.int64) * 1_000_000_000, positions,
                      quaternions_from_yaw(yaw), np.ones(len(files), dtype=bool),
                      np.asarray(names, dtype=str), 'utm',
                      orientation_source='pose' if known else 'none', keyframing=False,
                      info=info)


def _vg_heading(path: Path) -> float | None:
    """Compass heading (degrees, clockwise from north) from field 9 of a VG name, if any."""
    fields = path.name.split('@')
    try:
        return float(fields[9])
    except (IndexError, ValueError):
        return None


def _csv_table(path: Path, names: Sequence[str], info: dict) -> FrameTable:
    """Poses CSV with a header: an image column (name/image/file/filename/path, relative path
    or base name), x, y [, z], orientation as qx, qy, qz, qw or yaw (rad) or yaw_deg, and
    optionally stamp (s) or stamp_ns. Images without a row are skipped."""
    rows = _read_csv(path)
    header = set(rows[0]) if rows else set()
    name_key = next((k for k in _NAME_COLUMNS if k in header), None)
    if name_key is None or not {'x', 'y'} <= header:
        raise ConfigError(f'poses CSV {path} needs a header with an image column '
                          f"({', '.join(_NAME_COLUMNS)}) and x, y; got {sorted(header)}")
    by_name = {}
    for row in rows:
        by_name[row[name_key]] = row
        by_name.setdefault(Path(row[name_key]).name, row)
    count = len(names)
    values = np.zeros((count, 7))
    values[:, 6] = 1.0
    stamps = np.arange(count, dtype=np.int64) * 1_000_000_000
    valid = np.zeros(count, dtype=bool)
    for i, name in enumerate(names):
        row = by_name.get(name) or by_name.get(Path(name).name)
        if row is not None:
            values[i], stamps[i] = _csv_pose(row, i, path)
            valid[i] = True
    orientation = 'pose' if header & {'qw', 'yaw', 'yaw_deg'} else 'none'
    info['frames_without_pose_row'] = int(count - valid.sum())
    return FrameTable(stamps, values[:, :3],
                      normalise_quaternions(values[:, 3:7]), valid, np.asarray(names, str),
                      info.get('frame_id', 'map'), orientation_source=orientation, info=info)


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline='', encoding='utf-8') as handle:
            return [{k.strip(): (v or '').strip() for k, v in row.items() if k}
                    for row in csv.DictReader(handle)]
    except FileNotFoundError as exc:
        raise ConfigError(f'poses CSV not found: {path}') from exc


def _csv_pose(row: dict, index: int, path: Path) -> tuple[np.ndarray, int]:
    try:
        x, y, z = float(row['x']), float(row['y']), float(row.get('z') or 0.0)
        if row.get('qw'):
            q = [float(row[k]) for k in ('qx', 'qy', 'qz', 'qw')]
        else:
            degrees = float(row.get('yaw_deg') or 0.0)
            yaw = float(row['yaw']) if row.get('yaw') else float(np.radians(degrees))
            q = list(quaternions_from_yaw(np.array([yaw]))[0])
        if row.get('stamp_ns'):
            stamp = int(row['stamp_ns'])
        elif row.get('stamp'):
            seconds, _, fraction = row['stamp'].partition('.')
            stamp = int(seconds) * 1_000_000_000 + int((fraction + '0' * 9)[:9])
        else:
            stamp = index * 1_000_000_000
    except (KeyError, ValueError) as exc:
        raise ConfigError(f'poses CSV {path}: bad row {row}: {exc}') from exc
    return np.array([x, y, z, *q]), stamp
