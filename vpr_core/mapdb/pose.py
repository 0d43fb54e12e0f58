"""Rigid poses as numpy arrays: quaternions, composition, interpolation, geodetic -> local metric.

Conventions: positions [N, 3] metres; orientations [N, 4] unit quaternions (x, y, z, w), the
order of ``geometry_msgs/Quaternion``; a pose maps points of its child frame into its parent
frame. Yaw is the rotation about +z (REP-103: x forward, y left, z up).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IDENTITY_QUATERNION = (0.0, 0.0, 0.0, 1.0)
# The camera at the robot's base: (x, y, z, qx, qy, qz, qw), the 7-number form of Pose.
IDENTITY_EXTRINSIC = (0.0, 0.0, 0.0) + IDENTITY_QUATERNION
WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3


@dataclass(frozen=True)
class Pose:
    """One rigid pose: ``position`` (x, y, z) metres, ``orientation`` (x, y, z, w)."""

    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    orientation: tuple[float, float, float, float] = IDENTITY_QUATERNION

    @classmethod
    def from_sequence(cls, values) -> 'Pose':
        """Build from 7 numbers (x, y, z, qx, qy, qz, qw); the quaternion is normalised."""
        values = [float(v) for v in values]
        if len(values) != 7:
            raise ValueError(f'a pose needs 7 numbers (x y z qx qy qz qw), got {len(values)}')
        quaternion = normalise_quaternions(np.array([values[3:]]))[0]
        return cls(tuple(values[:3]), tuple(float(q) for q in quaternion))

    @property
    def yaw(self) -> float:
        """Rotation about +z in radians."""
        return float(yaw_from_quaternions(np.array([self.orientation]))[0])


def normalise_quaternions(quaternions: np.ndarray) -> np.ndarray:
    """[N, 4] -> [N, 4] unit quaternions with w >= 0; a zero quaternion becomes identity."""
    quaternions = np.array(quaternions, dtype=np.float64).reshape(-1, 4)
    norm = np.linalg.norm(quaternions, axis=1, keepdims=True)
    zero = norm[:, 0] < 1e-12
    quaternions[zero] = IDENTITY_QUATERNION
    norm[zero] = 1.0
    quaternions /= norm
    return np.where(quaternions[:, 3:4] < 0, -quaternions, quaternions)


def quaternions_from_yaw(yaw: np.ndarray) -> np.ndarray:
    """[N] yaw in radians -> [N, 4] quaternions (x, y, z, w)."""
    half = np.asarray(yaw, dtype=np.float64).reshape(-1) / 2.0
    zeros = np.zeros_like(half)
    return np.stack([zeros, zeros, np.sin(half), np.cos(half)], axis=1)


def yaw_from_quaternions(quaternions: np.ndarray) -> np.ndarray:
    """[N, 4] quaternions (x, y, z, w) -> [N] yaw in radians (ZYX convention)."""
    x, y, z, w = np.asarray(quaternions, dtype=np.float64).reshape(-1, 4).T
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def multiply_quaternions(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of [N, 4] (or broadcastable) quaternions (x, y, z, w)."""
    ax, ay, az, aw = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bx, by, bz, bw = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz], axis=-1)


def rotate_vectors(quaternions: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Rotate [N, 3] vectors by [N, 4] quaternions (or broadcastable)."""
    q = np.asarray(quaternions, dtype=np.float64)
    v = np.asarray(vectors, dtype=np.float64)
    u = q[..., :3]
    t = 2.0 * np.cross(u, v)
    return v + q[..., 3:4] * t + np.cross(u, t)


def compose(positions: np.ndarray, orientations: np.ndarray,
            offset: Pose) -> tuple[np.ndarray, np.ndarray]:
    """Poses [N, 3] + [N, 4] composed with a fixed ``offset`` on the right: T_i * offset."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    orientations = np.asarray(orientations, dtype=np.float64).reshape(-1, 4)
    shift = rotate_vectors(orientations, np.broadcast_to(offset.position, positions.shape))
    rotation = multiply_quaternions(orientations, np.asarray(offset.orientation))
    return positions + shift, normalise_quaternions(rotation)


def invert(pose: Pose) -> Pose:
    """The inverse rigid transform."""
    conjugate = np.array(pose.orientation) * np.array([-1.0, -1.0, -1.0, 1.0])
    position = -rotate_vectors(conjugate, np.array(pose.position))
    return Pose(tuple(float(p) for p in position),
                tuple(float(q) for q in normalise_quaternions(conjugate[None])[0]))


def slerp(a: np.ndarray, b: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Spherical interpolation between [N, 4] quaternions at [N] fractions in [0, 1]."""
    a = normalise_quaternions(a)
    b = normalise_quaternions(b)
    dot = np.sum(a * b, axis=1)
    b = np.where(dot[:, None] < 0, -b, b)
    dot = np.abs(dot).clip(-1.0, 1.0)
    theta = np.arccos(dot)
    small = theta < 1e-6
    sin_theta = np.where(small, 1.0, np.sin(theta))
    fraction = np.asarray(fraction, dtype=np.float64).reshape(-1)
    wa = np.where(small, 1.0 - fraction, np.sin((1.0 - fraction) * theta) / sin_theta)
    wb = np.where(small, fraction, np.sin(fraction * theta) / sin_theta)
    return normalise_quaternions(wa[:, None] * a + wb[:, None] * b)


def interpolate_poses(stamps_ns: np.ndarray, positions: np.ndarray, orientations: np.ndarray,
                      query_ns: np.ndarray, tolerance_s: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poses at ``query_ns`` [Q] from a time-sorted track (stamps [M], [M, 3], [M, 4]).

    A query is valid when the nearest sample lies within ``tolerance_s``. Between two samples
    the pose is interpolated (linear in position, slerp in orientation); outside the track it
    is the nearest sample. Returns ``(positions [Q, 3], orientations [Q, 4], valid [Q])``.
    """
    stamps = np.asarray(stamps_ns, dtype=np.int64).reshape(-1)
    query = np.asarray(query_ns, dtype=np.int64).reshape(-1)
    if len(stamps) == 0 or len(query) == 0:
        rotations = np.tile(np.array(IDENTITY_QUATERNION), (len(query), 1))
        return np.zeros((len(query), 3)), rotations, np.zeros(len(query), dtype=bool)
    positions = np.asarray(positions, dtype=np.float64)
    after = np.clip(np.searchsorted(stamps, query, side='left'), 0, len(stamps) - 1)
    before = np.where(stamps[after] <= query, after, np.clip(after - 1, 0, None))
    gap_before = np.abs(query - stamps[before])
    gap_after = np.abs(stamps[after] - query)
    nearest = np.where(gap_before <= gap_after, before, after)
    bracketed = (stamps[before] <= query) & (query <= stamps[after]) & (before != after)
    span = np.maximum(stamps[after] - stamps[before], 1).astype(np.float64)
    fraction = np.where(bracketed, (query - stamps[before]) / span, 0.0)
    lo = np.where(bracketed, before, nearest)
    hi = np.where(bracketed, after, nearest)
    out_pos = positions[lo] + fraction[:, None] * (positions[hi] - positions[lo])
    out_rot = slerp(orientations[lo], orientations[hi], fraction)
    valid = np.minimum(gap_before, gap_after) <= int(tolerance_s * 1e9)
    return out_pos, out_rot, valid


def geodetic_to_enu(latitude_deg: np.ndarray, longitude_deg: np.ndarray,
                    altitude_m: np.ndarray,
                    origin: tuple[float, float, float]) -> np.ndarray:
    """WGS84 fixes [N] -> [N, 3] east, north, up metres in the tangent plane at ``origin``.

    ``origin`` is (latitude deg, longitude deg, altitude m), usually the first fix.
    """
    ecef = _geodetic_to_ecef(latitude_deg, longitude_deg, altitude_m)
    ref = _geodetic_to_ecef(*[np.array([v]) for v in origin])[0]
    lat0, lon0 = np.radians(origin[0]), np.radians(origin[1])
    rotation = np.array([
        [-np.sin(lon0), np.cos(lon0), 0.0],
        [-np.sin(lat0) * np.cos(lon0), -np.sin(lat0) * np.sin(lon0), np.cos(lat0)],
        [np.cos(lat0) * np.cos(lon0), np.cos(lat0) * np.sin(lon0), np.sin(lat0)]])
    return (ecef - ref) @ rotation.T


def heading_from_track(positions: np.ndarray, min_step_m: float = 0.05) -> np.ndarray:
    """[N, 3] positions along a path -> [N] yaw of the direction of travel (radians).

    A sample whose neighbours are closer than ``min_step_m`` takes the last known heading
    (0 before the first movement).
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    yaw = np.zeros(len(positions))
    last = 0.0
    for i in range(len(positions)):
        a = positions[max(i - 1, 0)]
        b = positions[min(i + 1, len(positions) - 1)]
        step = b[:2] - a[:2]
        if np.hypot(*step) >= min_step_m:
            last = float(np.arctan2(step[1], step[0]))
        yaw[i] = last
    return yaw


def _geodetic_to_ecef(latitude_deg, longitude_deg, altitude_m) -> np.ndarray:
    lat = np.radians(np.asarray(latitude_deg, dtype=np.float64))
    lon = np.radians(np.asarray(longitude_deg, dtype=np.float64))
    alt = np.nan_to_num(np.asarray(altitude_m, dtype=np.float64))
    radius = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)
    return np.stack([(radius + alt) * np.cos(lat) * np.cos(lon),
                     (radius + alt) * np.cos(lat) * np.sin(lon),
                     (radius * (1.0 - WGS84_E2) + alt) * np.sin(lat)], axis=-1)
