"""Synthetic views of real frames for the geometry tests."""
import cv2
import numpy as np


def warp(image: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """The image seen through a pixel homography (maps source pixels to output pixels)."""
    return cv2.warpPerspective(image, homography, (image.shape[1], image.shape[0]))


def two_plane_view(image: np.ndarray, k: np.ndarray, r_qm: np.ndarray, t_qm: np.ndarray,
                   depths: tuple[float, float] = (2.0, 5.0)) -> tuple[np.ndarray, np.ndarray]:
    """The query view of a scene whose left image half is a wall at depths[0] and right half
    one at depths[1] (fronto-parallel in the match camera); query pose X_q = R_qm X_m + t_qm.

    Returns (query image, match depth image in metres). Occlusion at the step is ignored.
    """
    height, width = image.shape[:2]
    query = np.zeros_like(image)
    depth = np.zeros((height, width), np.float32)
    for columns, distance in zip((slice(0, width // 2), slice(width // 2, width)), depths):
        mask = np.zeros((height, width), np.uint8)
        mask[:, columns] = 255
        homography = k @ (r_qm + np.outer(t_qm, [0.0, 0.0, 1.0]) / distance) @ np.linalg.inv(k)
        seen = warp(mask, homography) > 0
        query[seen] = warp(image * (mask[:, :, None] > 0), homography)[seen]
        depth[:, columns] = distance
    return query, depth
