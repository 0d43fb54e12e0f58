"""Tiny teach runs written with ``rosbags``: a straight route of distinct places, posed."""
import cv2
import numpy as np

from vpr_core.bags import BagWriter
from vpr_core.mapdb.pose import Pose, quaternions_from_yaw

SECOND = 1_000_000_000
PLACE_STEP_M = 4.0
FRAME_OFFSETS_M = (0.0, 0.4, 0.8)


def place_image(place: int, seed: int, size: int = 24) -> np.ndarray:
    """A distinct RGB pattern per place with per-frame noise."""
    small = np.random.default_rng(1000 + place).integers(0, 255, (4, 4, 3), dtype=np.uint8)
    image = cv2.resize(small, (size, size), interpolation=cv2.INTER_NEAREST)
    noise = np.random.default_rng(seed).integers(-20, 20, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def teach_positions(places: int) -> list[float]:
    """x of every frame: three frames 0.4 m apart at each place, places 4 m apart."""
    return [PLACE_STEP_M * p + d for p in range(places) for d in FRAME_OFFSETS_M]


def write_teach_bag(path, places: int = 12, *, storage: str = 'mcap', seed: int = 0,
                    pose_kind: str = 'odometry', compressed: bool = False,
                    images: bool = True, poses: bool = True) -> None:
    """Images at 1 Hz along x (yaw 0), each with a pose message at the same stamp."""
    yaw = tuple(quaternions_from_yaw(np.array([0.0]))[0])
    with BagWriter(path, storage) as bag:
        for i, x in enumerate(teach_positions(places)):
            stamp = (i + 1) * SECOND
            if poses:
                bag.add_pose('/odom', stamp, Pose((x, 0.0, 0.0), yaw), kind=pose_kind)
            if images:
                bag.add_image('/camera/image', stamp, place_image(i // 3, seed * 1000 + i),
                              compressed=compressed)
