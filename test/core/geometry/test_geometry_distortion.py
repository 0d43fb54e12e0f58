"""Keypoints of a distorted camera are undistorted before any model is fitted."""
import cv2
import numpy as np

from vpr_core.geometry.camera import CameraModel
from vpr_core.geometry.verification import normalise


def test_normalise_inverts_plumb_bob_distortion():
    camera = CameraModel(420.0, 420.0, 320.0, 240.0, 640, 480, (-0.25, 0.08, 0.001, -0.0005, 0.0))
    rays = np.random.default_rng(1).uniform([-0.6, -0.45], [0.6, 0.45], (200, 2))
    points = np.hstack([rays, np.ones((200, 1))])
    pixels, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), camera.matrix,
                                  np.array(camera.distortion))
    assert np.abs(pixels.reshape(-1, 2) - (rays * 420 + [320, 240])).max() > 5.0
    assert np.abs(normalise(pixels.reshape(-1, 2), camera) - rays).max() < 1e-4
